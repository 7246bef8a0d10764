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
//! | [`RowwiseAdagradConfig`] | FBGEMM's exact row-wise Adagrad (state `[V, 1]`) | burn's `AdaGrad` |
//! | [`LazyAdamConfig`] | lazy Adam (PyTorch's `SparseAdam`) | burn's `Adam` |
//! | [`LazyAdamWConfig`] | lazy AdamW (decoupled decay on touched rows) | burn's `AdamW` |
//!
//! A step takes the pending row-sparse gradient of every weight that has one (see
//! [`SparseGradients`]), advances that weight's state and removes its marker from the
//! `GradientsParams`, and hands the rest to the dense optimizer. A sparse weight that nothing
//! else holds (a plain training loop) is updated in place at once, in one pass over its rows; one
//! that is still held elsewhere is left to add its rows when it is first read (the next forward):
//! by then burn-train's `Learner`, which steps a clone of its model, has dropped the old one, so
//! the rows go in place instead of into a copy of the whole table. The state (step counts and accumulators) is part of the
//! optimizer's record, so saving and loading it resumes training exactly.

#[cfg(feature = "wgpu")]
mod cube;
#[cfg(feature = "ndarray")]
mod ndarray;
mod rule;
mod state;
#[cfg(feature = "tch")]
mod tch;
mod update;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::config::Config;
use std::sync::{Mutex, PoisonError};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId, ParamMapper};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    AdaGrad, AdaGradConfig, Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, LearningRate,
    MultiGradientsParams, Optimizer, Sgd, SgdConfig,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, ElementConversion, Tensor, TensorData, TensorPrimitive};
use hashbrown::HashMap;

pub use rule::SparseRule;
pub use state::{RowState, RowStateRecord};
pub use update::SparseUpdate;

use crate::backend::reference::renorm_rows;
use crate::carrier::{self, Presented, Renorm, TokenGrad};
use crate::probe;
use crate::{EmbeddingBackend, RowSparseGradient};

/// Autodiff backends whose backward can give a weight a row-sparse gradient and whose inner
/// backend runs the sparse update: the bound of the sparse-aware optimizers and of
/// [`sparse_grad_remove`](crate::sparse_grad_remove). Implemented for every `Autodiff<B, C>`
/// with `B: EmbeddingBackend + SparseUpdate` (NdArray, LibTorch, wgpu).
pub trait SparseGradients:
    AutodiffBackend<InnerBackend: SparseUpdate + EmbeddingBackend> + EmbeddingBackend
{
    /// The autodiff node id of a weight tensor, which the backward records with its rows.
    #[doc(hidden)]
    fn weight_node(weight: &FloatTensor<Self>) -> u64;
}

impl<B: EmbeddingBackend + SparseUpdate, C: CheckpointStrategy> SparseGradients for Autodiff<B, C> {
    fn weight_node(weight: &FloatTensor<Self>) -> u64 {
        weight.node.id.value
    }
}

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

    /// The last part of a step: advances the state of each weight in `found` and updates it (see
    /// [`ApplyRows`]); then the presented tickets are settled.
    fn apply<M: AutodiffModule<B>>(
        &mut self,
        lr: LearningRate,
        module: M,
        found: HashMap<ParamId, Found<B::InnerBackend>>,
    ) -> M {
        if found.is_empty() {
            return module;
        }
        let mut update = ApplyRows::<B> {
            rule: self.rule,
            lr,
            states: &mut self.states,
            found,
            settled: Vec::new(),
        };
        let module = module.map(&mut update);
        for (tickets, weight_node) in update.settled {
            carrier::settle(&tickets, weight_node);
        }
        module
    }
}

/// The row-sparse gradient of one weight, as read from the markers a step was given.
struct Found<B: Backend> {
    presented: Presented<B>,
    weight_node: u64,
}

/// The first part of a step: the rows that the markers in the step's gradients name, for each
/// sparse weight, with each marker removed from the gradients. Nothing else changes, so that a
/// panic later in the step (burn's optimizer for the other parameters) leaves the optimizer
/// state and the waiting rows as they were.
struct FindRows<'a, B: SparseGradients, G> {
    grads: &'a mut G,
    found: HashMap<ParamId, Found<B::InnerBackend>>,
    /// Inside a fused embedding's probe (see [`FusedEmbedding`](crate::FusedEmbedding)).
    in_probe: bool,
}

/// Gradients a step can be given: one `GradientsParams`, or one per device.
trait Markers<B: Backend> {
    /// Removes and returns the markers of parameter `id` (`[V, D]`), leaving dense gradients.
    fn take_markers(&mut self, id: ParamId, shape: [usize; 2]) -> Vec<Tensor<B, 2>>;

    /// Removes the gradient of a fused embedding's probe `id`, and returns the most backward
    /// passes any one device summed into it.
    fn take_probe(&mut self, id: ParamId) -> Option<f64>;
}

fn is_marker<B: Backend>(grad: &Tensor<B, 2>, [v, d]: [usize; 2]) -> bool {
    carrier::can_carry(v, d) && grad.dims() == carrier::marker_shape(v, d)
}

impl<B: Backend> Markers<B> for GradientsParams {
    fn take_markers(&mut self, id: ParamId, shape: [usize; 2]) -> Vec<Tensor<B, 2>> {
        match self.get::<B, 2>(id) {
            Some(grad) if is_marker(&grad, shape) => {
                self.remove::<B, 2>(id);
                vec![grad]
            }
            _ => Vec::new(),
        }
    }

    fn take_probe(&mut self, id: ParamId) -> Option<f64> {
        self.remove::<B, 1>(id)
            .map(|count| count.into_scalar().elem::<f64>())
    }
}

impl<B: Backend> Markers<B> for MultiGradientsParams {
    fn take_markers(&mut self, id: ParamId, shape: [usize; 2]) -> Vec<Tensor<B, 2>> {
        self.grads
            .iter_mut()
            .filter_map(|(grads, _)| grads.take_markers(id, shape).pop())
            .collect()
    }

    fn take_probe(&mut self, id: ParamId) -> Option<f64> {
        self.grads
            .iter_mut()
            .filter_map(|(grads, _)| Markers::<B>::take_probe(grads, id))
            .reduce(f64::max)
    }
}

impl<B: SparseGradients, G: Markers<B::InnerBackend>> ModuleVisitor<B> for FindRows<'_, B, G> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.in_probe = probe::is_probe(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.in_probe = false;
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.in_probe && D == 1 {
            if let Some(batches) = self.grads.take_probe(param.id) {
                assert!(
                    batches < 1.5,
                    "the gradients of {batches} backward passes were summed for one step of a \
                     model with a fused embedding (gradient accumulation, or the Learner's \
                     devices summed on the main device): each backward pass has already applied \
                     its update to the table, which cannot wait for the others. Set the Learner's \
                     grads_accumulation to 1 (with several devices: MultiDeviceOptim::OptimSharded), \
                     or train this table unfused (an Embedding with sparse: true and a \
                     sparse-aware optimizer sums exactly)"
                );
            }
            return;
        }
        if D != 2 {
            return;
        }
        let shape: [usize; 2] = param.lazy_shape().dims();
        let markers = self.grads.take_markers(param.id, shape);
        if markers.is_empty() {
            return;
        }
        let weight = param.val();
        let device = weight.device();
        let weight_node = B::weight_node(&weight.into_primitive().tensor());
        let mut presented = Presented {
            tickets: Vec::new(),
            rows: None,
            tokens: None,
            renorms: Vec::new(),
        };
        // One marker per device that computed gradients: each names the tickets made there. A
        // lone marker may hand over a lookup's rows not summed yet, for the step to sum and
        // apply in one pass.
        let keep_tokens = markers.len() == 1;
        for marker in markers {
            let more = carrier::read_marker(&marker, shape, weight_node, &device, keep_tokens)
                .expect("a marker");
            presented.tokens = more.tokens;
            presented.tickets.extend(more.tickets);
            presented.renorms.extend(more.renorms);
            presented.rows = match (presented.rows.take(), more.rows) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (a, b) => a.or(b),
            };
        }
        self.found.insert(
            param.id,
            Found {
                presented,
                weight_node,
            },
        );
    }
}

fn find_rows<B: SparseGradients, M: AutodiffModule<B>, G: Markers<B::InnerBackend>>(
    module: &M,
    grads: &mut G,
) -> HashMap<ParamId, Found<B::InnerBackend>> {
    let mut visitor = FindRows::<B, G> {
        grads,
        found: HashMap::new(),
        in_probe: false,
    };
    module.visit(&mut visitor);
    visitor.found
}

/// The last part of a step: each sparse weight's state advanced by its rows, and the weight
/// updated in place when nothing else holds it, or else made a parameter that adds the rows to
/// add when it is first read.
///
/// Not at once in the second case, because burn-train's `Learner` steps a clone of its model
/// (`self.model = self.model().optimize(..)`): during the step the old model still holds the
/// weight, and adding the rows then would copy the whole `[V, D]` table so as to leave the old
/// model as it was. By the first read (the next forward) the old model is gone and the rows go
/// in place. A clone that is still alive then (a snapshot of the model) keeps its values: the
/// add copies whenever the weight's storage is shared. Clones of the stepped model made before
/// the first read share one slot, and so one weight tensor and its autodiff node, as clones of an
/// ordinary parameter do.
struct ApplyRows<'a, B: SparseGradients> {
    rule: SparseRule,
    lr: LearningRate,
    states: &'a mut HashMap<ParamId, RowState<B::InnerBackend>>,
    found: HashMap<ParamId, Found<B::InnerBackend>>,
    settled: Vec<(Vec<u64>, u64)>,
}

impl<B: SparseGradients> ModuleMapper<B> for ApplyRows<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(found) = self.found.remove(&param.id) else {
            return param;
        };
        let Presented {
            tickets,
            rows,
            tokens,
            renorms,
        } = found.presented;
        self.settled.push((tickets, found.weight_node));
        if rows.is_none() && tokens.is_none() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let (shape, device) = (tensor.shape(), tensor.device());
        let weight = tensor.inner().into_primitive().tensor();
        let state = self.states.entry(id).or_default();
        // Nothing else holds the weight (a plain training loop): the step writes its rows in
        // place now, in one pass over the rows (summing a lookup's token rows on the way).
        if renorms.is_empty() && B::InnerBackend::embedding_weight_is_unique(&weight) {
            debug_assert!(tokens.is_none() || rows.is_none(), "tokens come alone");
            let weight = match (tokens, rows) {
                (Some(t), _) => B::InnerBackend::embedding_fused_update(
                    weight, t.grad, t.indices, &t.options, &self.rule, self.lr, state,
                ),
                (None, Some(rows)) => B::InnerBackend::embedding_sparse_update(
                    weight, rows, &self.rule, self.lr, state,
                ),
                (None, None) => unreachable!("checked above"),
            };
            return Param::from_mapped_value(id, tracked::<B, D>(weight, require_grad), mapper);
        }
        let Some(rows) = rows.or_else(|| tokens.and_then(TokenGrad::rows)) else {
            return Param::from_mapped_value(id, tracked::<B, D>(weight, require_grad), mapper);
        };
        let renorm = renorm_delta::<B::InnerBackend>(&weight, &rows, &renorms);
        let delta = rows_to_add(&self.rule, self.lr, &weight, rows, renorm, state);
        // burn 0.21 cannot give a lazy parameter an existing load/save mapper, only wrap it in
        // a new one, and wrapping it every step would nest the wrappers without end. Such a
        // parameter (rare: quantisation, precision changes) takes the rows at once.
        if format!("{mapper:?}") != format!("{:?}", ParamMapper::<Tensor<B, D>>::default()) {
            let weight = tracked::<B, D>(
                B::InnerBackend::embedding_add_rows(weight, delta),
                require_grad,
            );
            return Param::from_mapped_value(id, weight, mapper);
        }
        let slot = Mutex::new(RowsSlot::<B, D>::Pending(weight, delta));
        let init = move |_: &B::Device, require_grad: bool| {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let weight = match std::mem::replace(&mut *slot, RowsSlot::Failed) {
                RowsSlot::Pending(weight, rows) => tracked::<B, D>(
                    B::InnerBackend::embedding_add_rows(weight, rows),
                    require_grad,
                ),
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

/// `renormalised - stored` for the rows of `rows` that the presented lookups renormalised
/// (`max_norm`), or `None` when none did: PyTorch's `embedding_renorm_` writes them into the
/// weight during the forward, so that the update applies to the renormalised rows. A forward
/// under burn-train's `Learner` (`&self`) cannot, so the step does. Renormalising is
/// idempotent: rows that `forward_mut` already renormalised do not change.
fn renorm_delta<B: Backend>(
    weight: &FloatTensor<B>,
    rows: &RowSparseGradient<B>,
    renorms: &[(Renorm, Vec<i64>)],
) -> Option<Tensor<B, 2>> {
    if renorms.is_empty() {
        return None;
    }
    let stored = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(weight.clone()))
        .select(0, rows.ids.clone());
    let ids = rows.ids_vec();
    let mut current = stored.clone();
    let mut groups: Vec<(Renorm, Vec<i64>)> = Vec::new();
    for (renorm, read) in renorms {
        match groups.iter_mut().find(|(r, _)| r == renorm) {
            Some((_, all)) => all.extend(read),
            None => groups.push((*renorm, read.clone())),
        }
    }
    for (renorm, mut read) in groups {
        read.sort_unstable();
        read.dedup();
        let renormed = renorm_rows(current.clone(), renorm.max_norm, renorm.norm_type);
        current = if read.len() == ids.len() {
            renormed
        } else {
            let keep: Vec<bool> = ids
                .iter()
                .map(|id| read.binary_search(id).is_ok())
                .collect();
            let mask = Tensor::<B, 1, Bool>::from_data(
                TensorData::new(keep, [ids.len()]),
                &current.device(),
            )
            .unsqueeze_dim::<2>(1)
            .expand(current.dims());
            current.mask_where(mask, renormed)
        };
    }
    Some(current - stored)
}

/// The rows to add to `weight` for one step of `rule` on the gradient `rows`, with `state`
/// advanced; `renorm` (`renormalised - stored` for those rows, see [`renorm_delta`]) is written
/// into the rows before the update: the update then reads the renormalised rows, as PyTorch's
/// does after its forward renormalised the weight in place.
pub(crate) fn rows_to_add<B: SparseUpdate>(
    rule: &SparseRule,
    lr: f64,
    weight: &FloatTensor<B>,
    mut rows: RowSparseGradient<B>,
    renorm: Option<Tensor<B, 2>>,
    state: &mut RowState<B>,
) -> RowSparseGradient<B> {
    let Some(renorm) = renorm else {
        return B::embedding_sparse_delta(weight, rows, rule, lr, state);
    };
    // The rule reads the stored rows for an L2 penalty: `weight_decay * (w + r)` is what it
    // should have read, so the gradient carries the `weight_decay * r` part.
    let l2 = rule.l2_decay();
    if l2 != 0.0 {
        rows.values = rows.values + renorm.clone().mul_scalar(l2);
    }
    let mut delta = B::embedding_sparse_delta(weight, rows, rule, lr, state);
    delta.values = delta.values + renorm.mul_scalar(rule.decoupled_keep(lr));
    delta
}

/// The tracked parameter tensor of an updated weight.
fn tracked<B: SparseGradients, const D: usize>(
    weight: FloatTensor<B::InnerBackend>,
    require_grad: bool,
) -> Tensor<B, D> {
    let inner = Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(weight));
    Tensor::from_inner(inner).set_require_grad(require_grad)
}

/// The weight of [`ApplyRows`], before and after its rows are added.
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
        let found = find_rows::<B, M, _>(&module, &mut grads);
        let module = self.dense.step(lr, module, grads);
        self.apply(lr, module, found)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, mut grads: MultiGradientsParams) -> M {
        // Each device's gradients hold a marker naming the tickets of the batches it computed,
        // whatever fork of the model computed them.
        let found = find_rows::<B, M, _>(&module, &mut grads);
        let module = self.dense.step_multi(lr, module, grads);
        self.apply(lr, module, found)
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
        SparseOptimizer::new(self.rule(), dense)
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::Sgd {
            weight_decay: self.weight_decay,
        }
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
        SparseOptimizer::new(self.rule(), dense)
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
/// per row, `[V, 1]`.
#[derive(Config, Debug)]
pub struct RowwiseAdagradConfig {
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
        SparseOptimizer::new(self.rule(), dense)
    }

    /// The rule of the sparse weights (also what a fused table takes).
    pub fn rule(&self) -> SparseRule {
        SparseRule::RowwiseAdagrad {
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
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
        SparseOptimizer::new(self.rule(), dense)
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
        SparseOptimizer::new(self.rule(), dense)
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
