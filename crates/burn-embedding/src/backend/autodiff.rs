//! [`EmbeddingBackend`] for [`Autodiff<B, C>`]: the custom backward op of a lookup.
//!
//! The backward hands the weight its gradient through [`delivery`](super::delivery): dense, or
//! (with `sparse: true` and a leaf weight) as rows waiting under a ticket whose marker stands in
//! the weight's place in [`Gradients`] (see [`sparse`](crate::sparse)).

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Tensor, TensorMetadata};

use super::delivery::{deliver_dense, deliver_token_grad, weight_node};
use super::pending::PendingLookup;
use super::{BagBatch, EmbeddingBackend, RowSink};
use crate::{EmbeddingOptions, RowSparseGradient};

#[derive(Debug)]
struct EmbeddingBackward;

impl<B: EmbeddingBackend> Backward<B, 1> for EmbeddingBackward {
    /// The indices, `V`, the options, and a sparse lookup's count among its weight's pending
    /// lookups.
    type State = (IntTensor<B>, usize, EmbeddingOptions, Option<PendingLookup>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (indices, num_embeddings, options, pending) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [weight] = ops.parents;
        if let Some(weight) = weight {
            let weight = weight_node!(B, weight, grad.clone(), pending.as_ref());
            deliver_token_grad::<B>(grads, &weight, grad, indices, num_embeddings, &options);
        }
    }
}

/// The backward of [`EmbeddingBackend::embedding_dense_weight`]: the identity, delivering to a
/// leaf weight through [`deliver_dense`].
#[derive(Debug)]
struct DenseWeightBackward;

impl<B: EmbeddingBackend> Backward<B, 1> for DenseWeightBackward {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let [weight] = ops.parents;
        if let Some(weight) = weight {
            let weight = weight_node!(B, weight, grad.clone(), None);
            if weight.is_leaf {
                deliver_dense::<B>(grads, &weight, grad);
            } else {
                grads.register::<B>(weight.handle.node.id, grad);
            }
        }
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> EmbeddingBackend for Autodiff<B, C> {
    fn embedding_dense_weight(weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match DenseWeightBackward
            .prepare::<C>([weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), weight.primitive),
            OpsKind::UnTracked(prep) => prep.finish(weight.primitive),
        }
    }

    fn embedding_token_grad_norm_sq(
        grad: &FloatTensor<Self>,
        indices: &IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> f64 {
        B::embedding_token_grad_norm_sq(&grad.primitive, indices, num_embeddings, options)
    }

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
            OpsKind::Tracked(prep) => {
                let pending = (options.sparse && weight.is_tracked())
                    .then(|| PendingLookup::new(weight.node.id.value, &weight.rc));
                prep.finish(
                    (indices.clone(), num_embeddings, *options, pending),
                    B::embedding_lookup(weight.primitive, indices, options),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::embedding_lookup(weight.primitive, indices, options))
            }
        }
    }

    fn embedding_lookup_fused(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
        probe: FloatTensor<Self>,
        sink: Arc<dyn RowSink<Self>>,
    ) -> FloatTensor<Self> {
        super::autodiff_fused::lookup::<B, C>(weight, indices, options, probe, sink)
    }

    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        super::autodiff_bag::forward::<B, C>(weight, bags, options)
    }

    fn embedding_bag_token_grad(
        grad: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        max_positions: Option<IntTensor<Self>>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        let bags = bags.map(|i| i, |p| p.primitive);
        Self::from_inner(B::embedding_bag_token_grad(
            grad.primitive,
            &bags,
            max_positions,
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

    fn embedding_defers_grad_sum() -> bool {
        B::embedding_defers_grad_sum()
    }

    fn embedding_index_range(indices: &IntTensor<Self>) -> (i64, i64) {
        B::embedding_index_range(indices)
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
