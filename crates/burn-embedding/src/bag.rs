//! [`EmbeddingBag`] and its config: PyTorch's `nn.EmbeddingBag`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::bag_functional::{check_bag_options, try_embedding_bag, try_embedding_bag_fixed};
use crate::functional::{check_indices, renorm_param};
use crate::options::{normalize_padding_idx, validate_norm};
use crate::{
    BagMode, EmbeddingBackend, EmbeddingError, EmbeddingOptions, NormType, RowSparseGradient,
    SparseGradients,
};

/// Configuration of an [`EmbeddingBag`], with PyTorch's names and defaults.
#[derive(Config, Debug)]
pub struct EmbeddingBagConfig {
    /// Number of rows (vocabulary size).
    pub num_embeddings: usize,
    /// Size of each row.
    pub embedding_dim: usize,
    /// The reduction (mean by default, as PyTorch).
    #[config(default = "BagMode::Mean")]
    pub mode: BagMode,
    /// Row left out of every bag, zeroed at init; negative values count from the end.
    pub padding_idx: Option<i64>,
    /// Rows referenced by a forward whose norm exceeds this are rescaled to it.
    pub max_norm: Option<f64>,
    /// The `p` of the norm used with `max_norm`.
    #[config(default = "NormType::L2")]
    pub norm_type: NormType,
    /// Divide each row's gradient by the number of times its index occurs in the input
    /// (not with mode max).
    #[config(default = false)]
    pub scale_grad_by_freq: bool,
    /// Row-sparse gradients (mode max included, which PyTorch refuses).
    #[config(default = false)]
    pub sparse: bool,
    /// Bit-identical backward on every run (see
    /// [`EmbeddingOptions::deterministic`](crate::EmbeddingOptions::deterministic)).
    #[config(default = true)]
    pub deterministic: bool,
    /// The offsets have one more entry, the end of the last bag (CSR).
    #[config(default = false)]
    pub include_last_offset: bool,
    /// Initializer of the weight, N(0, 1) as in PyTorch.
    #[config(default = "Initializer::Normal{mean: 0.0, std: 1.0}")]
    pub initializer: Initializer,
}

impl EmbeddingBagConfig {
    /// The lookup options with `padding_idx` normalised, or the error naming the bad value.
    pub fn options(&self) -> Result<EmbeddingOptions, EmbeddingError> {
        if self.num_embeddings == 0 || self.embedding_dim == 0 {
            return Err(EmbeddingError::EmptyShape {
                num_embeddings: self.num_embeddings,
                embedding_dim: self.embedding_dim,
            });
        }
        validate_norm(self.max_norm, self.norm_type)?;
        let options = EmbeddingOptions {
            padding_idx: normalize_padding_idx(self.padding_idx, self.num_embeddings)?,
            max_norm: self.max_norm,
            norm_type: self.norm_type,
            scale_grad_by_freq: self.scale_grad_by_freq,
            sparse: self.sparse,
            deterministic: self.deterministic,
        };
        check_bag_options(self.mode, &options, None)?;
        Ok(options)
    }

    /// Builds the layer, or returns the error naming the bad value.
    pub fn try_init<B: EmbeddingBackend>(
        &self,
        device: &B::Device,
    ) -> Result<EmbeddingBag<B>, EmbeddingError> {
        let options = self.options()?;
        let shape = [self.num_embeddings, self.embedding_dim];
        let mut weight: Tensor<B, 2> = self.initializer.init(shape, device).val();
        if let Some(p) = options.padding_idx {
            weight = weight.slice_fill([p..p + 1, 0..self.embedding_dim], 0.0);
        }
        Ok(EmbeddingBag {
            weight: Param::from_tensor(weight),
            options,
            mode: self.mode,
            include_last_offset: self.include_last_offset,
        })
    }

    /// Builds the layer; panics with the [`EmbeddingError`] message on a bad config.
    pub fn init<B: EmbeddingBackend>(&self, device: &B::Device) -> EmbeddingBag<B> {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Bags of ids reduced to one vector each (sum, mean or max), without a `[tokens, D]` output:
/// PyTorch's `nn.EmbeddingBag`, on the same backend trait and backward as
/// [`Embedding`](crate::Embedding), row-sparse gradients included.
///
/// Padding entries are left out of every reduction (a mean divides by the count of
/// non-padding entries); empty and all-padding bags give zeros; in mode max ties go to the
/// first maximum and the gradient to the arg-max rows. Unlike PyTorch, mode max supports
/// `sparse`; like PyTorch, it refuses `scale_grad_by_freq` and `per_sample_weights`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::{BagMode, EmbeddingBagConfig};
///
/// let device = Default::default();
/// let bag = EmbeddingBagConfig::new(100, 8).with_mode(BagMode::Sum).init::<NdArray>(&device);
/// let ids = Tensor::<NdArray, 1, Int>::from_ints([4, 7, 7, 1, 9], &device);
/// let offsets = Tensor::<NdArray, 1, Int>::from_ints([0, 3], &device); // bags [4, 7, 7], [1, 9]
/// assert_eq!(bag.forward(ids, offsets, None).dims(), [2, 8]);
/// ```
#[derive(Module, Debug)]
pub struct EmbeddingBag<B: Backend> {
    /// The table, `[num_embeddings, embedding_dim]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The lookup options, validated (not in the record: they come from the config).
    options: EmbeddingOptions,
    /// The reduction.
    mode: BagMode,
    /// Whether the offsets carry the end of the last bag.
    include_last_offset: bool,
}

impl<B: EmbeddingBackend> EmbeddingBag<B> {
    /// A bag holding `weight` `[V, D]` as it is (the padding row is kept); with `freeze` the
    /// weight gets no gradient.
    pub fn from_pretrained(
        weight: Tensor<B, 2>,
        freeze: bool,
        options: EmbeddingOptions,
        mode: BagMode,
        include_last_offset: bool,
    ) -> Result<Self, EmbeddingError> {
        let [num_embeddings, embedding_dim] = weight.dims();
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(EmbeddingError::InvalidWeightShape {
                shape: vec![num_embeddings, embedding_dim],
            });
        }
        options.validate(num_embeddings)?;
        check_bag_options(mode, &options, None)?;
        Ok(Self {
            weight: Param::from_tensor(weight).set_require_grad(!freeze),
            options,
            mode,
            include_last_offset,
        })
    }

    /// `indices` `[N]` split into bags by CSR `offsets`, giving `[bags, D]`;
    /// `per_sample_weights` `[N]` (mode sum only) scale each row and get a gradient.
    ///
    /// # Panics
    /// On bad input, with the [`EmbeddingError`] message; see [`try_forward`](Self::try_forward).
    pub fn forward(
        &self,
        indices: Tensor<B, 1, Int>,
        offsets: Tensor<B, 1, Int>,
        per_sample_weights: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 2> {
        self.try_forward(indices, offsets, per_sample_weights)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward`](Self::forward), returning bad input (offsets, weights, indices) as an error.
    pub fn try_forward(
        &self,
        indices: Tensor<B, 1, Int>,
        offsets: Tensor<B, 1, Int>,
        per_sample_weights: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>, EmbeddingError> {
        try_embedding_bag(
            self.weight.val(),
            indices,
            offsets,
            per_sample_weights,
            self.include_last_offset,
            self.mode,
            &self.options,
        )
    }

    /// Fixed-length bags: each row of `indices` `[B, L]` is a bag, giving `[B, D]`.
    pub fn forward_fixed(
        &self,
        indices: Tensor<B, 2, Int>,
        per_sample_weights: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        self.try_forward_fixed(indices, per_sample_weights)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`forward_fixed`](Self::forward_fixed), returning bad input as an error.
    pub fn try_forward_fixed(
        &self,
        indices: Tensor<B, 2, Int>,
        per_sample_weights: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>, EmbeddingError> {
        try_embedding_bag_fixed(
            self.weight.val(),
            indices,
            per_sample_weights,
            self.mode,
            &self.options,
        )
    }

    /// PyTorch's in-place `max_norm` renormalisation of the rows `indices` reference (as
    /// [`Embedding::renorm`](crate::Embedding::renorm)); call it before a forward to leave the
    /// stored weight as PyTorch's forward does. Does nothing without `max_norm`.
    ///
    /// # Panics
    /// On an index outside `0..num_embeddings`, naming it.
    pub fn renorm<const D: usize>(&mut self, indices: Tensor<B, D, Int>) {
        if self.options.max_norm.is_some()
            && let Err(err) = check_indices(&indices, self.weight.dims()[0])
        {
            panic!("{err}");
        }
        renorm_param(&mut self.weight, indices, &self.options);
    }

    /// The lookup options.
    pub fn options(&self) -> EmbeddingOptions {
        self.options
    }

    /// The reduction.
    pub fn mode(&self) -> BagMode {
        self.mode
    }

    /// Whether the offsets carry the end of the last bag.
    pub fn include_last_offset(&self) -> bool {
        self.include_last_offset
    }
}

impl<B: SparseGradients> EmbeddingBag<B> {
    /// Takes the row-sparse gradient of the weight after `backward()` (with `sparse`).
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
