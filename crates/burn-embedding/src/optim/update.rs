//! The optimizer-side backend trait: the row update of a sparse-aware step, which a backend
//! may run on its own storage (in place, fused) instead of through burn's tensor ops.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
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

/// The inner backend's update, on the values of untracked autodiff tensors (a fused table keeps
/// its weight and state on the backend of its module).
impl<B: SparseUpdate, C: CheckpointStrategy> SparseUpdate for Autodiff<B, C> {
    fn embedding_sparse_delta(
        weight: &FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> RowSparseGradient<Self> {
        let mut inner = RowState {
            step: state.step,
            first: state.first.take().map(Tensor::inner),
            second: state.second.take().map(Tensor::inner),
        };
        let delta =
            B::embedding_sparse_delta(&weight.primitive, inner_rows(rows), rule, lr, &mut inner);
        *state = RowState {
            step: inner.step,
            first: inner.first.map(Tensor::from_inner),
            second: inner.second.map(Tensor::from_inner),
        };
        RowSparseGradient::new(
            Tensor::from_inner(delta.ids),
            Tensor::from_inner(delta.values),
            delta.num_embeddings,
        )
    }

    fn embedding_add_rows(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::embedding_add_rows(Self::inner(weight), inner_rows(rows)))
    }
}

fn inner_rows<B: AutodiffBackend>(
    rows: RowSparseGradient<B>,
) -> RowSparseGradient<B::InnerBackend> {
    RowSparseGradient::new(rows.ids.inner(), rows.values.inner(), rows.num_embeddings)
}

/// The shared check of the backends' in-place updates.
#[cfg(test)]
pub(crate) mod in_place {
    use burn::tensor::{Distribution, Int, Tensor, TensorData};

    use super::SparseUpdate;
    use crate::RowSparseGradient;
    use crate::optim::{RowState, SparseRule};
    use crate::util::{float, primitive};

    /// Lazy Adam's row updates (the weight and both moments) run in place on storages nothing
    /// else holds (`address` tells where a tensor's values live), give the floats of the generic
    /// rule (within 1e-5, or exactly with `exact`), and leave a weight held elsewhere as it was.
    pub(crate) fn check<B: SparseUpdate>(
        device: &B::Device,
        address: impl Fn(&burn::tensor::ops::FloatTensor<B>) -> usize,
        exact: bool,
    ) {
        let rule = SparseRule::LazyAdam {
            beta_1: 0.9,
            beta_2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let rows = || {
            let ids = Tensor::<B, 1, Int>::from_data(TensorData::from([1i64, 4, 6]), device);
            let values = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), device);
            RowSparseGradient::new(ids, values, 8)
        };
        let weight = Tensor::<B, 2>::random([8, 5], Distribution::Normal(0.0, 1.0), device);
        let (mut state, mut generic_state) = (RowState::default(), RowState::default());
        let mut expected = weight.clone().add_scalar(0.0);
        let mut weight = primitive(weight);
        let moment = |state: &RowState<B>| state.first.clone().map(|m| address(&primitive(m)));
        for _ in 0..3 {
            let rows = rows();
            let (at, moment_at) = (address(&weight), moment(&state));
            weight = B::embedding_sparse_update(weight, rows.clone(), &rule, 0.1, &mut state);
            assert_eq!(address(&weight), at, "the weight was copied");
            if moment_at.is_some() {
                assert_eq!(moment(&state), moment_at, "the first moment was copied");
            }
            expected = rule.apply(0.1, expected, rows, &mut generic_state);
            let got = float::<B, 2>(weight.clone()).into_data();
            if exact {
                got.assert_eq(&expected.to_data(), true);
            } else {
                got.assert_approx_eq::<f32>(&expected.to_data(), Default::default());
            }
        }

        let held = float::<B, 2>(weight.clone());
        let before = held.to_data();
        let updated = B::embedding_sparse_update(weight, rows(), &rule, 0.1, &mut state);
        held.into_data().assert_eq(&before, true);
        assert_ne!(float::<B, 2>(updated).into_data(), before);
    }
}
