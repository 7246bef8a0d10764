//! [`EmbeddingBackend`] for the LibTorch backend.

use burn::backend::LibTorch;
use burn::backend::libtorch::TchElement;

use super::EmbeddingBackend;

impl<E: TchElement> EmbeddingBackend for LibTorch<E> {}
