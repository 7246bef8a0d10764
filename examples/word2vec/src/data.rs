//! Skip-gram pairs and the batcher that adds negative samples.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::corpus::{SplitMix64, Vocab};

/// One (center, context) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipGramPair {
    /// The center word.
    pub center: u32,
    /// A word seen near it.
    pub context: u32,
}

/// The pairs of a corpus: every word within a random window (1..=`window`) of each center,
/// after dropping frequent words with word2vec's subsampling (`sample`, e.g. 1e-3).
pub fn pairs(
    sentences: &[Vec<usize>],
    vocab: &Vocab,
    window: usize,
    sample: f64,
    seed: u64,
) -> Vec<SkipGramPair> {
    let mut rng = SplitMix64(seed);
    let total: u64 = vocab.counts.iter().sum();
    let keep: Vec<f64> = vocab
        .counts
        .iter()
        .map(|&c| {
            let f = c as f64 / total as f64;
            if sample > 0.0 {
                ((f / sample).sqrt() + 1.0) * sample / f
            } else {
                1.0
            }
        })
        .collect();
    let mut out = Vec::new();
    for sentence in sentences {
        let kept: Vec<usize> = sentence
            .iter()
            .copied()
            .filter(|&w| rng.unit() < keep[w])
            .collect();
        for (i, &center) in kept.iter().enumerate() {
            let w = 1 + rng.below(window as u64) as usize;
            let start = i.saturating_sub(w);
            let window = &kept[start..(i + w + 1).min(kept.len())];
            for (j, &context) in window.iter().enumerate() {
                if start + j != i {
                    out.push(SkipGramPair {
                        center: center as u32,
                        context: context as u32,
                    });
                }
            }
        }
    }
    out
}

/// A batch: centers `[B]`, contexts `[B]` and negatives `[B, K]`.
#[derive(Debug, Clone)]
pub struct SkipGramBatch<B: Backend> {
    /// Center words.
    pub centers: Tensor<B, 1, Int>,
    /// Context words.
    pub contexts: Tensor<B, 1, Int>,
    /// Words drawn from the unigram distribution to the 3/4 power.
    pub negatives: Tensor<B, 2, Int>,
}

/// Batches pairs and draws `negatives` negative samples per pair.
#[derive(Debug, Clone)]
pub struct SkipGramBatcher {
    negatives: usize,
    table: Arc<Vec<u32>>,
}

impl SkipGramBatcher {
    /// A batcher drawing from `vocab`'s unigram distribution raised to 0.75.
    pub fn new(vocab: &Vocab, negatives: usize) -> Self {
        const TABLE: usize = 1 << 20;
        let weights: Vec<f64> = vocab
            .counts
            .iter()
            .map(|&c| (c as f64).powf(0.75))
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut table = Vec::with_capacity(TABLE);
        let mut acc = 0.0;
        for (id, w) in weights.iter().enumerate() {
            acc += w / sum;
            while (table.len() as f64) < acc * TABLE as f64 && table.len() < TABLE {
                table.push(id as u32);
            }
        }
        while table.len() < TABLE {
            table.push((vocab.len() - 1) as u32);
        }
        Self {
            negatives,
            table: Arc::new(table),
        }
    }
}

impl<B: Backend> Batcher<B, SkipGramPair, SkipGramBatch<B>> for SkipGramBatcher {
    fn batch(&self, items: Vec<SkipGramPair>, device: &B::Device) -> SkipGramBatch<B> {
        // Seeded by the batch itself, so that a run is reproducible whatever the thread.
        let seed = items.iter().fold(0xC0FFEEu64, |h, p| {
            h.rotate_left(7) ^ ((p.center as u64) << 32 | p.context as u64)
        });
        let mut rng = SplitMix64(seed);
        let n = items.len();
        let centers: Vec<i64> = items.iter().map(|p| p.center as i64).collect();
        let contexts: Vec<i64> = items.iter().map(|p| p.context as i64).collect();
        let negatives: Vec<i64> = (0..n * self.negatives)
            .map(|_| self.table[rng.below(self.table.len() as u64) as usize] as i64)
            .collect();
        SkipGramBatch {
            centers: Tensor::from_data(TensorData::new(centers, [n]), device),
            contexts: Tensor::from_data(TensorData::new(contexts, [n]), device),
            negatives: Tensor::from_data(TensorData::new(negatives, [n, self.negatives]), device),
        }
    }
}
