//! Cross-backend conformance suite: PyTorch-computed golden cases run on every backend.
//!
//! The runners are generic over the backend; `tests/conformance.rs` instantiates them for
//! ndarray, wgpu and tch (cargo features of the same names).

pub mod bag_cases;
pub mod checkpoints;
pub mod determinism;
pub mod embedding_cases;
pub mod fused;
pub mod golden;
pub mod gradient_ops;
pub mod half_cases;
pub mod optimizer_cases;
pub mod patterns;
pub mod property;
pub mod python;
pub mod report;
mod rng;
pub mod robustness;
pub mod vector_files;
