//! [`FusedEmbedding`]: an embedding whose optimizer runs inside its backward, as in FBGEMM's
//! table-batched embeddings (TorchRec): the backward computes the batch's coalesced rows and
//! updates the touched rows of the table at once, so no gradient rows are stored, no marker
//! travels through `Gradients` and no optimizer step touches the table.
//!
//! The table (weight, rule state, learning rate) is shared by every clone of the module, as a
//! table updated in place must be: a clone is another handle on the same table, and the
//! update of one backward is seen by all. [`valid`](burn::module::AutodiffModule::valid) gives
//! a snapshot (sharing storage until the next update, which then copies the table once).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay,
    ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param,
};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor};

use crate::backend::RowSink;
use crate::functional::check_indices;
use crate::optim::{Rounding, RowState, SparseRule, SparseUpdate};
use crate::rank::{IndexRank, LookupRank};
use crate::sparse::probe::{CONTAINER, FIELD as PROBE};
use crate::util::{flatten_int, float, primitive};
use crate::{Embedding, EmbeddingBackend, EmbeddingError, EmbeddingOptions};

/// An embedding with its optimizer fused into the backward: each backward pass applies the
/// update of `rule` (SGD, Adagrad, row-wise Adagrad, lazy Adam; see [`SparseRule`]) with the
/// table's learning rate to the rows the batch touched, in place.
///
/// Results equal those of an [`Embedding`] with `sparse: true` trained by the sparse-aware
/// optimizer of the same rule (tested to 1e-6 after 10 steps on every backend); the rule's
/// state and the learning rate are part of the record, so a checkpoint resumes exactly.
///
/// - The learning rate is the table's own: [`set_learning_rate`](Self::set_learning_rate)
///   changes it between steps (a scheduler), for every clone.
/// - Under burn-train's `Learner` the other parameters go through the Learner's optimizer;
///   the table needs no step. Each backward gives the module's `probe` (a `[1]` parameter whose
///   value is never read) a gradient value of its own; the sparse-aware optimizers of
///   [`optim`](crate::optim) read it and refuse, with a panic that says why, gradients summed
///   over several backward passes or scaled (the Learner's `grads_accumulation` above 1, a
///   `GradientsAccumulator`, averaged accumulation, a loss scale): each backward has already
///   applied its update and cannot wait for the others or be rescaled. burn's own optimizers
///   cannot see this; keep accumulation at 1 and the loss unscaled with them.
/// - With `max_norm`, the forward renormalises the referenced rows of the stored table first,
///   as PyTorch's does: the table is the module's own state.
/// - A frozen module (`no_grad`, `require_grad` false on the probe) looks up without updating.
/// - Multi-device training (the Learner's `MultiDevice` with `OptimSharded`) shares the one
///   table between the devices' forks: each device's backward updates it as soon as it ends
///   (asynchronous, as word2vec's worker threads; not the sum of one step). Use one device, or
///   the unfused optimizers, for the dense-equivalent semantics.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Int, Tensor};
/// use burn_embedding::EmbeddingConfig;
/// use burn_embedding::optim::LazyAdamConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let emb = EmbeddingConfig::new(100, 8)
///     .init::<B>(&device)
///     .fused(LazyAdamConfig::new().rule(), 0.01);
/// let before = emb.weight().to_data();
/// let out: Tensor<B, 2> = emb.forward(Tensor::<B, 1, Int>::from_ints([5, 7, 5], &device));
/// let _ = out.sum().backward(); // rows 5 and 7 are updated here; no optimizer step
/// assert_ne!(emb.weight().to_data(), before);
/// emb.set_learning_rate(0.001);
/// ```
#[derive(Debug, Clone)]
pub struct FusedEmbedding<B: Backend> {
    table: Arc<Table<B>>,
    /// Tracked parent of every lookup: its gradient counts the backward passes (see above).
    probe: Param<Tensor<B, 1>>,
    options: EmbeddingOptions,
}

/// The shared table: the weight, the rule and its state.
#[derive(Debug)]
struct Table<B: Backend> {
    rule: SparseRule,
    slot: Mutex<Slot<B>>,
}

#[derive(Debug)]
struct Slot<B: Backend> {
    /// `None` only while a mapper holds it, or after an update panicked.
    weight: Option<Param<Tensor<B, 2>>>,
    state: RowState<B>,
    learning_rate: f64,
}

impl<B: Backend> Table<B> {
    fn new(weight: Param<Tensor<B, 2>>, rule: SparseRule, learning_rate: f64) -> Self {
        Self {
            rule,
            slot: Mutex::new(Slot {
                weight: Some(weight),
                state: RowState::default(),
                learning_rate,
            }),
        }
    }

    /// The slot, also after a panic in another handle's update (whose weight is then `None`).
    fn lock(&self) -> MutexGuard<'_, Slot<B>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B: Backend> Slot<B> {
    fn weight(&self) -> &Param<Tensor<B, 2>> {
        self.weight
            .as_ref()
            .expect("the fused embedding's update panicked earlier: its table has no value")
    }

    fn take_weight(&mut self) -> Param<Tensor<B, 2>> {
        self.weight
            .take()
            .expect("the fused embedding's update panicked earlier: its table has no value")
    }
}

impl<B: SparseUpdate + EmbeddingBackend> RowSink<B> for Table<B> {
    fn apply(&self, grad: FloatTensor<B>, indices: IntTensor<B>, options: &EmbeddingOptions) {
        let mut slot = self.lock();
        let slot = &mut *slot;
        let (id, weight) = {
            let param = slot.take_weight();
            (param.id, param.val())
        };
        // The weight's storage is held by the table alone (a lookup drops its handle when the
        // output is made), so the update runs in place.
        let updated = B::embedding_fused_update(
            primitive(weight),
            grad,
            indices,
            options,
            &self.rule,
            slot.learning_rate,
            &mut slot.state,
        );
        slot.weight = Some(Param::initialized(id, float(updated)));
    }
}

impl<B: EmbeddingBackend> Embedding<B> {
    /// This embedding with `rule` fused into its backward at `learning_rate` (see
    /// [`FusedEmbedding`]). The backward is row-sparse whatever the `sparse` option; the
    /// weight keeps its parameter id, and a frozen weight gives a frozen table.
    pub fn fused(self, rule: SparseRule, learning_rate: f64) -> FusedEmbedding<B> {
        let options = self.options();
        let require_grad = self.weight.is_require_grad();
        let device = self.weight.device();
        let weight = self.weight.map(|w| w.detach());
        FusedEmbedding {
            table: Arc::new(Table::new(weight, rule, learning_rate)),
            probe: Param::from_tensor(Tensor::zeros([1], &device)).set_require_grad(require_grad),
            options,
        }
    }
}

impl<B: Backend> FusedEmbedding<B> {
    /// The lookup options.
    pub fn options(&self) -> EmbeddingOptions {
        self.options
    }

    /// The rule applied in the backward.
    pub fn rule(&self) -> SparseRule {
        self.table.rule
    }

    /// The learning rate of the next update.
    pub fn learning_rate(&self) -> f64 {
        self.table.lock().learning_rate
    }

    /// Sets the learning rate of the next updates (of every clone: they share the table).
    pub fn set_learning_rate(&self, learning_rate: f64) {
        self.table.lock().learning_rate = learning_rate;
    }

    /// How the updates write the rows of a table stored in f16 or bf16 (see [`Rounding`]).
    pub fn rounding(&self) -> Rounding {
        self.table.lock().state.rounding
    }

    /// Sets the rounding of the next updates of a half-precision table (of every clone: they
    /// share the table); to nearest by default. A table in f32 ignores it.
    pub fn set_rounding(&self, rounding: Rounding) {
        self.table.lock().state.rounding = rounding;
    }

    /// The table `[V, D]` now (a snapshot: later updates do not change it).
    pub fn weight(&self) -> Tensor<B, 2> {
        self.table.lock().weight().val()
    }

    /// The table now as a plain [`Embedding`] with the same options and parameter id (a
    /// snapshot): to write its vectors, or to go on training it unfused.
    pub fn to_embedding(&self) -> Embedding<B>
    where
        B: EmbeddingBackend,
    {
        let weight = self.table.lock().weight().clone();
        let require_grad = self.probe.is_require_grad();
        Embedding::new(
            weight.map(|w| w.set_require_grad(require_grad)),
            self.options,
        )
    }

    /// The rule's state now (a snapshot): its step count and accumulators.
    pub fn state(&self) -> RowState<B> {
        self.table.lock().state.clone()
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.table.lock().weight().dims()[0]
    }

    /// Size of each row.
    pub fn embedding_dim(&self) -> usize {
        self.table.lock().weight().dims()[1]
    }
}

impl<B: EmbeddingBackend + SparseUpdate> FusedEmbedding<B> {
    /// Looks up `indices` `[..]`, giving `[.., embedding_dim]`; on an autodiff backend the
    /// backward of the result updates the touched rows.
    ///
    /// # Panics
    /// On an index outside `0..num_embeddings`, naming it; [`try_forward`](Self::try_forward)
    /// returns the error instead.
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

    /// [`forward`](Self::forward), returning bad input as an [`EmbeddingError`] (the table is
    /// left untouched).
    pub fn try_forward<const DI: usize, const DO: usize>(
        &self,
        indices: Tensor<B, DI, Int>,
    ) -> Result<Tensor<B, DO>, EmbeddingError>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        let weight = {
            let mut slot = self.table.lock();
            check_indices(&indices, slot.weight().dims()[0])?;
            if let Some(max_norm) = self.options.max_norm {
                let param = slot.take_weight();
                let id = param.id;
                let renormed = B::embedding_renorm(
                    primitive(param.val()),
                    flatten_int(indices.clone()).into_primitive(),
                    max_norm,
                    self.options.norm_type.p(),
                );
                slot.weight = Some(Param::initialized(id, float(renormed)));
            }
            slot.weight().val()
        };
        // The rows are renormalised in the table already.
        let options = EmbeddingOptions {
            max_norm: None,
            ..self.options
        };
        Ok(float(B::embedding_lookup_fused(
            primitive(weight),
            indices.into_primitive(),
            &options,
            primitive(self.probe.val()),
            self.table.clone(),
        )))
    }
}

/// The record of a [`FusedEmbedding`]: the table, the rule's state and the learning rate.
#[derive(Record, Clone)]
pub struct FusedEmbeddingRecord<B: Backend> {
    /// The table, `[V, D]`.
    pub weight: Param<Tensor<B, 2>>,
    /// The module's probe.
    pub probe: Param<Tensor<B, 1>>,
    /// Updates applied.
    pub step: usize,
    /// Adagrad's sums (`[V, D]`, row-wise `[V, 1]`) or Adam's first moment.
    pub first: Option<Tensor<B, 2>>,
    /// Adam's second moment.
    pub second: Option<Tensor<B, 2>>,
    /// The learning rate of the next update.
    pub learning_rate: f64,
}

/// The shapes of the state tensors `rule` keeps for a `[V, D]` table.
fn state_shapes(rule: &SparseRule, [v, d]: [usize; 2]) -> [Option<[usize; 2]>; 2] {
    match rule {
        SparseRule::Sgd { .. } => [None, None],
        SparseRule::Adagrad { .. } => [Some([v, d]), None],
        SparseRule::RowwiseAdagrad { .. } => [Some([v, 1]), None],
        SparseRule::LazyAdam { .. } => [Some([v, d]), Some([v, d])],
    }
}

impl<B: Backend> Module<B> for FusedEmbedding<B> {
    type Record = FusedEmbeddingRecord<B>;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        let devices = self.table.lock().weight().collect_devices(devices);
        self.probe.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        self.moved(device, |param, device| param.fork(device))
    }

    fn to_device(self, device: &B::Device) -> Self {
        self.moved(device, |param, device| param.to_device(device))
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        let weight = self.table.lock().weight().clone();
        visitor.enter_module("weight", CONTAINER);
        weight.visit(visitor);
        visitor.exit_module("weight", CONTAINER);
        visitor.enter_module(PROBE, CONTAINER);
        self.probe.visit(visitor);
        visitor.exit_module(PROBE, CONTAINER);
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        // The weight goes to the mapper alone (no other handle), and comes back into the table.
        let weight = self.table.lock().take_weight();
        let dims = weight.dims();
        mapper.enter_module("weight", CONTAINER);
        let weight = Module::map(weight, mapper);
        mapper.exit_module("weight", CONTAINER);
        assert_eq!(
            weight.dims(),
            dims,
            "a module mapper changed the shape of a fused embedding's table"
        );
        self.table.lock().weight = Some(weight);
        mapper.enter_module(PROBE, CONTAINER);
        let probe = Module::map(self.probe, mapper);
        mapper.exit_module(PROBE, CONTAINER);
        Self { probe, ..self }
    }

    fn load_record(self, record: Self::Record) -> Self {
        let FusedEmbeddingRecord {
            weight,
            probe,
            step,
            first,
            second,
            learning_rate,
        } = record;
        let dims = weight.dims();
        let [first_shape, second_shape] = state_shapes(&self.table.rule, dims);
        let check = |name: &str, tensor: &Option<Tensor<B, 2>>, expected: Option<[usize; 2]>| {
            if let (Some(tensor), Some(expected)) = (tensor, expected) {
                assert_eq!(
                    tensor.dims(),
                    expected,
                    "the record's {name} state does not fit a {:?} table with rule {:?}",
                    dims,
                    self.table.rule
                );
            }
        };
        check("first", &first, first_shape);
        check("second", &second, second_shape);
        {
            let mut slot = self.table.lock();
            slot.weight = Some(weight);
            let rounding = slot.state.rounding;
            slot.state = RowState {
                step,
                first,
                second,
                rounding,
            };
            slot.learning_rate = learning_rate;
        }
        Self {
            probe: self.probe.load_record(probe),
            ..self
        }
    }

    fn into_record(self) -> Self::Record {
        let slot = self.table.lock();
        FusedEmbeddingRecord {
            weight: slot.weight().clone().map(copied),
            probe: self.probe.clone(),
            step: slot.state.step,
            first: slot.state.first.clone().map(copied),
            second: slot.state.second.clone().map(copied),
            learning_rate: slot.learning_rate,
        }
    }
}

/// A copy of `tensor` in a buffer of its own. A record (a checkpointer's, written on another
/// thread while training goes on) that shared the table's buffers would make the next update
/// copy the whole table to stay in place, and reading a shared NdArray buffer (`into_data`)
/// copies it a value at a time (`docs/measurements.md`), against one pass here. A
/// gather of every row: the same bits on every backend (arithmetic could quiet a signalling
/// NaN or flush a subnormal), untracked.
fn copied<B: Backend>(tensor: Tensor<B, 2>) -> Tensor<B, 2> {
    let tensor = tensor.detach();
    let rows = tensor.dims()[0];
    let all = Tensor::<B, 1, Int>::arange(0..rows as i64, &tensor.device());
    tensor.select(0, all)
}

impl<B: Backend> FusedEmbedding<B> {
    /// The module with its table (shared by every clone) and its probe on `device`.
    fn moved(
        self,
        device: &B::Device,
        mut move_param: impl FnMut(Param<Tensor<B, 2>>, &B::Device) -> Param<Tensor<B, 2>>,
    ) -> Self {
        {
            let mut slot = self.table.lock();
            let weight = slot.take_weight();
            slot.weight = Some(move_param(weight, device));
            let state = &mut slot.state;
            state.first = state.first.take().map(|t| t.to_device(device));
            state.second = state.second.take().map(|t| t.to_device(device));
        }
        Self {
            probe: self.probe.fork(device),
            ..self
        }
    }

    fn with_table<C: Backend>(
        &self,
        probe: Param<Tensor<C, 1>>,
        convert: impl Fn(Tensor<B, 2>) -> Tensor<C, 2>,
    ) -> FusedEmbedding<C> {
        let slot = self.table.lock();
        let weight = slot.weight();
        let weight = Param::initialized(weight.id, convert(weight.val()));
        let state = RowState {
            step: slot.state.step,
            first: slot.state.first.clone().map(&convert),
            second: slot.state.second.clone().map(&convert),
            rounding: slot.state.rounding,
        };
        let table = Table {
            rule: self.table.rule,
            slot: Mutex::new(Slot {
                weight: Some(weight),
                state,
                learning_rate: slot.learning_rate,
            }),
        };
        FusedEmbedding {
            table: Arc::new(table),
            probe,
            options: self.options,
        }
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for FusedEmbedding<B> {
    type InnerModule = FusedEmbedding<B::InnerBackend>;

    /// A snapshot of the table on the inner backend, with its own (unshared) table.
    fn valid(&self) -> Self::InnerModule {
        self.with_table(self.probe.valid(), Tensor::inner)
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        let probe = <Param<Tensor<B, 1>> as AutodiffModule<B>>::from_inner(module.probe.clone());
        module.with_table(probe, Tensor::from_inner)
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for FusedEmbedding<B::InnerBackend> {
    type TrainModule = FusedEmbedding<B>;
}

impl<B: Backend> ModuleDisplayDefault for FusedEmbedding<B> {
    fn content(&self, content: Content) -> Option<Content> {
        let [v, d] = self.table.lock().weight().dims();
        let text = format!(
            "FusedEmbedding {{num_embeddings: {v}, embedding_dim: {d}, rule: {:?}, learning_rate: {}}}",
            self.table.rule,
            self.learning_rate()
        );
        content.add_formatted(&text).optional()
    }
}

impl<B: Backend> ModuleDisplay for FusedEmbedding<B> {}

impl<B: Backend> core::fmt::Display for FusedEmbedding<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", ModuleDisplay::format(self, Default::default()))
    }
}
