//! The backward op of a fused lookup ([`EmbeddingBackend::embedding_lookup_fused`] on
//! [`Autodiff<B, C>`]): the output gradient goes straight to the table, whose step
//! ([`SparseUpdate::embedding_fused_update`](crate::optim::SparseUpdate::embedding_fused_update))
//! sums and updates the touched rows, so no rows wait and no marker travels through `Gradients`.

use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Shape, TensorData, TensorMetadata};

use super::{EmbeddingBackend, RowSink, write_back};
use crate::EmbeddingOptions;
use crate::sparse::probe;

/// The table a backward hands its rows to.
struct Sink<B: EmbeddingBackend, C: CheckpointStrategy>(Arc<dyn RowSink<Autodiff<B, C>>>);

impl<B: EmbeddingBackend, C: CheckpointStrategy> Clone for Sink<B, C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B: EmbeddingBackend, C: CheckpointStrategy> core::fmt::Debug for Sink<B, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FusedTable")
    }
}

#[derive(Debug)]
struct FusedLookupBackward<C>(PhantomData<C>);

impl<B: EmbeddingBackend, C: CheckpointStrategy> Backward<B, 1> for FusedLookupBackward<C> {
    type State = (IntTensor<B>, EmbeddingOptions, Sink<B, C>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (indices, options, sink) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [probe] = ops.parents;
        let Some(probe) = probe else {
            return;
        };
        let device = B::float_device(&grad);
        // The probe's dtype, unless it is a half type: its value must arrive exactly.
        let dtype = write_back::compute_dtype(grad.dtype()).into();
        sink.0.apply(
            Autodiff::<B, C>::from_inner(grad),
            Autodiff::<B, C>::int_from_inner(indices),
            &options,
        );
        // A value of this backward pass alone: a step that is given anything else (a sum of
        // backward passes, a scaled one) refuses it (see `sparse::probe`).
        let value = B::float_from_data(
            TensorData::new(vec![probe::next_value()], Shape::new([1])),
            &device,
        );
        grads.register::<B>(probe.id, B::float_cast(value, dtype));
    }
}

pub(super) fn lookup<B: EmbeddingBackend, C: CheckpointStrategy>(
    weight: FloatTensor<Autodiff<B, C>>,
    indices: IntTensor<Autodiff<B, C>>,
    options: &EmbeddingOptions,
    probe: FloatTensor<Autodiff<B, C>>,
    sink: Arc<dyn RowSink<Autodiff<B, C>>>,
) -> FloatTensor<Autodiff<B, C>> {
    let weight = Autodiff::<B, C>::inner(weight);
    match FusedLookupBackward::<C>(PhantomData)
        .prepare::<C>([probe.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (indices.clone(), *options, Sink(sink)),
            B::embedding_lookup(weight, indices, options),
        ),
        OpsKind::UnTracked(prep) => prep.finish(B::embedding_lookup(weight, indices, options)),
    }
}
