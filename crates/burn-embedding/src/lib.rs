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
//!   It is implemented for ndarray, wgpu and LibTorch (cargo features `ndarray`, `wgpu`, `tch`)
//!   and for `Autodiff<B, C>`, where the backward is a custom burn-autodiff op.
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

mod coalesce;
mod config;
mod embedding;
mod error;
mod options;
mod sparse;

pub mod backend;
pub mod functional;
pub mod optim;

pub use backend::{
    EmbeddingBackend, SparseGradients, clear_pending_sparse_grads, pending_sparse_grads,
};
pub use config::EmbeddingConfig;
pub use embedding::Embedding;
pub use error::EmbeddingError;
pub use functional::{embedding, try_embedding};
pub use options::{EmbeddingOptions, NormType, normalize_padding_idx};
pub use sparse::RowSparseGradient;

use burn::tensor::Tensor;

/// Takes the row-sparse gradient of `weight` out of `grads` after `backward()`.
///
/// `None` when no `sparse` lookup of this weight touched a non-padding row.
pub fn sparse_grad_remove<B: SparseGradients>(
    weight: &Tensor<B, 2>,
    grads: &mut B::Gradients,
) -> Option<RowSparseGradient<B::InnerBackend>> {
    B::sparse_grad_remove(&weight.clone().into_primitive().tensor(), grads)
}
