//! The registry: the rows of every sparse backward contribution, waiting under a ticket until a
//! step (or a read) names them through a marker.
//!
//! The only state behind the sparse path lives here, under one lock. The backend hands rows in
//! through [`issue`], the optimizers and the reads of [`reads`](super::reads) take them out through
//! [`read`] and [`settle`]; no other module touches it.
//!
//! **Tickets and slots.** Each contribution gets a ticket, which owns one of the [`SLOTS`] slots of
//! its class (its weight's shape and backend) until it leaves the registry. Slots are taken in
//! turn from a cursor, so a freed slot is the last to be taken again.
//!
//! **Norm vectors.** A ticket's marker carries a norm vector whose length is the norm of its
//! rows, and whose dot product with the norm vector of any earlier ticket of the same weight in
//! the same accumulation window (issued since the weight's last step, at most [`WINDOW`] of them)
//! is the dot product of their rows: it is the next row of a Cholesky factor of their Gram
//! matrix, on the slots of those tickets. So the norm of any linear combination of those markers
//! (an accumulated gradient, a scaled one) is the norm of the same combination of the rows. A slot
//! is free again only when no waiting ticket's norm vector uses it.
//!
//! **Lifetime.** A ticket stays after a step presents it (hand-written momentum, the same
//! gradients stepped twice) and leaves when its weight has made [`KEEP_STEPS`] more steps, counted
//! from its issue or from the last step that presented it. Beyond that, and beyond [`SLOTS`]
//! tickets or [`budget`] bytes of rows in a class, the oldest go first (those already stepped
//! before those not); a marker naming one then fails with [`MarkerError::Dropped`].

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{ElementConversion, Tensor, TensorData, TensorMetadata};
use hashbrown::HashMap;

use super::marker::{self, Layout, SLOTS};
use super::rows::RowSparseGradient;
use crate::backend::write_back;
use crate::util::int_tensor;
use crate::{EmbeddingBackend, EmbeddingOptions};

/// Steps of its weight a ticket stays for after its issue or its last presentation.
pub(crate) const KEEP_STEPS: u64 = 8;
/// The most earlier tickets of a weight whose Gram products a new ticket's norm vector keeps.
pub(crate) const WINDOW: usize = 16;

/// Bytes of waiting rows a class may hold: twice its dense gradient, and at least 64 MiB.
fn budget(num_embeddings: usize, dim: usize) -> usize {
    (2 * num_embeddings * dim * size_of::<f32>()).max(64 << 20)
}

/// The `[max_norm, p]` renormalisation that a lookup applied to the rows it read, which the step
/// writes into the stored weight before the update, as PyTorch's in-place `embedding_renorm_`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Renorm {
    pub max_norm: f64,
    pub norm_type: f64,
}

/// Weights of the same backend and shape share one pool of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Class {
    backend: TypeId,
    num_embeddings: usize,
    dim: usize,
}

impl Class {
    fn of<B: Backend>(num_embeddings: usize, dim: usize) -> Self {
        Self {
            backend: TypeId::of::<B>(),
            num_embeddings,
            dim,
        }
    }
}

/// The rows of a ticket.
#[derive(Debug, Clone)]
pub(crate) enum TicketRows<B: Backend> {
    /// Summed per id.
    Rows(RowSparseGradient<B>),
    /// Not summed yet.
    Tokens(TokenGrad<B>),
}

/// A lookup's row-sparse gradient before the sum per id: its output gradient `[.., D]`, its ids
/// `[..]` and the options of its forward.
#[derive(Debug, Clone)]
pub(crate) struct TokenGrad<B: Backend> {
    pub grad: FloatTensor<B>,
    pub indices: IntTensor<B>,
    pub num_embeddings: usize,
    pub options: EmbeddingOptions,
}

impl<B: EmbeddingBackend> TokenGrad<B> {
    /// The rows summed per id (the lookup's row-sparse backward); `None` when none is touched.
    pub fn rows(self) -> Option<RowSparseGradient<B>> {
        B::embedding_grad_sparse(self.grad, self.indices, self.num_embeddings, &self.options)
    }
}

impl<B: Backend> TicketRows<B> {
    /// The device the rows are on.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Rows(rows) => rows.values.device(),
            Self::Tokens(tokens) => B::float_device(&tokens.grad),
        }
    }

    /// `[num_embeddings, dim]` of the weight.
    pub fn weight_shape(&self) -> [usize; 2] {
        match self {
            Self::Rows(rows) => [rows.num_embeddings, rows.dim()],
            Self::Tokens(tokens) => {
                let shape = tokens.grad.shape();
                [tokens.num_embeddings, shape[shape.num_dims() - 1]]
            }
        }
    }

    /// Bytes the rows hold.
    fn bytes(&self) -> usize {
        let floats = match self {
            Self::Rows(rows) => rows.values.shape().num_elements(),
            Self::Tokens(tokens) => tokens.grad.shape().num_elements(),
        };
        floats * size_of::<f32>()
    }
}

impl<B: EmbeddingBackend> TicketRows<B> {
    /// The rows summed per id; `None` when none is touched.
    pub fn rows(self) -> Option<RowSparseGradient<B>> {
        match self {
            Self::Rows(rows) => Some(rows),
            Self::Tokens(tokens) => tokens.rows(),
        }
    }

    /// The squared norm of the summed rows, in f64; NaN or infinite when a row is not finite.
    fn norm_sq(&self) -> f64 {
        match self {
            Self::Rows(rows) => rows_norm_sq(rows),
            Self::Tokens(t) => {
                B::embedding_token_grad_norm_sq(&t.grad, &t.indices, t.num_embeddings, &t.options)
            }
        }
    }
}

/// The squared norm of summed rows, on the device: one scalar comes back, not the rows.
fn rows_norm_sq<B: Backend>(rows: &RowSparseGradient<B>) -> f64 {
    rows.values.clone().square().sum().into_scalar().elem()
}

/// The dot product of two row-sparse gradients of one weight: their common ids matched on the
/// host (ids only), the rows multiplied on the device, one scalar read back.
fn dot<B: Backend>(
    (a, a_ids): (&RowSparseGradient<B>, &[i64]),
    (b, b_ids): (&RowSparseGradient<B>, &[i64]),
) -> f64 {
    let (mut i, mut j) = (0, 0);
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    while i < a_ids.len() && j < b_ids.len() {
        match a_ids[i].cmp(&b_ids[j]) {
            core::cmp::Ordering::Less => i += 1,
            core::cmp::Ordering::Greater => j += 1,
            core::cmp::Ordering::Equal => {
                at_a.push(i as i64);
                at_b.push(j as i64);
                i += 1;
                j += 1;
            }
        }
    }
    if at_a.is_empty() {
        return 0.0;
    }
    let device = a.values.device();
    let rows_a = a.values.clone().select(0, int_tensor::<B>(&at_a, &device));
    let rows_b = b.values.clone().select(0, int_tensor::<B>(&at_b, &device));
    (rows_a * rows_b).sum().into_scalar().elem()
}

struct Waiting {
    ticket: u64,
    class: Class,
    slot: usize,
    check: f32,
    /// A [`TicketRows`] of the class's backend.
    rows: Box<dyn Any + Send>,
    bytes: usize,
    /// The summed rows' ids on the host, once a later ticket of the window needed them.
    ids: Option<Arc<Vec<i64>>>,
    renorm: Option<Renorm>,
    /// The autodiff node of the weight tensor the lookup read.
    weight_node: u64,
    /// The norm vector, as `(slot, value)`; its own slot last.
    norm: Vec<(usize, f32)>,
    /// Issued since its weight's last step (in the weight's accumulation window).
    open: bool,
    /// The weight node whose steps age the ticket, and its step count at the ticket's issue or
    /// last presentation.
    home: u64,
    born: u64,
}

impl Waiting {
    fn rows<B: Backend>(&self) -> &TicketRows<B> {
        self.rows
            .downcast_ref::<TicketRows<B>>()
            .expect("a class holds rows of its own backend")
    }

    fn finite(&self) -> bool {
        self.norm.iter().all(|(_, v)| v.is_finite())
    }

    fn norm_at(&self, slot: usize) -> f64 {
        self.norm
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(0.0, |(_, v)| f64::from(*v))
    }
}

#[derive(Default)]
struct Registry {
    waiting: Vec<Waiting>,
    /// Per class: how many waiting tickets use each slot, and where the next search starts.
    slots: HashMap<Class, (Vec<u32>, usize)>,
    /// Steps of each weight node that some ticket is aged by.
    clocks: HashMap<u64, u64>,
}

impl Registry {
    /// Removes the ticket at `index`, releasing its slots.
    fn remove(&mut self, index: usize) -> Waiting {
        let gone = self.waiting.swap_remove(index);
        let (refs, _) = self
            .slots
            .get_mut(&gone.class)
            .expect("the class has slots");
        for &(slot, _) in &gone.norm {
            refs[slot] -= 1;
        }
        gone
    }

    fn retain(&mut self, mut keep: impl FnMut(&Waiting) -> bool) {
        let mut i = 0;
        while i < self.waiting.len() {
            if keep(&self.waiting[i]) {
                i += 1;
            } else {
                self.remove(i);
            }
        }
        let homes: hashbrown::HashSet<u64> = self.waiting.iter().map(|w| w.home).collect();
        self.clocks.retain(|node, _| homes.contains(node));
    }

    /// Removes the oldest ticket of `class` that a new ticket of `weight_node` may displace:
    /// one already stepped (kept only in case its gradients are used again) first, then one of
    /// the same weight, and only then one of another weight (another model's accumulation).
    fn evict_oldest(&mut self, class: Class, weight_node: u64) -> bool {
        let oldest = |pick: &dyn Fn(&Waiting) -> bool| {
            self.waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| w.class == class && pick(w))
                .min_by_key(|(_, w)| w.ticket)
                .map(|(i, _)| i)
        };
        let victim = oldest(&|w| !w.open)
            .or_else(|| oldest(&|w| w.weight_node == weight_node))
            .or_else(|| oldest(&|_| true));
        match victim {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// A free slot of `class` for a ticket of `weight_node`, evicting tickets (see
    /// [`evict_oldest`](Self::evict_oldest)) while there is none or while the class holds more
    /// than its budget with `bytes` more.
    fn take_slot(&mut self, class: Class, weight_node: u64, bytes: usize) -> usize {
        let budget = budget(class.num_embeddings, class.dim);
        loop {
            let held: usize = self
                .waiting
                .iter()
                .filter(|w| w.class == class)
                .map(|w| w.bytes)
                .sum();
            let (refs, cursor) = self
                .slots
                .entry(class)
                .or_insert_with(|| (vec![0; SLOTS], 0));
            let free = (0..SLOTS)
                .map(|k| (*cursor + k) % SLOTS)
                .find(|&s| refs[s] == 0);
            match free {
                Some(slot) if held + bytes <= budget => {
                    *cursor = (slot + 1) % SLOTS;
                    return slot;
                }
                found => {
                    if !self.evict_oldest(class, weight_node) {
                        // Nothing left to evict: a lone contribution larger than the budget.
                        return found.expect("an empty class has free slots");
                    }
                }
            }
        }
    }
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn registry() -> MutexGuard<'static, Registry> {
    // Every change under the lock completes before anything that can panic: a panic elsewhere
    // cannot leave the registry half-changed.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The earlier tickets of a weight that a new one's norm vector relates to, oldest first.
fn window<B: EmbeddingBackend>(class: Class, weight_node: u64) -> Vec<(u64, TicketRows<B>)> {
    let reg = registry();
    let mut members: Vec<(u64, TicketRows<B>)> = reg
        .waiting
        .iter()
        .filter(|w| w.class == class && w.weight_node == weight_node && w.open && w.finite())
        .map(|w| (w.ticket, w.rows::<B>().clone()))
        .collect();
    members.sort_by_key(|(t, _)| *t);
    let skip = members.len().saturating_sub(WINDOW);
    members.split_off(skip)
}

/// The summed rows of ticket `ticket` and their ids on the host, cached in the registry (a token
/// gradient is summed then, and kept summed).
fn summed_rows<B: EmbeddingBackend>(
    ticket: u64,
    rows: TicketRows<B>,
) -> Option<(RowSparseGradient<B>, Arc<Vec<i64>>)> {
    let cached = registry()
        .waiting
        .iter()
        .find(|w| w.ticket == ticket)
        .and_then(|w| w.ids.clone());
    let summed = rows.rows()?;
    let ids = match cached {
        Some(ids) => ids,
        None => Arc::new(summed.ids_vec()),
    };
    remember(ticket, summed.clone());
    if let Some(w) = registry().waiting.iter_mut().find(|w| w.ticket == ticket) {
        w.ids = Some(ids.clone());
    }
    Some((summed, ids))
}

/// Leaves the rows of a `[num_embeddings, dim]` weight waiting under a fresh ticket and returns
/// the marker to register in the weight's place (see [`marker`]).
pub(crate) fn issue<B: EmbeddingBackend>(
    rows: TicketRows<B>,
    renorm: Option<Renorm>,
    weight_node: u64,
) -> Tensor<B, 2> {
    let [num_embeddings, dim] = rows.weight_shape();
    let device = rows.device();
    let class = Class::of::<B>(num_embeddings, dim);
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    // The Gram products with the weight's open window, computed outside the lock. A window
    // member's token gradient is summed here (the step would sum it anyway), so at most one
    // token gradient per weight waits and waiting memory is what the summed rows take.
    let members = window::<B>(class, weight_node);
    let (rows, norm_sq, dots) = if members.is_empty() {
        let norm_sq = rows.norm_sq();
        (rows, norm_sq, Vec::new())
    } else {
        let Some(summed) = rows.rows() else {
            let layout = Layout::of(num_embeddings, dim);
            return marker_tensor::<B>(vec![0.0; layout.len()], layout, &device);
        };
        let ids = summed.ids_vec();
        let norm_sq = rows_norm_sq(&summed);
        let dots: Vec<(u64, f64)> = members
            .into_iter()
            .map(|(t, r)| {
                let dot = summed_rows(t, r).map_or(0.0, |(other, other_ids)| {
                    dot((&summed, &ids), (&other, &other_ids))
                });
                (t, dot)
            })
            .collect();
        let rows = TicketRows::Rows(summed);
        (rows, norm_sq, dots)
    };
    let bytes = rows.bytes();
    let mut reg = registry();
    let slot = reg.take_slot(class, weight_node, bytes);
    let norm = norm_vector(&reg, &dots, norm_sq, slot);
    let (refs, _) = reg.slots.get_mut(&class).expect("taken above");
    for &(s, _) in &norm {
        refs[s] += 1;
    }
    let check = marker::check_value(ticket);
    let layout = Layout::of(num_embeddings, dim);
    let values = layout.encode(slot, check, &norm);
    let born = *reg.clocks.entry(weight_node).or_insert(0);
    reg.waiting.push(Waiting {
        ticket,
        class,
        slot,
        check,
        rows: Box::new(rows),
        bytes,
        ids: None,
        renorm,
        weight_node,
        norm,
        open: true,
        home: weight_node,
        born,
    });
    drop(reg);
    marker_tensor::<B>(values, layout, &device)
}

/// The marker of `values`, in f32 where the backend's float type is a half type (whose
/// precision and range cannot hold a marker's values exactly).
fn marker_tensor<B: Backend>(values: Vec<f32>, layout: Layout, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values, layout.shape()),
        (device, write_back::exact_dtype::<B>()),
    )
}

/// The norm vector of a new ticket in `slot`: its products with the earlier tickets `dots`
/// (`(ticket, <rows, their rows>)`, oldest first) on their slots, by forward substitution
/// through their own norm vectors, and the rest of `norm_sq` on its own slot.
fn norm_vector(
    reg: &Registry,
    dots: &[(u64, f64)],
    norm_sq: f64,
    slot: usize,
) -> Vec<(usize, f32)> {
    if !norm_sq.is_finite() {
        return vec![(slot, norm_sq.sqrt() as f32)];
    }
    let mut x: Vec<(usize, f64)> = Vec::new();
    for &(ticket, dot) in dots {
        // A member stepped or dropped meanwhile is left out: no later marker sums with it.
        let Some(member) = reg.waiting.iter().find(|w| w.ticket == ticket) else {
            continue;
        };
        let (own_slot, own) = *member
            .norm
            .last()
            .expect("a norm vector ends with its own slot");
        let length = member
            .norm
            .iter()
            .map(|(_, v)| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        // A member whose rows are (up to f32 rounding of the products) a combination of earlier
        // members' adds no direction: dividing by its rounding noise would amplify it.
        if f64::from(own).abs() <= 1e-2 * length {
            continue;
        }
        let known: f64 = x.iter().map(|&(s, v)| member.norm_at(s) * v).sum();
        x.push((own_slot, (dot - known) / f64::from(own)));
    }
    let rest = (norm_sq - x.iter().map(|(_, v)| v * v).sum::<f64>()).max(0.0);
    x.retain(|(_, v)| *v != 0.0);
    let mut norm: Vec<(usize, f32)> = x.into_iter().map(|(s, v)| (s, v as f32)).collect();
    norm.push((slot, rest.sqrt() as f32));
    norm
}

/// The rows a marker stands for, read by a step before it changes anything.
pub(crate) struct Presented<B: Backend> {
    /// The tickets the marker names (a zero coefficient included).
    pub tickets: Vec<u64>,
    /// `sum_t c_t * rows(t)`, coalesced; `None` when every coefficient is zero, or when the
    /// rows are left in `tokens`.
    pub rows: Option<RowSparseGradient<B>>,
    /// The one ticket's rows not summed yet, when [`read`] was allowed to leave them so (one
    /// ticket, coefficient 1, no renormalisation, on the step's device).
    pub tokens: Option<TokenGrad<B>>,
    /// The renormalisations the lookups applied, with the ids each read.
    pub renorms: Vec<(Renorm, Vec<i64>)>,
}

impl<B: Backend> Presented<B> {
    pub fn empty() -> Self {
        Self {
            tickets: Vec::new(),
            rows: None,
            tokens: None,
            renorms: Vec::new(),
        }
    }
}

impl<B: EmbeddingBackend> Presented<B> {
    /// Adds the rows of another marker of the same weight (another device's).
    pub fn merge(&mut self, more: Self) {
        self.tickets.extend(more.tickets);
        self.renorms.extend(more.renorms);
        let rows = [
            self.rows.take(),
            self.tokens.take().and_then(TokenGrad::rows),
        ]
        .into_iter()
        .chain([more.rows, more.tokens.and_then(TokenGrad::rows)])
        .flatten()
        .reduce(RowSparseGradient::merge);
        self.rows = rows;
    }

    /// The summed rows, whether or not they were left unsummed.
    pub fn into_rows(self) -> Option<RowSparseGradient<B>> {
        self.rows.or_else(|| self.tokens.and_then(TokenGrad::rows))
    }
}

/// Why a marker could not be read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MarkerError {
    /// It names a ticket that left the registry.
    Dropped { shape: [usize; 2] },
    /// Its values are no linear combination of markers.
    Edited { shape: [usize; 2] },
}

impl core::fmt::Display for MarkerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Dropped { shape: [v, d] } => write!(
                f,
                "the gradient of a sparse [{v}, {d}] embedding weight names rows that were \
                 dropped: a gradient stays readable for {KEEP_STEPS} steps of its weight after \
                 its backward pass or the last step given it, while at most {SLOTS} backward \
                 passes of weights of that shape (and twice the size of their dense gradient in \
                 rows) wait, and until `clear_pending_sparse_grads`"
            ),
            Self::Edited { shape: [v, d] } => write!(
                f,
                "the gradient of a sparse [{v}, {d}] embedding weight went through a non-linear \
                 operation (a clamp, a mask, abs, a flattening optimizer such as L-BFGS): the \
                 tensor burn holds for it is a marker, of which only sums and scalings can be \
                 applied. Clip with `with_grad_clipping` on the sparse-aware optimizer configs \
                 or with `burn_embedding::sparse::clip_grad_norm`, and mask or freeze rows with \
                 `burn_embedding::sparse::map_grad`; an optimizer that must see every value needs \
                 the table with `sparse: false`"
            ),
        }
    }
}

/// Reads the marker of a `[num_embeddings, dim]` weight: the tickets it names, with their rows
/// summed (each times its coefficient) and moved to `device`. Nothing is removed. With
/// `keep_tokens`, the rows of a lone ticket (coefficient 1, no renormalisation, on `device`)
/// that are not summed yet are handed over as they are (see [`Presented::tokens`]).
pub(crate) fn read<B: EmbeddingBackend>(
    marker_values: Tensor<B, 2>,
    shape: [usize; 2],
    device: &B::Device,
    keep_tokens: bool,
) -> Result<Presented<B>, MarkerError> {
    // Taken by value: reading a tensor nothing else holds moves its buffer, where a shared one
    // is copied a value at a time.
    let data = marker_values.into_data().convert::<f32>();
    let values = data.as_slice::<f32>().expect("f32 values");
    let class = Class::of::<B>(shape[0], shape[1]);
    let layout = Layout::of(shape[0], shape[1]);
    let regions = layout.regions(values);
    let named = layout.named(&regions);
    if !layout.sentinel_matches(values, &regions, &named) {
        return Err(MarkerError::Edited { shape });
    }
    type Entry<B> = (u64, f64, TicketRows<B>, Option<Renorm>);
    let mut entries: Vec<Entry<B>> = Vec::with_capacity(named.len());
    {
        let reg = registry();
        let by_slot: HashMap<usize, &Waiting> = reg
            .waiting
            .iter()
            .filter(|w| w.class == class)
            .map(|w| (w.slot, w))
            .collect();
        // The norm entries the named tickets imply: `(slot, value, magnitude)` for the slots
        // of their norm vectors (a few), zero everywhere else.
        let mut expected: Vec<(usize, f64, f64)> = Vec::new();
        for n in &named {
            let Some(w) = by_slot.get(&n.slot) else {
                return Err(MarkerError::Dropped { shape });
            };
            if !n.matches(w.check) {
                return Err(if n.is_some_ticket() {
                    MarkerError::Dropped { shape }
                } else {
                    MarkerError::Edited { shape }
                });
            }
            let c = n.coefficient();
            for &(s, v) in &w.norm {
                let term = c * f64::from(v);
                match expected.iter_mut().find(|(slot, ..)| *slot == s) {
                    Some((_, e, magnitude)) => {
                        (*e, *magnitude) = (*e + term, *magnitude + term.abs())
                    }
                    None => expected.push((s, term, term.abs())),
                }
            }
            entries.push((w.ticket, c, w.rows::<B>().clone(), w.renorm));
        }
        let region = layout.norm_region(&regions);
        let mut zero = vec![true; region.len()];
        expected.iter().for_each(|&(s, ..)| zero[s] = false);
        let consistent = expected
            .iter()
            .all(|&(s, e, magnitude)| marker::norm_matches(region[s], e, magnitude))
            && region
                .iter()
                .zip(&zero)
                .all(|(&got, &zero)| !zero || marker::norm_matches(got, 0.0, 0.0));
        if !consistent {
            return Err(MarkerError::Edited { shape });
        }
    }
    if let [(ticket, c, TicketRows::Tokens(tokens), None)] = &entries[..]
        && keep_tokens
        && *c == 1.0
        && &B::float_device(&tokens.grad) == device
    {
        return Ok(Presented {
            tickets: vec![*ticket],
            rows: None,
            tokens: Some(tokens.clone()),
            renorms: Vec::new(),
        });
    }
    let mut presented = Presented::empty();
    // Half-precision rows are scaled and summed in f32 and rounded once at the end, as the
    // dense gradient's sum and scaling would round them.
    let mut rows_dtype = None;
    for (ticket, c, rows, renorm) in entries {
        presented.tickets.push(ticket);
        if c == 0.0 {
            continue;
        }
        let summed = matches!(rows, TicketRows::Tokens(_));
        let Some(rows) = rows.rows() else {
            continue;
        };
        if summed {
            remember(ticket, rows.clone());
        }
        if let Some(renorm) = renorm {
            presented.renorms.push((renorm, rows.ids_vec()));
        }
        let rows = rows.to_device(device);
        let dtype = *rows_dtype.get_or_insert(rows.values.dtype());
        let rows = rows.in_dtype(write_back::compute_dtype(dtype));
        let rows = if c == 1.0 { rows } else { rows.scale(c) };
        presented.rows = Some(match presented.rows.take() {
            Some(sum) => sum.merge(rows),
            None => rows,
        });
    }
    if let Some(dtype) = rows_dtype {
        presented.rows = presented.rows.map(|rows| rows.in_dtype(dtype));
    }
    Ok(presented)
}

/// Keeps the summed rows of a ticket whose token gradient was just summed, so that the next
/// read (a step after `sparse_grad`) does not sum them again.
fn remember<B: Backend>(ticket: u64, rows: RowSparseGradient<B>) {
    if let Some(w) = registry().waiting.iter_mut().find(|w| w.ticket == ticket) {
        w.rows = Box::new(TicketRows::Rows(rows));
    }
}

/// After a step of the weight whose tensor has node `weight_node`: the weight made one more
/// step, the presented tickets are aged from now (they stay for gradients used again), every
/// ticket of the weight leaves its accumulation window, and those older than [`KEEP_STEPS`] steps
/// leave the registry.
///
/// The presented tickets' own nodes (the forks of multi-device training, a weight that
/// `forward_mut` renormalised between batches) are the same weight: their other tickets are aged
/// by this one's steps from now on.
pub(crate) fn settle(presented: &[u64], weight_node: u64) {
    let mut reg = registry();
    let now = {
        let clock = reg.clocks.entry(weight_node).or_insert(0);
        *clock += 1;
        *clock
    };
    let mut nodes = vec![weight_node];
    for w in reg.waiting.iter().filter(|w| presented.contains(&w.ticket)) {
        nodes.extend([w.weight_node, w.home]);
    }
    for w in reg.waiting.iter_mut() {
        if presented.contains(&w.ticket) || (w.home != weight_node && nodes.contains(&w.home)) {
            w.home = weight_node;
            w.born = now;
        }
        if w.home == weight_node {
            w.open = false;
        }
    }
    reg.retain(|w| w.home != weight_node || now - w.born < KEEP_STEPS);
}

/// Removes `tickets`, whose rows went into a dense gradient.
pub(crate) fn forget(tickets: &[u64]) {
    registry().retain(|w| !tickets.contains(&w.ticket));
}

/// Drops every waiting row-sparse gradient: the markers of gradients computed before can no
/// longer be stepped (a step meeting one panics, naming the cause).
pub fn clear_pending_sparse_grads() {
    registry().retain(|_| false);
}

/// Number of row-sparse gradients waiting (for tests and diagnostics): one per backward
/// contribution not yet swept (see the [module docs](crate::sparse) for how long they stay).
pub fn pending_sparse_grads() -> usize {
    registry().waiting.len()
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::tensor::Int;

    type B = burn::backend::NdArray;

    fn rows(ids: &[i64], values: &[f32], dim: usize) -> TicketRows<B> {
        let device = Default::default();
        TicketRows::Rows(RowSparseGradient::new(
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &device),
            Tensor::from_data(TensorData::new(values.to_vec(), [ids.len(), dim]), &device),
            10,
        ))
    }

    fn norm(marker: &Tensor<B, 2>) -> f64 {
        let v: Vec<f32> = marker.to_data().to_vec().unwrap();
        v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
    }

    // A node no other test uses: the registry is shared by the tests running beside these.
    const NODE: u64 = u64::MAX - 21;

    #[test]
    fn the_norm_of_any_combination_of_a_window_is_the_norm_of_its_rows() {
        let a = issue(rows(&[1, 4], &[3.0, 0.0, 0.0, 4.0], 2), None, NODE);
        let b = issue(rows(&[4, 7], &[1.0, 2.0, -2.0, 1.0], 2), None, NODE);
        let c = issue(rows(&[1, 4], &[3.0, 0.0, 0.0, 4.0], 2), None, NODE);
        assert!((norm(&a) - 5.0).abs() < 1e-5);
        // a + b: rows 1 -> (3, 0), 4 -> (1, 6), 7 -> (-2, 1).
        let ab = a.clone() + b.clone();
        assert!((norm(&ab) - (9.0f64 + 1.0 + 36.0 + 4.0 + 1.0).sqrt()).abs() < 1e-4);
        // c equals a: 0.5 * (a + c) - b has rows 1 -> (3, 0), 4 -> (-1, 2), 7 -> (2, -1).
        let mixed = (a + c).mul_scalar(0.5) - b;
        assert!((norm(&mixed) - 19.0f64.sqrt()).abs() < 1e-4);
        let presented = read::<B>(mixed.clone(), [10, 2], &Default::default(), false).unwrap();
        let summed = presented.rows.unwrap();
        assert_eq!(summed.ids_vec(), [1, 4, 7]);
        let values: Vec<f32> = summed.values.into_data().to_vec().unwrap();
        assert_eq!(values, [3.0, 0.0, -1.0, 2.0, 2.0, -1.0]);
        settle(&presented.tickets, NODE);
        registry().retain(|w| w.weight_node != NODE);
    }

    #[test]
    fn a_clamped_or_masked_marker_is_refused_as_edited() {
        let node = NODE - 1;
        let m = issue(rows(&[2], &[30.0, 40.0], 2), None, node);
        let device = Default::default();
        assert!(read::<B>(m.clone(), [10, 2], &device, false).is_ok());
        let clamped = m.clone().clamp(-1.0, 1.0);
        assert_eq!(
            read::<B>(clamped.clone(), [10, 2], &device, false).err(),
            Some(MarkerError::Edited { shape: [10, 2] })
        );
        let masked = m.clone().mask_fill(m.clone().abs().lower_elem(1e-3), 0.0);
        assert!(matches!(
            read::<B>(masked.clone(), [10, 2], &device, false),
            Err(MarkerError::Edited { .. })
        ));
        registry().retain(|w| w.weight_node != node);
        assert_eq!(
            read::<B>(m.clone(), [10, 2], &device, false).err(),
            Some(MarkerError::Dropped { shape: [10, 2] })
        );
    }

    #[test]
    fn tickets_stay_for_keep_steps_of_their_weight_after_their_last_step() {
        let node = NODE - 2;
        let m = issue(rows(&[2], &[1.0, 1.0], 2), None, node);
        let device = Default::default();
        let ticket = read::<B>(m.clone(), [10, 2], &device, false)
            .unwrap()
            .tickets;
        settle(&ticket, node);
        for _ in 0..KEEP_STEPS {
            assert!(
                read::<B>(m.clone(), [10, 2], &device, false).is_ok(),
                "kept"
            );
            settle(&[], node);
        }
        assert!(
            read::<B>(m.clone(), [10, 2], &device, false).is_err(),
            "swept"
        );
    }
}
