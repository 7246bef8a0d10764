#![warn(missing_docs)]
//! # burn-embedding
//!
//! An embedding layer for [burn](https://burn.dev) with everything `torch.nn.Embedding` has,
//! and a backward that can stay row-sparse:
//!
//! - [`Embedding`] / [`EmbeddingConfig`]: `padding_idx` (negative values normalised, row zeroed
//!   at init, never a gradient), `max_norm` + `norm_type`, `scale_grad_by_freq`, `sparse`,
//!   [`Embedding::from_pretrained`], and index tensors of any rank (`[..] -> [.., D]`).
//! - [`embedding`]: the same lookup as a function of a weight tensor.
//! - [`EmbeddingBackend`]: the backend extension trait holding the forward and the backward.
//!   It is implemented for ndarray, wgpu (burn's `CubeBackend` and `Fusion<CubeBackend>`) and
//!   LibTorch (cargo features `ndarray`, `wgpu`, `tch`), each with its own fast paths, and for
//!   `Autodiff<B, C>`, where the backward is a custom burn-autodiff op.
//! - [`EmbeddingOptions::deterministic`] (on by default): a backward that is the same bits on
//!   every run; off, wgpu adds the dense gradient with float atomics.
//! - [`EmbeddingBag`] / [`EmbeddingBagConfig`]: bags of ids reduced by sum, mean or max (CSR
//!   offsets or fixed-length rows, `per_sample_weights`, padding), on the same trait and
//!   backward, with row-sparse gradients.
//! - [`RowSparseGradient`]: with `sparse: true`, the backward yields the sorted unique touched
//!   rows and their summed gradients, and never creates a `[V, D]` tensor;
//!   [`sparse_grad_remove`] takes it after `backward()` (how it travels:
//!   [`SparseGradients`]).
//!
//! Indices are validated on every backend (PyTorch checks them on the CPU only): an index
//! outside `0..num_embeddings` is an [`EmbeddingError`] naming it.
//!
//! ## `max_norm` and the stored weight
//! PyTorch renormalises the referenced rows of the weight in place during the forward, so that
//! the optimizer then updates the renormalised rows. A burn forward takes `&self`, so
//! [`Embedding::forward`] gives PyTorch's output but leaves the stored weight as it is;
//! [`Embedding::forward_mut`] (or [`Embedding::renorm`] before the forward) also writes the
//! renormalised rows back into the weight, keeping its parameter id, so that the weight equals
//! PyTorch's before the next update. Renormalising is idempotent, so calling both is harmless.

//!
//! ## Sparse gradients: how they travel, and why it is safe
//! burn's `Gradients` and `GradientsParams` hold one dense tensor per parameter, and
//! burn-train's gradient accumulator adds those tensors up, so a `[U, D]` block of rows cannot
//! ride in them. With `sparse: true` the backward op therefore
//! 1. computes the coalesced rows (sorted unique non-padding ids, summed rows; O(tokens x D));
//! 2. leaves them *pending*, keyed by the weight tensor's autodiff node id (unique per tensor,
//!    drawn by burn from a global counter), merged and re-coalesced with any rows already
//!    pending for that weight (a second lookup in the graph, another backward, the k batches of
//!    gradient accumulation);
//! 3. registers in the weight's place in `Gradients` a tiny marker whose shape cannot broadcast
//!    against the weight.
//!
//! [`optim`]'s optimizers take the pending rows of each parameter they visit and remove the
//! marker; [`sparse_grad_remove`] does the same for hand-written code. Safety:
//! - no `[V, D]` tensor is created on the path (tested with a 512 MB table and the process's
//!   peak memory);
//! - two models trained at once, on any threads, have different weight tensors and so
//!   different keys; clones of one model share their weight tensor and its pending rows;
//! - memory stays bounded when backward runs and no step follows: pending rows are coalesced
//!   (at most one row per touched id), an entry dies with its weight tensor, and
//!   [`clear_pending_sparse_grads`] drops everything;
//! - an optimizer that knows nothing of sparse gradients meets the marker and panics with an
//!   `incompatible shapes` error instead of silently not updating the embedding;
//! - a weight that is computed from other tracked tensors (not a parameter) gets the dense
//!   gradient, so that the chain rule goes on; a sparse weight must not also receive a dense
//!   gradient from another op (for example tied input/output embeddings): the dense gradient
//!   and the marker cannot be added, which panics.

mod bag;
mod bag_functional;
mod bag_mode;
mod carrier;
mod coalesce;
mod config;
mod embedding;
mod error;
mod options;
mod sparse;
mod util;

pub mod backend;
pub mod functional;
pub mod optim;

pub use backend::{EmbeddingBackend, SparseGradients};
pub use bag::{EmbeddingBag, EmbeddingBagConfig};
pub use bag_functional::{
    bags_from_offsets, embedding_bag, try_embedding_bag, try_embedding_bag_fixed,
};
pub use bag_mode::BagMode;
pub use carrier::{
    clear_pending_sparse_grads, pending_sparse_grads, sparse_grad, sparse_grad_remove,
};
pub use config::EmbeddingConfig;
pub use embedding::Embedding;
pub use error::EmbeddingError;
pub use functional::{embedding, try_embedding};
pub use options::{EmbeddingOptions, NormType, normalize_padding_idx};
pub use sparse::RowSparseGradient;
