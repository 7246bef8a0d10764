//! [`EmbeddingBackend`] for [`Autodiff<B, C>`]: the custom backward op.
//!
//! With `sparse: true` and a leaf weight (a parameter), the backward computes the row-sparse
//! gradient and hands it to [`pending`](super::pending), which keeps it until an optimizer step
//! or [`sparse_grad_remove`](crate::sparse_grad_remove) takes it. In the weight's place in
//! [`Gradients`] it registers a tiny *marker* tensor whose shape cannot broadcast against the
//! weight: the sparse-aware optimizers remove it, and an optimizer that knows nothing of sparse
//! gradients fails loudly on it instead of silently leaving the embedding untrained. When the
//! weight is computed from other tracked tensors (not a leaf), the op falls back to the dense
//! gradient so that the chain rule can go on.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Tensor, TensorMetadata};

use super::reference::primitive;
use super::{EmbeddingBackend, pending};
use crate::optim::{RowState, SparseRule};
use crate::{BagMode, EmbeddingOptions, RowSparseGradient};

/// Autodiff backends whose backward pass can leave a row-sparse gradient for a weight.
pub trait SparseGradients: AutodiffBackend + EmbeddingBackend {
    /// Takes the pending row-sparse gradient of `weight`, if a lookup with `sparse: true` left
    /// one (a batch that touched at least one non-padding row), and removes its marker from
    /// `grads`.
    fn sparse_grad_remove(
        weight: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
    ) -> Option<RowSparseGradient<Self::InnerBackend>>;

    /// Takes the pending row-sparse gradient of `weight` (what an optimizer step consumes).
    fn sparse_grad_take(
        weight: &FloatTensor<Self>,
    ) -> Option<RowSparseGradient<Self::InnerBackend>>;

    /// Whether a row-sparse gradient is pending for `weight`.
    fn has_sparse_grad(weight: &FloatTensor<Self>) -> bool;

    /// [`EmbeddingBackend::embedding_sparse_delta`] of the inner backend.
    fn sparse_delta(
        weight: &FloatTensor<Self::InnerBackend>,
        rows: RowSparseGradient<Self::InnerBackend>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self::InnerBackend>,
    ) -> RowSparseGradient<Self::InnerBackend>;

    /// [`EmbeddingBackend::embedding_add_rows`] of the inner backend.
    fn add_rows(
        weight: FloatTensor<Self::InnerBackend>,
        rows: RowSparseGradient<Self::InnerBackend>,
    ) -> FloatTensor<Self::InnerBackend>;
}

/// The shape of the marker: one that can broadcast against no `[v, d]` weight (unless
/// `v = d = 1`), so that `weight - lr * marker` fails.
pub(crate) fn marker_shape(v: usize, d: usize) -> [usize; 2] {
    [if v == 2 { 3 } else { 2 }, if d == 3 { 2 } else { 3 }]
}

#[derive(Debug)]
struct EmbeddingBackward;

impl<B: EmbeddingBackend> Backward<B, 1> for EmbeddingBackward {
    type State = (IntTensor<B>, usize, EmbeddingOptions);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (indices, num_embeddings, options) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(weight) = &ops.parents[0] {
            let is_leaf = weight.parents.is_empty();
            deliver_weight_grad::<B, _>(
                grads,
                weight,
                weight.id,
                is_leaf,
                grad,
                indices,
                num_embeddings,
                &options,
            );
        }
    }
}

/// Hands the weight its gradient, given the gradient of each token's row `[.., D]`: row-sparse
/// (pending, with the marker in `grads`) when `sparse` and the weight is a leaf (a parameter
/// has no parents), else dense, so that the chain rule can go on.
#[allow(clippy::too_many_arguments)]
pub(super) fn deliver_weight_grad<B: EmbeddingBackend, N: Send + Sync + 'static>(
    grads: &mut Gradients,
    weight: &std::sync::Arc<N>,
    weight_id: burn::backend::autodiff::NodeId,
    weight_is_leaf: bool,
    token_grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) {
    if options.sparse && weight_is_leaf {
        let d = token_grad.shape().as_slice().last().copied().unwrap_or(1);
        let device = B::float_device(&token_grad);
        let rows = B::embedding_grad_sparse(token_grad, indices, num_embeddings, options);
        deliver_sparse_rows::<B, N>(grads, weight, weight_id, rows, num_embeddings, d, &device);
    } else {
        let dense = B::embedding_grad_dense(token_grad, indices, num_embeddings, options);
        grads.register::<B>(weight_id, dense);
    }
}

/// Leaves `rows` pending for the weight and puts the marker in its place in `grads`.
pub(super) fn deliver_sparse_rows<B: EmbeddingBackend, N: Send + Sync + 'static>(
    grads: &mut Gradients,
    weight: &std::sync::Arc<N>,
    weight_id: burn::backend::autodiff::NodeId,
    rows: Option<RowSparseGradient<B>>,
    num_embeddings: usize,
    dim: usize,
    device: &B::Device,
) {
    if let Some(rows) = rows {
        pending::add::<B, _>(weight, weight_id.value, rows);
        let marker = Tensor::<B, 2>::zeros(marker_shape(num_embeddings, dim), device);
        grads.register::<B>(weight_id, primitive(marker));
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> EmbeddingBackend for Autodiff<B, C> {
    fn embedding_lookup(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        let num_embeddings = weight.primitive.shape()[0];
        // The state is the indices alone: keeping the weight would pin a [V, D] tensor per step.
        match EmbeddingBackward
            .prepare::<C>([weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (indices.clone(), num_embeddings, *options),
                B::embedding_lookup(weight.primitive, indices, options),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(B::embedding_lookup(weight.primitive, indices, options))
            }
        }
    }

    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        bag_of: IntTensor<Self>,
        num_bags: usize,
        per_sample_weights: Option<FloatTensor<Self>>,
        mode: BagMode,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        super::autodiff_bag::forward::<B, C>(
            weight,
            indices,
            bag_of,
            num_bags,
            per_sample_weights,
            mode,
            options,
        )
    }

    fn embedding_bag_token_grad(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        bag_of: IntTensor<Self>,
        num_bags: usize,
        per_sample_weights: Option<FloatTensor<Self>>,
        max_positions: Option<IntTensor<Self>>,
        mode: BagMode,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::embedding_bag_token_grad(
            grad.primitive,
            indices,
            bag_of,
            num_bags,
            per_sample_weights.map(|p| p.primitive),
            max_positions,
            mode,
            options,
        ))
    }

    fn embedding_renorm(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        max_norm: f64,
        norm_type: f64,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::embedding_renorm(
            weight.primitive,
            indices,
            max_norm,
            norm_type,
        ))
    }

    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        // Not differentiable again (no double backward), as in burn's own embedding.
        Self::from_inner(B::embedding_grad_dense(
            grad.primitive,
            indices,
            num_embeddings,
            options,
        ))
    }

    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        B::embedding_grad_sparse(grad.primitive, indices, num_embeddings, options).map(|g| {
            RowSparseGradient::new(
                Tensor::from_inner(g.ids),
                Tensor::from_inner(g.values),
                g.num_embeddings,
            )
        })
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> SparseGradients for Autodiff<B, C> {
    fn sparse_grad_remove(
        weight: &FloatTensor<Self>,
        grads: &mut Gradients,
    ) -> Option<RowSparseGradient<B>> {
        let rows = Self::sparse_grad_take(weight)?;
        grads.remove::<B>(weight);
        Some(rows)
    }

    fn sparse_grad_take(weight: &FloatTensor<Self>) -> Option<RowSparseGradient<B>> {
        pending::take::<B>(weight.node.id.value)
    }

    fn has_sparse_grad(weight: &FloatTensor<Self>) -> bool {
        pending::contains(weight.node.id.value)
    }

    fn sparse_delta(
        weight: &FloatTensor<B>,
        rows: RowSparseGradient<B>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<B>,
    ) -> RowSparseGradient<B> {
        B::embedding_sparse_delta(weight, rows, rule, lr, state)
    }

    fn add_rows(weight: FloatTensor<B>, rows: RowSparseGradient<B>) -> FloatTensor<B> {
        B::embedding_add_rows(weight, rows)
    }
}
