//! [`SparseUpdate`] for the ndarray backend: for `f32` weights, each rule runs row by row on
//! the storage (the gradient's own buffer becomes the rows to add; the moments and the weight
//! are updated in place when nothing else holds them). Other element types take the generic
//! path.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::ops::FloatTensor;

use super::rule::select_add;
use super::{RowState, SparseRule, SparseUpdate};
use crate::RowSparseGradient;
use crate::backend::ndarray::{contiguous, row_start, take_state, tensor_from};
use crate::util;

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
        let NdArrayTensor::F32(storage) = weight else {
            return rule.delta(lr, &util::float(weight.clone()), rows, state, select_add);
        };
        let view = storage.view();
        let Some(w) = view.as_slice() else {
            return rule.delta(lr, &util::float(weight.clone()), rows, state, select_add);
        };
        let (v, d) = (view.shape()[0], view.shape()[1]);
        let RowSparseGradient {
            ids: id_tensor,
            values,
            num_embeddings,
        } = rows;
        // The gradient, turned into the rows to add one value at a time (its own storage when
        // nothing else holds it).
        let mut delta = match util::primitive(values) {
            NdArrayTensor::F32(values) => contiguous(values.into_owned()),
            values => {
                let rows = RowSparseGradient::new(id_tensor, util::float(values), num_embeddings);
                return rule.delta(lr, &util::float(weight.clone()), rows, state, select_add);
            }
        };
        let delta_rows = delta.as_slice_mut().expect("standard layout");
        let ids = util::read_indices(id_tensor.clone());
        state.step += 1;
        // Each loop below is the per-row form of the tensor ops in `SparseRule::delta`, in the
        // same order, so that both paths give the same floats.
        match *rule {
            SparseRule::Sgd { weight_decay } => {
                let (lr, wd) = (lr as f32, weight_decay as f32);
                for (k, &id) in ids.iter().enumerate() {
                    let w = &w[row_start(id, d, v)..][..d];
                    for (x, &w) in delta_rows[k * d..][..d].iter_mut().zip(w) {
                        let g = if wd != 0.0 { *x + w * wd } else { *x };
                        *x = g * -lr;
                    }
                }
            }
            SparseRule::Adagrad {
                lr_decay,
                initial_accumulator_value,
                eps,
            } => {
                let mut sum = take_state(state.first.take(), [v, d], initial_accumulator_value);
                let s = sum.as_slice_mut().expect("standard layout");
                let clr = (lr / (1.0 + (state.step - 1) as f64 * lr_decay)) as f32;
                let eps = eps as f32;
                for (k, &id) in ids.iter().enumerate() {
                    let at = row_start(id, d, v);
                    for j in 0..d {
                        let g = delta_rows[k * d + j];
                        s[at + j] += g * g;
                        delta_rows[k * d + j] = (g / (s[at + j].sqrt() + eps)) * -clr;
                    }
                }
                state.first = Some(util::float(tensor_from(sum)));
            }
            SparseRule::LazyAdam {
                beta_1,
                beta_2,
                eps,
                weight_decay,
            } => {
                let mut m = take_state(state.first.take(), [v, d], 0.0);
                let mut v2 = take_state(state.second.take(), [v, d], 0.0);
                let (ms, vs) = (
                    m.as_slice_mut().expect("standard layout"),
                    v2.as_slice_mut().expect("standard layout"),
                );
                let step = state.step as i32;
                let step_size =
                    (lr * (1.0 - beta_2.powi(step)).sqrt() / (1.0 - beta_1.powi(step))) as f32;
                let (one_b1, one_b2) = ((1.0 - beta_1) as f32, (1.0 - beta_2) as f32);
                let (eps, decay) = (eps as f32, (-lr * weight_decay) as f32);
                for (k, &id) in ids.iter().enumerate() {
                    let at = row_start(id, d, v);
                    for j in 0..d {
                        let g = delta_rows[k * d + j];
                        let (m_old, v_old) = (ms[at + j], vs[at + j]);
                        let m_update = (g - m_old) * one_b1;
                        let v_update = (g * g - v_old) * one_b2;
                        ms[at + j] = m_old + m_update;
                        vs[at + j] = v_old + v_update;
                        let update =
                            ((m_update + m_old) / ((v_update + v_old).sqrt() + eps)) * -step_size;
                        delta_rows[k * d + j] = if weight_decay != 0.0 {
                            w[at + j] * decay + update
                        } else {
                            update
                        };
                    }
                }
                state.first = Some(util::float(tensor_from(m)));
                state.second = Some(util::float(tensor_from(v2)));
            }
        }
        RowSparseGradient::new(id_tensor, util::float(tensor_from(delta)), num_embeddings)
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
        let ids = util::read_indices(rows.ids);
        let values = values.view();
        let values = values.as_standard_layout();
        let values = values.as_slice().expect("standard layout");
        // A copy only when something else holds the weight (it must not see the change).
        let mut weight = contiguous(storage.into_owned());
        let w = weight.as_slice_mut().expect("standard layout");
        let rows = w.len() / d.max(1);
        for (k, &id) in ids.iter().enumerate() {
            let dst = &mut w[row_start(id, d, rows)..][..d];
            dst.iter_mut()
                .zip(&values[k * d..][..d])
                .for_each(|(w, &x)| *w += x);
        }
        tensor_from(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lazy Adam's update runs in place on a weight nothing else holds.
    #[test]
    fn sparse_update_in_place() {
        super::super::update::in_place::check::<NdArray>(
            &Default::default(),
            |tensor| match tensor {
                NdArrayTensor::F32(storage) => storage.view().as_ptr() as usize,
                _ => panic!("an f32 tensor"),
            },
            false,
        );
    }
}
