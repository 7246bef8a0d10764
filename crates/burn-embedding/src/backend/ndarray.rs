//! [`EmbeddingBackend`] for the ndarray backend.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};

use super::EmbeddingBackend;

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> EmbeddingBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
}
