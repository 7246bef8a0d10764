//! The row-sparse update rules, on the rows of one step, with PyTorch's semantics.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use super::row_state::RowState;
use super::write_back;
use crate::RowSparseGradient;

/// How a sparse-aware optimizer updates the rows a batch touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparseRule {
    /// `w[rows] -= lr * (g + weight_decay * w[rows])`.
    Sgd {
        /// L2 penalty, applied to the touched rows only.
        weight_decay: f64,
    },
    /// PyTorch's Adagrad on sparse gradients: `sum[rows] += g²`,
    /// `w[rows] -= clr * g / (sqrt(sum[rows]) + eps)`, `clr = lr / (1 + (step - 1) * lr_decay)`.
    Adagrad {
        /// Learning-rate decay per step.
        lr_decay: f64,
        /// Initial value of every accumulator.
        initial_accumulator_value: f64,
        /// Added to the denominator.
        eps: f64,
    },
    /// Row-wise Adagrad, FBGEMM's `EXACT_ROWWISE_ADAGRAD`: one accumulator per row (state `[V]`,
    /// not `[V, D]`). With `g = grad + weight_decay * w[rows]` (L2, FBGEMM's
    /// `weight_decay_mode` 1): `sum[row] += mean(g²)` over the row's D values, then
    /// `w[row] -= lr * g / (sqrt(sum[row]) + eps)`. The accumulators start at 0.
    RowwiseAdagrad {
        /// Added to the denominator.
        eps: f64,
        /// L2 penalty, applied to the touched rows only.
        weight_decay: f64,
    },
    /// Lazy Adam, PyTorch's `SparseAdam`: only the touched rows update their moments and
    /// values; bias correction uses the parameter's step count. With `weight_decay > 0` this is
    /// lazy AdamW: the touched rows first decay by `1 - lr * weight_decay` (decoupled).
    LazyAdam {
        /// First-moment decay.
        beta_1: f64,
        /// Second-moment decay.
        beta_2: f64,
        /// Added to the denominator.
        eps: f64,
        /// Decoupled weight decay (0 for Adam).
        weight_decay: f64,
    },
}

impl SparseRule {
    /// The coupled (L2) weight decay of the rule: the part of the gradient that is
    /// `weight_decay * w[rows]`; 0 for the rules without one or with a decoupled one.
    pub(crate) fn l2_decay(&self) -> f64 {
        match *self {
            SparseRule::Sgd { weight_decay } | SparseRule::RowwiseAdagrad { weight_decay, .. } => {
                weight_decay
            }
            SparseRule::Adagrad { .. } | SparseRule::LazyAdam { .. } => 0.0,
        }
    }

    /// How much of a change `r` written into the rows before the update survives it: the
    /// decoupled decay of lazy AdamW shrinks it by `1 - lr * weight_decay`.
    pub(crate) fn decoupled_keep(&self, lr: f64) -> f64 {
        match *self {
            SparseRule::LazyAdam { weight_decay, .. } => 1.0 - lr * weight_decay,
            _ => 1.0,
        }
    }

    /// Applies one step to `weight` `[V, D]` with the coalesced `rows`; returns the new weight
    /// (a half-precision table's rows rounded as `state.rounding` says).
    ///
    /// Cost: O(U x D) for U rows, plus the one-time allocation of the state (`[V, D]` per
    /// moment, `[V, 1]` for row-wise Adagrad). Updates go through `select_assign(Add)` on unique rows, which works in place
    /// when the tensor is not shared.
    pub fn apply<B: Backend>(
        &self,
        lr: f64,
        weight: Tensor<B, 2>,
        rows: RowSparseGradient<B>,
        state: &mut RowState<B>,
    ) -> Tensor<B, 2> {
        let delta = self.delta(lr, &weight, rows, state, select_add);
        let delta = write_back::round_delta(&weight, delta, state.rounding, state.step);
        write_back::write_rows(
            weight,
            delta.ids,
            delta.values,
            select_add,
            write_back::replace_rows,
        )
    }

    /// The first half of [`apply`](Self::apply): advances `state` and returns the rows to add
    /// to `weight`, which is only read (for weight decay); adding them is the second half.
    /// `add_rows(target, ids, rows)` adds `rows` `[U, D]` into the rows `ids` (unique) of a
    /// `[V, D]` state tensor: a backend whose `select_assign` copies the target passes an
    /// in-place one, so that a step stays O(U x D).
    ///
    /// For a table stored in f16 or bf16 the rule computes in f32 (the gradient and the rows it
    /// reads cast, the state created in f32) and the delta is f32, unrounded (see
    /// [`write_back`]).
    pub(crate) fn delta<B: Backend>(
        &self,
        lr: f64,
        weight: &Tensor<B, 2>,
        rows: RowSparseGradient<B>,
        state: &mut RowState<B>,
        add_rows: impl Fn(Tensor<B, 2>, Tensor<B, 1, Int>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> RowSparseGradient<B> {
        let RowSparseGradient {
            ids,
            values: g,
            num_embeddings,
        } = rows;
        let shape = weight.dims();
        let device = weight.device();
        let dtype = write_back::compute_dtype(weight.dtype());
        let g = write_back::cast(g, dtype);
        let state_options = (&device, dtype);
        // State loaded from a record lands in the backend's float type: back to the rule's.
        let in_dtype = |t: Tensor<B, 2>| write_back::cast(t, dtype);
        state.step += 1;
        let delta = match *self {
            SparseRule::Sgd { weight_decay } => {
                let g = with_l2(g, weight, &ids, weight_decay);
                g.mul_scalar(-lr)
            }
            SparseRule::Adagrad {
                lr_decay,
                initial_accumulator_value,
                eps,
            } => {
                let sum = state.first.take().map(in_dtype).unwrap_or_else(|| {
                    Tensor::full(shape, initial_accumulator_value, state_options)
                });
                let g2 = g.clone().square();
                let sum_rows = sum.clone().select(0, ids.clone()) + g2.clone();
                state.first = Some(add_rows(sum, ids.clone(), g2));
                let clr = lr / (1.0 + (state.step - 1) as f64 * lr_decay);
                (g / sum_rows.sqrt().add_scalar(eps)).mul_scalar(-clr)
            }
            SparseRule::RowwiseAdagrad { eps, weight_decay } => {
                let g = with_l2(g, weight, &ids, weight_decay);
                let sum = state
                    .first
                    .take()
                    .map(in_dtype)
                    .unwrap_or_else(|| Tensor::zeros([shape[0], 1], state_options));
                let mean_square = g.clone().square().mean_dim(1);
                let sum_rows = sum.clone().select(0, ids.clone()) + mean_square.clone();
                state.first = Some(add_rows(sum, ids.clone(), mean_square));
                (g / sum_rows.sqrt().add_scalar(eps)).mul_scalar(-lr)
            }
            SparseRule::LazyAdam {
                beta_1,
                beta_2,
                eps,
                weight_decay,
            } => {
                let m = state
                    .first
                    .take()
                    .map(in_dtype)
                    .unwrap_or_else(|| Tensor::zeros(shape, state_options));
                let v = state
                    .second
                    .take()
                    .map(in_dtype)
                    .unwrap_or_else(|| Tensor::zeros(shape, state_options));
                let m_old = m.clone().select(0, ids.clone());
                let v_old = v.clone().select(0, ids.clone());
                let m_update = (g.clone() - m_old.clone()).mul_scalar(1.0 - beta_1);
                let v_update = (g.square() - v_old.clone()).mul_scalar(1.0 - beta_2);
                state.first = Some(add_rows(m, ids.clone(), m_update.clone()));
                state.second = Some(add_rows(v, ids.clone(), v_update.clone()));
                let numer = m_update + m_old;
                let denom = (v_update + v_old).sqrt().add_scalar(eps);
                let step = state.step as i32;
                let bias_correction_1 = 1.0 - beta_1.powi(step);
                let bias_correction_2 = 1.0 - beta_2.powi(step);
                let step_size = lr * bias_correction_2.sqrt() / bias_correction_1;
                let update = (numer / denom).mul_scalar(-step_size);
                if weight_decay != 0.0 {
                    let decay = weight.clone().select(0, ids.clone());
                    let decay = write_back::cast(decay, dtype).mul_scalar(-lr * weight_decay);
                    decay + update
                } else {
                    update
                }
            }
        };
        RowSparseGradient::new(ids, delta, num_embeddings)
    }
}

/// The gradient rows with the L2 penalty of the rows `ids` of `weight` added.
fn with_l2<B: Backend>(
    g: Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    ids: &Tensor<B, 1, Int>,
    weight_decay: f64,
) -> Tensor<B, 2> {
    if weight_decay == 0.0 {
        return g;
    }
    let dtype = g.dtype();
    g + write_back::cast(weight.clone().select(0, ids.clone()), dtype).mul_scalar(weight_decay)
}

/// `target[ids] += rows` through burn's `select_assign`, in place when the target is not shared
/// (on backends whose `select_assign` checks).
pub(crate) fn select_add<B: Backend>(
    target: Tensor<B, 2>,
    ids: Tensor<B, 1, Int>,
    rows: Tensor<B, 2>,
) -> Tensor<B, 2> {
    target.select_assign(0, ids, rows, IndexingUpdateOp::Add)
}
