//! [`EmbeddingBackend`] for burn's cubecl backends (wgpu; `CubeBackend` and, with burn's
//! `fusion` feature, `Fusion<CubeBackend>`): the backward and the sum/mean bag forward as
//! cubecl kernels.
//!
//! The batch is grouped on the host (as every backend does: [`Coalesced`]), then one kernel
//! sums each touched row's gradient rows in position order, one thread per output element
//! ([`kernels`]); the bag forward is the same kernel summing each bag's table rows. With `deterministic` off, the dense gradient without `scale_grad_by_freq` is
//! instead one atomic add per gradient element, with no host round trip, where the device adds
//! floats atomically.

mod fusion;
mod kernels;
mod segments;
mod update;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Element, Shape, Tensor, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::reference::{self, float, int, int_tensor, primitive, read_indices};
use super::reference_bag::{self, bag_counts};
use super::{BagBatch, EmbeddingBackend};
use crate::coalesce::Coalesced;
use crate::{BagMode, EmbeddingOptions, RowSparseGradient};
use segments::{SegmentPlan, Segments};

/// The two kernels, on a backend's primitives: implemented for `CubeBackend` by launching them
/// and for `Fusion<CubeBackend>` as fusion custom operations.
pub(crate) trait RowKernels: Backend {
    /// `[M, D] -> [rows, D]`: the segmented sum of rows of `source` that `segments` describes
    /// (see [`SegmentPlan`]); rows no segment targets are zero when `zeroed` and left
    /// uninitialised otherwise. The backward sums gradient rows with it, the bag forward table
    /// rows.
    fn segment_sum_rows(
        source: FloatTensor<Self>,
        segments: Segments<Self>,
        rows: usize,
        zeroed: bool,
    ) -> FloatTensor<Self>;

    /// Whether [`scatter_add_rows`](Self::scatter_add_rows) can run on `device`.
    fn supports_atomic_add(device: &Self::Device) -> bool;

    /// `[N, D], [N] -> [rows, D]`: each gradient row added to row `indices[n]` with atomics,
    /// except the tokens whose index is `padding`.
    fn scatter_add_rows(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        rows: usize,
        padding: Option<usize>,
    ) -> FloatTensor<Self>;
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> RowKernels
    for CubeBackend<R, F, I, BT>
{
    fn segment_sum_rows(
        source: FloatTensor<Self>,
        segments: Segments<Self>,
        rows: usize,
        zeroed: bool,
    ) -> FloatTensor<Self> {
        let Segments {
            positions,
            weights,
            starts,
            targets,
            scale,
        } = segments;
        kernels::segment_sum_rows::<R, F, I>(
            source, positions, weights, starts, targets, scale, rows, zeroed,
        )
    }

    fn supports_atomic_add(device: &Self::Device) -> bool {
        kernels::supports_atomic_add::<R, F>(&R::client(device))
    }

    fn scatter_add_rows(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        rows: usize,
        padding: Option<usize>,
    ) -> FloatTensor<Self> {
        kernels::scatter_add_rows::<R, F, I>(grad, indices, rows, padding)
    }
}

/// The [`EmbeddingBackend`] methods with cubecl fast paths, for a backend with [`RowKernels`]
/// (`CubeBackend` here, `Fusion<CubeBackend>` in [`fusion`]).
macro_rules! cube_embedding_methods {
    () => {
        fn embedding_grad_dense(
            grad: FloatTensor<Self>,
            indices: IntTensor<Self>,
            num_embeddings: usize,
            options: &EmbeddingOptions,
        ) -> FloatTensor<Self> {
            $crate::backend::cube::grad_dense::<Self>(grad, indices, num_embeddings, options)
        }

        fn embedding_grad_sparse(
            grad: FloatTensor<Self>,
            indices: IntTensor<Self>,
            num_embeddings: usize,
            options: &EmbeddingOptions,
        ) -> Option<RowSparseGradient<Self>> {
            $crate::backend::cube::grad_sparse::<Self>(grad, indices, num_embeddings, options)
        }

        fn embedding_bag_forward(
            weight: FloatTensor<Self>,
            bags: &$crate::backend::BagBatch<Self>,
            options: &EmbeddingOptions,
        ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
            $crate::backend::cube::bag_forward::<Self>(weight, bags, options)
        }

        fn embedding_bag_grad_sparse(
            grad: FloatTensor<Self>,
            bags: &$crate::backend::BagBatch<Self>,
            max_positions: Option<IntTensor<Self>>,
            num_embeddings: usize,
            options: &EmbeddingOptions,
        ) -> Option<RowSparseGradient<Self>> {
            $crate::backend::cube::bag_grad_sparse::<Self>(
                grad,
                bags,
                max_positions,
                num_embeddings,
                options,
            )
        }
    };
}
use cube_embedding_methods;

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> EmbeddingBackend
    for CubeBackend<R, F, I, BT>
{
    cube_embedding_methods!();
}

/// `[.., D] -> [N, D]` and `[..] -> [N]`.
fn flatten<B: Backend>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
) -> (FloatTensor<B>, IntTensor<B>, usize) {
    let shape = grad.shape();
    let dim = shape.as_slice().last().copied().unwrap_or(1);
    let tokens = indices.shape().num_elements();
    (
        B::float_reshape(grad, Shape::new([tokens, dim])),
        B::int_reshape(indices, Shape::new([tokens])),
        dim,
    )
}

/// A float tensor read to the host (a device sync).
fn read_floats<B: Backend>(tensor: FloatTensor<B>) -> Vec<f32> {
    float::<B, 1>(tensor).into_data().iter::<f32>().collect()
}

/// Zeros in the backend's float type (the kernels' outputs' type).
fn zeros<B: Backend>(rows: usize, dim: usize, device: &B::Device) -> FloatTensor<B> {
    let dtype = <B::FloatElem as Element>::dtype();
    primitive(Tensor::<B, 2>::zeros([rows, dim], (device, dtype)))
}

/// Whether the kernels, typed by the backend's float element, can read `tensor`: a tensor cast
/// to another float type (a bf16 table on `Wgpu<f32>`) takes the generic path instead.
fn kernels_read<B: Backend>(tensor: &FloatTensor<B>) -> bool {
    tensor.dtype() == <B::FloatElem as Element>::dtype()
}

/// The dense backward `[.., D] -> [V, D]`: the segmented sum of each touched row's gradient
/// rows into a zeroed `[V, D]`, or, with `deterministic` off, atomic adds.
pub(crate) fn grad_dense<B: RowKernels>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    if !kernels_read::<B>(&grad) {
        return reference::backward_dense::<B>(grad, indices, num_embeddings, options);
    }
    let (grad, indices, dim) = flatten::<B>(grad, indices);
    let device = B::float_device(&grad);
    if !options.deterministic && !options.scale_grad_by_freq && B::supports_atomic_add(&device) {
        return B::scatter_add_rows(grad, indices, num_embeddings, options.padding_idx);
    }
    let batch = Coalesced::new(&read_indices(int::<B, 1>(indices)), options.padding_idx);
    if batch.unique.is_empty() {
        return zeros::<B>(num_embeddings, dim, &device);
    }
    let mut plan = SegmentPlan::by_id(&batch, options.scale_grad_by_freq, |p| p as i64, |_| 1.0);
    plan.targets = batch.unique;
    B::segment_sum_rows(grad, plan.upload(&device), num_embeddings, true)
}

/// The row-sparse backward: always the segmented sum (the unique ids come from the host
/// anyway), so always deterministic.
pub(crate) fn grad_sparse<B: RowKernels>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> Option<RowSparseGradient<B>> {
    if !kernels_read::<B>(&grad) {
        return reference::backward_sparse::<B>(grad, indices, num_embeddings, options);
    }
    let (grad, indices, _) = flatten::<B>(grad, indices);
    let device = B::float_device(&grad);
    let batch = Coalesced::new(&read_indices(int::<B, 1>(indices)), options.padding_idx);
    if batch.unique.is_empty() {
        return None;
    }
    let plan = SegmentPlan::by_id(&batch, options.scale_grad_by_freq, |p| p as i64, |_| 1.0);
    let values = B::segment_sum_rows(grad, plan.upload(&device), batch.unique.len(), false);
    Some(RowSparseGradient::new(
        int_tensor::<B>(&batch.unique, &device),
        float(values),
        num_embeddings,
    ))
}

/// The bag forward, modes sum and mean: one segmented sum of table rows per bag (burn's
/// `select_assign`, which the generic reduction uses, loops over every token in each of D
/// threads). Mode max and `max_norm` take the generic path.
pub(crate) fn bag_forward<B: RowKernels>(
    weight: FloatTensor<B>,
    batch: &BagBatch<B>,
    options: &EmbeddingOptions,
) -> (FloatTensor<B>, Option<IntTensor<B>>) {
    let (num_bags, mode) = (batch.num_bags, batch.mode);
    if mode == BagMode::Max || options.max_norm.is_some() || !kernels_read::<B>(&weight) {
        return reference_bag::bag_forward::<B>(weight, batch, options);
    }
    let device = B::float_device(&weight);
    let dim = weight.shape()[1];
    let ids = read_indices(int::<B, 1>(batch.indices.clone()));
    let bags = &batch.bag_of_host;
    let per_sample_weights = batch.per_sample_weights.clone().map(read_floats::<B>);
    // Bags are contiguous runs of tokens (`bag_of` does not decrease): bag b's terms are
    // positions[starts[b]..starts[b + 1]], its non-padding ids in order.
    let mut plan = SegmentPlan {
        starts: vec![0; num_bags + 1],
        targets: (0..num_bags as i64).collect(),
        ..SegmentPlan::default()
    };
    for (t, (&id, &bag)) in ids.iter().zip(bags.iter()).enumerate() {
        if Some(id as usize) != options.padding_idx {
            plan.positions.push(id);
            plan.weights
                .push(per_sample_weights.as_ref().map_or(1.0, |w| w[t]));
            plan.starts[bag as usize + 1] += 1;
        }
    }
    if plan.is_empty() {
        return (zeros::<B>(num_bags, dim, &device), None);
    }
    // starts[b + 1] holds the size of bag b until the prefix sum below.
    plan.scale = plan.starts[1..]
        .iter()
        .map(|&size| match mode {
            BagMode::Mean => 1.0 / size.max(1) as f32,
            _ => 1.0,
        })
        .collect();
    for b in 0..num_bags {
        plan.starts[b + 1] += plan.starts[b];
    }
    let output = B::segment_sum_rows(weight, plan.upload(&device), num_bags, false);
    (output, None)
}

/// The row-sparse weight gradient of a sum or mean bag: one segmented sum per touched id of
/// its tokens' bag gradients (times the per-sample weight, or over the bag's size), with no
/// `[N, D]` intermediate. Mode max takes the generic path.
pub(crate) fn bag_grad_sparse<B: RowKernels + EmbeddingBackend>(
    grad: FloatTensor<B>,
    batch: &BagBatch<B>,
    max_positions: Option<IntTensor<B>>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> Option<RowSparseGradient<B>> {
    let (num_bags, mode) = (batch.num_bags, batch.mode);
    if mode == BagMode::Max || !kernels_read::<B>(&grad) {
        return reference_bag::bag_grad_sparse::<B>(
            grad,
            batch,
            max_positions,
            num_embeddings,
            options,
        );
    }
    let device = B::float_device(&grad);
    let ids = read_indices(int::<B, 1>(batch.indices.clone()));
    let bags = &batch.bag_of_host;
    let per_sample_weights = batch.per_sample_weights.clone().map(read_floats::<B>);
    let sizes =
        (mode == BagMode::Mean).then(|| bag_counts(&ids, bags, num_bags, options.padding_idx));
    let batch = Coalesced::new(&ids, options.padding_idx);
    if batch.unique.is_empty() {
        return None;
    }
    let plan = SegmentPlan::by_id(
        &batch,
        options.scale_grad_by_freq,
        |p| bags[p as usize],
        |p| {
            let p = p as usize;
            match (&per_sample_weights, &sizes) {
                (Some(w), _) => w[p],
                (None, Some(sizes)) => 1.0 / sizes[bags[p] as usize].max(1) as f32,
                (None, None) => 1.0,
            }
        },
    );
    let values = B::segment_sum_rows(grad, plan.upload(&device), batch.unique.len(), false);
    Some(RowSparseGradient::new(
        int_tensor::<B>(&batch.unique, &device),
        float(values),
        num_embeddings,
    ))
}
