//! Typed errors, each naming the offending value.

use thiserror::Error;

/// Everything that can go wrong when building or calling an embedding.
///
/// Every variant names the value that was rejected, so that a message such as
/// `index 12 at position 3 is out of range for an embedding of 10 rows` tells the user what
/// to fix without a debugger.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EmbeddingError {
    /// An index is negative or not below `num_embeddings`.
    #[error(
        "index {index} at position {position} is out of range for an embedding of {num_embeddings} rows (valid: 0..{num_embeddings})"
    )]
    IndexOutOfRange {
        /// The offending index value.
        index: i64,
        /// Its position in the flattened index tensor.
        position: usize,
        /// The number of rows of the weight.
        num_embeddings: usize,
    },
    /// `padding_idx` is outside `-num_embeddings..num_embeddings`.
    #[error(
        "padding_idx {padding_idx} is out of range for an embedding of {num_embeddings} rows (valid: -{num_embeddings}..{num_embeddings})"
    )]
    PaddingIdxOutOfRange {
        /// The value the user passed.
        padding_idx: i64,
        /// The number of rows of the weight.
        num_embeddings: usize,
    },
    /// `norm_type` is not a positive number (or infinity).
    #[error("norm_type {norm_type} is invalid: it must be > 0 (infinity allowed)")]
    InvalidNormType {
        /// The value the user passed.
        norm_type: f64,
    },
    /// `max_norm` is negative or not finite.
    #[error("max_norm {max_norm} is invalid: it must be a finite number >= 0")]
    InvalidMaxNorm {
        /// The value the user passed.
        max_norm: f64,
    },
    /// `num_embeddings` or `embedding_dim` is zero.
    #[error(
        "an embedding of shape [{num_embeddings}, {embedding_dim}] is empty: both dimensions must be >= 1"
    )]
    EmptyShape {
        /// Rows requested.
        num_embeddings: usize,
        /// Columns requested.
        embedding_dim: usize,
    },
    /// The weight given to `from_pretrained` or to the functional form has the wrong shape.
    #[error("weight has shape {shape:?}: expected [num_embeddings, embedding_dim] with both >= 1")]
    InvalidWeightShape {
        /// The shape that was given.
        shape: Vec<usize>,
    },
    /// The offsets of an embedding bag are not valid CSR start positions.
    #[error("invalid offsets: {reason}")]
    InvalidOffsets {
        /// What is wrong, with the values.
        reason: String,
    },
    /// `per_sample_weights` were given with a mode other than sum.
    #[error("per_sample_weights are only supported with mode sum, not {mode}")]
    PerSampleWeightsMode {
        /// The bag's mode.
        mode: String,
    },
    /// `per_sample_weights` do not have the shape of the input.
    #[error("per_sample_weights have shape {got:?}, expected the input's shape {expected:?}")]
    PerSampleWeightsShape {
        /// The input's shape.
        expected: Vec<usize>,
        /// The weights' shape.
        got: Vec<usize>,
    },
    /// An option that mode max does not support.
    #[error("mode max does not support {option}")]
    MaxModeOptions {
        /// The option.
        option: String,
    },
    /// The output gradient given to [`backward_with`](crate::backward_with) does not have the
    /// output's shape.
    #[error("the output gradient has shape {grad:?}, expected the output's shape {output:?}")]
    GradShape {
        /// The output's shape.
        output: Vec<usize>,
        /// The gradient's shape.
        grad: Vec<usize>,
    },
}
