//! The configs of the sparse-aware optimizers: a [`SparseRule`] for the sparse weights paired
//! with burn's dense optimizer of the same family, gradient clipping for both.

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    AdaGrad, AdaGradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Sgd, SgdConfig, SimpleOptimizer,
};
use burn::tensor::backend::AutodiffBackend;

use super::{SparseGradients, SparseOptimizer, SparseRule};

/// `dense` with `clipping`, which [`SparseOptimizer::new`] then also applies to the rows.
fn with_clipping<O, M, B>(
    dense: OptimizerAdaptor<O, M, B>,
    clipping: &Option<GradientClippingConfig>,
) -> OptimizerAdaptor<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    match clipping {
        Some(clipping) => dense.with_grad_clipping(clipping.init()),
        None => dense,
    }
}

/// SGD for sparse weights, burn's `Sgd` for the rest. Lazy on purpose, as PyTorch's sparse SGD:
/// weight decay reaches the rows a batch touched only.
#[derive(Config, Debug)]
pub struct SparseSgdConfig {
    /// Gradient clipping of every parameter, the sparse weights' rows included (see
    /// [`SparseOptimizer`]); set with `with_grad_clipping`.
    #[config(default = "None")]
    pub clipping: Option<GradientClippingConfig>,
    /// L2 penalty (touched rows only for sparse weights).
    #[config(default = 0.0)]
    pub weight_decay: f64,
}

impl SparseSgdConfig {
    /// The optimizer for a model `M`.
    pub fn init<B: SparseGradients, M: AutodiffModule<B>>(
        &self,
    ) -> SparseOptimizer<OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>, B> {
        let dense = SgdConfig::new()
            .with_weight_decay(
                (self.weight_decay != 0.0)
                    .then(|| WeightDecayConfig::new(self.weight_decay as f32)),
            )
            .init();
        SparseOptimizer::new(self.rule(), with_clipping(dense, &self.clipping))
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::Sgd {
            weight_decay: self.weight_decay,
        }
    }
}

/// PyTorch's Adagrad for sparse weights, burn's `AdaGrad` for the rest. Lazy on purpose, as
/// PyTorch's sparse Adagrad: the accumulators of untouched rows do not move.
#[derive(Config, Debug)]
pub struct SparseAdagradConfig {
    /// Gradient clipping of every parameter, the sparse weights' rows included (see
    /// [`SparseOptimizer`]); set with `with_grad_clipping`.
    #[config(default = "None")]
    pub clipping: Option<GradientClippingConfig>,
    /// Learning-rate decay per step.
    #[config(default = 0.0)]
    pub lr_decay: f64,
    /// Initial value of the accumulators of sparse weights (burn's dense `AdaGrad` starts at 0).
    #[config(default = 0.0)]
    pub initial_accumulator_value: f64,
    /// Added to the denominator (PyTorch's default).
    #[config(default = 1e-10)]
    pub eps: f64,
}

impl SparseAdagradConfig {
    /// The optimizer for a model `M`.
    pub fn init<B: SparseGradients, M: AutodiffModule<B>>(
        &self,
    ) -> SparseOptimizer<OptimizerAdaptor<AdaGrad, M, B>, B> {
        let dense = AdaGradConfig::new()
            .with_lr_decay(self.lr_decay)
            .with_epsilon(self.eps as f32)
            .init();
        SparseOptimizer::new(self.rule(), with_clipping(dense, &self.clipping))
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::Adagrad {
            lr_decay: self.lr_decay,
            initial_accumulator_value: self.initial_accumulator_value,
            eps: self.eps,
        }
    }
}

/// Row-wise Adagrad (FBGEMM's `EXACT_ROWWISE_ADAGRAD`, see [`SparseRule::RowwiseAdagrad`]) for
/// sparse weights, burn's `AdaGrad` for the rest. The state of a `[V, D]` table is one float
/// per row, `[V, 1]`. Lazy on purpose: the state and the weight decay of untouched rows do not
/// move.
#[derive(Config, Debug)]
pub struct RowwiseAdagradConfig {
    /// Gradient clipping of every parameter, the sparse weights' rows included (see
    /// [`SparseOptimizer`]); set with `with_grad_clipping`.
    #[config(default = "None")]
    pub clipping: Option<GradientClippingConfig>,
    /// Added to the denominator (FBGEMM's default).
    #[config(default = 1e-8)]
    pub eps: f64,
    /// L2 penalty (touched rows only for sparse weights).
    #[config(default = 0.0)]
    pub weight_decay: f64,
}

impl RowwiseAdagradConfig {
    /// The optimizer for a model `M`.
    pub fn init<B: SparseGradients, M: AutodiffModule<B>>(
        &self,
    ) -> SparseOptimizer<OptimizerAdaptor<AdaGrad, M, B>, B> {
        let dense = AdaGradConfig::new()
            .with_epsilon(self.eps as f32)
            .with_weight_decay(
                (self.weight_decay != 0.0)
                    .then(|| WeightDecayConfig::new(self.weight_decay as f32)),
            )
            .init();
        SparseOptimizer::new(self.rule(), with_clipping(dense, &self.clipping))
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::RowwiseAdagrad {
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// Lazy Adam (PyTorch's `SparseAdam`) for sparse weights, burn's `Adam` for the rest. Lazy on
/// purpose: the moments of rows a batch did not touch do not decay, and those rows do not move.
#[derive(Config, Debug)]
pub struct LazyAdamConfig {
    /// Gradient clipping of every parameter, the sparse weights' rows included (see
    /// [`SparseOptimizer`]); set with `with_grad_clipping`.
    #[config(default = "None")]
    pub clipping: Option<GradientClippingConfig>,
    /// First-moment decay.
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Second-moment decay.
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Added to the denominator (PyTorch's default, not burn's 1e-5).
    #[config(default = 1e-8)]
    pub eps: f64,
}

impl LazyAdamConfig {
    /// The optimizer for a model `M`.
    pub fn init<B: SparseGradients, M: AutodiffModule<B>>(
        &self,
    ) -> SparseOptimizer<OptimizerAdaptor<Adam, M, B>, B> {
        let dense = AdamConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.eps as f32)
            .init();
        SparseOptimizer::new(self.rule(), with_clipping(dense, &self.clipping))
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::LazyAdam {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            eps: self.eps,
            weight_decay: 0.0,
        }
    }
}

/// Lazy AdamW for sparse weights (decoupled decay on the touched rows), burn's `AdamW` for the
/// rest. Lazy on purpose: untouched rows neither decay nor move, and their moments stay.
#[derive(Config, Debug)]
pub struct LazyAdamWConfig {
    /// Gradient clipping of every parameter, the sparse weights' rows included (see
    /// [`SparseOptimizer`]); set with `with_grad_clipping`.
    #[config(default = "None")]
    pub clipping: Option<GradientClippingConfig>,
    /// First-moment decay.
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Second-moment decay.
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Added to the denominator.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Decoupled weight decay (PyTorch's default).
    #[config(default = 1e-2)]
    pub weight_decay: f64,
}

impl LazyAdamWConfig {
    /// The optimizer for a model `M`.
    pub fn init<B: SparseGradients, M: AutodiffModule<B>>(
        &self,
    ) -> SparseOptimizer<OptimizerAdaptor<AdamW, M, B>, B> {
        let dense = AdamWConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init();
        SparseOptimizer::new(self.rule(), with_clipping(dense, &self.clipping))
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::LazyAdam {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// `with_grad_clipping` for each config: one builder that takes a `GradientClippingConfig` or an
/// `Option` of one (the derived `with_clipping` takes the `Option` alone).
macro_rules! with_grad_clipping {
    ($($config:ty),*) => {$(
        impl $config {
            /// Clips every gradient as burn's `with_grad_clipping` does, the sparse weights' rows
            /// included: by value, each summed row value clamped; by norm, each table's whole
            /// summed gradient. Takes a `GradientClippingConfig` or an `Option` of one.
            pub fn with_grad_clipping(
                mut self,
                clipping: impl Into<Option<GradientClippingConfig>>,
            ) -> Self {
                self.clipping = clipping.into();
                self
            }
        }
    )*};
}

with_grad_clipping!(
    SparseSgdConfig,
    SparseAdagradConfig,
    RowwiseAdagradConfig,
    LazyAdamConfig,
    LazyAdamWConfig
);
