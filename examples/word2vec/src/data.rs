//! Skip-gram pairs, made a batch at a time from the token stream, and the batcher that adds
//! negative samples.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::corpus::{SplitMix64, TokenStream, Vocab};

/// The skip-gram pairs of a [`TokenStream`], made a batch at a time: the dataset holds center
/// positions only, and the batcher expands each into its pairs, so that memory is the token
/// stream (4 bytes a token) and a batch, never the corpus's pairs.
///
/// As word2vec does: frequent words are dropped with probability `1 - keep(w)` (`sample`, e.g.
/// 1e-3), and each kept center pairs with the kept words within a random window of 1..=`window`
/// of it, in its sentence. Both draws are hashes of the position and the seed, so every epoch
/// (and every resumed run) sees the same pairs.
#[derive(Debug)]
pub struct SkipGrams {
    stream: TokenStream,
    keep: Vec<f64>,
    window: usize,
    seed: u64,
}

impl SkipGrams {
    /// The pairs of `stream` with `vocab`'s counts.
    pub fn new(stream: TokenStream, vocab: &Vocab, window: usize, sample: f64, seed: u64) -> Self {
        let total: u64 = vocab.counts.iter().sum();
        let keep = vocab
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
        Self {
            stream,
            keep,
            window: window.max(1),
            seed,
        }
    }

    /// The mean number of pairs a center gives, over the first `sample` positions (at least one
    /// pair per center).
    pub fn mean_pairs(&self, sample: usize) -> f64 {
        let n = sample.min(self.len()).max(1);
        let mut out = Vec::new();
        for position in 0..n.min(self.len()) {
            self.pairs_of(position, false, &mut out);
        }
        (out.len() as f64 / n as f64).max(1.0)
    }

    /// Number of tokens (candidate centers).
    pub fn len(&self) -> usize {
        self.stream.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.stream.is_empty()
    }

    /// A hash of the position, for the draws.
    fn draw(&self, position: usize, salt: u64) -> u64 {
        SplitMix64(self.seed ^ (position as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ salt)
            .next_u64()
    }

    fn kept(&self, position: usize) -> bool {
        let p = self.keep[self.stream.tokens[position] as usize];
        let unit = (self.draw(position, 1) >> 11) as f64 / (1u64 << 53) as f64;
        p >= 1.0 || unit < p
    }

    /// The (center, context) pairs of the center at `position` (none when it is dropped,
    /// unless `force`).
    pub fn pairs_of(&self, position: usize, force: bool, out: &mut Vec<(u32, u32)>) {
        if !force && !self.kept(position) {
            return;
        }
        let center = self.stream.tokens[position];
        let w = 1 + (self.draw(position, 2) % self.window as u64) as usize;
        let (start, end) = self.stream.sentence_of(position);
        // The `w` nearest kept words on each side.
        let mut found = 0;
        for q in (start..position).rev() {
            if found == w {
                break;
            }
            if self.kept(q) {
                out.push((center, self.stream.tokens[q]));
                found += 1;
            }
        }
        found = 0;
        for q in position + 1..end {
            if found == w {
                break;
            }
            if self.kept(q) {
                out.push((center, self.stream.tokens[q]));
                found += 1;
            }
        }
    }
}

/// Center positions of a [`SkipGrams`]: every one except each `held_out`-th (`train`), or only
/// those (`valid`), so that the validation loss is measured on centers never trained on.
#[derive(Debug, Clone)]
pub struct Centers {
    count: usize,
    held_out: usize,
    valid: bool,
}

impl Centers {
    /// The training centers of `tokens` tokens, holding out one in `held_out`.
    pub fn train(tokens: usize, held_out: usize) -> Self {
        Self {
            count: tokens - tokens.div_ceil(held_out),
            held_out,
            valid: false,
        }
    }

    /// The held-out centers.
    pub fn valid(tokens: usize, held_out: usize) -> Self {
        Self {
            count: tokens.div_ceil(held_out),
            held_out,
            valid: true,
        }
    }
}

impl Dataset<u32> for Centers {
    fn get(&self, index: usize) -> Option<u32> {
        if index >= self.count {
            return None;
        }
        let position = if self.valid {
            index * self.held_out
        } else {
            // Skip positions 0, held_out, 2 * held_out, ...
            let per = self.held_out - 1;
            (index / per) * self.held_out + index % per + 1
        };
        Some(position as u32)
    }

    fn len(&self) -> usize {
        self.count
    }
}

/// A batch: centers `[B]` and targets `[B, 1 + K]`, each center's context word then `K`
/// negatives.
#[derive(Debug, Clone)]
pub struct SkipGramBatch<B: Backend> {
    /// Center words.
    pub centers: Tensor<B, 1, Int>,
    /// The context word (column 0), then words drawn from the unigram distribution to the 3/4
    /// power.
    pub targets: Tensor<B, 2, Int>,
}

/// Expands center positions into their pairs and draws `negatives` negative samples per pair.
#[derive(Debug, Clone)]
pub struct SkipGramBatcher {
    pairs: Arc<SkipGrams>,
    negatives: usize,
    table: Arc<Vec<u32>>,
}

impl SkipGramBatcher {
    /// A batcher over `pairs`, drawing negatives from `vocab`'s unigram distribution raised to
    /// 0.75.
    pub fn new(pairs: Arc<SkipGrams>, vocab: &Vocab, negatives: usize) -> Self {
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
            pairs,
            negatives,
            table: Arc::new(table),
        }
    }
}

impl<B: Backend> Batcher<B, u32, SkipGramBatch<B>> for SkipGramBatcher {
    fn batch(&self, positions: Vec<u32>, device: &B::Device) -> SkipGramBatch<B> {
        let mut items = Vec::with_capacity(positions.len() * (2 * self.pairs.window));
        for &p in &positions {
            self.pairs.pairs_of(p as usize, false, &mut items);
        }
        // A batch whose every center was dropped still trains on something: its first center,
        // or (a one-word sentence) the word with itself.
        if items.is_empty()
            && let Some(&p) = positions.first()
        {
            self.pairs.pairs_of(p as usize, true, &mut items);
            if items.is_empty() {
                let word = self.pairs.stream.tokens[p as usize];
                items.push((word, word));
            }
        }
        // Seeded by the batch itself, so that a run is reproducible whatever the thread.
        let seed = positions
            .iter()
            .fold(0xC0FFEEu64, |h, &p| h.rotate_left(7) ^ u64::from(p));
        let mut rng = SplitMix64(seed);
        let n = items.len();
        let centers: Vec<i64> = items.iter().map(|p| p.0 as i64).collect();
        let k = self.negatives;
        let mut targets = Vec::with_capacity(n * (1 + k));
        for &(_, context) in &items {
            targets.push(context as i64);
            targets.extend(
                (0..k).map(|_| self.table[rng.below(self.table.len() as u64) as usize] as i64),
            );
        }
        SkipGramBatch {
            centers: Tensor::from_data(TensorData::new(centers, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n, 1 + k]), device),
        }
    }
}
