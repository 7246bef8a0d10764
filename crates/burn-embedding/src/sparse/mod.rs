//! Row-sparse gradients: how they travel from the backward pass to the step that applies them,
//! what a step may assume, and the reads and edits training code performs on them.
//!
//! # What travels
//! burn's `Gradients` and `GradientsParams` hold one dense tensor per parameter, and burn adds
//! those tensors when it accumulates (two uses of a weight in one graph, `GradientsAccumulator`,
//! the Learner's `grads_accumulation`, the multi-device sum), so a `[U, D]` block of rows cannot
//! ride in them. With `sparse: true`, the backward op of a lookup or a bag
//! 1. keeps its rows in the registry (`sparse::registry`) under a fresh *ticket* (a lookup's output
//!    gradient and ids as they are, PyTorch's uncoalesced gradient, where the backend defers the
//!    sum; else the coalesced rows);
//! 2. registers in the weight's place the ticket's *marker* (a small tensor of a shape that
//!    broadcasts against no weight; layout in `sparse::marker`).
//!
//! The backend reaches this module through one entry point, `registry::issue` (called by the
//! backward ops' delivery); the optimizers and the functions below read markers through
//! `registry::read` and `registry::settle`. Nothing else touches the registry.
//!
//! # Invariants (each with a unit test beside its code)
//! 1. **Linear operations are exact.** A marker is a vector with one identity entry per ticket;
//!    every sum and scaling of markers (burn's accumulation, a loss scale of 2^-40..2^40, an
//!    average, `grads * 0`) reads back as the same combination of the tickets' rows, with the
//!    coefficients exact in f32 (`marker` tests).
//! 2. **Reads of the whole tensor see the dense gradient's answer.** The marker's Euclidean norm
//!    is the norm of the rows it stands for, for one backward and for any combination of the
//!    last 16 backward passes of one accumulation window (`registry` tests); a NaN or an infinity in the
//!    rows puts one in the marker. So finiteness checks, logged norms and a clip by norm written
//!    by hand (burn's `GradientClipping::Norm`) behave as on the dense gradient. [`grads_are_finite`],
//!    [`grad_norm`] and [`clip_grad_norm`] do the same over a whole model from the rows.
//! 3. **Non-linear operations are refused, never silently applied.** A marker that went through
//!    a clamp, a mask, `abs` and the like fails its checks, and the step or read that meets it
//!    panics with a message that names the supported ways (`with_grad_clipping`,
//!    [`clip_grad_norm`], [`map_grad`]) (`registry` tests).
//! 4. **Gradients live as a user holds them.** A ticket stays after a step presents it (the same
//!    gradients stepped twice, a momentum kept by hand, gradients computed ahead and stepped one
//!    by one) for 8 steps of its weight; a dropped gradient leaves after as
//!    many steps of its weight. Memory is bounded per weight shape: at most
//!    8192 tickets and twice the dense gradient's bytes (the oldest go first).
//!    A marker naming a ticket that left fails with a message that says why.
//! 5. **No cross-talk.** Each marker names its own tickets by slot and check value: models and
//!    tables of the same shape, on any threads, never read each other's rows.
//! 6. **A step changes nothing before it can complete.** The optimizers read every marker before
//!    anything is stepped, and settle the tickets only after burn's optimizer for the other
//!    parameters returned.
//! 7. **A fused table refuses what it cannot honour.** Its probe gradient (`sparse::probe`) identifies
//!    one backward pass exactly; sums and scalings of it are refused with a message.
//! 8. **A dense term on the weight gets the dense sum, in either order.** burn adds a `[V, D]`
//!    gradient (an L2 penalty, a tied projection) to whatever the weight holds, in the order its
//!    backward visits the ops. A lookup that runs after such an op adds its rows to the dense
//!    gradient; one that runs before it, while the op's step is still pending, delivers dense.
//!    The weight's gradient is then the dense tensor, as for a dense layer, and steps take it
//!    densely. Through [`Embedding::dense_weight`](crate::Embedding::dense_weight) this always
//!    holds; on `weight.val()` it rests on a count of the weight's pending steps that burn
//!    0.21 can leave off by one in the cases `backend::pending` lists (with its tests).
//!
//! # Lazy semantics that differ from dense on purpose
//! The sparse rules step the touched rows only: weight decay, momentum and Adam's moments of the
//! rows a batch did not touch do not move (PyTorch's `SparseAdam` and sparse SGD/Adagrad do the
//! same). See the name table in the crate README.
//!
//! # Half precision
//! A marker's entries need f32's range and precision (2^-64 identity entries, checks with eight
//! fraction bits, norms beyond 65504): the marker of a table stored in f16 or bf16 is an f32
//! tensor, which burn's sums and scalings keep in f32, while its rows wait in the table's type.
//! A read scales and sums them in f32 and rounds once, as the dense gradient would be rounded;
//! the rules then compute in f32 (see [`Rounding`](crate::optim::Rounding)).

pub(crate) mod marker;
pub(crate) mod probe;
pub(crate) mod reads;
pub(crate) mod registry;
mod rows;

pub use reads::{
    clip_grad_norm, grad_norm, grad_rows, grads_are_finite, map_grad, sparse_grad,
    sparse_grad_remove,
};
pub use registry::{clear_pending_sparse_grads, pending_sparse_grads};
pub use rows::RowSparseGradient;
