//! How an embedding bag reduces the rows of a bag.

use core::fmt;

/// The reduction of an [`EmbeddingBag`](crate::EmbeddingBag), as PyTorch's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BagMode {
    /// The sum of the rows (optionally weighted by `per_sample_weights`).
    Sum,
    /// The mean of the non-padding rows (PyTorch's default).
    #[default]
    Mean,
    /// The element-wise maximum; ties go to the first maximum.
    Max,
}

impl fmt::Display for BagMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BagMode::Sum => "sum",
            BagMode::Mean => "mean",
            BagMode::Max => "max",
        })
    }
}
