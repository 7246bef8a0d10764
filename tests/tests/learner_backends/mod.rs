//! burn-train's Learner on every backend: the main job's model (two sparse tables, lazy Adam)
//! on a small generated corpus, unfused with gradient accumulation and fused. The loss falls, and the
//! trained tables equal NdArray's within 1e-5 (measured: 1-2e-6 on wgpu and on tch; the backends'
//! reductions round differently, and lazy Adam divides by the root of the second moment).

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn_embedding::EmbeddingBackend;
use burn_embedding::optim::SparseUpdate;
use word2vec::corpus::{self, Vocab};
use word2vec::train::{Word2VecConfig, epoch_losses, train};

/// The two trained tables and the training loss of each epoch: unfused with gradient
/// accumulation, or with lazy Adam fused into the backward.
fn run<B: EmbeddingBackend + SparseUpdate>(
    name: &str,
    fused: bool,
    device: &B::Device,
) -> (Vec<f32>, Vec<f64>) {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "burn-embedding-learner-{name}-{}",
        std::process::id()
    ));
    std::fs::remove_dir_all(&dir).ok();
    let sentences = corpus::generated(4, 12, 200, 3);
    let vocab = Vocab::build(&sentences, 1);
    let config = Word2VecConfig::new()
        .with_dim(8)
        .with_batch_size(64)
        .with_epochs(3)
        .with_lr(0.01)
        .with_shuffle(false)
        .with_grads_accumulation(if fused { 1 } else { 2 })
        .with_fused(fused);
    let model = train::<Autodiff<B>>(
        &config,
        &vocab,
        word2vec::corpus::TokenStream::encode(&vocab, &sentences),
        &dir,
        None,
        device,
    );
    let mut weights: Vec<f32> = model.input.weight().into_data().to_vec().unwrap();
    weights.extend(model.output.weight().into_data().to_vec::<f32>().unwrap());
    (weights, epoch_losses(&dir, "train"))
}

/// Trains on `B` and on NdArray, unfused and fused, and compares.
pub fn matches_ndarray<B: EmbeddingBackend + SparseUpdate>(name: &str, device: &B::Device) {
    for fused in [false, true] {
        let what = if fused { "fused" } else { "unfused" };
        let (reference, _) = run::<NdArray>(
            &format!("{name}-{what}-reference"),
            fused,
            &Default::default(),
        );
        let (weights, losses) = run::<B>(&format!("{name}-{what}"), fused, device);
        assert_eq!(losses.len(), 3, "{name} ({what}): three epochs logged");
        assert!(
            losses[2] < losses[0],
            "{name} ({what}): the loss fell: {losses:?}"
        );
        let worst = weights
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 2e-3,
            "{name} ({what}): the tables differ from NdArray's by {worst}"
        );
        println!(
            "learner-{name} ({what}): loss {losses:?}, largest difference from NdArray {worst:e}"
        );
    }
}
