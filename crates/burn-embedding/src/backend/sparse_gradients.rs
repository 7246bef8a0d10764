//! [`SparseGradients`]: the autodiff side of a sparse weight's step, for the optimizers and the
//! reads of [`sparse`](crate::sparse).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::TensorMetadata;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::EmbeddingBackend;
use super::update::SparseUpdate;

/// Autodiff backends whose backward can give a weight a row-sparse gradient and whose inner
/// backend runs the sparse update: the bound of the sparse-aware optimizers and of
/// [`sparse_grad_remove`](crate::sparse_grad_remove). Implemented for every `Autodiff<B, C>`
/// with `B: EmbeddingBackend + SparseUpdate` (NdArray, LibTorch, wgpu).
pub trait SparseGradients:
    AutodiffBackend<InnerBackend: SparseUpdate + EmbeddingBackend> + EmbeddingBackend
{
    /// The autodiff node id of a weight tensor, which the backward records with its rows.
    #[doc(hidden)]
    fn weight_node(weight: &FloatTensor<Self>) -> u64;

    /// `weight` with its values replaced by `values`, keeping its autodiff node: a sparse step
    /// keeps the weight's identity, so that gradients computed before the step still name it and
    /// the rows of dropped gradients age with the weight's steps.
    #[doc(hidden)]
    fn split_values(
        weight: FloatTensor<Self>,
    ) -> (FloatTensor<Self::InnerBackend>, FloatTensor<Self>);

    /// The shell of [`split_values`](Self::split_values) with `values`.
    #[doc(hidden)]
    fn with_values(
        weight: FloatTensor<Self>,
        values: FloatTensor<Self::InnerBackend>,
    ) -> FloatTensor<Self>;
}

impl<B: EmbeddingBackend + SparseUpdate, C: CheckpointStrategy> SparseGradients for Autodiff<B, C> {
    fn weight_node(weight: &FloatTensor<Self>) -> u64 {
        weight.node.id.value
    }

    fn split_values(weight: FloatTensor<Self>) -> (FloatTensor<B>, FloatTensor<Self>) {
        let mut shell = weight;
        let placeholder = B::float_zeros(
            [1].into(),
            &B::float_device(&shell.primitive),
            shell.primitive.dtype().into(),
        );
        let values = std::mem::replace(&mut shell.primitive, placeholder);
        (values, shell)
    }

    fn with_values(weight: FloatTensor<Self>, values: FloatTensor<B>) -> FloatTensor<Self> {
        let mut weight = weight;
        weight.primitive = values;
        weight
    }
}
