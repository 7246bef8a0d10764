//! [`EmbeddingBackend`] for the ndarray backend, with fast paths written on the ndarray storage
//! for `f32` weights: the row gather and the row-sparse and dense backwards copy and add whole
//! rows as slices (the generic `select` / `select_assign` go through per-row views), and the
//! dense gradient starts from a zeroed allocation that the OS fills lazily. Other element types
//! take the generic [`reference`](mod@super::reference) path.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Shape, TensorMetadata};
use ndarray::{Array, ArrayView, IxDyn};
use rayon::prelude::*;

use super::cpu::{self, PARALLEL_MIN_VALUES, TokenRows, accumulate_rows, add_token_row};
use super::huge_pages::{self, output_buffer};
use super::{BagBatch, EmbeddingBackend, reference};
use crate::coalesce::Coalesced;
use crate::{BagMode, EmbeddingOptions, RowSparseGradient};

mod update;

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> EmbeddingBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn embedding_lookup(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        match (&weight, options.max_norm) {
            (NdArrayTensor::F32(w), None) => match (w.view().as_slice(), host_ids(&indices)) {
                (Some(table), Some(ids)) => gather(table, w.shape()[1], &ids, indices.shape()),
                _ => reference::forward::<Self>(weight, indices, options),
            },
            _ => reference::forward::<Self>(weight, indices, options),
        }
    }

    fn embedding_defers_grad_sum() -> bool {
        true
    }

    fn embedding_index_range(indices: &IntTensor<Self>) -> (i64, i64) {
        // One pass over the storage: the tensor ops' min, max, cat and read-back cost half
        // of a 4096-id lookup.
        match indices {
            NdArrayTensor::I64(s) => cpu::index_range(s.view().iter().copied()),
            NdArrayTensor::I32(s) => cpu::index_range(s.view().iter().map(|&i| i64::from(i))),
            _ => reference::index_range::<Self>(indices),
        }
    }

    fn embedding_token_grad_norm_sq(
        grad: &FloatTensor<Self>,
        indices: &IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> f64 {
        let (NdArrayTensor::F32(g), Some(ids)) = (grad, host_ids(indices)) else {
            return reference::token_grad_norm_sq::<Self>(grad, indices, num_embeddings, options);
        };
        let d = *g.shape().last().expect("grad is [.., D]");
        cpu::token_grad_norm_sq(&token_rows(g.view(), d), &ids, options, true).unwrap_or_else(
            || reference::token_grad_norm_sq::<Self>(grad, indices, num_embeddings, options),
        )
    }

    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        if let (NdArrayTensor::F32(g), Some(ids)) = (&grad, host_ids(&indices)) {
            let d = *g.shape().last().expect("grad is [.., D]");
            let view = g.view();
            let rows = token_rows(view, d);
            let counts = options.scale_grad_by_freq.then(|| {
                let mut counts = vec![0u32; num_embeddings];
                ids.iter()
                    .for_each(|&i| counts[row_start(i, 1, num_embeddings)] += 1);
                counts
            });
            // vec![0.0; n] is a zeroed allocation: pages the batch never touches stay untouched.
            let mut out = vec![0.0f32; num_embeddings * d];
            for (pos, &id) in ids.iter().enumerate() {
                if Some(id as usize) == options.padding_idx {
                    continue;
                }
                let at = row_start(id, d, num_embeddings);
                let scale = counts.as_ref().map_or(1.0, |c| c[at / d.max(1)] as f32);
                let dst = &mut out[at..][..d];
                let src = rows.row(pos);
                if counts.is_some() {
                    dst.iter_mut().zip(src).for_each(|(o, &g)| *o += g / scale);
                } else {
                    dst.iter_mut().zip(src).for_each(|(o, &g)| *o += g);
                }
            }
            return tensor(out, [num_embeddings, d]);
        }
        reference::backward_dense::<Self>(grad, indices, num_embeddings, options)
    }

    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        if let (NdArrayTensor::F32(g), Some(ids)) = (&grad, host_ids(&indices)) {
            let d = *g.shape().last().expect("grad is [.., D]");
            let view = g.view();
            let rows = token_rows(view, d);
            let batch = Coalesced::new(&ids, options.padding_idx);
            if batch.unique.is_empty() {
                return None;
            }
            let by_freq = options.scale_grad_by_freq;
            let values = accumulate_rows(&batch, d, |dst, pos, count, first| {
                add_token_row(dst, rows.row(pos), first, count, by_freq);
            });
            let device = Default::default();
            return Some(RowSparseGradient::new(
                reference::int_tensor::<Self>(&batch.unique, &device),
                reference::float::<Self, 2>(tensor(values, [batch.unique.len(), d])),
                num_embeddings,
            ));
        }
        reference::backward_sparse::<Self>(grad, indices, num_embeddings, options)
    }

    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        let (num_bags, mode) = (bags.num_bags, bags.mode);
        // Sum and mean, fused: each row is added into its bag, no [N, D] intermediate.
        if mode != BagMode::Max
            && options.max_norm.is_none()
            && let NdArrayTensor::F32(w) = &weight
            && let (Some(table), Some(ids)) = (w.view().as_slice(), host_ids(&bags.indices))
            && let Some(psw) = bags
                .per_sample_weights
                .as_ref()
                .map_or(Some(None), |p| f32_values(p).map(Some))
        {
            let d = w.shape()[1];
            let rows = w.shape()[0];
            let starts = bags.starts();
            let mut out = output_buffer(num_bags * d);
            // Each task reduces whole bags into its own output rows, tokens in position order.
            let reduce = |(chunk, first_bag): (&mut [f32], usize)| {
                for (k, dst) in chunk.chunks_exact_mut(d).enumerate() {
                    let bag = first_bag + k;
                    let mut count = 0u32;
                    for t in starts[bag]..starts[bag + 1] {
                        if let Some(&ahead) = ids.get(t + PREFETCH_DISTANCE) {
                            prefetch_row(table, ahead, d, rows);
                        }
                        let id = ids[t];
                        if Some(id as usize) == options.padding_idx {
                            continue;
                        }
                        count += 1;
                        let src = &table[row_start(id, d, rows)..][..d];
                        match &psw {
                            Some(psw) => {
                                dst.iter_mut().zip(src).for_each(|(o, &x)| *o += x * psw[t])
                            }
                            None => dst.iter_mut().zip(src).for_each(|(o, &x)| *o += x),
                        }
                    }
                    if mode == BagMode::Mean {
                        let c = count.max(1) as f32;
                        dst.iter_mut().for_each(|x| *x /= c);
                    }
                }
            };
            if ids.len() * d >= PARALLEL_MIN_VALUES {
                let bags_per_task = (num_bags / 64).max(1);
                out.par_chunks_mut(bags_per_task * d)
                    .enumerate()
                    .map(|(c, chunk)| (chunk, c * bags_per_task))
                    .for_each(reduce);
            } else {
                reduce((&mut out, 0));
            }
            return (tensor(out, [num_bags, d]), None);
        }
        super::reference_bag::bag_forward::<Self>(weight, bags, options)
    }

    fn embedding_bag_grad_sparse(
        grad: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        max_positions: Option<IntTensor<Self>>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        // Sum and mean, fused: each token adds its bag's gradient straight into its id's row,
        // no [N, D] intermediate. Same operations, in the same order, as the generic path.
        if bags.mode != BagMode::Max
            && let NdArrayTensor::F32(g) = &grad
            && let (Some(g), Some(ids)) = (g.view().as_slice(), host_ids(&bags.indices))
            && let Some(psw) = bags
                .per_sample_weights
                .as_ref()
                .map_or(Some(None), |p| f32_values(p).map(Some))
        {
            let d = grad.shape()[1];
            let (unique, values) = cpu::bag_grad_rows(g, d, &ids, bags, psw.as_deref(), options)?;
            let device = Default::default();
            return Some(RowSparseGradient::new(
                reference::int_tensor::<Self>(&unique, &device),
                reference::float::<Self, 2>(tensor(values, [unique.len(), d])),
                num_embeddings,
            ));
        }
        super::reference_bag::bag_grad_sparse::<Self>(
            grad,
            bags,
            max_positions,
            num_embeddings,
            options,
        )
    }
}

/// A state accumulator as a contiguous array, created filled with `init` at the first step.
pub(crate) fn take_state<
    B: burn::tensor::backend::Backend<FloatTensorPrimitive = NdArrayTensor>,
>(
    tensor: Option<burn::tensor::Tensor<B, 2>>,
    shape: [usize; 2],
    init: f64,
) -> SharedArray<f32> {
    match tensor.map(|t| t.into_primitive().tensor()) {
        Some(NdArrayTensor::F32(storage)) => contiguous(storage.into_owned()),
        _ => Array::from_elem(IxDyn(&shape), init as f32).into_shared(),
    }
}

pub(crate) fn contiguous(array: SharedArray<f32>) -> SharedArray<f32> {
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned().into_shared()
    }
}

pub(crate) fn tensor_from(array: SharedArray<f32>) -> NdArrayTensor {
    NdArrayTensor::from(array)
}

/// How many rows ahead a gather (or a step's row loop) asks the CPU to fetch: random rows of a large table miss the
/// caches and the TLB, and fetching ahead overlaps those misses (as FBGEMM's kernels do).
pub(crate) const PREFETCH_DISTANCE: usize = 8;

/// Hints the CPU to bring row `id` of `table` (`[rows, d]`) into the cache. Only in-range
/// rows: the address is computed, never wrapped.
#[inline(always)]
pub(crate) fn prefetch_row(table: &[f32], id: i64, d: usize, rows: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        if let Ok(id) = usize::try_from(id)
            && id < rows
        {
            let start = id * d;
            // One hint per 64-byte line of the row.
            for offset in (0..d).step_by(16) {
                // SAFETY: prefetching is a hint that never faults; the address is in bounds.
                unsafe {
                    _mm_prefetch(table.as_ptr().add(start + offset).cast::<i8>(), _MM_HINT_T0)
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (table, id, d, rows);
}

/// Where row `id` of a `[rows, d]` table starts. An index outside `0..rows` (which only
/// `forward_unchecked` and the other unchecked entry points let through) panics naming it: an
/// offset is never computed from it, so no wrong row is read and no pointer leaves the table.
#[inline(always)]
pub(crate) fn row_start(id: i64, d: usize, rows: usize) -> usize {
    match usize::try_from(id) {
        Ok(row) if row < rows => row * d,
        _ => panic!(
            "index {id} is out of range for an embedding of {rows} rows (valid: 0..{rows}); \
             the unchecked entry points do not validate indices"
        ),
    }
}

/// The values of a contiguous f32 tensor.
fn f32_values(tensor: &NdArrayTensor) -> Option<Vec<f32>> {
    match tensor {
        NdArrayTensor::F32(s) => Some(s.view().iter().copied().collect()),
        _ => None,
    }
}

/// The indices as `i64` on the host, when they are a contiguous i64 or i32 tensor.
pub(crate) fn host_ids(indices: &NdArrayTensor) -> Option<Vec<i64>> {
    fn collect<T: Copy + Into<i64>>(view: ArrayView<'_, T, IxDyn>) -> Vec<i64> {
        match view.as_slice() {
            Some(s) => s.iter().map(|&i| i.into()).collect(),
            None => view.iter().map(|&i| i.into()).collect(),
        }
    }
    match indices {
        NdArrayTensor::I64(s) => Some(collect(s.view())),
        NdArrayTensor::I32(s) => Some(collect(s.view())),
        _ => None,
    }
}

/// The gradient rows `[.., D]` of a lookup's output, read without copying where the layout
/// allows: `sum().backward()` hands over a broadcast view (every row the same) whose copy to
/// the standard layout would cost more than the backward (`docs/measurements.md`).
pub(crate) fn token_rows(grad: ArrayView<'_, f32, IxDyn>, d: usize) -> TokenRows<'_> {
    let strides = grad.strides();
    let (last, leading) = strides.split_last().expect("grad is [.., D]");
    if leading.iter().all(|&s| s == 0) && !grad.is_empty() {
        let first = grad.as_ptr();
        return TokenRows::Broadcast(match *last {
            // SAFETY: a view whose leading strides are 0 and last stride 1 holds its d
            // values contiguously at its first element.
            1 => Cow::Borrowed(unsafe { std::slice::from_raw_parts(first, d) }),
            // SAFETY: `first` is the view's first element, in bounds as the view is not empty.
            0 => Cow::Owned(vec![unsafe { *first }; d]),
            _ => Cow::Owned(grad.iter().take(d).copied().collect()),
        });
    }
    let values = match grad.to_slice() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(grad.iter().copied().collect()),
    };
    TokenRows::Contiguous(values, d)
}

/// Copies row `ids[i]` of `table` (`[V, d]`, row-major) to row `i` of the output, shaped
/// `[..index_shape, d]`.
fn gather(table: &[f32], d: usize, ids: &[i64], index_shape: Shape) -> NdArrayTensor {
    let len = ids.len() * d;
    let rows = table.len() / d.max(1);
    // Every value is written below, so the buffer is not zeroed first (the memset was a fifth
    // of a lookup: `docs/measurements.md`).
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    huge_pages::advise(spare.as_ptr().cast(), len * size_of::<f32>());
    huge_pages::note_table(table);
    let copy = |(chunk, ids): (&mut [MaybeUninit<f32>], &[i64])| {
        for (i, (dst, &id)) in chunk.chunks_exact_mut(d).zip(ids).enumerate() {
            if let Some(&ahead) = ids.get(i + PREFETCH_DISTANCE) {
                prefetch_row(table, ahead, d, rows);
            }
            let src = &table[row_start(id, d, rows)..][..d];
            // SAFETY: `dst` and `src` are both `d` values long and do not overlap (one is the
            // fresh output, the other the table).
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), d) };
        }
    };
    // Random rows cost alike: equal runs of ids, one per thread.
    let rows_per_part = ids.len().div_ceil(cpu::part_count(len)).max(1);
    cpu::for_each_part(
        spare
            .chunks_mut(rows_per_part * d)
            .zip(ids.chunks(rows_per_part)),
        copy,
    );
    // SAFETY: the loop above wrote all `len` values: one row of `d` per id.
    unsafe { out.set_len(len) };
    tensor(out, [index_shape.as_slice(), &[d]].concat())
}

fn tensor(values: Vec<f32>, shape: impl AsRef<[usize]>) -> NdArrayTensor {
    let array =
        Array::from_shape_vec(IxDyn(shape.as_ref()), values).expect("length matches the shape");
    NdArrayTensor::from(array.into_shared())
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Int, Tensor, TensorData};

    use super::reference;
    use crate::{EmbeddingBackend, EmbeddingOptions};

    /// The norm of a lookup's summed rows, computed without storing them, equals the norm of
    /// the rows the backward sums: duplicates, padding, scale_grad_by_freq, a broadcast
    /// gradient, and a batch large enough for the threaded path.
    #[test]
    fn token_grad_norm_equals_the_norm_of_the_summed_rows() {
        type B = NdArray;
        let device = Default::default();
        for (n, d, v) in [(7usize, 3usize, 5usize), (4096, 128, 1000)] {
            let ids: Vec<i64> = (0..n).map(|i| ((i * 7919) % v) as i64 / 3).collect();
            let indices =
                Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), &device).into_primitive();
            let random = Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
            let broadcast = Tensor::<B, 2>::ones([1, d], &device).expand([n, d]);
            for grad in [random, broadcast] {
                let grad = grad.into_primitive().tensor();
                for options in [
                    EmbeddingOptions::new(),
                    EmbeddingOptions::new().with_padding_idx(Some(0)),
                    EmbeddingOptions::new().with_scale_grad_by_freq(true),
                ] {
                    let options = options.with_sparse(true);
                    let fast = B::embedding_token_grad_norm_sq(&grad, &indices, v, &options);
                    let summed = reference::token_grad_norm_sq::<B>(&grad, &indices, v, &options);
                    assert!(
                        (fast - summed).abs() <= 1e-6 * summed.max(1.0),
                        "{n} x {d}, {options:?}: {fast} vs {summed}"
                    );
                }
            }
        }
    }

    /// Every unsafe block of the NdArray fast paths, on small slices, against the generic
    /// implementation (`cargo xtask miri` runs this under Miri): the lookup's gather (copies into
    /// an uninitialized buffer, prefetch hints), the sparse backward's row sums (chunks zeroed,
    /// then read as `f32`), and token rows read from broadcast gradients (last stride 1 and 0),
    /// also by the norm of the summed rows.
    #[test]
    fn unsafe_paths_on_small_slices() {
        type B = NdArray;
        let device = Default::default();
        let values = |t: burn::tensor::ops::FloatTensor<B>| -> Vec<f32> {
            Tensor::<B, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
                .into_data()
                .to_vec()
                .unwrap()
        };
        let table: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
        let weight = Tensor::<B, 2>::from_data(TensorData::new(table, [5, 3]), &device)
            .into_primitive()
            .tensor();
        let ids = [4i64, 0, 2, 2, 1, 4];
        let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.to_vec(), [6]), &device)
            .into_primitive();
        let options = EmbeddingOptions::new();
        let fast = B::embedding_lookup(weight.clone(), indices.clone(), &options);
        let slow = reference::forward::<B>(weight, indices.clone(), &options);
        assert_eq!(values(fast), values(slow));

        let token_values: Vec<f32> = (0..18).map(|i| (i * 7 % 11) as f32 - 5.0).collect();
        let grads = [
            Tensor::<B, 2>::from_data(TensorData::new(token_values, [6, 3]), &device),
            Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [1, 3]), &device)
                .expand([6, 3]),
            Tensor::<B, 2>::full([1, 1], 0.25, &device).expand([6, 3]),
        ];
        for grad in grads {
            let grad = grad.into_primitive().tensor();
            for options in [
                EmbeddingOptions::new(),
                EmbeddingOptions::new().with_scale_grad_by_freq(true),
            ] {
                let options = options.with_sparse(true);
                let fast = B::embedding_grad_sparse(grad.clone(), indices.clone(), 5, &options)
                    .expect("rows");
                let slow =
                    reference::backward_sparse::<B>(grad.clone(), indices.clone(), 5, &options)
                        .expect("rows");
                assert_eq!(fast.ids_vec(), slow.ids_vec());
                assert_eq!(
                    values(fast.values.into_primitive().tensor()),
                    values(slow.values.into_primitive().tensor())
                );
                let norm = B::embedding_token_grad_norm_sq(&grad, &indices, 5, &options);
                let exact = reference::token_grad_norm_sq::<B>(&grad, &indices, 5, &options);
                assert!((norm - exact).abs() <= 1e-6 * exact, "{norm} vs {exact}");
            }
        }
    }

    /// Rows of a repeated id that cancel: the norm is that of their small sum, not the noise
    /// of a difference of large sums.
    #[test]
    fn token_grad_norm_of_cancelling_rows_is_their_sum() {
        type B = NdArray;
        let device = Default::default();
        let (n, d) = (64usize, 50usize);
        let ids: Vec<i64> = (0..n as i64).map(|p| p / 2).collect();
        let values: Vec<f32> = (0..n * d)
            .map(|i| {
                let (pos, k) = (i / d, i % d);
                let g = 100.0 + (k * 7 % 13) as f32;
                if pos % 2 == 0 { g } else { -g + 1e-3 }
            })
            .collect();
        let indices =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), &device).into_primitive();
        let grad = Tensor::<B, 2>::from_data(TensorData::new(values, [n, d]), &device)
            .into_primitive()
            .tensor();
        let options = EmbeddingOptions::new().with_sparse(true);
        let fast = B::embedding_token_grad_norm_sq(&grad, &indices, n, &options);
        let summed = reference::token_grad_norm_sq::<B>(&grad, &indices, n, &options);
        assert!((fast - summed).abs() <= 1e-4 * summed, "{fast} vs {summed}");
    }

    /// A NaN or infinite value in a lone id's row or a repeated id's row makes the norm
    /// non-finite, with and without padding in the batch (the two ways the norm is summed).
    #[test]
    fn token_grad_norm_is_not_finite_when_a_row_is_not() {
        type B = NdArray;
        let device = Default::default();
        let ids = [3i64, 1, 3, 0, 2];
        let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.to_vec(), [5]), &device)
            .into_primitive();
        for (pos, bad) in [(1, f32::NAN), (2, f32::INFINITY), (4, f32::NEG_INFINITY)] {
            let mut values = vec![0.5f32; 5 * 4];
            values[pos * 4 + 1] = bad;
            let grad = Tensor::<B, 2>::from_data(TensorData::new(values, [5, 4]), &device)
                .into_primitive()
                .tensor();
            for padding in [None, Some(0)] {
                let options = EmbeddingOptions::new()
                    .with_sparse(true)
                    .with_padding_idx(padding);
                let norm = B::embedding_token_grad_norm_sq(&grad, &indices, 4, &options);
                assert!(
                    !norm.is_finite(),
                    "{bad} at {pos}, padding {padding:?}: {norm}"
                );
            }
        }
    }
}
