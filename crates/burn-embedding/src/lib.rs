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
//! - [`vectors`]: word vectors in and out in the word2vec text and binary formats and GloVe's
//!   (gensim, fastText, GloVe files), streaming, with typed errors naming the line or byte.
//! - [`checkpoint`]: a table from a PyTorch `.pt` state_dict or a safetensors file (through
//!   burn-store), half precision included.
//! - [`FusedEmbedding`] (`embedding.fused(rule, lr)`): the optimizer fused into the backward, as
//!   FBGEMM's table-batched embeddings: each backward updates the touched rows in place with
//!   SGD, Adagrad, row-wise Adagrad or lazy Adam; no rows wait and no optimizer step runs for
//!   the table. Its rule state and learning rate are part of its record.
//! - [`optim`]: sparse-aware burn optimizers for burn-train's `Learner`, among them FBGEMM's
//!   exact row-wise Adagrad ([`optim::RowwiseAdagradConfig`], state `[V, 1]`).
//! - [`backward_with`]: a backward pass started from a given output gradient (PyTorch's
//!   `out.backward(grad)`), without the graph of a `(out * grad).sum()`; [`TrackedOutput`] takes a
//!   tracked output apart into its graph node and its value, so that a loss with a closed-form
//!   gradient reads the value without a copy.
//! - [`RowSparseGradient`]: with `sparse: true`, the backward yields the sorted unique touched
//!   rows and their summed gradients, and never creates a `[V, D]` tensor;
//!   [`sparse_grad_remove`] takes it after `backward()` (how it travels: below). [`sparse`]
//!   holds the reads and edits training code performs on gradients, sparse or dense: whether
//!   every gradient is finite, the global norm and a clip by it, and edits of a table's rows.
//!
//! Indices are validated on every backend (PyTorch checks them on the CPU only): an index
//! outside `0..num_embeddings` is an [`EmbeddingError`] naming it.
//!
//! ## `max_norm` and the stored weight
//! PyTorch renormalises the referenced rows of the weight in place during the forward, so that
//! the optimizer then updates the renormalised rows. A burn forward takes `&self` (burn-train's
//! `TrainStep::step` too), so [`Embedding::forward`] gives PyTorch's output and leaves the stored
//! weight as it is. With `sparse: true` the renormalisation travels with the rows: the
//! sparse-aware step writes the renormalised rows before it adds the update, so a `Learner` run
//! ends with PyTorch's weights (golden cases `own_*_max_norm*`). [`Embedding::forward_mut`] (or
//! [`Embedding::renorm`]) writes them at once, keeping the parameter id, which a dense layer
//! needs for PyTorch's weights. Renormalising is idempotent, so doing both is harmless.
//!
//! ## Sparse gradients: how they travel, and what is guaranteed
//! burn keeps one dense tensor per parameter in its gradients, so with `sparse: true` the
//! backward leaves the rows waiting under a ticket and puts a small *marker* in the weight's
//! place; the sparse-aware optimizers read the rows back from it. Training code sees what it
//! would see on the dense gradient: sums and scalings of gradients (accumulation, loss scales,
//! averaging, several devices) apply exactly; the marker's norm and finiteness are those of the
//! rows, so a clip by norm written by hand or a skip on NaN behaves as on the dense gradient;
//! gradients may be kept and stepped again; models and tables of the same shape never see each
//! other's rows; a non-linear edit of a marker is refused with a message naming the supported
//! ways ([`sparse::map_grad`], `with_grad_clipping`, [`sparse::clip_grad_norm`]). A weight that
//! another op also uses densely (a tied output projection) gets the dense sum. The module
//! [`sparse`] states every invariant, what it costs and the one case burn 0.21 cannot make exact.
//!
//! burn 0.21's DDP strategy (`ExecutionStrategy::DistributedDataParallel`, collectives on CUDA
//! only) all-reduces each gradient tensor across processes. A marker would be summed, but the
//! rows it names wait in another process. Use `MultiDevice` with a sparse model.

mod bag;
mod bag_functional;
mod bag_mode;
mod coalesce;
mod config;
mod embedding;
mod error;
mod id_chains;
mod options;
mod rank;
mod seeded;
mod util;

pub mod backend;
pub mod checkpoint;
pub mod functional;
pub mod fused;
pub mod optim;
pub mod sparse;
pub mod vectors;

pub use backend::EmbeddingBackend;
pub use bag::{EmbeddingBag, EmbeddingBagConfig};
pub use bag_functional::{embedding_bag, try_embedding_bag, try_embedding_bag_fixed};
pub use bag_mode::BagMode;
pub use config::EmbeddingConfig;
pub use embedding::Embedding;
pub use error::EmbeddingError;
pub use functional::{embedding, try_embedding};
pub use fused::FusedEmbedding;
pub use optim::SparseGradients;
pub use options::{EmbeddingOptions, NormType, normalize_padding_idx};
pub use rank::{IndexRank, LookupRank};
pub use seeded::{
    SeededBackward, TrackedOutput, backward_with, backward_with_all, backward_with_tracked,
    try_backward_with, try_backward_with_all, try_backward_with_tracked,
};
pub use sparse::{
    RowSparseGradient, clear_pending_sparse_grads, pending_sparse_grads, sparse_grad,
    sparse_grad_remove,
};
