//! Training with burn-train's Learner, and what the example reports afterwards.

use std::path::Path;
use std::sync::Arc;

use burn::config::Config;
use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::optim::AdamConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn::train::metric::LossMetric;
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use burn_embedding::optim::LazyAdamConfig;
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{EmbeddingBackend, SeededBackward, SparseGradients};

use crate::corpus::{TokenStream, Vocab, topic_of};
use crate::data::{Centers, SkipGramBatcher, SkipGrams};
use crate::model::Word2Vec;
use crate::progress::EpochLines;

/// Hyper-parameters of a run (saved beside the model).
#[derive(Config, Debug)]
pub struct Word2VecConfig {
    /// Vector size.
    #[config(default = 64)]
    pub dim: usize,
    /// Largest context window on each side.
    #[config(default = 4)]
    pub window: usize,
    /// Negative samples per pair.
    #[config(default = 5)]
    pub negatives: usize,
    /// Words seen fewer times are dropped.
    #[config(default = 2)]
    pub min_count: u64,
    /// Subsampling threshold of frequent words.
    #[config(default = 1e-3)]
    pub sample: f64,
    /// Pairs per step, on average (centers are batched, as many as give this many pairs).
    #[config(default = 1024)]
    pub batch_size: usize,
    /// Passes over the pairs.
    #[config(default = 5)]
    pub epochs: usize,
    /// Lazy Adam's learning rate.
    #[config(default = 3e-3)]
    pub lr: f64,
    /// Batches whose gradients add up before one optimizer step (more than one needs
    /// `fused: false`).
    #[config(default = 1)]
    pub grads_accumulation: usize,
    /// Lazy Adam fused into the tables' backward (no optimizer step for them), instead of the
    /// Learner's sparse-aware lazy Adam.
    #[config(default = true)]
    pub fused: bool,
    /// Training threads: batches run on this many forks of the model at once (the Learner's
    /// multi-device strategy on the one device). With fused tables the forks share the tables,
    /// and each batch's update lands as soon as its backward ends (asynchronous, as word2vec's
    /// and gensim's worker threads); unfused, the forks' rows are summed into one step.
    #[config(default = 1)]
    pub workers: usize,
    /// Seed of the pairs, negatives and shuffling.
    #[config(default = 42)]
    pub seed: u64,
    /// Shuffle the pairs each epoch.
    #[config(default = true)]
    pub shuffle: bool,
}

/// Trains on `stream` (ids of `vocab`) with the Learner, checkpoints in `dir`, and returns the
/// trained model. One center in 50 is held out for the validation loss.
pub fn train<B>(
    config: &Word2VecConfig,
    vocab: &Vocab,
    stream: TokenStream,
    dir: &Path,
    resume_from_epoch: Option<usize>,
    device: &B::Device,
) -> Word2Vec<B::InnerBackend>
where
    B: SparseGradients + SeededBackward + SparseUpdate,
    B::InnerBackend: EmbeddingBackend,
{
    const HELD_OUT: usize = 50;
    B::seed(device, config.seed);
    let tokens = stream.len();
    let pairs = Arc::new(SkipGrams::new(
        stream,
        vocab,
        config.window,
        config.sample,
        config.seed,
    ));
    println!(
        "{} words, {tokens} tokens, one center in {HELD_OUT} held out",
        vocab.len()
    );
    // Batches of centers that give `batch_size` pairs on average.
    let centers = ((config.batch_size as f64 / pairs.mean_pairs(100_000)).round() as usize).max(1);
    let batcher = SkipGramBatcher::new(pairs, vocab, config.negatives);
    // One worker makes the next batches while the main thread trains (the batches are seeded
    // by their centers, so the run does not depend on the threads).
    let mut train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(centers)
        .num_workers(1);
    if config.shuffle {
        train_loader = train_loader.shuffle(config.seed);
    }
    let train_loader = train_loader.build(Centers::train(tokens, HELD_OUT));
    let valid_loader = DataLoaderBuilder::new(batcher)
        .batch_size(centers)
        .build(Centers::valid(tokens, HELD_OUT));

    assert!(
        !config.fused || config.grads_accumulation == 1,
        "gradient accumulation ({} batches) needs unfused tables: a fused table applies each \
         batch's update in its backward",
        config.grads_accumulation
    );
    let model = Word2Vec::<B>::new(vocab.len(), config.dim, config.seed, device);
    let lazy_adam = LazyAdamConfig::new();
    // The Learner's type depends on its optimizer's, hence a macro rather than a function.
    macro_rules! launch {
        ($model:expr, $optim:expr) => {{
            let mut training = SupervisedTraining::new(dir, train_loader, valid_loader)
                .metrics((LossMetric::new(),))
                .renderer(EpochLines::default())
                // Full precision, so that resuming from a checkpoint continues exactly.
                .with_file_checkpointer(NamedMpkFileRecorder::<FullPrecisionSettings>::new())
                .num_epochs(config.epochs)
                .grads_accumulation(config.grads_accumulation)
                .summary();
            if config.workers > 1 {
                // The forks run on the one device, each on its own thread.
                let devices = vec![device.clone(); config.workers];
                training = training.with_training_strategy(
                    ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice)
                        .into(),
                );
            }
            if let Some(epoch) = resume_from_epoch {
                training = training.checkpoint(epoch);
            }
            training
                .launch(Learner::new($model, $optim, config.lr))
                .model
        }};
    }
    if config.fused {
        // The tables update themselves; the Learner's optimizer sees only their probes, whose
        // gradients the workers' forks sum (burn's Adam steps them, and their value is never
        // read). Gradient accumulation was refused above.
        launch!(
            model.fused(lazy_adam.rule(), config.lr),
            AdamConfig::new().init()
        )
    } else {
        launch!(model, lazy_adam.init())
    }
}

/// The mean loss of each epoch of `split` (`"train"` or `"valid"`), read from the Learner's
/// metric logs in `dir`.
pub fn epoch_losses(dir: &Path, split: &str) -> Vec<f64> {
    (1..)
        .map(|epoch| {
            dir.join(split)
                .join(format!("epoch-{epoch}"))
                .join("Loss.log")
        })
        .map_while(|path| std::fs::read_to_string(path).ok())
        .map(|log| {
            let (sum, n) = log
                .lines()
                .filter_map(|l| {
                    let (value, count) = l.split_once(',')?;
                    Some((value.parse::<f64>().ok()?, count.parse::<f64>().ok()?))
                })
                .fold((0.0, 0.0), |(s, n), (v, c)| (s + v * c, n + c));
            sum / n.max(1.0)
        })
        .collect()
}

/// Saves the model record and the config in `dir`.
pub fn save<B: Backend>(model: &Word2Vec<B>, config: &Word2VecConfig, dir: &Path) {
    std::fs::create_dir_all(dir).expect("output directory");
    config
        .save(dir.join("config.json"))
        .expect("save the config");
    model
        .clone()
        .save_file(
            dir.join("model"),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
        )
        .expect("save the model");
}

/// The unit-length input vectors, row-major `[V, D]`.
pub fn normalized_vectors<B: EmbeddingBackend>(model: &Word2Vec<B>) -> (Vec<f32>, usize) {
    let weight = model.input.weight();
    let [_, d] = weight.dims();
    let mut w = weight.into_data().to_vec::<f32>().expect("f32 weights");
    for row in w.chunks_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    (w, d)
}

/// The `k` nearest words of word `id` by cosine similarity.
pub fn nearest(vectors: &[f32], d: usize, id: usize, k: usize) -> Vec<(usize, f32)> {
    let query = &vectors[id * d..][..d];
    let mut scored: Vec<(usize, f32)> = vectors
        .chunks(d)
        .enumerate()
        .filter(|&(j, _)| j != id)
        .map(|(j, row)| (j, row.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored
}

/// On a [generated](crate::corpus::generated) corpus: the share of each word's `k` nearest
/// neighbours that belong to its topic (chance is about 1 / topics).
pub fn topic_agreement(vocab: &Vocab, vectors: &[f32], d: usize, k: usize) -> f64 {
    let mut same = 0usize;
    let mut total = 0usize;
    for id in 0..vocab.len() {
        let topic = topic_of(&vocab.words[id]);
        for (j, _) in nearest(vectors, d, id, k) {
            same += (topic_of(&vocab.words[j]) == topic) as usize;
            total += 1;
        }
    }
    same as f64 / total.max(1) as f64
}
