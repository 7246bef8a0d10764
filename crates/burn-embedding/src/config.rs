//! [`EmbeddingConfig`]: PyTorch's `nn.Embedding` arguments as a burn config.

use burn::config::Config;
use burn::module::Param;
use burn::nn::Initializer;
use burn::tensor::Tensor;

use crate::options::{normalize_padding_idx, validate_norm};
use crate::{Embedding, EmbeddingBackend, EmbeddingError, EmbeddingOptions, NormType};

/// Configuration of an [`Embedding`], with PyTorch's names and defaults.
///
/// ```
/// use burn::backend::NdArray;
/// use burn_embedding::EmbeddingConfig;
///
/// let emb = EmbeddingConfig::new(1000, 64)
///     .with_padding_idx(Some(-1)) // the last row, 999
///     .with_max_norm(Some(1.0))
///     .with_sparse(true)
///     .init::<NdArray>(&Default::default());
/// assert_eq!(emb.options().padding_idx, Some(999));
/// ```
#[derive(Config, Debug)]
pub struct EmbeddingConfig {
    /// Number of rows (vocabulary size).
    pub num_embeddings: usize,
    /// Size of each row.
    pub embedding_dim: usize,
    /// Row that gets no gradient and is zeroed at init; negative values count from the end
    /// (valid: `-num_embeddings..num_embeddings`).
    pub padding_idx: Option<i64>,
    /// Rows referenced by a forward whose norm exceeds this are rescaled to it.
    pub max_norm: Option<f64>,
    /// The `p` of the norm used with `max_norm` (`p > 0`, or infinity).
    #[config(default = "NormType::L2")]
    pub norm_type: NormType,
    /// Divide each row's gradient by the number of times its index occurs in the batch.
    #[config(default = false)]
    pub scale_grad_by_freq: bool,
    /// Produce row-sparse gradients (see [`RowSparseGradient`](crate::RowSparseGradient)).
    #[config(default = false)]
    pub sparse: bool,
    /// Bit-identical backward on every run (see
    /// [`EmbeddingOptions::deterministic`](crate::EmbeddingOptions::deterministic)).
    #[config(default = true)]
    pub deterministic: bool,
    /// Initializer of the weight, N(0, 1) as in PyTorch.
    #[config(default = "Initializer::Normal{mean: 0.0, std: 1.0}")]
    pub initializer: Initializer,
}

impl EmbeddingConfig {
    /// The options with `padding_idx` normalised, or the error naming the bad value.
    pub fn options(&self) -> Result<EmbeddingOptions, EmbeddingError> {
        if self.num_embeddings == 0 || self.embedding_dim == 0 {
            return Err(EmbeddingError::EmptyShape {
                num_embeddings: self.num_embeddings,
                embedding_dim: self.embedding_dim,
            });
        }
        validate_norm(self.max_norm, self.norm_type)?;
        Ok(EmbeddingOptions {
            padding_idx: normalize_padding_idx(self.padding_idx, self.num_embeddings)?,
            max_norm: self.max_norm,
            norm_type: self.norm_type,
            scale_grad_by_freq: self.scale_grad_by_freq,
            sparse: self.sparse,
            deterministic: self.deterministic,
        })
    }

    /// Builds the layer, or returns the error naming the bad value.
    pub fn try_init<B: EmbeddingBackend>(
        &self,
        device: &B::Device,
    ) -> Result<Embedding<B>, EmbeddingError> {
        let options = self.options()?;
        let shape = [self.num_embeddings, self.embedding_dim];
        let mut weight: Tensor<B, 2> = self.initializer.init(shape, device).val();
        if let Some(p) = options.padding_idx {
            // PyTorch zeroes the padding row at init (and only then). Detached: on an autodiff
            // backend the fill makes the weight a non-leaf, which no parameter can be.
            weight = weight
                .slice_fill([p..p + 1, 0..self.embedding_dim], 0.0)
                .detach();
        }
        Ok(Embedding::new(Param::from_tensor(weight), options))
    }

    /// Builds the layer; panics with the [`EmbeddingError`] message on a bad config.
    pub fn init<B: EmbeddingBackend>(&self, device: &B::Device) -> Embedding<B> {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    /// On an autodiff backend the padding row is zeroed and the weight stays a trainable leaf.
    #[test]
    fn padding_on_autodiff_gives_a_trainable_leaf() {
        type Ad = burn::backend::Autodiff<B>;
        let device = Default::default();
        let emb = EmbeddingConfig::new(5, 2)
            .with_padding_idx(Some(1))
            .init::<Ad>(&device);
        let out: Tensor<Ad, 2> = emb.forward(burn::tensor::Tensor::from_ints([1, 2], &device));
        let grads = out.sum().backward();
        assert_eq!(emb.weight.grad(&grads).unwrap().dims(), [5, 2]);
        let row: Vec<f32> = emb
            .weight
            .val()
            .slice([1..2, 0..2])
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(row, vec![0.0, 0.0]);
    }

    #[test]
    fn defaults_match_pytorch() {
        let config = EmbeddingConfig::new(10, 3);
        assert_eq!(config.padding_idx, None);
        assert_eq!(config.max_norm, None);
        assert_eq!(config.norm_type, NormType(2.0));
        assert!(!config.scale_grad_by_freq && !config.sparse);
        assert!(config.deterministic);
    }

    #[test]
    fn negative_padding_idx_is_normalised() {
        let options = EmbeddingConfig::new(10, 3)
            .with_padding_idx(Some(-2))
            .options();
        assert_eq!(options.unwrap().padding_idx, Some(8));
        let options = EmbeddingConfig::new(10, 3)
            .with_padding_idx(Some(-10))
            .options();
        assert_eq!(options.unwrap().padding_idx, Some(0));
    }

    #[test]
    fn out_of_range_padding_idx_is_an_error_naming_it() {
        for p in [10, -11, i64::MAX] {
            let err = EmbeddingConfig::new(10, 3)
                .with_padding_idx(Some(p))
                .try_init::<B>(&Default::default())
                .unwrap_err();
            assert_eq!(
                err,
                EmbeddingError::PaddingIdxOutOfRange {
                    padding_idx: p,
                    num_embeddings: 10
                }
            );
            assert!(err.to_string().contains(&p.to_string()));
        }
    }

    #[test]
    fn bad_norms_and_shapes_are_errors() {
        let c = |f: fn(EmbeddingConfig) -> EmbeddingConfig| f(EmbeddingConfig::new(4, 2)).options();
        assert!(matches!(
            c(|c| c.with_norm_type(NormType(0.0))),
            Err(EmbeddingError::InvalidNormType { .. })
        ));
        assert!(matches!(
            c(|c| c.with_norm_type(NormType(f64::NAN))),
            Err(EmbeddingError::InvalidNormType { .. })
        ));
        assert!(c(|c| c.with_norm_type(NormType::INFINITY)).is_ok());
        assert!(matches!(
            c(|c| c.with_max_norm(Some(-1.0))),
            Err(EmbeddingError::InvalidMaxNorm { max_norm }) if max_norm == -1.0
        ));
        assert!(matches!(
            EmbeddingConfig::new(0, 2).options(),
            Err(EmbeddingError::EmptyShape { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "padding_idx 7 is out of range")]
    fn init_panics_with_the_message() {
        EmbeddingConfig::new(5, 2)
            .with_padding_idx(Some(7))
            .init::<B>(&Default::default());
    }

    #[test]
    fn padding_row_is_zero_at_init_and_others_are_not() {
        let emb = EmbeddingConfig::new(6, 4)
            .with_padding_idx(Some(-1))
            .init::<B>(&Default::default());
        let w = emb.weight.val().into_data().to_vec::<f32>().unwrap();
        assert!(
            w[20..24].iter().all(|&x| x == 0.0),
            "row 5 is the padding row"
        );
        assert!(w[..20].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn config_with_infinite_norm_round_trips_through_json() {
        let config = EmbeddingConfig::new(4, 2)
            .with_max_norm(Some(1.0))
            .with_norm_type(NormType::INFINITY);
        let json = serde_json::to_string(&config).unwrap();
        let back: EmbeddingConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.norm_type, NormType::INFINITY, "{json}");
    }
}
