//! [`SparseOptimizer`]: a burn [`Optimizer`] that steps the sparse weights of a model by their
//! rows and hands every other parameter to a dense burn optimizer.
//!
//! A step runs in three parts, so that a failure anywhere leaves the optimizer and the waiting
//! rows as they were: [`FindRows`] reads the rows every sparse weight's markers name (nothing
//! changes), burn's optimizer steps the rest, and [`ApplyRows`] advances each sparse weight's
//! state and updates it; the tickets are settled last.

use std::sync::{Mutex, PoisonError};

use burn::grad_clipping::GradientClipping;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId, ParamMapper};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, ElementConversion, Tensor, TensorData, TensorPrimitive};
use hashbrown::HashMap;

use super::{Rounding, RowState, RowStateRecord, SparseGradients, SparseRule, SparseUpdate};
use crate::RowSparseGradient;
use crate::backend::reference::renorm_rows;
use crate::backend::write_back;
use crate::sparse::marker;
use crate::sparse::probe;
use crate::sparse::reads::read_marker;
use crate::sparse::registry::{self, Presented, Renorm};
use crate::util;

/// A dense optimizer as [`SparseOptimizer`] pairs it: its gradient clipping, if any, is applied
/// to the sparse weights' rows as burn applies it to every other parameter's gradient.
pub trait DenseOptimizer {
    /// The clipping the optimizer applies to each parameter's gradient.
    fn grad_clipping(&self) -> Option<GradientClipping> {
        None
    }
}

impl<O: SimpleOptimizer<B::InnerBackend>, M: AutodiffModule<B>, B: AutodiffBackend> DenseOptimizer
    for OptimizerAdaptor<O, M, B>
{
    fn grad_clipping(&self) -> Option<GradientClipping> {
        OptimizerAdaptor::grad_clipping(self).cloned()
    }
}

impl<O, B: SparseGradients> DenseOptimizer for SparseOptimizer<O, B> {
    fn grad_clipping(&self) -> Option<GradientClipping> {
        self.clipping.clone()
    }
}

/// A sparse-aware optimizer: [`SparseRule`] for weights with a row-sparse gradient, `O` (a burn
/// optimizer) for the rest. The dense optimizer's gradient clipping (burn's
/// `with_grad_clipping`) applies to the sparse weights too, to each table's rows exactly as to
/// its dense gradient: by value, each summed row value clamped; by norm, the norm of the whole
/// summed gradient.
#[derive(Clone)]
pub struct SparseOptimizer<O, B: SparseGradients> {
    rule: SparseRule,
    rounding: Rounding,
    dense: O,
    clipping: Option<GradientClipping>,
    states: HashMap<ParamId, RowState<B::InnerBackend>>,
}

impl<O: DenseOptimizer, B: SparseGradients> SparseOptimizer<O, B> {
    /// Pairs `rule` with the dense optimizer `dense` (and its gradient clipping).
    pub fn new(rule: SparseRule, dense: O) -> Self {
        Self {
            rule,
            rounding: Rounding::Nearest,
            clipping: dense.grad_clipping(),
            dense,
            states: HashMap::new(),
        }
    }
}

impl<O, B: SparseGradients> SparseOptimizer<O, B> {
    /// The rule applied to sparse weights.
    pub fn rule(&self) -> SparseRule {
        self.rule
    }

    /// This optimizer writing the rows of sparse tables stored in f16 or bf16 with `rounding`
    /// (to nearest by default; tables in f32 ignore it). The rules compute in f32 either way.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// How the rows of half-precision tables are written.
    pub fn rounding(&self) -> Rounding {
        self.rounding
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
            rounding: self.rounding,
            lr,
            clipping: self.clipping.as_ref(),
            states: &mut self.states,
            found,
            settled: Vec::new(),
        };
        let module = module.map(&mut update);
        for (tickets, weight_node) in update.settled {
            registry::settle(&tickets, weight_node);
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

    /// Removes the gradients of a fused embedding's probe `id`, one per device.
    fn take_probe(&mut self, id: ParamId) -> Vec<f32>;
}

impl<B: Backend> Markers<B> for GradientsParams {
    fn take_markers(&mut self, id: ParamId, shape: [usize; 2]) -> Vec<Tensor<B, 2>> {
        match self.get::<B, 2>(id) {
            Some(grad) if marker::is_marker_shape(grad.dims(), shape) => {
                self.remove::<B, 2>(id);
                vec![grad]
            }
            _ => Vec::new(),
        }
    }

    fn take_probe(&mut self, id: ParamId) -> Vec<f32> {
        self.remove::<B, 1>(id)
            .map(|value| value.into_scalar().elem::<f32>())
            .into_iter()
            .collect()
    }
}

impl<B: Backend> Markers<B> for MultiGradientsParams {
    fn take_markers(&mut self, id: ParamId, shape: [usize; 2]) -> Vec<Tensor<B, 2>> {
        self.grads
            .iter_mut()
            .filter_map(|(grads, _)| grads.take_markers(id, shape).pop())
            .collect()
    }

    fn take_probe(&mut self, id: ParamId) -> Vec<f32> {
        self.grads
            .iter_mut()
            .flat_map(|(grads, _)| Markers::<B>::take_probe(grads, id))
            .collect()
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
            for value in self.grads.take_probe(param.id) {
                if let Err(message) = probe::check(value) {
                    panic!("burn-embedding: {message}");
                }
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
        // One marker per device that computed gradients: each names the tickets made there. A
        // lone marker may hand over a lookup's rows not summed yet, for the step to sum and
        // apply in one pass.
        let keep_tokens = markers.len() == 1;
        let mut presented = Presented::empty();
        for marker in markers {
            let Ok(more) = read_marker(marker, shape, &device, keep_tokens) else {
                unreachable!("take_markers keeps markers only")
            };
            if keep_tokens {
                presented = more;
            } else {
                presented.merge(more);
            }
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

/// burn's gradient clipping applied to a table's summed rows as burn applies it to the table's
/// dense gradient (the rows hold every non-zero value of it).
fn clip_rows<B: Backend>(
    rows: RowSparseGradient<B>,
    clipping: &GradientClipping,
) -> RowSparseGradient<B> {
    // Half-precision rows are clipped in f32 (an f16 norm above 256 overflows) and rounded back.
    let dtype = rows.values.dtype();
    let wide = write_back::cast(rows.values, write_back::compute_dtype(dtype));
    let values = write_back::cast(clipping.clip_gradient(wide), dtype);
    RowSparseGradient::new(rows.ids, values, rows.num_embeddings)
}

/// The last part of a step: each sparse weight's state advanced by its rows, and the weight
/// updated in place when nothing else holds it, or else made a parameter that adds the rows to
/// add when it is first read. Either way the weight keeps its autodiff node
/// ([`SparseGradients::with_values`]).
///
/// Not at once in the second case, because burn-train's `Learner` steps a clone of its model
/// (`self.model = self.model().optimize(..)`): during the step the old model still holds the
/// weight, and adding the rows then would copy the whole `[V, D]` table so as to leave the old
/// model as it was. By the first read (the next forward) the old model is gone and the rows go
/// in place. A clone that is still alive then (a snapshot of the model) keeps its values: the
/// add copies whenever the weight's storage is shared. Clones of the stepped model made before
/// the first read share one slot, and so one weight tensor, as clones of an ordinary parameter do.
struct ApplyRows<'a, B: SparseGradients> {
    rule: SparseRule,
    rounding: Rounding,
    lr: LearningRate,
    clipping: Option<&'a GradientClipping>,
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
            mut rows,
            mut tokens,
            renorms,
        } = found.presented;
        self.settled.push((tickets, found.weight_node));
        if let Some(clipping) = self.clipping {
            rows = rows
                .or_else(|| tokens.take().and_then(|t| t.rows()))
                .map(|rows| clip_rows(rows, clipping));
        }
        if rows.is_none() && tokens.is_none() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let (shape, device) = (tensor.shape(), tensor.device());
        // The values apart from the weight's node, so that they have no other holder here.
        let (weight, shell) = B::split_values(tensor.into_primitive().tensor());
        let state = self.states.entry(id).or_default();
        state.rounding = self.rounding;
        let keep_node = |values| -> Tensor<B, D> {
            Tensor::from_primitive(TensorPrimitive::Float(B::with_values(
                shell.clone(),
                values,
            )))
        };
        // Nothing else holds the weight (a plain training loop): the step writes its rows in
        // place now, in one pass over the rows (summing a lookup's token rows on the way).
        if renorms.is_empty() && B::InnerBackend::embedding_weight_is_unique(&weight) {
            let weight = match (tokens, rows) {
                (Some(t), _) => B::InnerBackend::embedding_fused_update(
                    weight, t.grad, t.indices, &t.options, &self.rule, self.lr, state,
                ),
                (None, Some(rows)) => B::InnerBackend::embedding_sparse_update(
                    weight, rows, &self.rule, self.lr, state,
                ),
                (None, None) => unreachable!("checked above"),
            };
            return Param::from_mapped_value(id, keep_node(weight), mapper);
        }
        let Some(rows) = rows.or_else(|| tokens.and_then(|t| t.rows())) else {
            return Param::from_mapped_value(id, keep_node(weight), mapper);
        };
        let renorm = renorm_delta::<B::InnerBackend>(&weight, &rows, &renorms);
        let delta = rows_to_add(&self.rule, self.lr, &weight, rows, renorm, state);
        // burn 0.21 cannot give a lazy parameter an existing load/save mapper, only wrap it in
        // a new one, and wrapping it every step would nest the wrappers without end. Such a
        // parameter (rare: quantisation, precision changes) takes the rows at once.
        if !maps_nothing(&mapper, &device) {
            let weight = B::InnerBackend::embedding_add_rows(weight, delta);
            return Param::from_mapped_value(id, keep_node(weight), mapper);
        }
        let slot = Mutex::new(RowsSlot::<B, D>::Pending(weight, delta, shell));
        let init = move |_: &B::Device, require_grad: bool| {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let weight = match std::mem::replace(&mut *slot, RowsSlot::Failed) {
                RowsSlot::Pending(weight, rows, node) => {
                    let added = B::InnerBackend::embedding_add_rows(weight, rows);
                    Tensor::from_primitive(TensorPrimitive::Float(B::with_values(node, added)))
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
    // In the rules' type: the difference of two half rows would round again.
    let dtype = write_back::compute_dtype(stored.dtype());
    Some(write_back::cast(current, dtype) - write_back::cast(stored, dtype))
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
    let delta = match renorm {
        None => B::embedding_sparse_delta(weight, rows, rule, lr, state),
        Some(renorm) => {
            // The rule reads the stored rows for an L2 penalty: `weight_decay * (w + r)` is what
            // it should have read, so the gradient carries the `weight_decay * r` part.
            let l2 = rule.l2_decay();
            if l2 != 0.0 {
                let dtype = rows.values.dtype();
                rows.values = rows.values + write_back::cast(renorm.clone(), dtype).mul_scalar(l2);
            }
            let mut delta = B::embedding_sparse_delta(weight, rows, rule, lr, state);
            let dtype = delta.values.dtype();
            let keep = rule.decoupled_keep(lr);
            delta.values = delta.values + write_back::cast(renorm, dtype).mul_scalar(keep);
            delta
        }
    };
    write_back::round_delta(
        &util::float(weight.clone()),
        delta,
        state.rounding,
        state.step,
    )
}

/// Whether `mapper` leaves a parameter as it is on load and on save (burn's default mapper):
/// burn 0.21 cannot give a lazily initialised parameter an existing mapper, so only such a
/// parameter is stepped lazily. Read from what the mapper does to a probe tensor, since burn
/// exposes nothing else of it.
fn maps_nothing<B: Backend, const D: usize>(
    mapper: &ParamMapper<Tensor<B, D>>,
    device: &B::Device,
) -> bool {
    let mut dims = [1usize; D];
    dims[0] = 3;
    let probe = Tensor::<B, 1>::from_floats([1.5, -2.25, 3.0e7], device).reshape(dims);
    let same = |mapped: Tensor<B, D>| mapped.to_data() == probe.to_data();
    same(mapper.on_load(probe.clone())) && same(mapper.on_save(probe.clone()))
}

/// The weight of [`ApplyRows`], before and after its rows are added.
enum RowsSlot<B: SparseGradients, const D: usize> {
    /// The values, the rows to add, and the weight's node (see [`SparseGradients::split_values`]).
    Pending(
        FloatTensor<B::InnerBackend>,
        RowSparseGradient<B::InnerBackend>,
        FloatTensor<B>,
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
