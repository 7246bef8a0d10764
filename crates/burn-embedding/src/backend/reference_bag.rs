//! Backend-generic embedding-bag reductions, the defaults of the bag methods of
//! [`EmbeddingBackend`](super::EmbeddingBackend), on a [`BagBatch`].

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Bool, DType, IndexingUpdateOp, Int, Tensor, TensorData, TensorMetadata};

use super::BagBatch;
use super::reference::{float, forward, int, primitive, read_indices};
use crate::{BagMode, EmbeddingOptions};

/// The number of non-padding tokens of each bag.
pub(crate) fn bag_counts(
    ids: &[i64],
    bag_of: &[i64],
    num_bags: usize,
    padding_idx: Option<usize>,
) -> Vec<u32> {
    let mut counts = vec![0u32; num_bags];
    for (&id, &bag) in ids.iter().zip(bag_of) {
        if Some(id as usize) != padding_idx {
            counts[bag as usize] += 1;
        }
    }
    counts
}

fn padding_mask<B: Backend>(
    ids: &[i64],
    padding_idx: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 1, Bool>> {
    let p = padding_idx? as i64;
    ids.contains(&p).then(|| {
        let mask: Vec<bool> = ids.iter().map(|&i| i == p).collect();
        Tensor::from_data(TensorData::new(mask, [ids.len()]), device)
    })
}

/// `[N] -> [N, 1]` divisors `max(count of the token's bag, 1)`.
fn mean_divisors<B: Backend>(
    counts: &[u32],
    bag_of: &[i64],
    device: &B::Device,
    dtype: DType,
) -> Tensor<B, 2> {
    let per_token: Vec<f32> = bag_of
        .iter()
        .map(|&b| counts[b as usize].max(1) as f32)
        .collect();
    Tensor::<B, 1>::from_data(TensorData::new(per_token, [bag_of.len()]), (device, dtype))
        .unsqueeze_dim(1)
}

/// Bag forward: `[num_bags, D]`, and for mode max the position of each maximum (-1: empty bag).
pub(crate) fn bag_forward<B: Backend>(
    weight: FloatTensor<B>,
    batch: &BagBatch<B>,
    options: &EmbeddingOptions,
) -> (FloatTensor<B>, Option<IntTensor<B>>) {
    let d = weight.shape()[1];
    // Every float tensor made here in the weight's type, which need not be the device's default.
    let (device, dtype) = (B::float_device(&weight), weight.dtype());
    let (num_bags, bags) = (batch.num_bags, &batch.bag_of_host);
    let ids = read_indices(int::<B, 1>(batch.indices.clone()));
    // The rows as looked up, renormalised when max_norm is set: [N, D].
    let rows = float::<B, 2>(forward::<B>(weight, batch.indices.clone(), options));
    match batch.mode {
        BagMode::Max => {
            let data: Vec<f32> = rows.into_data().iter::<f32>().collect();
            let mut out = vec![0.0f32; num_bags * d];
            let mut source = vec![-1i64; num_bags * d];
            for (t, (&id, &bag)) in ids.iter().zip(bags.iter()).enumerate() {
                if Some(id as usize) == options.padding_idx {
                    continue;
                }
                for j in 0..d {
                    let (x, k) = (data[t * d + j], bag as usize * d + j);
                    // Strictly greater: ties keep the first maximum, as PyTorch.
                    if source[k] < 0 || x > out[k] {
                        out[k] = x;
                        source[k] = t as i64;
                    }
                }
            }
            let out =
                Tensor::<B, 2>::from_data(TensorData::new(out, [num_bags, d]), (&device, dtype));
            let source =
                Tensor::<B, 2, Int>::from_data(TensorData::new(source, [num_bags, d]), &device);
            (primitive(out), Some(source.into_primitive()))
        }
        BagMode::Sum | BagMode::Mean => {
            let mut rows = rows;
            if let Some(w) = batch.per_sample_weights.clone() {
                rows = rows * float::<B, 1>(w).unsqueeze_dim::<2>(1);
            }
            if let Some(mask) = padding_mask::<B>(&ids, options.padding_idx, &device) {
                rows = rows.mask_fill(mask.unsqueeze_dim::<2>(1).expand([ids.len(), d]), 0.0);
            }
            let mut out = Tensor::<B, 2>::zeros([num_bags, d], (&device, dtype)).select_assign(
                0,
                int::<B, 1>(batch.bag_of.clone()),
                rows,
                IndexingUpdateOp::Add,
            );
            if batch.mode == BagMode::Mean {
                let counts = bag_counts(&ids, bags, num_bags, options.padding_idx);
                let divisors: Vec<f32> = counts.iter().map(|&c| c.max(1) as f32).collect();
                out = out
                    / Tensor::<B, 1>::from_data(
                        TensorData::new(divisors, [num_bags]),
                        (&device, dtype),
                    )
                    .unsqueeze_dim::<2>(1);
            }
            (primitive(out), None)
        }
    }
}

/// The gradient with respect to each token's looked-up row, `[N, D]`, from the output
/// gradient `[num_bags, D]`. Padding and `scale_grad_by_freq` are left to the embedding
/// backward that consumes it.
pub(crate) fn bag_token_grad<B: Backend>(
    grad: FloatTensor<B>,
    batch: &BagBatch<B>,
    max_positions: Option<IntTensor<B>>,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    let grad = float::<B, 2>(grad);
    let d = grad.dims()[1];
    let (device, dtype) = (grad.device(), grad.dtype());
    let bags = &batch.bag_of_host;
    let bag_of = || int::<B, 1>(batch.bag_of.clone());
    let n = bags.len();
    match batch.mode {
        BagMode::Max => {
            let g: Vec<f32> = grad.into_data().iter::<f32>().collect();
            let positions: Vec<i64> =
                int::<B, 2>(max_positions.expect("mode max keeps the positions of its maxima"))
                    .into_data()
                    .iter::<i64>()
                    .collect();
            let mut out = vec![0.0f32; n * d];
            for (k, &pos) in positions.iter().enumerate() {
                if pos >= 0 {
                    out[pos as usize * d + k % d] += g[k];
                }
            }
            primitive(Tensor::<B, 2>::from_data(
                TensorData::new(out, [n, d]),
                (&device, dtype),
            ))
        }
        BagMode::Sum => {
            let mut g = grad.select(0, bag_of());
            if let Some(w) = batch.per_sample_weights.clone() {
                g = g * float::<B, 1>(w).unsqueeze_dim::<2>(1);
            }
            primitive(g)
        }
        BagMode::Mean => {
            let ids = read_indices(int::<B, 1>(batch.indices.clone()));
            let counts = bag_counts(&ids, bags, batch.num_bags, options.padding_idx);
            let g = grad.select(0, bag_of());
            primitive(g / mean_divisors::<B>(&counts, bags, &device, dtype))
        }
    }
}

/// The gradient of `per_sample_weights` `[N]` (mode sum): each token's row dotted with its
/// bag's output gradient; zero for padding tokens.
pub(crate) fn bag_per_sample_weights_grad<B: Backend>(
    grad: FloatTensor<B>,
    weight: FloatTensor<B>,
    batch: &BagBatch<B>,
    options: &EmbeddingOptions,
) -> FloatTensor<B> {
    let (indices, bag_of) = (batch.indices.clone(), batch.bag_of.clone());
    let device = B::float_device(&weight);
    let ids = read_indices(int::<B, 1>(indices.clone()));
    let rows = float::<B, 2>(forward::<B>(weight, indices, options));
    let g = float::<B, 2>(grad).select(0, int::<B, 1>(bag_of));
    let n = ids.len();
    let mut out = crate::util::flatten_float((g * rows).sum_dim(1));
    debug_assert_eq!(out.dims(), [n]);
    if let Some(mask) = padding_mask::<B>(&ids, options.padding_idx, &device) {
        out = out.mask_fill(mask, 0.0);
    }
    primitive(out)
}

/// The row-sparse weight gradient of a bag forward: the token gradient, then the lookup's
/// row-sparse backward.
pub(crate) fn bag_grad_sparse<B: super::EmbeddingBackend>(
    grad: FloatTensor<B>,
    batch: &BagBatch<B>,
    max_positions: Option<IntTensor<B>>,
    num_embeddings: usize,
    options: &EmbeddingOptions,
) -> Option<crate::RowSparseGradient<B>> {
    let token_grad = B::embedding_bag_token_grad(grad, batch, max_positions, options);
    B::embedding_grad_sparse(token_grad, batch.indices.clone(), num_embeddings, options)
}
