//! The optimizer-side backend trait: the row update of a sparse-aware step, which a backend
//! may run on its own storage (in place, fused) instead of through burn's tensor ops.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::rule::select_add;
use super::{RowState, SparseRule};
use crate::RowSparseGradient;
use crate::util::{float, primitive};

/// A backend on which the sparse-aware optimizers update a weight's rows.
///
/// The default methods run [`SparseRule`] with burn tensor ops; NdArray and LibTorch override
/// them with updates in place on their own storage.
pub trait SparseUpdate: Backend {
    /// The first half of a step: `state` advanced by `rule` with learning rate `lr` on the
    /// gradient `rows`, and the rows to add to `weight` `[V, D]` returned (`weight` is only
    /// read, for weight decay). O(U x D) for U rows.
    fn embedding_sparse_delta(
        weight: &FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> RowSparseGradient<Self> {
        rule.delta(lr, &float(weight.clone()), rows, state, select_add)
    }

    /// The second half: `weight[ids] += values`, `[V, D]`, in place when nothing else holds the
    /// weight's storage (a copy otherwise, so that no other holder sees the change). O(U x D)
    /// in place.
    fn embedding_add_rows(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
    ) -> FloatTensor<Self> {
        primitive(select_add(float(weight), rows.ids, rows.values))
    }

    /// One whole step: [`embedding_sparse_delta`] then [`embedding_add_rows`].
    ///
    /// [`embedding_sparse_delta`]: Self::embedding_sparse_delta
    /// [`embedding_add_rows`]: Self::embedding_add_rows
    fn embedding_sparse_update(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self> {
        let delta = Self::embedding_sparse_delta(&weight, rows, rule, lr, state);
        Self::embedding_add_rows(weight, delta)
    }
}
