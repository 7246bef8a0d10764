//! [`EmbeddingBackend`] for the LibTorch backend: libtorch's own `embedding`,
//! `embedding_dense_backward`, `embedding_sparse_backward` (coalesced), `embedding_renorm_`
//! and `embedding_bag`, called through tch on the tensors burn-tch holds. What libtorch lacks
//! (a sparse gradient with `scale_grad_by_freq`, a lookup with `max_norm` that leaves the
//! weight as it is, the bag's max mode, whose arg-max we need as positions) takes the generic
//! [`reference`](mod@super::reference) path. The sparse bag backward on the CPU runs the
//! [`cpu`](super::cpu) kernel on the tensors' values: libtorch's own returns an uncoalesced
//! gradient, and its `coalesce` costs several times the rest of a bag step
//! (`docs/measurements.md`).

use burn::backend::LibTorch;
use burn::backend::libtorch::{TchElement, TchTensor};
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::{BagBatch, EmbeddingBackend, cpu, reference, reference_bag};
use crate::{BagMode, EmbeddingOptions, RowSparseGradient};

mod update;

/// The values of a CPU tensor as f32, flattened, in logical order.
fn host_values<T: tch::kind::Element + Copy>(tensor: &tch::Tensor) -> Option<Vec<T>> {
    if tensor.device() != tch::Device::Cpu {
        return None;
    }
    Vec::<T>::try_from(tensor.flatten(0, -1)).ok()
}

/// The values of a contiguous CPU tensor of element `T`, borrowed where they lie; `None` for
/// another device, element type or layout.
fn host_slice<T: tch::kind::Element>(tensor: &tch::Tensor) -> Option<&[T]> {
    if tensor.device() != tch::Device::Cpu || tensor.kind() != T::KIND || !tensor.is_contiguous() {
        return None;
    }
    let len = tensor.numel();
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: a contiguous CPU tensor of `len` values of kind `T::KIND`, whose Rust type is
    // `T`; the slice borrows `tensor`, which keeps the storage alive, and burn-tch writes a
    // tensor in place only through its sole owner, which cannot act while it is borrowed.
    Some(unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const T, len) })
}

/// [`cpu::token_grad_norm_sq`] on a CPU gradient `[.., D]` (f32, or f16 / bf16 widened) and its
/// ids, read where they lie; `None` elsewhere (another device or element type).
fn host_token_grad_norm_sq(
    grad: &tch::Tensor,
    indices: &tch::Tensor,
    options: &EmbeddingOptions,
) -> Option<f64> {
    let d = usize::try_from(*grad.size().last()?).ok()?;
    // A shallow clone when the gradient is contiguous already (a seeded or computed one); a
    // half-precision one widened to f32 (the rows are summed in f32 too).
    let grad = match half_kind(grad) {
        Some(_) => grad.to_kind(tch::Kind::Float),
        None => grad.contiguous(),
    };
    let values = host_slice::<f32>(&grad).filter(|v| !v.is_empty())?;
    let ids = match host_slice::<i64>(indices) {
        Some(ids) => std::borrow::Cow::Borrowed(ids),
        None => std::borrow::Cow::Owned(host_values::<i64>(indices)?),
    };
    // On the caller's thread alone: libtorch's workers still spin from the lookup.
    cpu::token_grad_norm_sq(
        &cpu::TokenRows::Contiguous(values.into(), d),
        &ids,
        options,
        false,
    )
}

/// The kind of a half-precision (f16 or bf16) tensor; `None` for any other.
fn half_kind(tensor: &tch::Tensor) -> Option<tch::Kind> {
    let kind = tensor.kind();
    matches!(kind, tch::Kind::Half | tch::Kind::BFloat16).then_some(kind)
}

/// A half-precision tensor in f32.
fn widened(tensor: TchTensor) -> TchTensor {
    TchTensor::new(tensor.tensor.to_kind(tch::Kind::Float))
}

/// libtorch's "no padding index".
fn padding(options: &EmbeddingOptions) -> i64 {
    options.padding_idx.map_or(-1, |p| p as i64)
}

impl<E: TchElement> EmbeddingBackend for LibTorch<E> {
    fn embedding_lookup(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        if options.max_norm.is_some() {
            return reference::forward::<Self>(weight, indices, options);
        }
        if let Some(table) = host_slice::<f32>(&weight.tensor) {
            super::huge_pages::note_table(table);
        }
        // [V, D], [..] -> [.., D]; libtorch's index_select, no autograd (burn-tch tensors are
        // plain tensors, and our Autodiff op records the backward).
        TchTensor::new(tch::Tensor::embedding(
            &weight.tensor,
            &indices.tensor,
            -1,
            false,
            false,
        ))
    }

    /// The lookup's output gradient and ids wait as they are (libtorch's own uncoalesced
    /// sparse gradient): burn-tch writes a tensor in place only when nothing else holds its
    /// storage, and the waiting clones do.
    fn embedding_defers_grad_sum() -> bool {
        true
    }

    fn embedding_token_grad_norm_sq(
        grad: &FloatTensor<Self>,
        indices: &IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> f64 {
        host_token_grad_norm_sq(&grad.tensor, &indices.tensor, options).unwrap_or_else(|| {
            reference::token_grad_norm_sq::<Self>(grad, indices, num_embeddings, options)
        })
    }

    fn embedding_index_range(indices: &IntTensor<Self>) -> (i64, i64) {
        // On the CPU, one pass over the ids where they lie (libtorch's calls cost microseconds
        // each); elsewhere one reduction to both bounds and one read of the two numbers.
        if let Some(ids) = host_slice::<i64>(&indices.tensor) {
            return cpu::index_range(ids.iter().copied());
        }
        let (min, max) = indices.tensor.aminmax(None, false);
        let bounds = tch::Tensor::stack(&[min, max], 0).to_kind(tch::Kind::Int64);
        match Vec::<i64>::try_from(bounds.to_device(tch::Device::Cpu)) {
            Ok(bounds) => (bounds[0], bounds[1]),
            Err(_) => reference::index_range::<Self>(indices),
        }
    }

    fn embedding_renorm(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        max_norm: f64,
        norm_type: f64,
    ) -> FloatTensor<Self> {
        let mut weight = weight;
        // In place when nothing else holds the weight's storage; else on the generic path,
        // which touches the referenced rows only (a copy would cost O(V x D)).
        let indices = &indices.tensor;
        match weight.mut_ops(|w| w.embedding_renorm_(indices, max_norm, norm_type)) {
            Some(renormed) => renormed,
            // Not burn-tch 0.21's `scatter_nd`, which would write the shared storage in place.
            None => reference::renorm_with::<Self>(
                weight,
                TchTensor::new(indices.shallow_clone()),
                max_norm,
                norm_type,
                update::replace_rows_in_place,
            ),
        }
    }

    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        if let Some(kind) = half_kind(&grad.tensor) {
            // The sparse backward's rows (summed in f32, rounded once) as a dense tensor: the
            // same bits as the row-sparse gradient, whatever order libtorch's kernels sum in.
            let (d, device) = (grad.tensor.size().last().copied(), grad.tensor.device());
            return match Self::embedding_grad_sparse(grad, indices, num_embeddings, options) {
                Some(rows) => reference::primitive(rows.to_dense()),
                None => TchTensor::new(tch::Tensor::zeros(
                    [num_embeddings as i64, d.unwrap_or(0)],
                    (kind, device),
                )),
            };
        }
        TchTensor::new(tch::Tensor::embedding_dense_backward(
            &grad.tensor,
            &indices.tensor,
            num_embeddings as i64,
            padding(options),
            options.scale_grad_by_freq,
        ))
    }

    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        if let Some(kind) = half_kind(&grad.tensor) {
            // libtorch sums half-precision rows in their own type, one rounding per token (the
            // dense and the sparse backward of 4000 bf16 tokens then differ by units): summed in
            // f32 and rounded once instead, the same values as the dense backward above.
            let wide =
                Self::embedding_grad_sparse(widened(grad), indices, num_embeddings, options)?;
            let values = wide.values.into_primitive().tensor();
            return Some(RowSparseGradient::new(
                wide.ids,
                reference::float::<Self, 2>(TchTensor::new(values.tensor.to_kind(kind))),
                num_embeddings,
            ));
        }
        if options.scale_grad_by_freq {
            // libtorch refuses scale_grad_by_freq with sparse gradients; we support it.
            return reference::backward_sparse::<Self>(grad, indices, num_embeddings, options);
        }
        let sparse = tch::Tensor::embedding_sparse_backward(
            &grad.tensor,
            &indices.tensor,
            num_embeddings as i64,
            padding(options),
            false,
        )
        .coalesce();
        // Coalesced: sorted unique ids [1, U] and their summed rows [U, D].
        let ids = sparse.internal_indices().squeeze_dim(0).contiguous();
        if ids.size1().unwrap_or(0) == 0 {
            return None;
        }
        let values = sparse.internal_values().contiguous();
        Some(RowSparseGradient::new(
            reference::int::<Self, 1>(TchTensor::new(ids)),
            reference::float::<Self, 2>(TchTensor::new(values)),
            num_embeddings,
        ))
    }

    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        let mode = bags.mode;
        if mode == BagMode::Max || options.max_norm.is_some() {
            return reference_bag::bag_forward::<Self>(weight, bags, options);
        }
        // The first position of each bag, empty bags included, from the host copy.
        let starts: Vec<i64> = bags.starts()[..bags.num_bags]
            .iter()
            .map(|&s| s as i64)
            .collect();
        let offsets = tch::Tensor::from_slice(&starts).to_device(weight.tensor.device());
        let (indices, per_sample_weights) = (&bags.indices, &bags.per_sample_weights);
        let (output, ..) = tch::Tensor::embedding_bag_padding_idx(
            &weight.tensor,
            &indices.tensor,
            &offsets,
            false,
            if mode == BagMode::Sum { 0 } else { 1 },
            false,
            per_sample_weights.as_ref().map(|w| &w.tensor),
            false,
            options.padding_idx.map(|p| p as i64),
        );
        (TchTensor::new(output), None)
    }

    fn embedding_bag_grad_sparse(
        grad: FloatTensor<Self>,
        bags: &BagBatch<Self>,
        max_positions: Option<IntTensor<Self>>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        let d = grad.tensor.size().last().copied().unwrap_or(0) as usize;
        if bags.mode != BagMode::Max
            && grad.tensor.kind() == tch::Kind::Float
            && let (Some(g), Some(ids)) = (
                host_values::<f32>(&grad.tensor),
                host_values::<i64>(&bags.indices.tensor),
            )
            && let Some(psw) = bags
                .per_sample_weights
                .as_ref()
                .map_or(Some(None), |p| host_values::<f32>(&p.tensor).map(Some))
        {
            let (unique, values) = cpu::bag_grad_rows(&g, d, &ids, bags, psw.as_deref(), options)?;
            let rows = unique.len() as i64;
            return Some(RowSparseGradient::new(
                reference::int::<Self, 1>(TchTensor::new(tch::Tensor::from_slice(&unique))),
                reference::float::<Self, 2>(TchTensor::new(
                    tch::Tensor::from_slice(&values).view([rows, d as i64]),
                )),
                num_embeddings,
            ));
        }
        reference_bag::bag_grad_sparse::<Self>(grad, bags, max_positions, num_embeddings, options)
    }
}
