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

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::EmbeddingBackend;
use super::reference::{self, float, int, int_tensor, read_indices};
use super::reference_bag;
use crate::coalesce::Coalesced;
use crate::{BagMode, EmbeddingOptions, RowSparseGradient};

/// The two kernels of the backward, on a backend's primitives: implemented for `CubeBackend`
/// by launching them and for `Fusion<CubeBackend>` as fusion custom operations.
pub(crate) trait RowKernels: Backend {
    /// `[M, D] -> [rows, D]`: row `targets[u]` of the output is `scale[u]` times the sum of the
    /// rows `positions[starts[u]..starts[u + 1]]` of `source`; other rows are zero when
    /// `zeroed` and left uninitialised otherwise. The backward sums gradient rows with it
    /// (`source` the output gradient), the bag forward table rows (`source` the weight).
    #[allow(clippy::too_many_arguments)]
    fn segment_sum_rows(
        source: FloatTensor<Self>,
        positions: IntTensor<Self>,
        starts: IntTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
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
        positions: IntTensor<Self>,
        starts: IntTensor<Self>,
        targets: IntTensor<Self>,
        scale: FloatTensor<Self>,
        rows: usize,
        zeroed: bool,
    ) -> FloatTensor<Self> {
        kernels::segment_sum_rows::<R, F, I>(
            source, positions, starts, targets, scale, rows, zeroed,
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

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> EmbeddingBackend
    for CubeBackend<R, F, I, BT>
{
    fn embedding_grad_dense(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> FloatTensor<Self> {
        grad_dense::<Self>(grad, indices, num_embeddings, options)
    }

    fn embedding_grad_sparse(
        grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
        num_embeddings: usize,
        options: &EmbeddingOptions,
    ) -> Option<RowSparseGradient<Self>> {
        grad_sparse::<Self>(grad, indices, num_embeddings, options)
    }

    fn embedding_bag_forward(
        weight: FloatTensor<Self>,
        indices: IntTensor<Self>,
        bag_of: IntTensor<Self>,
        num_bags: usize,
        per_sample_weights: Option<FloatTensor<Self>>,
        mode: BagMode,
        options: &EmbeddingOptions,
    ) -> (FloatTensor<Self>, Option<IntTensor<Self>>) {
        bag_forward::<Self>(
            weight,
            indices,
            bag_of,
            num_bags,
            per_sample_weights,
            mode,
            options,
        )
    }
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

/// The batch grouped on the host, uploaded for [`RowKernels::segment_sum_rows`].
struct Segments<B: Backend> {
    positions: IntTensor<B>,
    starts: IntTensor<B>,
    /// The sorted unique ids.
    unique: Tensor<B, 1, burn::tensor::Int>,
    scale: FloatTensor<B>,
}

impl<B: Backend> Segments<B> {
    /// `None` when no row is touched (empty batch, or padding only).
    fn new(indices: IntTensor<B>, options: &EmbeddingOptions) -> Option<Self> {
        let device = B::int_device(&indices);
        let batch = Coalesced::new(&read_indices(int::<B, 1>(indices)), options.padding_idx);
        if batch.unique.is_empty() {
            return None;
        }
        let widen = |values: &[u32]| values.iter().map(|&v| v as i64).collect::<Vec<_>>();
        let scale: Vec<f32> = batch
            .slot_starts
            .windows(2)
            .map(|slot| match options.scale_grad_by_freq {
                true => 1.0 / (slot[1] - slot[0]) as f32,
                false => 1.0,
            })
            .collect();
        let scale = TensorData::new(scale, [batch.unique.len()]);
        Some(Self {
            positions: int_tensor::<B>(&widen(&batch.grouped), &device).into_primitive(),
            starts: int_tensor::<B>(&widen(&batch.slot_starts), &device).into_primitive(),
            unique: int_tensor::<B>(&batch.unique, &device),
            scale: reference::primitive(Tensor::<B, 1>::from_data(scale, &device)),
        })
    }
}

/// The dense backward `[.., D] -> [V, D]` on a backend with [`RowKernels`].
pub(crate) fn grad_dense<B: RowKernels>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    let (grad, indices, dim) = flatten::<B>(grad, indices);
    let device = B::float_device(&grad);
    if !options.deterministic && !options.scale_grad_by_freq && B::supports_atomic_add(&device) {
        return B::scatter_add_rows(grad, indices, num_embeddings, options.padding_idx);
    }
    match Segments::<B>::new(indices, options) {
        Some(segments) => B::segment_sum_rows(
            grad,
            segments.positions,
            segments.starts,
            segments.unique.into_primitive(),
            segments.scale,
            num_embeddings,
            true,
        ),
        None => reference::primitive(Tensor::<B, 2>::zeros([num_embeddings, dim], &device)),
    }
}

/// The row-sparse backward on a backend with [`RowKernels`]: always the segmented sum (the
/// unique ids have to come from the host anyway), so always deterministic.
pub(crate) fn grad_sparse<B: RowKernels>(
    grad: FloatTensor<B>,
    indices: IntTensor<B>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> Option<RowSparseGradient<B>> {
    let (grad, indices, _) = flatten::<B>(grad, indices);
    let device = B::float_device(&grad);
    let segments = Segments::<B>::new(indices, options)?;
    let count = segments.unique.dims()[0] as i64;
    let slots = Tensor::<B, 1, burn::tensor::Int>::arange(0..count, &device);
    let values = B::segment_sum_rows(
        grad,
        segments.positions,
        segments.starts,
        slots.into_primitive(),
        segments.scale,
        count as usize,
        false,
    );
    Some(RowSparseGradient::new(
        segments.unique,
        float(values),
        num_embeddings,
    ))
}

/// The bag forward on a backend with [`RowKernels`]: modes sum and mean as one segmented sum
/// of table rows per bag (burn's `select_assign`, which the generic reduction uses, loops over
/// every token in each of D threads). Mode max, `per_sample_weights` and `max_norm` take the
/// generic path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bag_forward<B: RowKernels>(
    weight: FloatTensor<B>,
    indices: IntTensor<B>,
    bag_of: IntTensor<B>,
    num_bags: usize,
    per_sample_weights: Option<FloatTensor<B>>,
    mode: BagMode,
    options: &EmbeddingOptions,
) -> (FloatTensor<B>, Option<IntTensor<B>>) {
    if mode == BagMode::Max || per_sample_weights.is_some() || options.max_norm.is_some() {
        return reference_bag::bag_forward::<B>(
            weight,
            indices,
            bag_of,
            num_bags,
            per_sample_weights,
            mode,
            options,
        );
    }
    let device = B::float_device(&weight);
    let dim = weight.shape()[1];
    let ids = read_indices(int::<B, 1>(indices));
    let bags = read_indices(int::<B, 1>(bag_of));
    // The non-padding ids in order; bags are contiguous runs of tokens (`bag_of` does not
    // decrease), so bag b is ids[starts[b]..starts[b + 1]].
    let mut kept = Vec::with_capacity(ids.len());
    let mut starts = vec![0i64; num_bags + 1];
    for (&id, &bag) in ids.iter().zip(&bags) {
        if Some(id as usize) != options.padding_idx {
            kept.push(id);
            starts[bag as usize + 1] += 1;
        }
    }
    if kept.is_empty() {
        let zeros = Tensor::<B, 2>::zeros([num_bags, dim], &device);
        return (reference::primitive(zeros), None);
    }
    // starts[b + 1] holds the size of bag b until the prefix sum below.
    let scale: Vec<f32> = starts[1..]
        .iter()
        .map(|&size| match mode {
            BagMode::Mean => 1.0 / size.max(1) as f32,
            _ => 1.0,
        })
        .collect();
    for b in 0..num_bags {
        starts[b + 1] += starts[b];
    }
    let bag_ids = Tensor::<B, 1, burn::tensor::Int>::arange(0..num_bags as i64, &device);
    let output = B::segment_sum_rows(
        weight,
        int_tensor::<B>(&kept, &device).into_primitive(),
        int_tensor::<B>(&starts, &device).into_primitive(),
        bag_ids.into_primitive(),
        reference::primitive(Tensor::<B, 1>::from_data(
            TensorData::new(scale, [num_bags]),
            &device,
        )),
        num_bags,
        false,
    );
    (output, None)
}
