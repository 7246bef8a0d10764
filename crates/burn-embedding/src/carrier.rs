//! How a row-sparse gradient travels from the backward pass to the step that applies it, with
//! the guarantees of a dense gradient.
//!
//! burn's `Gradients` and `GradientsParams` hold one dense tensor per parameter, and burn adds
//! those tensors when it accumulates (two uses of a weight in one graph, `GradientsAccumulator`,
//! the Learner's `grads_accumulation`, the multi-device sum), so a `[U, D]` block of rows cannot
//! ride in them. What rides there instead is a *marker*: each backward contribution of a sparse
//! weight gets a fresh *ticket*, its rows wait here under the ticket, and the tensor registered in
//! the weight's place is the ticket's *signature*: a small `[2, 64]` tensor of pseudo-random
//! integers drawn from the ticket.
//!
//! Whatever burn does to gradients is linear, and so is a signature sum: the marker a step
//! receives is `sum_t c_t * signature(t)` over the tickets `t` of the gradients it was given
//! (`c_t = 1` for an accumulated batch, `0` for a dropped one, `0.5` for a gradient the user
//! halved). [`decode`] solves for the `c_t` over the tickets waiting for weights of that shape
//! (least squares on at most [`MAX_WAITING`] unknowns against 128 equations: random integer
//! signatures are independent, so the solution is unique) and the step applies
//! `sum_t c_t * rows(t)`, exactly what the dense gradient would have been:
//!
//! - a `Gradients` dropped without a step: its ticket is in no marker a step receives, so its
//!   rows are never applied; they are dropped after a few steps of the weight (see [`settle`]);
//! - accumulation over k batches: the marker is the sum of k signatures, the step applies the k
//!   row sets;
//! - two models, any threads, the same `ParamId`s or not: each marker names its own tickets;
//! - multi-device training: each device's marker names the tickets computed there, whatever fork
//!   of the model computed them;
//! - a weight removed from `GradientsParams` (frozen for a step) or stepped by another optimizer:
//!   no marker, nothing applied.
//!
//! Signature values are integers in `1..=4096`, so a sum of up to 4096 markers is exact in f32.
//!
//! On a backend that defers the sum ([`EmbeddingBackend::embedding_defers_grad_sum`]: NdArray), a
//! lookup's rows wait as its output gradient with its ids ([`TicketRows::Tokens`]), as PyTorch's
//! uncoalesced sparse gradient does: they are summed per id when first read, so a backward costs
//! no more than PyTorch's, and a step that is given that one ticket can sum and update each row
//! in one pass ([`SparseUpdate::embedding_fused_update`]) without ever storing the summed rows.
//! A weight's earlier token tickets are summed when the next is issued, so at most one token
//! gradient per weight waits.
//!
//! [`SparseUpdate::embedding_fused_update`]: crate::optim::SparseUpdate::embedding_fused_update

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Tensor, TensorData, TensorMetadata};

use crate::{EmbeddingBackend, EmbeddingOptions, RowSparseGradient};

/// Columns of a marker (rows: 2, or 3 for a weight of 2 rows).
const MARKER_COLS: usize = 64;
/// The most tickets of one weight shape that can wait at once; the oldest is dropped beyond it.
/// 96 unknowns against the 128 equations of a marker.
pub(crate) const MAX_WAITING: usize = 96;
/// Signature values lie in `1..=SIGNATURE_MAX`.
const SIGNATURE_MAX: u64 = 4096;

/// The shape of the marker of a `[num_embeddings, dim]` weight: one that broadcasts against no
/// weight but `[1, 1]` (which never gets a marker), so that an optimizer that knows nothing of
/// sparse gradients fails on it instead of silently leaving the table untrained.
pub(crate) fn marker_shape(num_embeddings: usize, dim: usize) -> [usize; 2] {
    [
        if num_embeddings == 2 { 3 } else { 2 },
        if dim == MARKER_COLS {
            MARKER_COLS + 1
        } else {
            MARKER_COLS
        },
    ]
}

/// Whether a `[num_embeddings, dim]` weight can carry a marker: a `[1, 1]` weight would
/// broadcast against any, so it gets its (one-element) gradient dense.
pub(crate) fn can_carry(num_embeddings: usize, dim: usize) -> bool {
    num_embeddings > 1 || dim > 1
}

/// The `[max_norm, p]` renormalisation that a lookup applied to the rows it read, which the step
/// writes into the stored weight before the update, as PyTorch's in-place `embedding_renorm_`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Renorm {
    pub max_norm: f64,
    pub norm_type: f64,
}

/// Weights of the same backend and shape share one pool of candidate tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl<B: EmbeddingBackend> TicketRows<B> {
    /// The rows summed per id; `None` when none is touched.
    pub fn rows(self) -> Option<RowSparseGradient<B>> {
        match self {
            Self::Rows(rows) => Some(rows),
            Self::Tokens(tokens) => tokens.rows(),
        }
    }
}

struct Waiting {
    ticket: u64,
    class: Class,
    /// A [`TicketRows`] of the class's backend.
    rows: Box<dyn Any + Send>,
    renorm: Option<Renorm>,
    /// The autodiff node of the weight tensor the lookup read.
    weight_node: u64,
    /// Steps of its weight that did not present this ticket.
    missed: u8,
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);
static WAITING: LazyLock<Mutex<Vec<Waiting>>> = LazyLock::new(Default::default);

fn waiting() -> MutexGuard<'static, Vec<Waiting>> {
    // Every update under the lock is a single push, retain or remove: a panic elsewhere cannot
    // leave the list half-changed.
    WAITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The signature of a ticket: `len` integers in `1..=SIGNATURE_MAX` (splitmix64).
fn signature(ticket: u64, len: usize) -> Vec<f32> {
    let mut state = ticket.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (1 + z % SIGNATURE_MAX) as f32
        })
        .collect()
}

/// Leaves the rows of a `[num_embeddings, dim]` weight waiting under a fresh ticket and returns
/// the marker to register in the weight's place: `[2, 64]` (see [`marker_shape`]).
pub(crate) fn issue<B: EmbeddingBackend>(
    rows: TicketRows<B>,
    renorm: Option<Renorm>,
    weight_node: u64,
) -> Tensor<B, 2> {
    let [num_embeddings, dim] = rows.weight_shape();
    let device = rows.device();
    let shape = marker_shape(num_embeddings, dim);
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    let class = Class::of::<B>(num_embeddings, dim);
    let mut list = waiting();
    // Bounded memory when backward passes run and no step follows: the oldest ticket of the
    // shape goes (one that already missed a step first). A step presenting it then fails loudly.
    if list.iter().filter(|w| w.class == class).count() >= MAX_WAITING {
        let oldest = list
            .iter()
            .position(|w| w.class == class && w.missed > 0)
            .or_else(|| list.iter().position(|w| w.class == class))
            .expect("the class has waiting tickets");
        list.remove(oldest);
    }
    // A weight's earlier tickets still holding token gradients (backward passes accumulated, or
    // dropped, before a step; a second lookup in this one) are summed now: at most one token
    // gradient per weight waits, the rest as rows, so that waiting memory is what the summed
    // rows take. The step would sum them anyway: only a lone ticket is applied unsummed.
    let earlier: Vec<(u64, TokenGrad<B>)> = list
        .iter()
        .filter(|w| w.class == class && w.weight_node == weight_node)
        .filter_map(|w| match w.rows.downcast_ref::<TicketRows<B>>() {
            Some(TicketRows::Tokens(tokens)) => Some((w.ticket, tokens.clone())),
            _ => None,
        })
        .collect();
    list.push(Waiting {
        ticket,
        class,
        rows: Box::new(rows),
        renorm,
        weight_node,
        missed: 0,
    });
    drop(list);
    for (ticket, tokens) in earlier {
        if let Some(rows) = tokens.rows() {
            remember(ticket, rows);
        }
    }
    Tensor::from_data(
        TensorData::new(signature(ticket, shape[0] * shape[1]), shape),
        &device,
    )
}

/// The rows a marker stands for, read by a step before it changes anything.
pub(crate) struct Presented<B: Backend> {
    /// The tickets whose rows are in `rows` or `tokens`.
    pub tickets: Vec<u64>,
    /// `sum_t c_t * rows(t)`, coalesced; `None` when every coefficient is zero, or when the
    /// rows are left in `tokens`.
    pub rows: Option<RowSparseGradient<B>>,
    /// The one ticket's rows not summed yet, when [`decode`] was allowed to leave them so
    /// (one ticket, coefficient 1, no renormalisation, on the step's device).
    pub tokens: Option<TokenGrad<B>>,
    /// The renormalisations the lookups applied, with the ids each read.
    pub renorms: Vec<(Renorm, Vec<i64>)>,
}

/// Why a marker could not be read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Undecodable {
    pub num_embeddings: usize,
    pub dim: usize,
    pub candidates: usize,
}

impl core::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "the row-sparse gradient of a [{}, {}] embedding weight cannot be read: its marker \
             matches no combination of the {} row sets waiting for weights of that shape. Its rows \
             were dropped: more than {MAX_WAITING} backward passes of such weights waited without a \
             step, the gradient missed four steps of its weight, or `clear_pending_sparse_grads` \
             was called",
            self.num_embeddings, self.dim, self.candidates
        )
    }
}

/// Reads the marker of a `[num_embeddings, dim]` weight: the tickets it names, with their rows
/// summed (each times its coefficient) and moved to `device`. Nothing is removed. With
/// `keep_tokens`, the rows of a lone ticket (coefficient 1, no renormalisation, on `device`)
/// that are not summed yet are handed over as they are (see [`Presented::tokens`]).
///
/// The tickets read from `weight_node` (the weight tensor of the step) are tried first, alone:
/// they explain the marker in every single-device pattern, whatever other row sets of the shape
/// wait (dropped gradients of other weights), so the solve stays small. The forks of
/// multi-device training have other nodes; their markers are solved over every ticket.
pub(crate) fn decode<B: EmbeddingBackend>(
    marker: Tensor<B, 2>,
    [num_embeddings, dim]: [usize; 2],
    weight_node: u64,
    device: &B::Device,
    keep_tokens: bool,
) -> Result<Presented<B>, Undecodable> {
    let values: Vec<f64> = marker
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .map(f64::from)
        .collect();
    let class = Class::of::<B>(num_embeddings, dim);
    type Candidate<B> = (u64, TicketRows<B>, Option<Renorm>);
    let candidates = |same_weight: bool| -> Vec<Candidate<B>> {
        waiting()
            .iter()
            .filter(|w| w.class == class && (!same_weight || w.weight_node == weight_node))
            .map(|w| {
                let rows = w
                    .rows
                    .downcast_ref::<TicketRows<B>>()
                    .expect("a class holds rows of its own backend")
                    .clone();
                (w.ticket, rows, w.renorm)
            })
            .collect()
    };
    let tickets = |c: &[Candidate<B>]| -> Vec<u64> { c.iter().map(|c| c.0).collect() };
    let mut candidates_found = candidates(true);
    let coefficients = match solve(&tickets(&candidates_found), &values) {
        Some(coefficients) => coefficients,
        None => {
            candidates_found = candidates(false);
            solve(&tickets(&candidates_found), &values).ok_or(Undecodable {
                num_embeddings,
                dim,
                candidates: candidates_found.len(),
            })?
        }
    };
    let named: Vec<(Candidate<B>, f64)> = candidates_found
        .into_iter()
        .zip(coefficients)
        .filter(|(_, c)| *c != 0.0)
        .collect();
    if let [((ticket, TicketRows::Tokens(tokens), None), c)] = &named[..]
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
    let mut presented = Presented {
        tickets: Vec::new(),
        rows: None,
        tokens: None,
        renorms: Vec::new(),
    };
    for ((ticket, rows, renorm), c) in named {
        presented.tickets.push(ticket);
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
        let rows = if c == 1.0 { rows } else { rows.scale(c) };
        presented.rows = Some(match presented.rows.take() {
            Some(sum) => sum.merge(rows),
            None => rows,
        });
    }
    Ok(presented)
}

/// Keeps the summed rows of a ticket whose token gradient was just summed, so that the next
/// read (a step after `sparse_grad`) does not sum them again.
fn remember<B: Backend>(ticket: u64, rows: RowSparseGradient<B>) {
    if let Some(w) = waiting().iter_mut().find(|w| w.ticket == ticket) {
        w.rows = Box::new(TicketRows::Rows(rows));
    }
}

/// The coefficients `c` with `sum_t c_t * signature(t) = marker`, or `None` when no combination
/// of the tickets gives the marker. Coefficients within 1e-6 of an integer are that integer.
fn solve(tickets: &[u64], marker: &[f64]) -> Option<Vec<f64>> {
    let m = marker.len();
    let n = tickets.len();
    let scale = marker.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    if marker.iter().all(|&v| v == 0.0) {
        return Some(vec![0.0; n]);
    }
    if n == 0 {
        return None;
    }
    let columns: Vec<Vec<f64>> = tickets
        .iter()
        .map(|&t| signature(t, m).into_iter().map(f64::from).collect())
        .collect();
    // Normal equations, solved by Gaussian elimination with partial pivoting (n <= 96).
    let mut a = vec![vec![0.0f64; n + 1]; n];
    for i in 0..n {
        for j in i..n {
            let g: f64 = (0..m).map(|k| columns[i][k] * columns[j][k]).sum();
            a[i][j] = g;
            a[j][i] = g;
        }
        a[i][n] = (0..m).map(|k| columns[i][k] * marker[k]).sum();
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (row, values) in a.iter_mut().enumerate() {
            let factor = values[col] / pivot_row[col];
            if row != col && factor != 0.0 {
                for (x, p) in values[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= factor * p;
                }
            }
        }
    }
    let coefficients: Vec<f64> = (0..n)
        .map(|i| {
            let c = a[i][n] / a[i][i];
            let rounded = c.round();
            if (c - rounded).abs() <= 1e-6 * rounded.abs().max(1.0) {
                rounded
            } else {
                c
            }
        })
        .collect();
    let residual = (0..m)
        .map(|k| {
            let fitted: f64 = (0..n).map(|i| coefficients[i] * columns[i][k]).sum();
            (fitted - marker[k]).abs()
        })
        .fold(0.0f64, f64::max);
    (residual <= 1e-4 * scale).then_some(coefficients)
}

/// Steps of its weight that a ticket may miss before its rows are dropped: enough for a few
/// gradients computed ahead and stepped one after the other, few enough that the rows of a
/// dropped `Gradients` do not pile up.
const MISSED_LIMIT: u8 = 4;

/// After a step of the weight whose tensor has node `weight_node`: the presented tickets are
/// gone, and every other ticket of that weight (read from that tensor, or from one of the tensors
/// the presented tickets were read from: a weight that `forward_mut` renormalised between
/// batches) missed a step. One that missed [`MISSED_LIMIT`] is dropped: its `Gradients` was
/// dropped without a step.
///
/// Tickets of other weights are left alone, whatever their tensors became: the forks of a model
/// that multi-device training computes on are gone by the step that presents their tickets.
/// Their memory is bounded by [`MAX_WAITING`].
pub(crate) fn settle(presented: &[u64], weight_node: u64) {
    let mut list = waiting();
    let mut nodes = vec![weight_node];
    nodes.extend(
        list.iter()
            .filter(|w| presented.contains(&w.ticket))
            .map(|w| w.weight_node),
    );
    list.retain(|w| !presented.contains(&w.ticket));
    for w in list.iter_mut() {
        if nodes.contains(&w.weight_node) {
            w.missed = w.missed.saturating_add(1);
        }
    }
    list.retain(|w| w.missed < MISSED_LIMIT);
}

/// Reads the gradient `grad` of a `[num_embeddings, dim]` weight whose tensor has node
/// `weight_node`: `None` when it is dense (not a marker), else the rows its marker names.
///
/// # Panics
/// When the marker names rows that were dropped (see [`Undecodable`]).
pub(crate) fn read_marker<B: EmbeddingBackend>(
    grad: &Tensor<B, 2>,
    [num_embeddings, dim]: [usize; 2],
    weight_node: u64,
    device: &B::Device,
    keep_tokens: bool,
) -> Option<Presented<B>> {
    if grad.dims() != marker_shape(num_embeddings, dim) || !can_carry(num_embeddings, dim) {
        return None;
    }
    let shape = [num_embeddings, dim];
    Some(
        decode(grad.clone(), shape, weight_node, device, keep_tokens)
            .unwrap_or_else(|err| panic!("burn-embedding: {err}")),
    )
}

/// Drops every waiting row-sparse gradient: the markers of gradients computed before can no
/// longer be stepped (a step meeting one panics, naming the cause).
pub fn clear_pending_sparse_grads() {
    waiting().clear();
}

/// Number of row-sparse gradients waiting for a step (for tests and diagnostics): one per
/// backward contribution not yet stepped or swept.
pub fn pending_sparse_grads() -> usize {
    waiting().len()
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;

    #[test]
    fn sums_of_signatures_decode_to_their_tickets() {
        let tickets: Vec<u64> = (1000..1040).collect();
        let len = 128;
        let sig = |t: u64| signature(t, len);
        let mut marker = vec![0.0f64; len];
        for (t, c) in [(1003u64, 1.0), (1010, 1.0), (1010, 1.0), (1039, 0.5)] {
            for (m, s) in marker.iter_mut().zip(sig(t)) {
                *m += c * f64::from(s);
            }
        }
        let c = solve(&tickets, &marker).unwrap();
        for (t, c) in tickets.iter().zip(c) {
            let expected = match t {
                1003 => 1.0,
                1010 => 2.0,
                1039 => 0.5,
                _ => 0.0,
            };
            assert!((c - expected).abs() < 1e-9, "ticket {t}: {c} != {expected}");
        }
        // A ticket that is not a candidate cannot be explained away.
        assert!(solve(&tickets[..3], &marker).is_none());
        assert_eq!(solve(&tickets, &vec![0.0; len]), Some(vec![0.0; 40]));
    }

    #[test]
    fn marker_shapes_never_broadcast_against_their_weight() {
        for v in 1..5 {
            for d in [1, 2, 3, 63, 64, 65, 128] {
                let [r, c] = marker_shape(v, d);
                if !can_carry(v, d) {
                    continue;
                }
                let broadcasts = (r == v || v == 1) && (c == d || d == 1);
                assert!(!broadcasts, "[{v}, {d}] against [{r}, {c}]");
                assert!(MAX_WAITING < r * c, "more unknowns than equations");
            }
        }
    }

    #[test]
    fn a_weight_keeps_at_most_one_token_gradient_waiting() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let tokens = || {
            TicketRows::Tokens(TokenGrad::<B> {
                grad: Tensor::<B, 2>::ones([4, 3], &device)
                    .into_primitive()
                    .tensor(),
                indices: Tensor::<B, 1, burn::tensor::Int>::from_data([1, 5, 1, 2], &device)
                    .into_primitive(),
                num_embeddings: 8,
                options: EmbeddingOptions::new().with_sparse(true),
            })
        };
        // A node no other test uses: the list is shared by the tests running beside this one.
        let node = u64::MAX - 13;
        let is_tokens = |w: &Waiting| {
            matches!(
                w.rows.downcast_ref::<TicketRows<B>>(),
                Some(TicketRows::Tokens(_))
            )
        };
        let kinds = || -> Vec<bool> {
            waiting()
                .iter()
                .filter(|w| w.weight_node == node)
                .map(is_tokens)
                .collect()
        };
        let _ = issue(tokens(), None, node);
        assert_eq!(kinds(), [true]);
        let _ = issue(tokens(), None, node);
        let _ = issue(tokens(), None, node);
        assert_eq!(kinds(), [false, false, true], "the earlier ones summed");
        let summed = waiting()
            .iter()
            .find(|w| w.weight_node == node)
            .and_then(|w| match w.rows.downcast_ref::<TicketRows<B>>() {
                Some(TicketRows::Rows(rows)) => Some((rows.ids_vec(), rows.values.clone())),
                _ => None,
            })
            .expect("rows");
        assert_eq!(summed.0, vec![1, 2, 5]);
        let values: Vec<f32> = summed.1.into_data().to_vec().unwrap();
        assert_eq!(values, [2., 2., 2., 1., 1., 1., 1., 1., 1.]);
        waiting().retain(|w| w.weight_node != node);
    }
}
