//! Backend-generic implementations of [`EmbeddingBackend`](super::EmbeddingBackend), built from
//! burn tensor ops. They are the trait's defaults and the specification the fast paths match.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor, TensorData, TensorMetadata};

use super::write_back;
use crate::coalesce::Coalesced;
pub(crate) use crate::util::{float, int, int_tensor, primitive, read_indices};
use crate::{EmbeddingOptions, RowSparseGradient};

/// The epsilon PyTorch adds to the norm in `embedding_renorm_`.
pub(crate) const RENORM_EPS: f64 = 1e-7;

/// The `p`-norm of each row: `[U, D] -> [U, 1]`.
pub(crate) fn row_norms<B: Backend>(rows: Tensor<B, 2>, p: f64) -> Tensor<B, 2> {
    if p.is_infinite() {
        rows.abs().max_dim(1)
    } else if p == 1.0 {
        rows.abs().sum_dim(1)
    } else if p == 2.0 {
        rows.square().sum_dim(1).sqrt()
    } else {
        rows.abs().powf_scalar(p).sum_dim(1).powf_scalar(1.0 / p)
    }
}

/// Rescales each row whose norm exceeds `max_norm` by `max_norm / (norm + 1e-7)`. Half-precision
/// rows are renormalised in f32 and rounded once (an f16 row of norm above 256 has a sum of
/// squares beyond f16's range).
pub(crate) fn renorm_rows<B: Backend>(rows: Tensor<B, 2>, max_norm: f64, p: f64) -> Tensor<B, 2> {
    let dtype = rows.dtype();
    let rows = write_back::cast(rows, write_back::compute_dtype(dtype));
    let norms = row_norms(rows.clone(), p);
    let exceeds = norms.clone().greater_elem(max_norm);
    let factor = norms.ones_like().mask_where(
        exceeds,
        norms.add_scalar(RENORM_EPS).recip().mul_scalar(max_norm),
    );
    write_back::cast(rows * factor, dtype)
}

/// `[..] -> [N]`, and the shape `[.., D]` of the lookup's output.
fn flatten_indices<B: Backend>(indices: IntTensor<B>, d: usize) -> (Tensor<B, 1, Int>, Shape) {
    let shape = indices.shape();
    let n = shape.num_elements();
    let out_shape = Shape::from([shape.as_slice(), &[d]].concat());
    (int(B::int_reshape(indices, Shape::new([n]))), out_shape)
}

/// `[.., D] -> [N, D]`.
fn flatten_grad<B: Backend>(grad: FloatTensor<B>) -> Tensor<B, 2> {
    let shape = grad.shape();
    let d = shape.as_slice().last().copied().unwrap_or(1);
    let n = shape.num_elements() / d.max(1);
    float(B::float_reshape(grad, Shape::new([n, d])))
}

/// The smallest and largest index, by one min and one max reduction read back together.
pub(crate) fn index_range<B: Backend>(indices: &IntTensor<B>) -> (i64, i64) {
    let n = indices.shape().num_elements();
    let flat = int::<B, 1>(B::int_reshape(indices.clone(), Shape::new([n])));
    let bounds = Tensor::cat(vec![flat.clone().min(), flat.max()], 0);
    let bounds: Vec<i64> = bounds.into_data().iter::<i64>().collect();
    (bounds[0], bounds[1])
}

/// Row gather `[V, D], [..] -> [.., D]`, with the referenced rows renormalised first when
/// `max_norm` is set.
pub(crate) fn forward<B: Backend>(
    weight: FloatTensor<B>,
    indices: IntTensor<B>,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    let weight = float::<B, 2>(weight);
    let (indices, out_shape) = flatten_indices::<B>(indices, weight.dims()[1]);
    let output = match options.max_norm {
        None => weight.select(0, indices),
        Some(max_norm) => {
            // Renormalise each referenced row once (O(unique x D), never O(V)), then gather.
            let device = weight.device();
            let batch = Coalesced::new(&read_indices(indices), None);
            let rows = weight.select(0, int_tensor::<B>(&batch.unique, &device));
            renorm_rows(rows, max_norm, options.norm_type.p())
                .select(0, int_tensor::<B>(&batch.inverse, &device))
        }
    };
    B::float_reshape(primitive(output), out_shape)
}

/// PyTorch's `embedding_renorm_`, returning the updated weight.
pub(crate) fn renorm<B: Backend>(
    weight: FloatTensor<B>,
    indices: IntTensor<B>,
    max_norm: f64,
    norm_type: f64,
) -> FloatTensor<B> {
    renorm_with(
        weight,
        indices,
        max_norm,
        norm_type,
        write_back::replace_rows::<B>,
    )
}

/// [`renorm`], the renormalised rows written by `replace_rows(weight, unique ids, rows)` (a
/// backend whose assigning scatter misbehaves passes its own).
pub(crate) fn renorm_with<B: Backend>(
    weight: FloatTensor<B>,
    indices: IntTensor<B>,
    max_norm: f64,
    norm_type: f64,
    replace_rows: impl Fn(Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> FloatTensor<B> {
    let weight = float::<B, 2>(weight);
    let device = weight.device();
    let batch = Coalesced::new(&read_indices(int::<B, 1>(indices)), None);
    if batch.unique.is_empty() {
        return primitive(weight);
    }
    let unique = int_tensor::<B>(&batch.unique, &device);
    let rows = weight.clone().select(0, unique.clone());
    let renormed = renorm_rows(rows, max_norm, norm_type);
    // The ids are unique, so an assigning scatter is exact and race-free on every backend.
    primitive(replace_rows(weight, unique, renormed))
}

/// Dense backward: `[.., D] -> [V, D]`, as PyTorch's `embedding_dense_backward` decomposition.
/// Half-precision gradients are summed in f32 and rounded once, as in [`backward_sparse`].
pub(crate) fn backward_dense<B: Backend>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    let grad = flatten_grad::<B>(grad);
    let (indices, _) = flatten_indices::<B>(indices, 0);
    let [n, d] = grad.dims();
    let (device, out_dtype) = (grad.device(), grad.dtype());
    let dtype = write_back::compute_dtype(out_dtype);
    let mut grad = write_back::cast(grad, dtype);
    if options.scale_grad_by_freq {
        let counts = Tensor::<B, 1, Int>::zeros([num_embeddings], &device).select_assign(
            0,
            indices.clone(),
            Tensor::ones([n], &device),
            IndexingUpdateOp::Add,
        );
        let count_per_token = counts.select(0, indices.clone()).float().cast(dtype);
        grad = grad / count_per_token.unsqueeze_dim::<2>(1);
    }
    if let Some(padding_idx) = options.padding_idx {
        let is_padding = indices
            .clone()
            .equal_elem(padding_idx as i64)
            .unsqueeze_dim::<2>(1)
            .expand([n, d]);
        grad = grad.mask_fill(is_padding, 0.0);
    }
    let dense = Tensor::<B, 2>::zeros([num_embeddings, d], (&device, dtype)).select_assign(
        0,
        indices,
        grad,
        IndexingUpdateOp::Add,
    );
    primitive(write_back::cast(dense, out_dtype))
}

/// Row-sparse backward: coalesces the batch on the host, then sums the gradient rows per id (in
/// f32 for half-precision rows, rounded once).
pub(crate) fn backward_sparse<B: Backend>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> Option<RowSparseGradient<B>> {
    let grad = flatten_grad::<B>(grad);
    let [_, d] = grad.dims();
    let (device, out_dtype) = (grad.device(), grad.dtype());
    let dtype = write_back::compute_dtype(out_dtype);
    let grad = write_back::cast(grad, dtype);
    let (indices, _) = flatten_indices::<B>(indices, 0);
    let batch = Coalesced::new(&read_indices(indices), options.padding_idx);
    if batch.unique.is_empty() {
        return None;
    }
    let mut grad = match &batch.kept {
        Some(kept) => grad.select(0, int_tensor::<B>(kept, &device)),
        None => grad,
    };
    if options.scale_grad_by_freq {
        let counts: Vec<f32> = batch.counts.iter().map(|&c| c as f32).collect();
        let counts = Tensor::<B, 1>::from_data(
            TensorData::new(counts, [batch.counts.len()]),
            (&device, dtype),
        );
        grad = grad / counts.unsqueeze_dim::<2>(1);
    }
    let values = Tensor::<B, 2>::zeros([batch.unique.len(), d], (&device, dtype)).select_assign(
        0,
        int_tensor::<B>(&batch.inverse, &device),
        grad,
        IndexingUpdateOp::Add,
    );
    Some(RowSparseGradient::new(
        int_tensor::<B>(&batch.unique, &device),
        write_back::cast(values, out_dtype),
        num_embeddings,
    ))
}

/// [`EmbeddingBackend::embedding_token_grad_norm_sq`](super::EmbeddingBackend::embedding_token_grad_norm_sq)
/// by default: the rows summed, then the sum of their squares in f64.
pub(crate) fn token_grad_norm_sq<B: super::EmbeddingBackend>(
    grad: &FloatTensor<B>,
    indices: &IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> f64 {
    B::embedding_grad_sparse(grad.clone(), indices.clone(), num_embeddings, options).map_or(
        0.0,
        |rows| {
            rows.values
                .into_data()
                .convert::<f64>()
                .iter::<f64>()
                .map(|v| v * v)
                .sum()
        },
    )
}
