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
//!   [`sparse_grad_remove`] takes it after `backward()` (how it travels: below).
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
//! burn's `Gradients` and `GradientsParams` hold one dense tensor per parameter, and burn adds
//! those tensors up (two uses of a weight in a graph, `GradientsAccumulator`, the Learner's
//! `grads_accumulation`, the sum over devices), so a `[U, D]` block of rows cannot ride in them.
//! With `sparse: true` the backward op of a lookup or a bag
//! 1. computes the coalesced rows of the batch (sorted unique non-padding ids, summed rows;
//!    O(tokens x D), never a `[V, D]` tensor);
//! 2. leaves them waiting under a fresh *ticket*;
//! 3. registers in the weight's place in `Gradients` the ticket's *marker*: a `[2, 64]` tensor of
//!    pseudo-random integers drawn from the ticket, whose shape broadcasts against no weight.
//!
//! Everything burn does to gradients is linear, and the markers are independent vectors: the
//! marker a step receives is `sum_t c_t * marker(t)` over the tickets of exactly the gradients
//! it was given, and the step solves for the `c_t` (least squares over the tickets waiting for
//! weights of that shape) and applies `sum_t c_t * rows(t)`, which is what the dense gradient
//! would have been. So, as with a dense gradient:
//! - **a dropped `Gradients`** (a NaN loss, an AMP-style skip, a gradient only inspected) is in
//!   no marker a step receives: its rows are never applied, and are dropped after a few steps
//!   of the weight;
//! - **accumulation** (by hand or the Learner's) is a sum of markers: one step applies every
//!   batch's rows, renormalisations by `forward_mut` between the batches included;
//! - **per-module optimizers and frozen weights**: a step applies the rows of the markers in the
//!   `GradientsParams` it is given, and nothing for a weight whose entry was removed;
//! - **two models at once**, on any threads, with the same `ParamId`s or not, and **clones**:
//!   each marker names its own tickets;
//! - **multi-device training** (`ExecutionStrategy::MultiDevice`, the optimizer on the main
//!   device or sharded): each device's `GradientsParams` holds a marker naming the tickets
//!   computed there, whatever fork of the model computed them; the step sums all their rows;
//! - **tied weights**: when another op gives the weight a dense gradient (an output projection
//!   `h.matmul(weight.transpose())`), the rows are added into it and the whole gradient is
//!   dense, as for a dense layer;
//! - **a fault inside a step** (burn's optimizer for the other parameters panics) leaves the
//!   optimizer state and the waiting rows as they were: the sparse state advances only after
//!   burn's optimizer returned;
//! - an optimizer that knows nothing of sparse gradients meets the marker and panics with an
//!   `incompatible shapes` error instead of silently leaving the embedding untrained (a `[1, 1]`
//!   weight, against which any tensor would broadcast, gets its gradient dense).
//!
//! [`sparse_grad`] reads the rows of a weight's gradient, [`sparse_grad_remove`] takes them;
//! `weight.grad(&grads)` returns the marker itself, since burn looks gradients up by tensor and
//! keeps one tensor per weight. Memory is bounded when backward passes run and no step follows:
//! at most 96 row sets per weight shape wait (the oldest beyond that is dropped; a step that
//! presents it then panics, naming the cause), and [`clear_pending_sparse_grads`] drops
//! everything. A weight that is computed from other tracked tensors (not a parameter) gets the
//! dense gradient, so that the chain rule goes on.
//!
//! burn 0.21's DDP strategy (`ExecutionStrategy::DistributedDataParallel`, collectives on CUDA
//! only) all-reduces each gradient tensor across processes. A marker would be summed, but the
//! rows it names wait in another process. Use `MultiDevice` with a sparse model; DDP would need
//! the rows exchanged too: each peer all-reduces the count of its unique ids, pads its ids and
//! rows to the largest count, all-gathers both blocks (an `all_reduce` of a zero-padded
//! `[peers x max_ids, D]` block where each peer fills its own slice), and coalesces the result.

mod bag;
mod bag_functional;
mod bag_mode;
mod carrier;
mod coalesce;
mod config;
mod embedding;
mod error;
mod grads;
mod options;
mod probe;
mod rank;
mod seeded;
mod sparse;
mod util;

pub mod backend;
pub mod checkpoint;
pub mod functional;
pub mod fused;
pub mod optim;
pub mod vectors;

pub use backend::EmbeddingBackend;
pub use bag::{EmbeddingBag, EmbeddingBagConfig};
pub use bag_functional::{embedding_bag, try_embedding_bag, try_embedding_bag_fixed};
pub use bag_mode::BagMode;
pub use carrier::{clear_pending_sparse_grads, pending_sparse_grads};
pub use config::EmbeddingConfig;
pub use embedding::Embedding;
pub use error::EmbeddingError;
pub use functional::{embedding, try_embedding};
pub use fused::FusedEmbedding;
pub use grads::{sparse_grad, sparse_grad_remove};
pub use optim::SparseGradients;
pub use options::{EmbeddingOptions, NormType, normalize_padding_idx};
pub use rank::{IndexRank, LookupRank};
pub use seeded::{
    SeededBackward, TrackedOutput, backward_with, backward_with_all, backward_with_tracked,
    try_backward_with, try_backward_with_all, try_backward_with_tracked,
};
pub use sparse::RowSparseGradient;
