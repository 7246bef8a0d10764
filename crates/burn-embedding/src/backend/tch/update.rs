//! [`SparseUpdate`] for the LibTorch backend: the rows are added with libtorch's `index_add_`
//! in place (burn-tch's `select_assign` always copies the whole tensor).

use burn::backend::LibTorch;
use burn::backend::libtorch::{TchElement, TchTensor};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor};

use crate::RowSparseGradient;
use crate::backend::row_state::RowState;
use crate::backend::rule::SparseRule;
use crate::backend::update::SparseUpdate;
use crate::backend::write_back;
use crate::util;

impl<E: TchElement> SparseUpdate for LibTorch<E> {
    fn embedding_sparse_delta(
        weight: &FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> RowSparseGradient<Self> {
        let weight = util::float(weight.clone());
        rule.delta(lr, &weight, rows, state, add_rows_in_place)
    }

    fn embedding_weight_is_unique(weight: &FloatTensor<Self>) -> bool {
        weight.can_mut()
    }

    fn embedding_add_rows(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
    ) -> FloatTensor<Self> {
        util::primitive(write_back::write_rows(
            util::float(weight),
            rows.ids,
            rows.values,
            add_rows_in_place,
            replace_rows_in_place,
        ))
    }
}

/// `target[ids] += rows`, in place when nothing else holds the target's storage. burn-tch
/// 0.21's `select_assign` clones the tensor before it asks whether it may write in place, so it
/// always copies: a [V, D] copy per optimizer step for the weight and each moment
/// (`docs/measurements.md`).
fn add_rows_in_place<E: TchElement>(
    target: Tensor<LibTorch<E>, 2>,
    ids: Tensor<LibTorch<E>, 1, Int>,
    rows: Tensor<LibTorch<E>, 2>,
) -> Tensor<LibTorch<E>, 2> {
    rows_op(
        target,
        ids,
        rows,
        |t, ids, rows| t.index_add_(0, ids, rows),
        |t, ids, rows| t.index_add(0, ids, rows),
    )
}

/// `target[ids] = rows` (unique `ids`), in place when nothing else holds the target's storage.
/// Not burn-tch 0.21's `scatter_nd`, whose assignment writes the storage in place whoever else
/// holds it.
pub(super) fn replace_rows_in_place<E: TchElement>(
    target: Tensor<LibTorch<E>, 2>,
    ids: Tensor<LibTorch<E>, 1, Int>,
    rows: Tensor<LibTorch<E>, 2>,
) -> Tensor<LibTorch<E>, 2> {
    rows_op(
        target,
        ids,
        rows,
        |t, ids, rows| t.index_copy_(0, ids, rows),
        |t, ids, rows| t.index_copy(0, ids, rows),
    )
}

/// `in_place(target, ids, rows)` when nothing else holds the target's storage, `copying` (which
/// leaves the target as it is) otherwise.
fn rows_op<E: TchElement>(
    target: Tensor<LibTorch<E>, 2>,
    ids: Tensor<LibTorch<E>, 1, Int>,
    rows: Tensor<LibTorch<E>, 2>,
    in_place: impl Fn(&mut tch::Tensor, &tch::Tensor, &tch::Tensor) -> tch::Tensor,
    copying: impl Fn(&tch::Tensor, &tch::Tensor, &tch::Tensor) -> tch::Tensor,
) -> Tensor<LibTorch<E>, 2> {
    let mut target = util::primitive(target);
    let (ids, rows) = (ids.into_primitive(), util::primitive(rows));
    let updated = match target.mut_ops(|t| in_place(t, &ids.tensor, &rows.tensor)) {
        Some(updated) => updated,
        None => TchTensor::new(copying(&target.tensor, &ids.tensor, &rows.tensor)),
    };
    util::float(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lazy Adam's three row updates (weight, both moments) run in place on storages nothing
    /// else holds; a weight held elsewhere is copied, never written under its other holder.
    #[test]
    fn sparse_update_in_place() {
        crate::backend::update::in_place::check::<LibTorch>(
            &Default::default(),
            |tensor| tensor.tensor.data_ptr() as usize,
            true,
        );
    }
}
