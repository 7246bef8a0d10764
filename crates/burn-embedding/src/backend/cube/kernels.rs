//! The cubecl kernels of the backward and the bags, and their launches on [`CubeTensor`]s.
//!
//! burn's `select_assign` (the scatter of the generic backward and bag reduction) runs one
//! thread per output column that loops over every token: D threads for N x D additions. These
//! kernels give every output element its own thread instead.

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::features::AtomicUsage;
use burn_cubecl::cubecl::ir::{ElemType, FloatKind, StorageType, Type};
use burn_cubecl::cubecl::{self, calculate_cube_count_elemwise, prelude::*};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeElement, CubeRuntime, FloatElement, IntElement};

/// `output[targets[s], d] = scale[s] * sum of weights[k] * source[positions[k], d]` for `k` in
/// `starts[s]..starts[s + 1]`, for every segment `s`.
///
/// One thread per (segment, column); a segment's terms are added in their order, so the result
/// is the same bits on every run. The sum runs in `A` (f32 for half-precision `F`, whose
/// `weights` and `scale` are f32 too: see `SegmentPlan::upload`) and is rounded to `F` once.
#[cube(launch)]
fn segment_sum_rows_kernel<F: Float, A: Float, I: Int>(
    source: &Tensor<F>,
    positions: &Tensor<I>,
    weights: &Tensor<A>,
    starts: &Tensor<I>,
    targets: &Tensor<I>,
    scale: &Tensor<A>,
    output: &mut Tensor<F>,
) {
    let dim = output.shape(1);
    if ABSOLUTE_POS >= targets.shape(0) * dim {
        terminate!();
    }
    let segment = ABSOLUTE_POS / dim;
    let col = ABSOLUTE_POS % dim;
    let begin = usize::cast_from(starts[segment]);
    let end = usize::cast_from(starts[segment + 1]);
    let mut sum = A::new(0.0);
    for k in begin..end {
        let row = usize::cast_from(positions[k]);
        sum += weights[k] * A::cast_from(source[row * dim + col]);
    }
    let target = usize::cast_from(targets[segment]);
    output[target * dim + col] = F::cast_from(sum * scale[segment]);
}

/// `output[indices[n], d] += grad[n, d]` for every token that is not `padding`, with atomics.
///
/// One thread per (token, column): no host round trip and no sort, but the order in which a
/// row's additions land changes from run to run, and so do the last bits of the sum.
#[cube(launch)]
fn scatter_add_rows_kernel<F: Float, I: Int>(
    grad: &Tensor<F>,
    indices: &Tensor<I>,
    output: &mut Tensor<Atomic<F>>,
    padding: usize,
) {
    let dim = grad.shape(1);
    if ABSOLUTE_POS >= grad.shape(0) * dim {
        terminate!();
    }
    let token = ABSOLUTE_POS / dim;
    let row = usize::cast_from(indices[token]);
    if row != padding {
        let value = grad[ABSOLUTE_POS];
        output[row * dim + ABSOLUTE_POS % dim].fetch_add(value);
    }
}

/// The segmented row sum (see [`segment_sum_rows_kernel`]) into a new `[rows, D]` tensor,
/// zero-filled first when `zeroed` (rows no segment targets stay zero).
#[allow(clippy::too_many_arguments)]
pub fn segment_sum_rows<R: CubeRuntime, F: FloatElement, I: IntElement>(
    source: CubeTensor<R>,
    positions: CubeTensor<R>,
    weights: CubeTensor<R>,
    starts: CubeTensor<R>,
    targets: CubeTensor<R>,
    scale: CubeTensor<R>,
    rows: usize,
    zeroed: bool,
) -> CubeTensor<R> {
    let source = into_contiguous(source);
    let dim = source.meta.shape()[1];
    let client = source.client.clone();
    let device = source.device.clone();
    let shape = Shape::new([rows, dim]);
    let output = if zeroed {
        zeros_client(client.clone(), device, shape, F::dtype())
    } else {
        empty_device_dtype(client.clone(), device, shape, F::dtype())
    };
    let working_units = targets.meta.shape()[0] * dim;
    if working_units == 0 {
        return output;
    }
    let cube_dim = CubeDim::new(&client, working_units);
    let cube_count = calculate_cube_count_elemwise(&client, working_units, cube_dim);
    let launch = match F::dtype() {
        DType::F16 | DType::BF16 => segment_sum_rows_kernel::launch::<F, f32, I, R>,
        _ => segment_sum_rows_kernel::launch::<F, F, I, R>,
    };
    launch(
        &client,
        cube_count,
        cube_dim,
        source.into_tensor_arg(),
        into_contiguous(positions).into_tensor_arg(),
        into_contiguous(weights).into_tensor_arg(),
        into_contiguous(starts).into_tensor_arg(),
        into_contiguous(targets).into_tensor_arg(),
        into_contiguous(scale).into_tensor_arg(),
        output.clone().into_tensor_arg(),
    );
    output
}

/// Whether the device adds floats of type `F` atomically in hardware. Never for the half types:
/// their sums would round at every token, where the segmented sum runs in f32.
pub fn supports_atomic_add<R: CubeRuntime, F: CubeElement>(client: &ComputeClient<R>) -> bool {
    let float = match F::dtype() {
        DType::F32 => FloatKind::F32,
        DType::F64 => FloatKind::F64,
        _ => return false,
    };
    client
        .properties()
        .atomic_type_usage(Type::new(StorageType::Atomic(ElemType::Float(float))))
        .contains(AtomicUsage::Add)
}

/// The dense `[rows, D]` gradient by atomic adds (see [`scatter_add_rows_kernel`]); `padding`
/// is the row left out, if any. The caller checks [`supports_atomic_add`] first.
pub fn scatter_add_rows<R: CubeRuntime, F: FloatElement, I: IntElement>(
    grad: CubeTensor<R>,
    indices: CubeTensor<R>,
    rows: usize,
    padding: Option<usize>,
) -> CubeTensor<R> {
    let grad = into_contiguous(grad);
    let [tokens, dim] = grad.meta.shape().dims();
    let client = grad.client.clone();
    let output = zeros_client(
        client.clone(),
        grad.device.clone(),
        Shape::new([rows, dim]),
        F::dtype(),
    );
    let working_units = tokens * dim;
    if working_units == 0 {
        return output;
    }
    let cube_dim = CubeDim::new(&client, working_units);
    let cube_count = calculate_cube_count_elemwise(&client, working_units, cube_dim);
    scatter_add_rows_kernel::launch::<F, I, R>(
        &client,
        cube_count,
        cube_dim,
        grad.into_tensor_arg(),
        into_contiguous(indices).into_tensor_arg(),
        output.clone().into_tensor_arg(),
        // No row is numbered `rows`: a padding index that never matches.
        padding.unwrap_or(rows),
    );
    output
}
