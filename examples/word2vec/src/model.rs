//! The skip-gram model: two sparse embeddings and the negative-sampling loss.

use burn::module::Module;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, Transaction};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions};

use crate::corpus::SplitMix64;

use crate::data::SkipGramBatch;

/// Skip-gram with negative sampling: a center word's input vector should score high against
/// its context's output vector and low against random words' output vectors.
#[derive(Module, Debug)]
pub struct Word2Vec<B: Backend> {
    /// The word vectors (what the example keeps).
    pub input: Embedding<B>,
    /// The context vectors.
    pub output: Embedding<B>,
}

impl<B: EmbeddingBackend> Word2Vec<B> {
    /// Both tables sparse; the input one uniform in `±0.5 / dim`, the output one zero, as
    /// word2vec does. The input table is drawn on the host from `seed`, so that every backend
    /// starts from the same weights.
    pub fn new(vocab: usize, dim: usize, seed: u64, device: &B::Device) -> Self {
        let mut rng = SplitMix64(seed);
        let half = 0.5 / dim as f64;
        let values: Vec<f32> = (0..vocab * dim)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * half) as f32)
            .collect();
        let options = EmbeddingOptions::new().with_sparse(true);
        let table = |values: Vec<f32>| {
            let weight = Tensor::from_data(TensorData::new(values, [vocab, dim]), device);
            Embedding::from_pretrained(weight, false, options).expect("a [vocab, dim] table")
        };
        Self {
            input: table(values),
            output: table(vec![0.0; vocab * dim]),
        }
    }

    /// The mean negative-sampling loss of a batch, `[1]`.
    pub fn loss(&self, batch: SkipGramBatch<B>) -> Tensor<B, 1> {
        let [n, k] = batch.negatives.dims();
        let u: Tensor<B, 2> = self.input.forward(batch.centers); // [n, d]
        let v: Tensor<B, 2> = self.output.forward(batch.contexts); // [n, d]
        let negatives: Tensor<B, 3> = self.output.forward(batch.negatives); // [n, k, d]
        let positive = (u.clone() * v).sum_dim(1).reshape([n]);
        let negative = (negatives * u.unsqueeze_dim::<3>(1))
            .sum_dim(2)
            .reshape([n, k]);
        let loss =
            log_sigmoid(positive).neg() - log_sigmoid(negative.neg()).sum_dim(1).reshape([n]);
        loss.mean()
    }
}

/// What a step reports: the loss.
#[derive(Debug, Clone)]
pub struct Word2VecOutput<B: Backend> {
    /// Mean loss of the batch, `[1]`.
    pub loss: Tensor<B, 1>,
}

impl<B: Backend> ItemLazy for Word2VecOutput<B> {
    type ItemSync = Word2VecOutput<burn::backend::ndarray::NdArray>;

    fn sync(self) -> Self::ItemSync {
        let [loss] = Transaction::default()
            .register(self.loss)
            .execute()
            .try_into()
            .expect("one tensor");
        Word2VecOutput {
            loss: Tensor::from_data(loss, &Default::default()),
        }
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for Word2VecOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

impl<B: AutodiffBackend + EmbeddingBackend> TrainStep for Word2Vec<B> {
    type Input = SkipGramBatch<B>;
    type Output = Word2VecOutput<B>;

    fn step(&self, batch: SkipGramBatch<B>) -> TrainOutput<Word2VecOutput<B>> {
        let loss = self.loss(batch);
        TrainOutput::new(self, loss.backward(), Word2VecOutput { loss })
    }
}

impl<B: EmbeddingBackend> InferenceStep for Word2Vec<B> {
    type Input = SkipGramBatch<B>;
    type Output = Word2VecOutput<B>;

    fn step(&self, batch: SkipGramBatch<B>) -> Word2VecOutput<B> {
        Word2VecOutput {
            loss: self.loss(batch),
        }
    }
}
