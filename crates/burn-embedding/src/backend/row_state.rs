//! Per-parameter state of the sparse-aware optimizers, and its record.

use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::write_back::Rounding;

/// The state of one weight: its step count and up to two `[V, D]` accumulators (Adagrad's sum;
/// Adam's first and second moments), created at the first step that touches the weight (in f32
/// for a table stored in f16 or bf16), and how its rows are written back when it is stored in a
/// half type.
#[derive(Debug, Clone)]
pub struct RowState<B: Backend> {
    /// Steps taken on this weight.
    pub step: usize,
    /// Adagrad's sum of squares, or Adam's first moment.
    pub first: Option<Tensor<B, 2>>,
    /// Adam's second moment.
    pub second: Option<Tensor<B, 2>>,
    /// The rounding of a half-precision table's rows: set by a `SparseOptimizer` from its own
    /// setting at every step, by `FusedEmbedding::set_rounding` for a fused table (not part of
    /// the record).
    pub rounding: Rounding,
}

impl<B: Backend> Default for RowState<B> {
    fn default() -> Self {
        Self {
            step: 0,
            first: None,
            second: None,
            rounding: Rounding::Nearest,
        }
    }
}

/// The record of a [`RowState`] (tensors of the autodiff backend, as burn's optimizer records).
#[derive(Record, Clone)]
pub struct RowStateRecord<B: Backend> {
    /// Steps taken on this weight.
    pub step: usize,
    /// Adagrad's sum of squares, or Adam's first moment.
    pub first: Option<Tensor<B, 2>>,
    /// Adam's second moment.
    pub second: Option<Tensor<B, 2>>,
}

impl<B: AutodiffBackend> RowStateRecord<B> {
    pub(crate) fn from_state(state: &RowState<B::InnerBackend>) -> Self {
        Self {
            step: state.step,
            first: state.first.clone().map(Tensor::from_inner),
            second: state.second.clone().map(Tensor::from_inner),
        }
    }

    pub(crate) fn into_state(self) -> RowState<B::InnerBackend> {
        RowState {
            step: self.step,
            first: self.first.map(Tensor::inner),
            second: self.second.map(Tensor::inner),
            rounding: Rounding::Nearest,
        }
    }
}
