//! The embedding as a function of a weight tensor, usable without the module.

use burn::tensor::{Int, Tensor};

use crate::rank::{IndexRank, LookupRank};
use crate::util::{float, primitive};
use crate::{EmbeddingBackend, EmbeddingError, EmbeddingOptions};

/// Looks up the rows of `weight` `[V, D]` named by `indices` `[..]`, giving `[.., D]`.
///
/// Checks the options and every index, and panics with the [`EmbeddingError`] message on bad
/// input; [`try_embedding`] returns the error instead.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{EmbeddingOptions, embedding};
///
/// let device = Default::default();
/// let weight = Tensor::<NdArray, 2>::from_floats([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]], &device);
/// let indices = Tensor::<NdArray, 2, Int>::from_ints([[2, 1], [0, 2]], &device);
/// let out: Tensor<NdArray, 3> = embedding(weight, indices, &EmbeddingOptions::new());
/// assert_eq!(out.dims(), [2, 2, 2]);
/// assert_eq!(out.into_data().to_vec::<f32>().unwrap(), vec![3., 4., 1., 2., 0., 0., 3., 4.]);
/// ```
pub fn embedding<B: EmbeddingBackend, const DI: usize, const DO: usize>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, DI, Int>,
    options: &EmbeddingOptions,
) -> Tensor<B, DO>
where
    IndexRank<DI>: LookupRank<DO>,
{
    try_embedding(weight, indices, options).unwrap_or_else(|err| panic!("{err}"))
}

/// [`embedding`], returning bad input as an [`EmbeddingError`].
pub fn try_embedding<B: EmbeddingBackend, const DI: usize, const DO: usize>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, DI, Int>,
    options: &EmbeddingOptions,
) -> Result<Tensor<B, DO>, EmbeddingError>
where
    IndexRank<DI>: LookupRank<DO>,
{
    let [num_embeddings, embedding_dim] = weight.dims();
    if num_embeddings == 0 || embedding_dim == 0 {
        return Err(EmbeddingError::InvalidWeightShape {
            shape: vec![num_embeddings, embedding_dim],
        });
    }
    options.validate(num_embeddings)?;
    check_indices(&indices, num_embeddings)?;
    Ok(embedding_unchecked(weight, indices, options))
}

/// [`embedding`] without the checks.
///
/// The index check costs one reduction over the indices and one device-to-host read of two
/// numbers, which on a GPU backend waits for the queued work. Skip it only for indices known
/// to be valid: an out-of-range index here panics naming it on ndarray, is libtorch's error on
/// tch, and reads zeros or another row on wgpu (nothing outside the table is touched).
pub fn embedding_unchecked<B: EmbeddingBackend, const DI: usize, const DO: usize>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, DI, Int>,
    options: &EmbeddingOptions,
) -> Tensor<B, DO>
where
    IndexRank<DI>: LookupRank<DO>,
{
    // The backend returns [.., D] directly: a reshape copies the output on some backends.
    float::<B, DO>(B::embedding_lookup(
        primitive(weight),
        indices.into_primitive(),
        options,
    ))
}

/// PyTorch's `embedding_renorm_`: `weight` with each row referenced by `indices` whose
/// `norm_type`-norm exceeds `max_norm` rescaled to `max_norm`. Not differentiable.
///
/// An index outside `0..V`, a `max_norm` that is negative or not finite and a `norm_type` that
/// is not `> 0` are [`EmbeddingError`]s naming the value.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::functional::embedding_renorm;
///
/// let device = Default::default();
/// let weight = Tensor::<NdArray, 2>::from_floats([[3.0, 4.0], [0.3, 0.4]], &device);
/// let ids = Tensor::<NdArray, 1, Int>::from_ints([0, 1], &device);
/// let renormed = embedding_renorm(weight, ids, 1.0, 2.0).unwrap();
/// let rows = renormed.into_data().to_vec::<f32>().unwrap();
/// assert!((rows[0] - 0.6).abs() < 1e-6 && rows[3] == 0.4);
/// ```
pub fn embedding_renorm<B: EmbeddingBackend, const DI: usize>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, DI, Int>,
    max_norm: f64,
    norm_type: f64,
) -> Result<Tensor<B, 2>, EmbeddingError> {
    crate::options::validate_norm(Some(max_norm), norm_type.into())?;
    check_indices(&indices, weight.dims()[0])?;
    Ok(renorm_unchecked(weight, indices, max_norm, norm_type))
}

fn renorm_unchecked<B: EmbeddingBackend, const DI: usize>(
    weight: Tensor<B, 2>,
    indices: Tensor<B, DI, Int>,
    max_norm: f64,
    norm_type: f64,
) -> Tensor<B, 2> {
    let n = indices.shape().num_elements();
    if n == 0 {
        return weight;
    }
    float(B::embedding_renorm(
        primitive(weight),
        crate::util::flatten_int(indices).into_primitive(),
        max_norm,
        norm_type,
    ))
}

/// [`embedding_renorm`] applied to a parameter: the renormalised weight keeps the parameter's
/// id and its `require_grad` flag. Does nothing without `options.max_norm`.
pub(crate) fn renorm_param<B: EmbeddingBackend, const DI: usize>(
    weight: &mut burn::module::Param<Tensor<B, 2>>,
    indices: Tensor<B, DI, Int>,
    options: &EmbeddingOptions,
) {
    let Some(max_norm) = options.max_norm else {
        return;
    };
    let norm_type = options.norm_type.p();
    let placeholder = burn::module::Param::from_tensor(Tensor::zeros([1, 1], &indices.device()));
    *weight = core::mem::replace(weight, placeholder).map(|w| {
        let require_grad = w.is_require_grad();
        renorm_unchecked(w.detach(), indices, max_norm, norm_type).set_require_grad(require_grad)
    });
}

/// Checks that every index lies in `0..num_embeddings`.
///
/// The backend's minimum and maximum of the indices ([`EmbeddingBackend::embedding_index_range`]);
/// only when one is out of range are all indices read, to name the first offending index and its
/// position.
pub(crate) fn check_indices<B: EmbeddingBackend, const D: usize>(
    indices: &Tensor<B, D, Int>,
    num_embeddings: usize,
) -> Result<(), EmbeddingError> {
    let n = indices.shape().num_elements();
    if n == 0 {
        return Ok(());
    }
    let indices = indices.clone().into_primitive();
    let (min, max) = B::embedding_index_range(&indices);
    if min >= 0 && max < num_embeddings as i64 {
        return Ok(());
    }
    let values: Vec<i64> = Tensor::<B, D, Int>::from_primitive(indices)
        .into_data()
        .iter::<i64>()
        .collect();
    let (position, &index) = values
        .iter()
        .enumerate()
        .find(|&(_, &i)| i < 0 || i >= num_embeddings as i64)
        .expect("the minimum or maximum is out of range");
    Err(EmbeddingError::IndexOutOfRange {
        index,
        position,
        num_embeddings,
    })
}
