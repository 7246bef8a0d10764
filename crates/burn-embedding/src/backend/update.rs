//! The optimizer-side backend trait: the row update of a sparse-aware step, which a backend
//! may run on its own storage (in place, fused) instead of through burn's tensor ops.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::Tensor;
use burn::tensor::TensorMetadata;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::row_state::RowState;
use super::rule::{SparseRule, select_add};
use super::write_back;
use crate::util::{float, primitive};
use crate::{EmbeddingBackend, EmbeddingOptions, RowSparseGradient};

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
    /// in place. A half-precision table takes an f32 delta and stores each row's sum rounded to
    /// nearest (a stochastic rounding has already moved the delta to the drawn neighbour).
    fn embedding_add_rows(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
    ) -> FloatTensor<Self> {
        primitive(write_back::write_rows(
            float(weight),
            rows.ids,
            rows.values,
            select_add,
            write_back::replace_rows,
        ))
    }

    /// Whether nothing else holds `weight`'s storage, so that [`embedding_sparse_update`] and
    /// [`embedding_fused_update`] write it in place: a step then updates the rows at once
    /// instead of leaving them to be added at the weight's next read. `false` where the
    /// backend cannot tell.
    ///
    /// [`embedding_sparse_update`]: Self::embedding_sparse_update
    /// [`embedding_fused_update`]: Self::embedding_fused_update
    fn embedding_weight_is_unique(weight: &FloatTensor<Self>) -> bool {
        let _ = weight;
        false
    }

    /// One whole step: [`embedding_sparse_delta`] then [`embedding_add_rows`] (with a
    /// half-precision table's rows rounded as `state.rounding` says in between).
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
        let delta =
            write_back::round_delta(&float(weight.clone()), delta, state.rounding, state.step);
        Self::embedding_add_rows(weight, delta)
    }

    /// A step fused into a lookup's backward: the rows of the output gradient `grad` `[.., D]`
    /// summed per id of `indices` `[..]` (the lookup's row-sparse backward, with the `options`
    /// of its forward), then [`embedding_sparse_update`] with them: the same floats as
    /// [`EmbeddingBackend::embedding_grad_sparse`] followed by that step. When no row is touched
    /// (all padding) the weight is returned as it is and the step is not counted. NdArray sums
    /// each row's tokens and steps the row at once, so the `[U, D]` rows are never stored.
    ///
    /// [`embedding_sparse_update`]: Self::embedding_sparse_update
    fn embedding_fused_update(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self>
    where
        Self: EmbeddingBackend,
    {
        fused_update(weight, grad, indices, options, rule, lr, state)
    }
}

/// [`SparseUpdate::embedding_fused_update`] in two parts: the coalesced rows, then the step.
pub(crate) fn fused_update<B: SparseUpdate + EmbeddingBackend>(
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    options: &EmbeddingOptions,
    rule: &SparseRule,
    lr: f64,
    state: &mut RowState<B>,
) -> FloatTensor<B> {
    let num_embeddings = weight.shape()[0];
    match B::embedding_grad_sparse(grad, indices, num_embeddings, options) {
        Some(rows) => B::embedding_sparse_update(weight, rows, rule, lr, state),
        None => weight,
    }
}

/// The inner backend's update, on the values of untracked autodiff tensors (a fused table keeps
/// its weight and state on the backend of its module).
impl<B: SparseUpdate + EmbeddingBackend, C: CheckpointStrategy> SparseUpdate for Autodiff<B, C> {
    fn embedding_sparse_delta(
        weight: &FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> RowSparseGradient<Self> {
        let delta = on_inner(state, |inner| {
            B::embedding_sparse_delta(&weight.primitive, inner_rows(rows), rule, lr, inner)
        });
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

    fn embedding_weight_is_unique(weight: &FloatTensor<Self>) -> bool {
        B::embedding_weight_is_unique(&weight.primitive)
    }

    // The inner backend's whole step (NdArray's runs in one pass), not its two halves.
    fn embedding_sparse_update(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(on_inner(state, |inner| {
            B::embedding_sparse_update(Self::inner(weight), inner_rows(rows), rule, lr, inner)
        }))
    }

    fn embedding_fused_update(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(on_inner(state, |inner| {
            B::embedding_fused_update(
                Self::inner(weight),
                Self::inner(grad),
                Self::int_inner(indices),
                options,
                rule,
                lr,
                inner,
            )
        }))
    }
}

/// Runs `f` on the inner tensors of an autodiff backend's rule state, and puts them back.
fn on_inner<B: AutodiffBackend, T>(
    state: &mut RowState<B>,
    f: impl FnOnce(&mut RowState<B::InnerBackend>) -> T,
) -> T {
    let mut inner = RowState {
        step: state.step,
        first: state.first.take().map(Tensor::inner),
        second: state.second.take().map(Tensor::inner),
        rounding: state.rounding,
    };
    let out = f(&mut inner);
    *state = RowState {
        step: inner.step,
        first: inner.first.map(Tensor::from_inner),
        second: inner.second.map(Tensor::from_inner),
        rounding: inner.rounding,
    };
    out
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
    use crate::backend::row_state::RowState;
    use crate::backend::rule::SparseRule;
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
