//! The skip-gram model: two sparse embeddings (or two with lazy Adam fused into their backward)
//! and the negative-sampling loss, whose gradient is computed directly.

use burn::module::Module;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, Transaction};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use burn_embedding::optim::{SparseRule, SparseUpdate};
use burn_embedding::{
    Embedding, EmbeddingBackend, EmbeddingOptions, FusedEmbedding, IndexRank, LookupRank,
    SeededBackward, backward_with_all,
};

use crate::corpus::SplitMix64;

use crate::data::SkipGramBatch;

/// Skip-gram with negative sampling: a center word's input vector should score high against
/// its context's output vector and low against random words' output vectors.
#[derive(Module, Debug)]
pub struct Word2Vec<B: Backend> {
    /// The word vectors (what the example keeps).
    pub input: Table<B>,
    /// The context vectors.
    pub output: Table<B>,
}

/// A table of the model: sparse (stepped by the Learner's sparse-aware optimizer, which can
/// accumulate gradients), or with the optimizer fused into its backward.
#[derive(Module, Debug)]
pub enum Table<B: Backend> {
    /// Row-sparse gradients, stepped by the Learner's optimizer.
    Sparse(Embedding<B>),
    /// Updated by its own backward.
    Fused(FusedEmbedding<B>),
}

impl<B: EmbeddingBackend + SparseUpdate> Table<B> {
    /// The lookup, `[..] -> [.., D]`.
    pub fn forward<const DI: usize, const DO: usize>(
        &self,
        ids: Tensor<B, DI, Int>,
    ) -> Tensor<B, DO>
    where
        IndexRank<DI>: LookupRank<DO>,
    {
        match self {
            Table::Sparse(table) => table.forward(ids),
            Table::Fused(table) => table.forward(ids),
        }
    }
}

impl<B: EmbeddingBackend> Table<B> {
    /// The table as an [`Embedding`] (a fused one's values now).
    pub fn embedding(&self) -> Embedding<B> {
        match self {
            Table::Sparse(table) => table.clone(),
            Table::Fused(table) => table.to_embedding(),
        }
    }

    /// The weight, `[V, D]`.
    pub fn weight(&self) -> Tensor<B, 2> {
        match self {
            Table::Sparse(table) => table.weight.val(),
            Table::Fused(table) => table.weight(),
        }
    }
}

impl<B: EmbeddingBackend + SparseUpdate> Word2Vec<B> {
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
            Table::Sparse(
                Embedding::from_pretrained(weight, false, options).expect("a [vocab, dim] table"),
            )
        };
        Self {
            input: table(values),
            output: table(vec![0.0; vocab * dim]),
        }
    }

    /// The model with `rule` at `lr` fused into the backward of both tables.
    pub fn fused(self, rule: SparseRule, lr: f64) -> Self {
        let fuse = |table: Table<B>| match table {
            Table::Sparse(table) => Table::Fused(table.fused(rule, lr)),
            fused => fused,
        };
        Self {
            input: fuse(self.input),
            output: fuse(self.output),
        }
    }

    /// The center vectors `[n, 1, d]` and the target vectors `[n, 1 + K, d]` of a batch (the
    /// context's output vector, then the negatives').
    fn vectors(&self, batch: SkipGramBatch<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let u = self.input.forward(batch.centers.unsqueeze_dim::<2>(1));
        let t = self.output.forward(batch.targets);
        (u, t)
    }

    /// The mean negative-sampling loss of a batch, `[1]`.
    pub fn loss(&self, batch: SkipGramBatch<B>) -> Tensor<B, 1> {
        let (u, t) = self.vectors(batch);
        loss_and_grad(scores(&u, &t)).0
    }
}

/// Each center's vector against each of its targets', `[n, 1 + K]`.
fn scores<B: Backend>(u: &Tensor<B, 3>, t: &Tensor<B, 3>) -> Tensor<B, 2> {
    let [n, targets, _] = t.dims();
    (t.clone() * u.clone()).sum_dim(2).reshape([n, targets])
}

/// `[1, targets]`: 1 for the context column, -1 for the negatives.
fn signs<B: Backend>(targets: usize, device: &B::Device) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..targets)
        .map(|j| if j == 0 { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, targets]), device)
}

/// The loss of `scores` `[n, 1 + K]` and its gradient with respect to them, computed directly:
/// `L = -sum(log σ(sign * s)) / n`, `dL/ds = -sign * σ(-sign * s) / n`. The backward then starts
/// at the scores (a seeded backward), so no autodiff graph is built for the loss.
fn loss_and_grad<B: Backend>(scores: Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 2>) {
    let [n, targets] = scores.dims();
    let signs = signs::<B>(targets, &scores.device());
    let signed = scores * signs.clone();
    let loss = log_sigmoid(signed.clone()).neg().sum().div_scalar(n as f32);
    let grad = sigmoid(signed.neg()) * signs.neg().div_scalar(n as f32);
    (loss, grad)
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

impl<B> TrainStep for Word2Vec<B>
where
    B: AutodiffBackend + SeededBackward + EmbeddingBackend + SparseUpdate,
{
    type Input = SkipGramBatch<B>;
    type Output = Word2VecOutput<B>;

    /// The loss and its gradients are computed on the inner backend in closed form: with `g`
    /// the gradient of the scores, the center vectors get `sum_j g[i, j] * t[i, j]` and the
    /// targets `g[i, j] * u[i]`, handed to the lookups by one seeded backward. The autodiff graph
    /// is the two lookups.
    fn step(&self, batch: SkipGramBatch<B>) -> TrainOutput<Word2VecOutput<B>> {
        let (u, t) = self.vectors(batch);
        let (u_in, t_in) = (u.clone().inner(), t.clone().inner());
        let (loss, grad) = loss_and_grad(scores(&u_in, &t_in));
        let grad = grad.unsqueeze_dim::<3>(2); // [n, 1 + K, 1]
        let grad_u = (t_in * grad.clone()).sum_dim(1); // [n, 1, d]
        let grad_t = u_in * grad; // [n, 1 + K, d]
        let grads = backward_with_all([(u, grad_u), (t, grad_t)]);
        TrainOutput::new(
            self,
            grads,
            Word2VecOutput {
                loss: Tensor::from_inner(loss),
            },
        )
    }
}

impl<B: EmbeddingBackend + SparseUpdate> InferenceStep for Word2Vec<B> {
    type Input = SkipGramBatch<B>;
    type Output = Word2VecOutput<B>;

    fn step(&self, batch: SkipGramBatch<B>) -> Word2VecOutput<B> {
        Word2VecOutput {
            loss: self.loss(batch),
        }
    }
}
