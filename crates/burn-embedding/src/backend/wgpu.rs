//! [`EmbeddingBackend`] for the wgpu backend as `burn::backend::Wgpu` defines it (fusion
//! included when burn's `fusion` feature is on, as this crate's `wgpu` feature asks).

use burn::backend::Wgpu;

use super::EmbeddingBackend;

impl EmbeddingBackend for Wgpu {}
