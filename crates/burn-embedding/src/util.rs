//! Conversions between burn's tensor primitives and tensors, and host round trips of index
//! tensors, used by every part of the crate.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Shape, Tensor, TensorData, TensorPrimitive};

pub(crate) fn float<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

pub(crate) fn int<B: Backend, const D: usize>(primitive: IntTensor<B>) -> Tensor<B, D, Int> {
    Tensor::from_primitive(primitive)
}

pub(crate) fn primitive<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

/// Reads a 1-D index tensor to the host (a device sync on GPU backends).
pub(crate) fn read_indices<B: Backend>(indices: Tensor<B, 1, Int>) -> Vec<i64> {
    indices.into_data().iter::<i64>().collect()
}

/// An index tensor built from host values.
pub(crate) fn int_tensor<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `[..] -> [N]`. burn 0.21's `reshape` reads a 0 in the target shape as "keep this
/// dimension", so flattening an empty tensor goes through the primitive reshape.
pub(crate) fn flatten_int<B: Backend, const D: usize>(
    tensor: Tensor<B, D, Int>,
) -> Tensor<B, 1, Int> {
    let n = tensor.shape().num_elements();
    int(B::int_reshape(tensor.into_primitive(), Shape::new([n])))
}

/// [`flatten_int`] for float tensors.
pub(crate) fn flatten_float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, 1> {
    let n = tensor.shape().num_elements();
    float(B::float_reshape(primitive(tensor), Shape::new([n])))
}
