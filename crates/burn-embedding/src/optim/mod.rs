//! Sparse-aware optimizers: burn [`Optimizer`]s that update an embedding with a row-sparse
//! gradient at the cost of the rows a batch touched, so that burn-train's `Learner` (or a
//! hand-written loop) trains a huge vocabulary at the cost of the tokens in a batch.
//!
//! Each optimizer pairs a [`SparseRule`] for the sparse weights with burn's dense optimizer of
//! the same family for every other parameter of the model:
//!
//! | config | sparse weights | dense parameters |
//! |---|---|---|
//! | [`SparseSgdConfig`] | SGD (+ weight decay on touched rows) | burn's `Sgd` |
//! | [`SparseAdagradConfig`] | PyTorch's sparse Adagrad | burn's `AdaGrad` |
//! | [`LazyAdamConfig`] | lazy Adam (PyTorch's `SparseAdam`) | burn's `Adam` |
//! | [`LazyAdamWConfig`] | lazy AdamW (decoupled decay on touched rows) | burn's `AdamW` |
//!
//! A step takes the pending row-sparse gradient of every weight that has one (see
//! [`SparseGradients`]), advances that weight's state and removes its marker from the
//! `GradientsParams`, hands the rest to the dense optimizer, and leaves each sparse weight to add
//! its rows when it is first read (the next forward): by then burn-train's `Learner`, which steps
//! a clone of its model, has dropped the old one, so the rows go in place instead of into a copy
//! of the whole table. The state (step counts and accumulators) is part of the
//! optimizer's record, so saving and loading it resumes training exactly.

mod rule;
mod state;

use burn::config::Config;
use std::sync::{Mutex, PoisonError};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId, ParamMapper};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    AdaGrad, AdaGradConfig, Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, LearningRate,
    MultiGradientsParams, Optimizer, Sgd, SgdConfig,
};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use hashbrown::HashMap;

pub use rule::SparseRule;
pub(crate) use rule::select_add;
pub use state::{RowState, RowStateRecord};

use crate::{RowSparseGradient, SparseGradients};

/// A sparse-aware optimizer: [`SparseRule`] for weights with a row-sparse gradient, `O` (a burn
/// optimizer) for the rest.
#[derive(Clone)]
pub struct SparseOptimizer<O, B: SparseGradients> {
    rule: SparseRule,
    dense: O,
    states: HashMap<ParamId, RowState<B::InnerBackend>>,
}

impl<O, B: SparseGradients> SparseOptimizer<O, B> {
    /// Pairs `rule` with the dense optimizer `dense`.
    pub fn new(rule: SparseRule, dense: O) -> Self {
        Self {
            rule,
            dense,
            states: HashMap::new(),
        }
    }

    /// The rule applied to sparse weights.
    pub fn rule(&self) -> SparseRule {
        self.rule
    }

    /// Advances the state of every weight with a pending row-sparse gradient and removes its
    /// marker from `grads`; returns the rows to add to each such weight. Weights are only read.
    fn sparse_deltas<M: AutodiffModule<B>>(
        &mut self,
        lr: LearningRate,
        module: &M,
        grads: &mut GradientsParams,
    ) -> HashMap<ParamId, RowSparseGradient<B::InnerBackend>> {
        let mut visitor = SparseDeltas::<B> {
            rule: self.rule,
            lr,
            states: &mut self.states,
            grads,
            deltas: HashMap::new(),
        };
        module.visit(&mut visitor);
        visitor.deltas
    }
}

/// Phase one of a step: each sparse weight's state update and the rows to add to it.
struct SparseDeltas<'a, B: SparseGradients> {
    rule: SparseRule,
    lr: LearningRate,
    states: &'a mut HashMap<ParamId, RowState<B::InnerBackend>>,
    grads: &'a mut GradientsParams,
    deltas: HashMap<ParamId, RowSparseGradient<B::InnerBackend>>,
}

impl<B: SparseGradients> ModuleVisitor<B> for SparseDeltas<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if D != 2 {
            return;
        }
        let tensor = param.val();
        let Some(rows) = B::sparse_grad_take(&tensor.clone().into_primitive().tensor()) else {
            return;
        };
        // The marker that stood in for the dense gradient.
        self.grads.remove::<B::InnerBackend, D>(param.id);
        let state = self.states.entry(param.id).or_default();
        let weight = tensor.inner().into_primitive().tensor();
        let delta = B::sparse_delta(&weight, rows, &self.rule, self.lr, state);
        self.deltas.insert(param.id, delta);
    }
}

/// Phase three: each sparse weight becomes a parameter that adds its rows when first read.
///
/// Not at once, because burn-train's `Learner` steps a clone of its model
/// (`self.model = self.model().optimize(..)`): during the step the old model still holds the
/// weight, and adding the rows then would copy the whole `[V, D]` table so as to leave the old
/// model as it was. By the first read (the next forward) the old model is gone and the rows go
/// in place. A clone that is still alive then (a snapshot of the model) keeps its values: the
/// add copies whenever the weight's storage is shared. Clones of the stepped model made before
/// the first read share one slot, and so one weight tensor and its autodiff node, as clones of an
/// ordinary parameter do.
struct AddRowsOnRead<B: SparseGradients> {
    deltas: HashMap<ParamId, RowSparseGradient<B::InnerBackend>>,
}

impl<B: SparseGradients> ModuleMapper<B> for AddRowsOnRead<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(rows) = self.deltas.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let (shape, device) = (tensor.shape(), tensor.device());
        let weight = tensor.inner().into_primitive().tensor();
        // burn 0.21 cannot give a lazy parameter an existing load/save mapper, only wrap it in
        // a new one, and wrapping it every step would nest the wrappers without end. Such a
        // parameter (rare: quantisation, precision changes) takes the rows at once.
        if format!("{mapper:?}") != format!("{:?}", ParamMapper::<Tensor<B, D>>::default()) {
            let weight = tracked::<B, D>(B::add_rows(weight, rows), require_grad);
            return Param::from_mapped_value(id, weight, mapper);
        }
        let slot = Mutex::new(RowsSlot::<B, D>::Pending(weight, rows));
        let init = move |_: &B::Device, require_grad: bool| {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let weight = match std::mem::replace(&mut *slot, RowsSlot::Failed) {
                RowsSlot::Pending(weight, rows) => {
                    tracked::<B, D>(B::add_rows(weight, rows), require_grad)
                }
                RowsSlot::Added(weight) => weight,
                RowsSlot::Failed => panic!(
                    "the sparse update of embedding weight {id} panicked when first read; it has no value"
                ),
            };
            // For the clones of the parameter made before this read, which read it later.
            *slot = RowsSlot::Added(weight.clone());
            if weight.is_require_grad() == require_grad {
                weight
            } else {
                weight.set_require_grad(require_grad)
            }
        };
        Param::uninitialized(id, init, device, require_grad, shape)
    }
}

/// The tracked parameter tensor of an updated weight.
fn tracked<B: SparseGradients, const D: usize>(
    weight: FloatTensor<B::InnerBackend>,
    require_grad: bool,
) -> Tensor<B, D> {
    let inner = Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(weight));
    Tensor::from_inner(inner).set_require_grad(require_grad)
}

/// The weight of [`AddRowsOnRead`], before and after its rows are added.
enum RowsSlot<B: SparseGradients, const D: usize> {
    Pending(
        FloatTensor<B::InnerBackend>,
        RowSparseGradient<B::InnerBackend>,
    ),
    Added(Tensor<B, D>),
    /// The add panicked.
    Failed,
}

impl<O, B, M> Optimizer<M, B> for SparseOptimizer<O, B>
where
    B: SparseGradients,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    type Record = (O::Record, HashMap<ParamId, RowStateRecord<B>>);

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        let deltas = self.sparse_deltas(lr, &module, &mut grads);
        let module = self.dense.step(lr, module, grads);
        module.map(&mut AddRowsOnRead { deltas })
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        // Pending rows are keyed by weight, whatever device computed them.
        let mut empty = GradientsParams::new();
        let deltas = self.sparse_deltas(lr, &module, &mut empty);
        let module = self.dense.step_multi(lr, module, grads);
        module.map(&mut AddRowsOnRead { deltas })
    }

    fn to_record(&self) -> Self::Record {
        let states = self
            .states
            .iter()
            .map(|(id, s)| (*id, RowStateRecord::from_state(s)))
            .collect();
        (self.dense.to_record(), states)
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        let (dense, states) = record;
        self.dense = self.dense.load_record(dense);
        self.states = states
            .into_iter()
            .map(|(id, r)| (id, r.into_state()))
            .collect();
        self
    }
}

/// SGD for sparse weights, burn's `Sgd` for the rest.
#[derive(Config, Debug)]
pub struct SparseSgdConfig {
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
        SparseOptimizer::new(
            SparseRule::Sgd {
                weight_decay: self.weight_decay,
            },
            dense,
        )
    }
}

/// PyTorch's Adagrad for sparse weights, burn's `AdaGrad` for the rest.
#[derive(Config, Debug)]
pub struct SparseAdagradConfig {
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
        SparseOptimizer::new(
            SparseRule::Adagrad {
                lr_decay: self.lr_decay,
                initial_accumulator_value: self.initial_accumulator_value,
                eps: self.eps,
            },
            dense,
        )
    }
}

/// Lazy Adam (PyTorch's `SparseAdam`) for sparse weights, burn's `Adam` for the rest.
#[derive(Config, Debug)]
pub struct LazyAdamConfig {
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
        SparseOptimizer::new(
            SparseRule::LazyAdam {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                eps: self.eps,
                weight_decay: 0.0,
            },
            dense,
        )
    }
}

/// Lazy AdamW for sparse weights (decoupled decay on the touched rows), burn's `AdamW` for the
/// rest.
#[derive(Config, Debug)]
pub struct LazyAdamWConfig {
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
        SparseOptimizer::new(
            SparseRule::LazyAdam {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                eps: self.eps,
                weight_decay: self.weight_decay,
            },
            dense,
        )
    }
}
