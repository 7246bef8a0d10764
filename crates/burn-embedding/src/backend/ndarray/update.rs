//! [`SparseUpdate`] for the ndarray backend: for `f32` weights, each rule runs row by row on
//! the storage (the gradient's own buffer becomes the rows to add; the moments and the weight
//! are updated in place when nothing else holds them), the rows split between threads. A whole
//! step ([`SparseUpdate::embedding_sparse_update`]) adds each row as soon as it is computed, in
//! the same pass. Other element types take the generic path.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor};

use super::{
    PREFETCH_DISTANCE, contiguous, host_ids, prefetch_row, row_start, take_state, tensor_from,
    token_rows,
};
use crate::backend::cpu::{self, PARALLEL_MIN_VALUES, add_token_row};
use crate::backend::row_state::RowState;
use crate::backend::rule::{SparseRule, select_add};
use crate::backend::update::{SparseUpdate, fused_update};
use crate::coalesce::Coalesced;
use crate::util;
use crate::{EmbeddingOptions, RowSparseGradient};

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> SparseUpdate
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn embedding_sparse_delta(
        weight: &FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> RowSparseGradient<Self> {
        let generic = |rows, state: &mut RowState<Self>| {
            rule.delta(lr, &util::float(weight.clone()), rows, state, select_add)
        };
        let NdArrayTensor::F32(storage) = weight else {
            return generic(rows, state);
        };
        let view = storage.view();
        let (Some(w), true) = (view.as_slice(), is_f32(&rows.values)) else {
            return generic(rows, state);
        };
        let [v, d] = [view.shape()[0], view.shape()[1]];
        let (ids_tensor, num_embeddings) = (rows.ids.clone(), rows.num_embeddings);
        let mut step = RowStep::new(rows, rule, lr, state, v, d);
        let kernel = step.kernel;
        step.for_each_row(false, |_, id, g, [_, a, b]| {
            kernel.row(g, &w[row_start(id, d, v)..][..d], a, b);
        });
        let delta = step.finish(state).expect("a step on gradient rows");
        RowSparseGradient::new(ids_tensor, util::float(tensor_from(delta)), num_embeddings)
    }

    fn embedding_add_rows(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
    ) -> FloatTensor<Self> {
        let (storage, values) = match (weight, util::primitive(rows.values)) {
            (NdArrayTensor::F32(storage), NdArrayTensor::F32(values)) => (storage, values),
            (weight, values) => {
                let (weight, values) = (util::float(weight), util::float(values));
                return util::primitive(select_add(weight, rows.ids, values));
            }
        };
        let d = storage.shape()[1];
        let ids = ids_of(&rows.ids);
        let mut values = contiguous(values.into_owned());
        let values = values.as_slice_mut().expect("standard layout");
        // A copy only when something else holds the weight (it must not see the change).
        let mut weight = contiguous(storage.into_owned());
        let w = weight.as_slice_mut().expect("standard layout");
        let v = w.len() / d.max(1);
        for_each_row(&ids, d, v, Some(values), [(w, d)], |_, x, [w]| {
            w.iter_mut().zip(x.iter()).for_each(|(w, &x)| *w += x);
        });
        tensor_from(weight)
    }

    fn embedding_weight_is_unique(weight: &FloatTensor<Self>) -> bool {
        matches!(weight, NdArrayTensor::F32(storage) if storage.is_unique())
    }

    fn embedding_sparse_update(
        weight: FloatTensor<Self>,
        rows: RowSparseGradient<Self>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self> {
        let storage = match weight {
            NdArrayTensor::F32(storage) if is_f32(&rows.values) => storage,
            weight => {
                let delta = Self::embedding_sparse_delta(&weight, rows, rule, lr, state);
                return Self::embedding_add_rows(weight, delta);
            }
        };
        let [v, d] = [storage.shape()[0], storage.shape()[1]];
        // In place when nothing else holds the weight.
        let mut weight = contiguous(storage.into_owned());
        let w = weight.as_slice_mut().expect("standard layout");
        let mut step = RowStep::new(rows, rule, lr, state, v, d);
        let kernel = step.kernel;
        step.weight = Some(w);
        step.for_each_row(true, |_, _, g, [w, a, b]| {
            kernel.row(g, w, a, b);
            w.iter_mut().zip(g.iter()).for_each(|(w, &x)| *w += x);
        });
        step.finish(state);
        tensor_from(weight)
    }

    /// One pass: each touched row's token rows are summed into a scratch row (in position
    /// order, as the lookup's backward sums them), and the rule steps it and adds it to the
    /// weight at once; the `[U, D]` rows are never stored. The same floats as the backward then
    /// [`SparseUpdate::embedding_sparse_update`].
    fn embedding_fused_update(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<Self>,
    ) -> FloatTensor<Self> {
        let (NdArrayTensor::F32(storage), NdArrayTensor::F32(g), Some(ids)) =
            (&weight, &grad, host_ids(&indices))
        else {
            return fused_update(weight, grad, indices, options, rule, lr, state);
        };
        let [v, d] = [storage.shape()[0], storage.shape()[1]];
        // Checked before anything is read or the state is touched: the rows are read as `d`
        // values each (the lookup always hands over `[.., d]` for its `[..]` ids).
        let grad_dims = g.shape();
        assert!(
            grad_dims.last() == Some(&d)
                && grad_dims[..grad_dims.len() - 1].iter().product::<usize>() == ids.len(),
            "the output gradient {grad_dims:?} does not match {} ids of a [{v}, {d}] table",
            ids.len()
        );
        let batch = Coalesced::new(&ids, options.padding_idx);
        if batch.unique.is_empty() {
            return weight;
        }
        let tokens = token_rows(g.view(), d);
        // In place when nothing else holds the weight.
        let NdArrayTensor::F32(storage) = weight else {
            unreachable!("matched above")
        };
        let mut weight = contiguous(storage.into_owned());
        let w = weight.as_slice_mut().expect("standard layout");
        let mut step = RowStep::with_rows(batch.unique.clone(), None, rule, lr, state, v, d);
        let kernel = step.kernel;
        step.weight = Some(w);
        let by_freq = options.scale_grad_by_freq;
        step.for_each_row(true, |k, _, g, [w, a, b]| {
            let (start, end) = (batch.slot_starts[k] as usize, batch.slot_starts[k + 1]);
            let count = end - start as u32;
            for (i, &pos) in batch.grouped[start..end as usize].iter().enumerate() {
                add_token_row(g, tokens.row(pos as usize), i == 0, count, by_freq);
            }
            kernel.row(g, w, a, b);
            w.iter_mut().zip(g.iter()).for_each(|(w, &x)| *w += x);
        });
        step.finish(state);
        tensor_from(weight)
    }
}

/// Whether a tensor holds `f32` values (the fast paths' element type).
fn is_f32<B: Backend<FloatTensorPrimitive = NdArrayTensor>>(values: &Tensor<B, 2>) -> bool {
    matches!(
        values.clone().into_primitive().tensor(),
        NdArrayTensor::F32(_)
    )
}

/// The ids of a row-sparse gradient on the host, without a round trip through `TensorData`.
fn ids_of<B: Backend<IntTensorPrimitive = NdArrayTensor>>(ids: &Tensor<B, 1, Int>) -> Vec<i64> {
    host_ids(&ids.clone().into_primitive()).unwrap_or_else(|| util::read_indices(ids.clone()))
}

/// A rule with its constants for one step (learning rate, bias corrections), in `f32`.
#[derive(Clone, Copy)]
enum Kernel {
    Sgd {
        lr: f32,
        wd: f32,
    },
    Adagrad {
        clr: f32,
        eps: f32,
    },
    Rowwise {
        lr: f32,
        eps: f32,
        wd: f32,
    },
    Adam {
        step_size: f32,
        one_b1: f32,
        one_b2: f32,
        eps: f32,
        decay: f32,
    },
}

impl Kernel {
    /// Turns the gradient row `g` into the row to add, reading the weight row `w` and advancing
    /// the state rows `a` and `b`: the per-row form of the tensor ops in `SparseRule::delta`,
    /// in the same order, so that both paths give the same floats.
    #[inline(always)]
    fn row(&self, g: &mut [f32], w: &[f32], a: &mut [f32], b: &mut [f32]) {
        match *self {
            Kernel::Sgd { lr, wd } => {
                for (x, &w) in g.iter_mut().zip(w) {
                    let g = if wd != 0.0 { *x + w * wd } else { *x };
                    *x = g * -lr;
                }
            }
            Kernel::Adagrad { clr, eps } => {
                for (x, s) in g.iter_mut().zip(&mut a[..]) {
                    let g = *x;
                    *s += g * g;
                    *x = (g / (s.sqrt() + eps)) * -clr;
                }
            }
            Kernel::Rowwise { lr, eps, wd } => {
                if wd != 0.0 {
                    for (x, &w) in g.iter_mut().zip(w) {
                        *x += w * wd;
                    }
                }
                let mean_square = g.iter().map(|g| g * g).sum::<f32>() / g.len() as f32;
                a[0] += mean_square;
                let denom = a[0].sqrt() + eps;
                g.iter_mut().for_each(|x| *x = (*x / denom) * -lr);
            }
            Kernel::Adam {
                step_size,
                one_b1,
                one_b2,
                eps,
                decay,
            } => {
                // Equal lengths up front, so that the loop has no bound checks and vectorises.
                let (a, b, w) = (&mut a[..g.len()], &mut b[..g.len()], &w[..g.len()]);
                for (((x, m), v), &w) in g.iter_mut().zip(a).zip(b).zip(w) {
                    let g = *x;
                    let (m_old, v_old) = (*m, *v);
                    let m_update = (g - m_old) * one_b1;
                    let v_update = (g * g - v_old) * one_b2;
                    *m = m_old + m_update;
                    *v = v_old + v_update;
                    let update =
                        ((m_update + m_old) / ((v_update + v_old).sqrt() + eps)) * -step_size;
                    *x = if decay != 0.0 {
                        w * decay + update
                    } else {
                        update
                    };
                }
            }
        }
    }
}

/// One step of a rule on host buffers: the gradient rows (which become the rows to add), their
/// ids, the rule's state and, for a whole step, the weight.
struct RowStep<'w> {
    ids: Vec<i64>,
    /// The gradient rows `[U, D]`, or none when each row is made by the caller as it goes (a
    /// fused step).
    delta: Option<SharedArray<f32>>,
    /// Each state buffer with its row width (`[V, D]`, or `[V, 1]` for row-wise Adagrad).
    first: Option<(SharedArray<f32>, usize)>,
    second: Option<(SharedArray<f32>, usize)>,
    weight: Option<&'w mut [f32]>,
    kernel: Kernel,
    v: usize,
    d: usize,
}

impl<'w> RowStep<'w> {
    /// Takes the gradient's buffer (its own storage when nothing else holds it) and the state's
    /// (allocated at the first step), and advances the step count. `rows` holds `f32` values.
    fn new<B: Backend<FloatTensorPrimitive = NdArrayTensor, IntTensorPrimitive = NdArrayTensor>>(
        rows: RowSparseGradient<B>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<B>,
        v: usize,
        d: usize,
    ) -> Self {
        let NdArrayTensor::F32(values) = util::primitive(rows.values) else {
            unreachable!("the caller checked the element type")
        };
        let delta = contiguous(values.into_owned());
        Self::with_rows(ids_of(&rows.ids), Some(delta), rule, lr, state, v, d)
    }

    /// A step on the rows `ids` (sorted, unique), with their gradient rows or without them (see
    /// [`RowStep::delta`]); advances the step count.
    fn with_rows<B: Backend<FloatTensorPrimitive = NdArrayTensor>>(
        ids: Vec<i64>,
        delta: Option<SharedArray<f32>>,
        rule: &SparseRule,
        lr: f64,
        state: &mut RowState<B>,
        v: usize,
        d: usize,
    ) -> Self {
        state.step += 1;
        let step = state.step;
        let (first, second, kernel) = match *rule {
            SparseRule::Sgd { weight_decay } => (
                None,
                None,
                Kernel::Sgd {
                    lr: lr as f32,
                    wd: weight_decay as f32,
                },
            ),
            SparseRule::Adagrad {
                lr_decay,
                initial_accumulator_value,
                eps,
            } => (
                Some((
                    take_state(state.first.take(), [v, d], initial_accumulator_value),
                    d,
                )),
                None,
                Kernel::Adagrad {
                    clr: (lr / (1.0 + (step - 1) as f64 * lr_decay)) as f32,
                    eps: eps as f32,
                },
            ),
            SparseRule::RowwiseAdagrad { eps, weight_decay } => (
                Some((take_state(state.first.take(), [v, 1], 0.0), 1)),
                None,
                Kernel::Rowwise {
                    lr: lr as f32,
                    eps: eps as f32,
                    wd: weight_decay as f32,
                },
            ),
            SparseRule::LazyAdam {
                beta_1,
                beta_2,
                eps,
                weight_decay,
            } => {
                let step = step as i32;
                (
                    Some((take_state(state.first.take(), [v, d], 0.0), d)),
                    Some((take_state(state.second.take(), [v, d], 0.0), d)),
                    Kernel::Adam {
                        step_size: (lr * (1.0 - beta_2.powi(step)).sqrt()
                            / (1.0 - beta_1.powi(step))) as f32,
                        one_b1: (1.0 - beta_1) as f32,
                        one_b2: (1.0 - beta_2) as f32,
                        eps: eps as f32,
                        decay: (-lr * weight_decay) as f32,
                    },
                )
            }
        };
        Self {
            ids,
            delta,
            first,
            second,
            weight: None,
            kernel,
            v,
            d,
        }
    }

    /// Runs `f(k, id, gradient row, [weight row, first state row, second state row])` for the
    /// `k`-th row (empty slices for buffers the step has not; the weight only with
    /// `with_weight`). Without gradient rows, the gradient row is a scratch row for `f` to fill.
    fn for_each_row(
        &mut self,
        with_weight: bool,
        f: impl Fn(usize, i64, &mut [f32], [&mut [f32]; 3]) + Sync,
    ) {
        let (d, v) = (self.d, self.v);
        let delta = self
            .delta
            .as_mut()
            .map(|delta| delta.as_slice_mut().expect("standard layout"));
        let weight = match (&mut self.weight, with_weight) {
            (Some(w), true) => (&mut **w, d),
            _ => (<&mut [f32]>::default(), 0),
        };
        let buffers = [
            weight,
            state_buffer(&mut self.first),
            state_buffer(&mut self.second),
        ];
        let ids = &self.ids;
        for_each_row(ids, d, v, delta, buffers, |k, g, rows| {
            f(k, ids[k], g, rows)
        });
    }

    /// Puts the state buffers back into `state`; returns the rows to add (when the step had
    /// gradient rows).
    fn finish<B: Backend<FloatTensorPrimitive = NdArrayTensor>>(
        self,
        state: &mut RowState<B>,
    ) -> Option<SharedArray<f32>> {
        state.first = self.first.map(|(s, _)| util::float(tensor_from(s)));
        state.second = self.second.map(|(s, _)| util::float(tensor_from(s)));
        self.delta
    }
}

/// A state buffer as a slice with its row width (an empty one, width 0, when absent).
fn state_buffer(state: &mut Option<(SharedArray<f32>, usize)>) -> (&mut [f32], usize) {
    match state {
        Some((s, width)) => (s.as_slice_mut().expect("standard layout"), *width),
        None => (<&mut [f32]>::default(), 0),
    }
}

/// Runs `f(k, delta row k, [the row of id ids[k] in each buffer])` for each k: `delta` is
/// `[U, d]` (without it, `f` gets a scratch row of `d` values, one per thread, as it was left),
/// each buffer `[v, width]` (width 0: an absent buffer, given an empty row).
///
/// The rows are split between threads when there are many: the ids of a coalesced gradient are
/// strictly increasing, so each task's rows of every buffer lie in a range of rows no other task
/// touches, and the buffers are split into those ranges (no shared mutable access). Ids that
/// are not strictly increasing run on one thread, in order; an id outside `0..v` panics naming
/// it.
fn for_each_row<const N: usize>(
    ids: &[i64],
    d: usize,
    v: usize,
    delta: Option<&mut [f32]>,
    buffers: [(&mut [f32], usize); N],
    f: impl Fn(usize, &mut [f32], [&mut [f32]; N]) + Sync,
) {
    let n = ids.len();
    let parallel = n * d >= PARALLEL_MIN_VALUES
        && ids.windows(2).all(|p| p[0] < p[1])
        && ids.first().is_some_and(|&id| id >= 0)
        && ids.last().is_some_and(|&id| (id as u64) < v as u64);
    let mut scratch = Vec::new();
    if !parallel {
        let (mut buffers, mut delta) = (buffers, delta);
        for (k, &id) in ids.iter().enumerate() {
            let rows = buffers
                .each_mut()
                .map(|(buffer, width)| &mut buffer[row_start(id, *width, v)..][..*width]);
            f(k, grad_row(&mut delta, &mut scratch, k, d), rows);
        }
        return;
    }
    // One task per thread, the caller's first (`for_each_part`): the rows cost alike.
    let per_task = n.div_ceil(cpu::part_count(n * d));
    let bounds: Vec<(usize, usize)> = (0..n)
        .step_by(per_task)
        .map(|k0| (k0, (k0 + per_task).min(n)))
        .collect();
    // The pieces of each buffer: rows ids[k0]..=ids[k1 - 1] of each task.
    let mut pieces: Vec<Vec<&mut [f32]>> = bounds.iter().map(|_| Vec::with_capacity(N)).collect();
    let widths = buffers.each_ref().map(|(_, width)| *width);
    for (buffer, width) in buffers {
        let (mut rest, mut consumed) = (buffer, 0usize);
        for (task, &(k0, k1)) in bounds.iter().enumerate() {
            let (lo, hi) = (ids[k0] as usize, ids[k1 - 1] as usize + 1);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((lo - consumed) * width);
            let (piece, tail) = tail.split_at_mut((hi - lo) * width);
            (rest, consumed) = (tail, hi);
            pieces[task].push(piece);
        }
    }
    let chunks: Vec<Option<&mut [f32]>> = match delta {
        Some(delta) => delta.chunks_mut(per_task * d).map(Some).collect(),
        None => bounds.iter().map(|_| None).collect(),
    };
    let tasks = chunks.into_iter().zip(pieces).zip(&bounds);
    cpu::for_each_part(tasks, |((mut chunk, pieces), &(k0, k1))| {
        let mut scratch = Vec::new();
        let mut pieces: [&mut [f32]; N] = pieces.try_into().expect("one piece per buffer");
        let lo = ids[k0] as usize;
        for (k, &id) in ids.iter().enumerate().take(k1).skip(k0) {
            // The rows of a table are far apart (a cache and a TLB miss each): asking for
            // the rows ahead overlaps those misses, as the gather does.
            if let Some(&ahead) = ids[..k1].get(k + PREFETCH_DISTANCE) {
                let row = ahead - lo as i64;
                for (piece, &width) in pieces.iter().zip(&widths).filter(|(_, w)| **w > 0) {
                    prefetch_row(piece, row, width, piece.len() / width);
                }
            }
            let row = id as usize - lo;
            let mut at = 0;
            let rows = pieces.each_mut().map(|piece| {
                let width = widths[at];
                at += 1;
                &mut piece[row * width..][..width]
            });
            f(k, grad_row(&mut chunk, &mut scratch, k - k0, d), rows);
        }
    });
}

/// Row `k` of `delta`, or the scratch row (allocated at the first call) when there is none.
fn grad_row<'a>(
    delta: &'a mut Option<&mut [f32]>,
    scratch: &'a mut Vec<f32>,
    k: usize,
    d: usize,
) -> &'a mut [f32] {
    match delta {
        Some(delta) => &mut delta[k * d..][..d],
        None => {
            scratch.resize(d, 0.0);
            scratch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// Every rule, each with its options that change the arithmetic (decay, initial value).
    fn rules() -> [SparseRule; 4] {
        [
            SparseRule::Sgd { weight_decay: 0.1 },
            SparseRule::Adagrad {
                lr_decay: 0.01,
                initial_accumulator_value: 0.1,
                eps: 1e-10,
            },
            SparseRule::RowwiseAdagrad {
                eps: 1e-8,
                weight_decay: 0.2,
            },
            SparseRule::LazyAdam {
                beta_1: 0.9,
                beta_2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            },
        ]
    }

    /// Every rule on enough rows to be split between threads (and on ids out of order, which
    /// run on one thread), as a delta and as a whole step, against the generic tensor-op rule.
    #[test]
    fn rows_split_between_threads_match_the_generic_rule() {
        type B = NdArray;
        let device = Default::default();
        let (v, d) = (5000, 96);
        let sorted: Vec<i64> = (0..1500).map(|i| i * 3 + i % 2).collect();
        let shuffled: Vec<i64> = sorted.iter().rev().copied().collect();
        for rule in rules() {
            for ids in [&sorted, &shuffled] {
                let weight =
                    Tensor::<B, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &device);
                let (mut fast, mut generic) = (RowState::default(), RowState::default());
                let mut expected = weight.clone().add_scalar(0.0);
                let mut got = util::primitive(weight.add_scalar(0.0));
                for step in 0..2 {
                    let rows = RowSparseGradient::new(
                        Tensor::from_data(TensorData::new(ids.clone(), [ids.len()]), &device),
                        Tensor::random([ids.len(), d], Distribution::Normal(0.0, 1.0), &device),
                        v,
                    );
                    expected = rule.apply(0.1, expected, rows.clone(), &mut generic);
                    got = if step == 0 {
                        B::embedding_sparse_update(got, rows, &rule, 0.1, &mut fast)
                    } else {
                        let delta = B::embedding_sparse_delta(&got, rows, &rule, 0.1, &mut fast);
                        B::embedding_add_rows(got, delta)
                    };
                }
                util::float::<B, 2>(got)
                    .into_data()
                    .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
            }
        }
    }

    /// The one-pass fused step gives the very floats of the lookup's sparse backward followed by
    /// the whole step, for every rule, with and without padding + `scale_grad_by_freq`, on a
    /// batch large enough to be split between threads, a small one, and a broadcast gradient
    /// (`sum().backward()`'s).
    #[test]
    fn fused_update_equals_backward_then_step() {
        type B = NdArray;
        let device = Default::default();
        let (v, d) = (3000, 64);
        let options = [
            EmbeddingOptions::new(),
            EmbeddingOptions::new()
                .with_padding_idx(Some(7))
                .with_scale_grad_by_freq(true),
        ];
        // 4096 tokens over ~2500 rows (repeats, padding among them), and 12 tokens.
        let large: Vec<i64> = (0..4096i64).map(|i| (i * 7919) % 2503).collect();
        let small: Vec<i64> = vec![7, 3, 3, 9, 7, 1, 2999, 3, 0, 0, 12, 7];
        for rule in rules() {
            for options in &options {
                for ids in [&large, &small] {
                    let n = ids.len();
                    let indices =
                        Tensor::<B, 1, Int>::from_data(TensorData::new(ids.clone(), [n]), &device);
                    let weight =
                        Tensor::<B, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &device);
                    let (mut fused, mut two_part) =
                        (RowState::<B>::default(), RowState::<B>::default());
                    let mut expected = util::primitive(weight.clone().add_scalar(0.0));
                    let mut got = util::primitive(weight.add_scalar(0.0));
                    for step in 0..3 {
                        let grad = if step == 2 {
                            Tensor::<B, 1>::random([d], Distribution::Normal(0.0, 1.0), &device)
                                .unsqueeze::<2>()
                                .expand([n, d])
                        } else {
                            Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device)
                        };
                        let (grad, indices) = (
                            grad.into_primitive().tensor(),
                            indices.clone().into_primitive(),
                        );
                        expected = fused_update(
                            expected,
                            grad.clone(),
                            indices.clone(),
                            options,
                            &rule,
                            0.1,
                            &mut two_part,
                        );
                        got = B::embedding_fused_update(
                            got, grad, indices, options, &rule, 0.1, &mut fused,
                        );
                    }
                    assert_eq!(fused.step, two_part.step);
                    util::float::<B, 2>(got)
                        .into_data()
                        .assert_eq(&util::float::<B, 2>(expected).into_data(), true);
                    for (a, b) in [
                        (fused.first, two_part.first),
                        (fused.second, two_part.second),
                    ] {
                        if let (Some(a), Some(b)) = (a, b) {
                            a.into_data().assert_eq(&b.into_data(), true);
                        }
                    }
                }
            }
        }
    }

    /// A gradient of another width, or with another number of rows than ids, is refused before
    /// anything is read or the state advanced (a broadcast gradient of 4 values is never read as
    /// 6).
    #[test]
    fn fused_update_refuses_a_gradient_of_another_shape() {
        type B = NdArray;
        let device = Default::default();
        let ids = || {
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 2, 2], [3]), &device)
                .into_primitive()
        };
        let narrow = Tensor::<B, 1>::ones([4], &device)
            .unsqueeze::<2>()
            .expand([3, 4]);
        let short = Tensor::<B, 2>::ones([2, 6], &device);
        for grad in [narrow, short] {
            let mut state = RowState::<B>::default();
            let weight = util::primitive(Tensor::<B, 2>::zeros([5, 6], &device));
            let rule = SparseRule::Sgd { weight_decay: 0.0 };
            let grad = grad.into_primitive().tensor();
            let options = EmbeddingOptions::new();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                B::embedding_fused_update(weight, grad, ids(), &options, &rule, 0.1, &mut state)
            }));
            let message = *outcome.expect_err("refused").downcast::<String>().unwrap();
            assert!(
                message.contains("does not match 3 ids of a [5, 6] table"),
                "{message}"
            );
            assert_eq!(state.step, 0);
        }
    }

    /// Lazy Adam's update runs in place on a weight nothing else holds.
    #[test]
    fn sparse_update_in_place() {
        crate::backend::update::in_place::check::<NdArray>(
            &Default::default(),
            |tensor| match tensor {
                NdArrayTensor::F32(storage) => storage.view().as_ptr() as usize,
                _ => panic!("an f32 tensor"),
            },
            false,
        );
    }
}
