//! burn's training patterns with a row-sparse gradient, each compared with the same model built
//! with `sparse: false` and stepped by burn's dense optimizer of the same family (SGD: the sparse
//! and dense rules are the same arithmetic) on the same batches. Generic over the backend, so
//! that `tests/conformance.rs` runs them on ndarray, wgpu and tch.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, Tolerance};
use burn_embedding::optim::SparseSgdConfig;
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions};

type Ad<B> = Autodiff<B>;

const LR: f64 = 0.3;
const BATCH_A: [i64; 5] = [1, 4, 4, 9, 0];
const BATCH_B: [i64; 4] = [2, 4, 7, 7];
const BATCH_C: [i64; 3] = [9, 11, 2];

/// A `[12, 3]` table with some rows of norm above 1.
fn table<B: Backend>(device: &B::Device) -> Tensor<B, 2> {
    let data: Vec<f32> = (0..36)
        .map(|i| ((i as f32 + 0.5) * 0.71).sin() * (1.0 + (i % 5) as f32 * 0.4))
        .collect();
    Tensor::from_data(TensorData::new(data, [12, 3]), device)
}

fn layer<B: EmbeddingBackend + SparseUpdate>(
    sparse: bool,
    options: EmbeddingOptions,
    device: &B::Device,
) -> Embedding<Ad<B>> {
    Embedding::from_pretrained(
        Tensor::from_inner(table::<B>(device)),
        false,
        options.with_sparse(sparse),
    )
    .expect("a valid layer")
}

fn indices<B: EmbeddingBackend>(batch: &[i64], device: &B::Device) -> Tensor<Ad<B>, 1, Int> {
    Tensor::from_data(TensorData::new(batch.to_vec(), [batch.len()]), device)
}

/// A loss whose gradient differs per position: `sum(out * c)`.
fn loss<B: EmbeddingBackend + SparseUpdate>(
    emb: &Embedding<Ad<B>>,
    batch: &[i64],
) -> Tensor<Ad<B>, 1> {
    let device = emb.weight.device();
    let out: Tensor<Ad<B>, 2> = emb.forward(indices::<B>(batch, &device));
    let coef: Vec<f32> = (0..batch.len() * 3)
        .map(|i| 0.5 + (i as f32 * 0.37).cos())
        .collect();
    let coef = Tensor::from_data(TensorData::new(coef, [batch.len(), 3]), &device);
    (out * coef).sum()
}

/// Same as [`loss`] after `forward_mut` (PyTorch's in-place renorm with `max_norm`).
fn loss_mut<B: EmbeddingBackend + SparseUpdate>(
    emb: &mut Embedding<Ad<B>>,
    batch: &[i64],
) -> Tensor<Ad<B>, 1> {
    let device = emb.weight.device();
    let _: Tensor<Ad<B>, 2> = emb.forward_mut(indices::<B>(batch, &device));
    loss(emb, batch)
}

fn grads<B: EmbeddingBackend + SparseUpdate>(
    emb: &Embedding<Ad<B>>,
    batch: &[i64],
) -> GradientsParams {
    GradientsParams::from_grads(loss(emb, batch).backward(), emb)
}

/// Steps `emb` with SGD: the sparse-aware one when the layer is sparse, burn's otherwise.
fn sgd_step<B: EmbeddingBackend + SparseUpdate>(
    emb: Embedding<Ad<B>>,
    grads: GradientsParams,
) -> Embedding<Ad<B>> {
    if emb.options().sparse {
        SparseSgdConfig::new().init().step(LR, emb, grads)
    } else {
        SgdConfig::new().init().step(LR, emb, grads)
    }
}

fn assert_same<B: EmbeddingBackend + SparseUpdate>(
    what: &str,
    sparse: &Embedding<Ad<B>>,
    dense: &Embedding<Ad<B>>,
) {
    let (s, d) = (sparse.valid().weight.val(), dense.valid().weight.val());
    let untrained = table::<B>(&s.device());
    assert!(
        !d.clone()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .eq(&untrained.into_data().to_vec::<f32>().unwrap()),
        "{what}: the dense reference trained"
    );
    s.into_data()
        .assert_approx_eq::<f32>(&d.into_data(), Tolerance::absolute(1e-5));
}

/// 1. A backward whose `Gradients` are dropped without a step leaves no trace: a later step
///    applies only the gradients it is given.
pub fn skipped_step<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    let mut result = Vec::new();
    for sparse in [true, false] {
        let emb = layer::<B>(sparse, EmbeddingOptions::new(), device);
        // Dropped as a NaN-loss or AMP skip drops them, and as GradientsParams too.
        drop(loss(&emb, &BATCH_A).backward());
        drop(grads(&emb, &BATCH_C));
        let g = grads(&emb, &BATCH_B);
        result.push(sgd_step(emb, g));
    }
    assert_same("skipped step", &result[0], &result[1]);
}

/// 2. burn's `GradientsAccumulator` over three batches, then one step.
pub fn accumulation<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    let mut result = Vec::new();
    for sparse in [true, false] {
        let emb = layer::<B>(
            sparse,
            EmbeddingOptions::new().with_padding_idx(Some(0)),
            device,
        );
        let mut accumulator = GradientsAccumulator::new();
        for batch in [&BATCH_A[..], &BATCH_B, &BATCH_C] {
            accumulator.accumulate(&emb, grads(&emb, batch));
        }
        result.push(sgd_step(emb, accumulator.grads()));
    }
    assert_same("accumulation", &result[0], &result[1]);
}

/// 3. `forward_mut` with `max_norm` (the weight renormalised in place, a new tensor each
///    batch) over two accumulated batches, then one step: no batch's rows are lost.
pub fn forward_mut_with_accumulation<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    let options = EmbeddingOptions::new().with_max_norm(Some(1.0));
    let mut result = Vec::new();
    for sparse in [true, false] {
        let mut emb = layer::<B>(sparse, options, device);
        let mut accumulator = GradientsAccumulator::new();
        for batch in [&BATCH_A[..], &BATCH_B] {
            let g = GradientsParams::from_grads(loss_mut(&mut emb, batch).backward(), &emb);
            accumulator.accumulate(&emb, g);
        }
        result.push(sgd_step(emb, accumulator.grads()));
    }
    assert_same("forward_mut + accumulation", &result[0], &result[1]);
}
