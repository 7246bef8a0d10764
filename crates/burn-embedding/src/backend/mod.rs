//! The backend extension trait: every backend-specific part of an embedding lives behind it.
//!
//! [`EmbeddingBackend`] follows burn's backend-extension pattern (burn's
//! `examples/custom-wgpu-kernel`): its methods have default bodies built from burn tensor ops
//! (in `reference`), so any backend gets a correct implementation from an empty `impl`, and a
//! backend with a faster route overrides a method in its own module. The implementation for
//! [`Autodiff<B, C>`](burn::backend::Autodiff) (in `autodiff`) registers the custom backward op.
//!
//! The optimizers' side is a second trait of the same pattern,
//! [`SparseUpdate`](crate::optim::SparseUpdate) (in `update`, with the rules it runs in `rule`
//! and their state in `row_state`): each backend's module holds its kernels for both traits
//! (`ndarray`, `tch`, `cube`, each with an `update` submodule).

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use crate::{EmbeddingOptions, RowSparseGradient};

pub(crate) mod reference;
pub(crate) mod reference_bag;

mod autodiff;
mod autodiff_bag;
mod autodiff_fused;
mod bag_batch;
#[cfg(any(feature = "ndarray", feature = "tch"))]
pub(crate) mod cpu;
#[cfg(feature = "wgpu")]
mod cube;
mod delivery;
#[cfg(any(feature = "ndarray", feature = "tch"))]
pub(crate) mod huge_pages;
#[cfg(feature = "ndarray")]
pub(crate) mod ndarray;
mod pending;
pub(crate) mod row_state;
pub(crate) mod rule;
pub(crate) mod sparse_gradients;
#[cfg(feature = "tch")]
mod tch;
pub(crate) mod update;
pub(crate) mod write_back;

/// A backend that can run the embedding lookup and its backward.
///
/// All tensors are primitives so that a backend can override a method with its own kernels.
/// Shapes: `weight` is `[V, D]`; for the lookup and its backward `indices` has any rank `[..]`
/// (N elements) and `grad` is `[.., D]`, so that no backend has to copy a tensor to reshape it;
/// for the bag methods `indices` is the flattened batch `[N]`.
/// Indices are assumed valid (`0 <= i < V`): the checked entry points in
/// [`functional`](crate::functional) and [`Embedding`](crate::Embedding) validate them first.
pub trait EmbeddingBackend: Backend {
    /// Gathers the rows of `weight` named by `indices`: `[V, D], [..] -> [.., D]`.
    ///
    /// With `options.max_norm`, each referenced row whose norm exceeds it is rescaled before the
    /// lookup, as PyTorch does; the stored weight is left as it is (see
    /// [`embedding_renorm`](Self::embedding_renorm)) and no gradient flows through the rescale.
    fn embedding_lookup(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        reference::forward::<Self>(weight, indices, options)
    }

    /// The smallest and largest of `indices` (any rank, at least one element), on the host: what
    /// the checked entry points compare with `0..V` before a lookup. By default a min and a max
    /// reduction read back together; a CPU backend reads its storage where it lies.
    fn embedding_index_range(indices: &IntTensor<Self>) -> (i64, i64) {
        reference::index_range::<Self>(indices)
    }

    /// The lookup of a table whose optimizer runs inside the backward
    /// ([`FusedEmbedding`](crate::fused::FusedEmbedding)): `[V, D], [..] -> [.., D]`.
    ///
    /// On an autodiff backend, when `probe` (a `[1]` tensor) is tracked, the backward computes
    /// the row-sparse weight gradient, hands it to `sink` (which updates the table), and gives
    /// `probe` the gradient 1: the weight itself gets no gradient. Elsewhere (and by default)
    /// this is [`embedding_lookup`](Self::embedding_lookup).
    fn embedding_lookup_fused(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
        probe: FloatTensor<Self>,
        sink: Arc<dyn RowSink<Self>>,
    ) -> FloatTensor<Self> {
        let _ = (probe, sink);
        Self::embedding_lookup(weight, indices, options)
    }

    /// PyTorch's `embedding_renorm_`: the weight with every row referenced by `indices` whose
    /// `norm_type`-norm exceeds `max_norm` scaled by `max_norm / (norm + 1e-7)`: `[V, D]`.
    fn embedding_renorm(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        max_norm: f64,
        norm_type: f64,
    ) -> FloatTensor<Self> {
        reference::renorm::<Self>(weight, indices, max_norm, norm_type)
    }

    /// The dense weight gradient `[V, D]` of a lookup, given the output gradient `[.., D]`.
    ///
    /// The padding row gets zero; with `scale_grad_by_freq` each contribution is divided by the
    /// number of times its index occurs in `indices`.
    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        reference::backward_dense::<Self>(grad, indices, num_embeddings, options)
    }

    /// The same gradient as [`embedding_grad_dense`](Self::embedding_grad_dense), row-sparse: the
    /// sorted unique non-padding ids of the batch and their summed rows. `None` when the batch
    /// touches no row (empty, or padding only). Never creates a `[V, D]` tensor.
    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        reference::backward_sparse::<Self>(grad, indices, num_embeddings, options)
    }

    /// The squared L2 norm of the row-sparse gradient that a lookup's output gradient `grad`
    /// `[.., D]` and its `indices` `[..]` sum to (the norm of
    /// [`embedding_grad_sparse`](Self::embedding_grad_sparse)'s rows, in f64): NaN or infinite
    /// when a row is. What a sparse weight's marker carries so that its norm is the rows'.
    fn embedding_token_grad_norm_sq(
        grad: &FloatTensor<Self>,
        indices: &IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> f64 {
        reference::token_grad_norm_sq::<Self>(grad, indices, num_embeddings, options)
    }

    /// The weight `[V, D]` for a dense use beside sparse lookups (a penalty on it, a tied
    /// projection through it): on an autodiff backend the backward hands the weight this use's
    /// dense gradient merged with the lookups' rows, in whichever order burn runs them (see
    /// [`Embedding::dense_weight`](crate::Embedding::dense_weight)). The weight itself elsewhere.
    fn embedding_dense_weight(weight: FloatTensor<Self>) -> FloatTensor<Self> {
        weight
    }

    /// Whether a sparse backward may leave a lookup's gradient as it came (the output gradient
    /// and the ids, PyTorch's uncoalesced gradient) until a step or a read sums it per id.
    ///
    /// Worth it where a step sums and applies the rows in one pass
    /// ([`SparseUpdate::embedding_fused_update`](crate::optim::SparseUpdate::embedding_fused_update)),
    /// and sound only where no later op can write the held `grad` or `indices` in place: `true`
    /// for NdArray. By default (`false`) the backward sums the rows at once.
    fn embedding_defers_grad_sum() -> bool {
        false
    }

    /// Reduces the rows of each bag of `bags` (see [`BagBatch`]) to `[num_bags, D]`, and for
    /// mode max gives the position of each maximum `[num_bags, D]` (-1 for an empty bag).
    /// Padding tokens are left out; an empty bag gives zeros. With `max_norm`, rows are
    /// renormalised for the lookup as in [`embedding_lookup`](Self::embedding_lookup).
    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        reference_bag::bag_forward::<Self>(weight, bags, options)
    }

    /// The gradient with respect to each token's row `[N, D]` of a bag forward, from the output
    /// gradient `[num_bags, D]` (and, for mode max, the forward's `max_positions`); the weight
    /// gradient is then [`embedding_grad_dense`](Self::embedding_grad_dense) or
    /// [`embedding_grad_sparse`](Self::embedding_grad_sparse) of it.
    fn embedding_bag_token_grad(
        grad: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        max_positions: Option<IntTensor<Self>>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        reference_bag::bag_token_grad::<Self>(grad, bags, max_positions, options)
    }

    /// The row-sparse weight gradient of a bag forward: by default
    /// [`embedding_bag_token_grad`](Self::embedding_bag_token_grad) then
    /// [`embedding_grad_sparse`](Self::embedding_grad_sparse); a backend may fuse the two so
    /// that no `[N, D]` tensor is made.
    fn embedding_bag_grad_sparse(
        grad: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        max_positions: Option<IntTensor<Self>>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        reference_bag::bag_grad_sparse::<Self>(grad, bags, max_positions, num_embeddings, options)
    }
}

pub use bag_batch::BagBatch;

/// Where the backward of [`EmbeddingBackend::embedding_lookup_fused`] sends the weight's rows:
/// the table of a [`FusedEmbedding`](crate::fused::FusedEmbedding), which applies its update.
pub trait RowSink<B: Backend>: Send + Sync {
    /// Applies the update of one backward pass, given the lookup's output gradient `grad`
    /// `[.., D]`, its `indices` `[..]` and the lookup's `options`.
    fn apply(&self, grad: FloatTensor<B>, indices: IntTensor<B>, options: &EmbeddingOptions);
}
