//! The [`Embedding`] module.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::functional::{check_indices, embedding_unchecked, renorm_param};
use crate::rank::{IndexRank, LookupRank};
use crate::util::{float, primitive};
use crate::{
    EmbeddingBackend, EmbeddingError, EmbeddingOptions, RowSparseGradient, SparseGradients,
};

/// A lookup table of `num_embeddings` rows of size `embedding_dim`, with every option of
/// PyTorch's `nn.Embedding`: `padding_idx`, `max_norm` / `norm_type`, `scale_grad_by_freq` and
/// `sparse`.
///
/// Build it with [`EmbeddingConfig`](crate::EmbeddingConfig) or [`Embedding::from_pretrained`].
/// The record holds the weight only; save the config beside it to restore the options.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::EmbeddingConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(100, 8).with_sparse(true).init::<B>(&device);
/// let tokens = Tensor::<B, 2, Int>::from_ints([[5, 7, 5], [1, 2, 3]], &device);
/// let out: Tensor<B, 3> = emb.forward(tokens);
/// let mut grads = out.sum().backward();
/// let rows = emb.sparse_grad_remove(&mut grads).expect("rows were touched");
/// assert_eq!(rows.ids_vec(), vec![1, 2, 3, 5, 7]);
/// assert_eq!(rows.values.dims(), [5, 8]);
/// ```
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// The table, `[num_embeddings, embedding_dim]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The lookup options, validated (not in the record: they come from the config).
    options: EmbeddingOptions,
}

impl<B: EmbeddingBackend> Embedding<B> {
    pub(crate) fn new(weight: Param<Tensor<B, 2>>, options: EmbeddingOptions) -> Self {
        Self { weight, options }
    }

    /// An embedding holding `weight` `[V, D]` as it is (PyTorch's `from_pretrained`: the given
    /// padding row is kept, not zeroed). With `freeze` the weight gets no gradient.
    ///
    /// `options.padding_idx` is taken as already normalised; use
    /// [`normalize_padding_idx`](crate::normalize_padding_idx) for a negative one.
    pub fn from_pretrained(
        weight: Tensor<B, 2>,
        freeze: bool,
        options: EmbeddingOptions,
    ) -> Result<Self, EmbeddingError> {
        let [num_embeddings, embedding_dim] = weight.dims();
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(EmbeddingError::InvalidWeightShape {
                shape: vec![num_embeddings, embedding_dim],
            });
        }
        options.validate(num_embeddings)?;
        let weight = Param::from_tensor(weight).set_require_grad(!freeze);
        Ok(Self::new(weight, options))
    }

    /// The lookup options.
    pub fn options(&self) -> EmbeddingOptions {
        self.options
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Size of each row.
    pub fn embedding_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Looks up `indices` `[..]` (rank 1 and up), giving `[.., embedding_dim]`.
    ///
    /// The output equals PyTorch's for every option. With `max_norm`, the referenced rows are
    /// renormalised for this lookup, but the stored weight is not changed (`&self`); call
    /// [`forward_mut`](Self::forward_mut) for PyTorch's in-place renormalisation.
    ///
    /// The output rank is the index rank plus one, checked by the compiler ([`LookupRank`]).
    ///
    /// # Panics
    /// On an index outside `0..num_embeddings`, with a message naming it. [`try_forward`](Self::try_forward) returns the
    /// error instead.
    pub fn forward<const DI: usize, const DO: usize>(
        &self,
        indices: Tensor<B, DI, Int>,
    ) -> Tensor<B, DO>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        self.try_forward(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input as an [`EmbeddingError`].
    pub fn try_forward<const DI: usize, const DO: usize>(
        &self,
        indices: Tensor<B, DI, Int>,
    ) -> Result<Tensor<B, DO>, EmbeddingError>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        check_indices(&indices, self.num_embeddings())?;
        Ok(self.forward_unchecked(indices))
    }

    /// [`forward`](Self::forward) without the index check, which costs a reduction and a
    /// device-to-host read of two numbers (a sync on GPU backends). An out-of-range index here
    /// is a panic naming it on ndarray, libtorch's error on tch, and zeros or another row on
    /// wgpu (the device clamps the read; nothing outside the table is touched).
    pub fn forward_unchecked<const DI: usize, const DO: usize>(
        &self,
        indices: Tensor<B, DI, Int>,
    ) -> Tensor<B, DO>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        embedding_unchecked(self.weight.val(), indices, &self.options)
    }

    /// PyTorch's forward exactly: with `max_norm`, the referenced rows of the stored weight are
    /// first renormalised in place (so that the next optimizer step updates the renormalised
    /// rows, as in PyTorch), then looked up. Without `max_norm` this is [`forward`](Self::forward).
    ///
    /// The weight keeps its parameter id and its `require_grad` flag.
    pub fn forward_mut<const DI: usize, const DO: usize>(
        &mut self,
        indices: Tensor<B, DI, Int>,
    ) -> Tensor<B, DO>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        self.try_forward_mut(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward_mut`](Self::forward_mut), returning bad input as an [`EmbeddingError`]; the
    /// weight is left untouched on error.
    pub fn try_forward_mut<const DI: usize, const DO: usize>(
        &mut self,
        indices: Tensor<B, DI, Int>,
    ) -> Result<Tensor<B, DO>, EmbeddingError>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        check_indices(&indices, self.num_embeddings())?;
        renorm_param(&mut self.weight, indices.clone(), &self.options);
        Ok(self.forward_unchecked(indices))
    }

    /// PyTorch's `embedding_renorm_` on the stored weight: every row referenced by `indices`
    /// whose norm exceeds `max_norm` is rescaled to it. Does nothing without `max_norm`.
    ///
    /// # Panics
    /// On an index outside `0..num_embeddings`, naming it; [`try_renorm`](Self::try_renorm)
    /// returns the error instead.
    pub fn renorm<const DI: usize>(&mut self, indices: Tensor<B, DI, Int>) {
        self.try_renorm(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`renorm`](Self::renorm), returning bad input as an [`EmbeddingError`]; the weight is
    /// left untouched on error.
    pub fn try_renorm<const DI: usize>(
        &mut self,
        indices: Tensor<B, DI, Int>,
    ) -> Result<(), EmbeddingError> {
        if self.options.max_norm.is_some() {
            check_indices(&indices, self.num_embeddings())?;
        }
        renorm_param(&mut self.weight, indices, &self.options);
        Ok(())
    }

    /// The weight `[V, D]` for a dense use beside this layer's lookups: an L2 penalty on the
    /// table, or a tied output projection that scales it first. Values and gradient are those of
    /// `self.weight.val()`. With `sparse: true`, a term on `self.weight.val()` also gets the
    /// dense sum in either order in an ordinary loop, but that rests on a count of the weight's
    /// pending ops that burn 0.21 can leave off by one (see [`sparse`](crate::sparse), invariant
    /// 8); this op's own backward merges the term with the lookups' rows in either order, always.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray};
    /// use burn::tensor::{Int, Tensor};
    /// use burn_embedding::EmbeddingConfig;
    ///
    /// type B = Autodiff<NdArray>;
    /// let device = Default::default();
    /// let emb = EmbeddingConfig::new(10, 4).with_sparse(true).init::<B>(&device);
    /// let penalty = emb.dense_weight().square().sum().mul_scalar(1e-4);
    /// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([7, 2], &device));
    /// let grads = (penalty + out.sum()).backward();
    /// assert_eq!(emb.weight.grad(&grads).unwrap().dims(), [10, 4]);
    /// ```
    pub fn dense_weight(&self) -> Tensor<B, 2> {
        float(B::embedding_dense_weight(primitive(self.weight.val())))
    }
}

impl<B: SparseGradients> Embedding<B> {
    /// Takes the row-sparse gradient of the weight out of `grads` after `backward()`, when the
    /// layer is `sparse`. `None` when the batch touched no row (or the layer is dense: then the
    /// gradient is dense and `self.weight.grad(&grads)` returns it).
    pub fn sparse_grad_remove(
        &self,
        grads: &mut B::Gradients,
    ) -> Option<RowSparseGradient<B::InnerBackend>> {
        crate::sparse_grad_remove(&self.weight.val(), grads)
    }

    /// The row-sparse gradient of the weight in `grads`, read without taking it (see
    /// [`sparse_grad`](crate::sparse_grad)): what a step given these gradients applies.
    pub fn sparse_grad(&self, grads: &B::Gradients) -> Option<RowSparseGradient<B::InnerBackend>> {
        crate::sparse_grad(&self.weight.val(), grads)
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use crate::EmbeddingConfig;
    use burn::backend::{Autodiff, NdArray};
    use burn::config::Config;
    use burn::module::Module;
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    use burn::tensor::TensorData;

    type B = NdArray;
    type Ad = Autodiff<NdArray>;

    fn table(device: &burn::tensor::Device<B>) -> Tensor<B, 2> {
        // Row i is [i, 10 + i].
        let data: Vec<f32> = (0..5).flat_map(|i| [i as f32, 10.0 + i as f32]).collect();
        Tensor::from_data(TensorData::new(data, [5, 2]), device)
    }

    #[test]
    fn ranks_1_3_and_4() {
        let device = Default::default();
        let emb =
            Embedding::from_pretrained(table(&device), true, EmbeddingOptions::new()).unwrap();
        let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([3, 0], &device));
        assert_eq!(
            out.into_data().to_vec::<f32>().unwrap(),
            vec![3., 13., 0., 10.]
        );

        let idx = Tensor::<B, 3, Int>::from_ints([[[1, 2], [4, 4]]], &device);
        let out: Tensor<B, 4> = emb.forward(idx);
        assert_eq!(out.dims(), [1, 2, 2, 2]);
        assert_eq!(
            out.into_data().to_vec::<f32>().unwrap(),
            vec![1., 11., 2., 12., 4., 14., 4., 14.]
        );

        let idx = Tensor::<B, 4, Int>::from_ints([[[[1], [2]]], [[[3], [0]]]], &device);
        let out: Tensor<B, 5> = emb.forward(idx);
        assert_eq!(out.dims(), [2, 1, 2, 1, 2]);
        assert_eq!(
            out.into_data().to_vec::<f32>().unwrap(),
            vec![1., 11., 2., 12., 3., 13., 0., 10.]
        );
    }

    #[test]
    fn out_of_range_index_is_named() {
        let device = Default::default();
        let emb =
            Embedding::from_pretrained(table(&device), true, EmbeddingOptions::new()).unwrap();
        let idx = Tensor::<B, 2, Int>::from_ints([[1, 2], [5, -1]], &device);
        let err = emb.try_forward::<2, 3>(idx).unwrap_err();
        assert_eq!(
            err,
            EmbeddingError::IndexOutOfRange {
                index: 5,
                position: 2,
                num_embeddings: 5
            }
        );
        assert!(err.to_string().contains("index 5 at position 2"));
    }

    #[test]
    fn from_pretrained_keeps_the_padding_row_and_freeze_stops_gradients() {
        let device = Default::default();
        let weight = Tensor::<Ad, 2>::from_inner(table(&device));
        let options = EmbeddingOptions::new().with_padding_idx(Some(1));
        let frozen = Embedding::from_pretrained(weight.clone(), true, options).unwrap();
        assert!(!frozen.weight.is_require_grad());
        let out: Tensor<Ad, 2> = frozen.forward(Tensor::<Ad, 1, Int>::from_ints([1], &device));
        // The given padding row is returned as it is, not zeroed.
        assert_eq!(
            out.clone().into_data().to_vec::<f32>().unwrap(),
            vec![1., 11.]
        );
        let grads = out.sum().backward();
        assert!(frozen.weight.grad(&grads).is_none());

        let trained = Embedding::from_pretrained(weight, false, options).unwrap();
        assert!(trained.weight.is_require_grad());
        let out: Tensor<Ad, 2> = trained.forward(Tensor::<Ad, 1, Int>::from_ints([1, 2], &device));
        let grads = out.sum().backward();
        let grad = trained
            .weight
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(
            &grad[2..6],
            &[0., 0., 1., 1.],
            "the padding row gets no gradient"
        );
    }

    #[test]
    fn forward_mut_renormalises_the_stored_rows_and_keeps_the_param() {
        let device = Default::default();
        let options = EmbeddingOptions::new().with_max_norm(Some(1.0));
        let mut emb =
            Embedding::<Ad>::from_pretrained(Tensor::from_inner(table(&device)), false, options)
                .unwrap();
        let id = emb.weight.id;
        let out: Tensor<Ad, 2> = emb.forward_mut(Tensor::<Ad, 1, Int>::from_ints([3], &device));
        let w = emb.weight.val().into_data().to_vec::<f32>().unwrap();
        let norm = (w[6] * w[6] + w[7] * w[7]).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row 3 renormalised, norm {norm}");
        assert_eq!(&w[4..6], &[2., 12.], "rows not referenced are unchanged");
        assert_eq!(out.into_data().to_vec::<f32>().unwrap(), w[6..8].to_vec());
        assert_eq!(emb.weight.id, id);
        assert!(emb.weight.is_require_grad());
    }

    #[test]
    fn record_and_config_round_trip() {
        let device = Default::default();
        let dir =
            std::env::temp_dir().join(format!("burn-embedding-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = EmbeddingConfig::new(7, 3)
            .with_padding_idx(Some(-1))
            .with_max_norm(Some(2.0))
            .with_sparse(true);
        let emb = config.init::<B>(&device);
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        emb.clone().save_file(dir.join("emb"), &recorder).unwrap();
        config.save(dir.join("config.json")).unwrap();

        let config = EmbeddingConfig::load(dir.join("config.json")).unwrap();
        let loaded = config
            .init::<B>(&device)
            .load_file(dir.join("emb"), &recorder, &device)
            .unwrap();
        assert_eq!(loaded.options(), emb.options());
        assert_eq!(loaded.weight.id, emb.weight.id);
        loaded
            .weight
            .val()
            .into_data()
            .assert_eq(&emb.weight.val().into_data(), true);
        std::fs::remove_dir_all(dir).ok();
    }
}
