//! The custom backward op of an embedding bag on [`Autodiff<B, C>`]: gradients for the weight
//! (dense, or row-sparse exactly as a lookup's) and for `per_sample_weights`.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::delivery::{deliver_rows, deliver_token_grad, weight_node};
use super::pending::PendingLookup;
use super::reference_bag::bag_per_sample_weights_grad;
use super::{BagBatch, EmbeddingBackend};
use crate::EmbeddingOptions;
use crate::sparse::registry::TicketRows;

/// What the backward needs. The weight is kept only when `per_sample_weights` need a gradient
/// (a reference to the tensor, not a copy).
#[derive(Debug, Clone)]
pub(super) struct BagState<B: EmbeddingBackend> {
    batch: BagBatch<B>,
    max_positions: Option<IntTensor<B>>,
    num_embeddings: usize,
    options: EmbeddingOptions,
    weight_for_psw: Option<FloatTensor<B>>,
    /// Counts a sparse bag among its weight's pending lookups.
    pending: Option<PendingLookup>,
}

#[derive(Debug)]
struct EmbeddingBagBackward;

impl<B: EmbeddingBackend> Backward<B, 2> for EmbeddingBagBackward {
    type State = BagState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let s = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [weight, psw] = ops.parents;
        if let Some(psw) = psw {
            let weight = s
                .weight_for_psw
                .clone()
                .expect("the weight is kept when per_sample_weights are tracked");
            let g = bag_per_sample_weights_grad::<B>(grad.clone(), weight, &s.batch, &s.options);
            grads.register::<B>(psw.id, g);
        }
        if let Some(weight) = weight {
            let weight = weight_node!(B, weight, grad.clone(), s.pending.as_ref());
            if s.options.sparse && weight.takes_rows() {
                let rows = B::embedding_bag_grad_sparse(
                    grad,
                    &s.batch,
                    s.max_positions,
                    s.num_embeddings,
                    &s.options,
                );
                let rows = rows.map(TicketRows::Rows);
                deliver_rows::<B>(grads, &weight, rows, &s.options);
                return;
            }
            let token_grad =
                B::embedding_bag_token_grad(grad, &s.batch, s.max_positions, &s.options);
            let indices = s.batch.indices;
            deliver_token_grad::<B>(
                grads,
                &weight,
                token_grad,
                indices,
                s.num_embeddings,
                &s.options,
            );
        }
    }
}

/// [`EmbeddingBackend::embedding_bag_forward`] on `Autodiff<B, C>`.
pub(super) fn forward<B: EmbeddingBackend, C: CheckpointStrategy>(
    weight: FloatTensor<Autodiff<B, C>>,
    batch: &BagBatch<Autodiff<B, C>>,
    options: &EmbeddingOptions,
) -> (FloatTensor<Autodiff<B, C>>, Option<IntTensor<B>>) {
    let num_embeddings = weight.primitive.shape()[0];
    let per_sample_weights = batch.per_sample_weights.as_ref();
    let psw_tracked = per_sample_weights.is_some_and(|p| p.is_tracked());
    // Without per_sample_weights, an untracked stand-in fills the second parent slot.
    let psw_node = match per_sample_weights {
        Some(p) => p.node.clone(),
        None => <Autodiff<B> as AutodiffBackend>::from_inner(weight.primitive.clone()).node,
    };
    let inner = batch.map(|i| i, |p| p.primitive);
    let (out, max_positions) = B::embedding_bag_forward(weight.primitive.clone(), &inner, options);
    let state = BagState {
        batch: inner,
        max_positions: max_positions.clone(),
        num_embeddings,
        options: *options,
        weight_for_psw: psw_tracked.then(|| weight.primitive.clone()),
        pending: (options.sparse && weight.is_tracked())
            .then(|| PendingLookup::new(weight.node.id.value, &weight.rc)),
    };
    let out = match EmbeddingBagBackward
        .prepare::<C>([weight.node.clone(), psw_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    (out, max_positions)
}
