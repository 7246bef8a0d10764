//! The kernels of [`RowKernels`] for `Fusion<CubeBackend>` (burn's `Wgpu` type): each one is a
//! fusion custom operation that runs the `CubeBackend` kernel on the resolved tensors.

use core::marker::PhantomData;

use burn::tensor::Shape;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use super::segments::Segments;
use super::{RowKernels, cube_embedding_methods};
use crate::backend::EmbeddingBackend;
use crate::{EmbeddingOptions, RowSparseGradient};

type Handles<B> =
    HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

#[derive(Debug, Clone)]
struct SegmentSumRows<B> {
    desc: CustomOpIr,
    rows: usize,
    zeroed: bool,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + RowKernels> Operation<B::FusionRuntime> for SegmentSumRows<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([source, positions, weights, starts, targets, scale], [output]) = self.desc.as_fixed();
        let segments = Segments {
            positions: handles.get_int_tensor::<B>(positions),
            weights: handles.get_float_tensor::<B>(weights),
            starts: handles.get_int_tensor::<B>(starts),
            targets: handles.get_int_tensor::<B>(targets),
            scale: handles.get_float_tensor::<B>(scale),
        };
        let source = handles.get_float_tensor::<B>(source);
        let result = B::segment_sum_rows(source, segments, self.rows, self.zeroed);
        handles.register_float_tensor::<B>(&output.id, result);
    }
}

#[derive(Debug, Clone)]
struct ScatterAddRows<B> {
    desc: CustomOpIr,
    rows: usize,
    padding: Option<usize>,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + RowKernels> Operation<B::FusionRuntime> for ScatterAddRows<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let ([grad, indices], [output]) = self.desc.as_fixed();
        let result = B::scatter_add_rows(
            handles.get_float_tensor::<B>(grad),
            handles.get_int_tensor::<B>(indices),
            self.rows,
            self.padding,
        );
        handles.register_float_tensor::<B>(&output.id, result);
    }
}

impl<B: FusionBackend + RowKernels> RowKernels for Fusion<B> {
    fn segment_sum_rows(
        source: FloatTensor<Self>,
        segments: Segments<Self>,
        rows: usize,
        zeroed: bool,
    ) -> FloatTensor<Self> {
        let Segments {
            positions,
            weights,
            starts,
            targets,
            scale,
        } = segments;
        let client = source.client.clone();
        let inputs = [source, positions, weights, starts, targets, scale];
        let streams = OperationStreams::with_inputs(&inputs);
        let output = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::new([rows, inputs[0].shape[1]]),
            inputs[0].dtype,
        );
        let desc = CustomOpIr::new(
            "embedding_segment_sum_rows",
            &inputs.map(|tensor| tensor.into_ir()),
            &[output],
        );
        let op = SegmentSumRows::<B> {
            desc: desc.clone(),
            rows,
            zeroed,
            backend: PhantomData,
        };
        client
            .register(streams, OperationIr::Custom(desc), op)
            .output()
    }

    fn supports_atomic_add(device: &Self::Device) -> bool {
        B::supports_atomic_add(device)
    }

    fn scatter_add_rows(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        rows: usize,
        padding: Option<usize>,
    ) -> FloatTensor<Self> {
        let client = grad.client.clone();
        let streams = OperationStreams::with_inputs([&grad, &indices]);
        let output = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::new([rows, grad.shape[1]]),
            grad.dtype,
        );
        let desc = CustomOpIr::new(
            "embedding_scatter_add_rows",
            &[grad.into_ir(), indices.into_ir()],
            &[output],
        );
        let op = ScatterAddRows::<B> {
            desc: desc.clone(),
            rows,
            padding,
            backend: PhantomData,
        };
        client
            .register(streams, OperationIr::Custom(desc), op)
            .output()
    }
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> EmbeddingBackend
    for Fusion<CubeBackend<R, F, I, BT>>
{
    cube_embedding_methods!();
}
