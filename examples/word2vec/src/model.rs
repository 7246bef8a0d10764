//! The skip-gram model: two sparse embeddings (or two with lazy Adam fused into their backward)
//! and the negative-sampling loss, whose gradient is computed directly.

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, Transaction};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use burn_embedding::optim::{SparseRule, SparseUpdate};
use burn_embedding::{
    Embedding, EmbeddingBackend, EmbeddingOptions, FusedEmbedding, IndexRank, LookupRank,
    SeededBackward, TrackedOutput, backward_with_tracked,
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

    /// The mean negative-sampling loss of a batch, `[1]`: a value, computed on the host and
    /// not tracked (training goes through [`TrainStep::step`], whose gradients are in closed
    /// form).
    pub fn loss(&self, batch: SkipGramBatch<B>) -> Tensor<B, 1> {
        let (u, t) = self.vectors(batch);
        negative_sampling(u, t, false).0
    }
}

/// The mean negative-sampling loss of center vectors `u` `[n, 1, d]` against target vectors `t`
/// `[n, 1 + K, d]` (the context's first, then the negatives'), `[1]`, and with `grads` its
/// gradients with respect to `u` and `t`.
///
/// With `s[i, j] = u[i] . t[i, j]` and `sign` 1 for the context, -1 for the negatives:
/// `L = -sum(log σ(sign * s)) / n`, `g[i, j] = dL/ds = -sign * σ(-sign * s) / n`,
/// `dL/du[i] = sum_j g[i, j] t[i, j]` and `dL/dt[i, j] = g[i, j] u[i]`. This is word2vec's own
/// loop, one pass over the rows on the host: as burn tensor ops it took five broadcast passes
/// and two copies, a third of the training time on NdArray.
#[allow(clippy::type_complexity)]
fn negative_sampling<B: Backend>(
    u: Tensor<B, 3>,
    t: Tensor<B, 3>,
    grads: bool,
) -> (Tensor<B, 1>, Option<(Tensor<B, 3>, Tensor<B, 3>)>) {
    let device = t.device();
    let [n, targets, d] = t.dims();
    let host = |x: Tensor<B, 3>| {
        x.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32")
    };
    let (u, t) = (host(u), host(t));
    let scale = 1.0 / n as f32;
    let mut loss = 0.0f64;
    let mut grad_u = if grads {
        vec![0.0f32; n * d]
    } else {
        Vec::new()
    };
    // Every value of grad_t is written once, in order: no zeroing pass first.
    let mut grad_t = Vec::with_capacity(if grads { n * targets * d } else { 0 });
    for i in 0..n {
        let ui = &u[i * d..][..d];
        for j in 0..targets {
            let row = (i * targets + j) * d;
            let tj = &t[row..][..d];
            let score = dot(ui, tj);
            let signed = if j == 0 { score } else { -score };
            // With z = exp(-|x|): -log σ(x) = max(-x, 0) + ln(1 + z), and σ(-x) is z / (1 + z)
            // for x >= 0, 1 / (1 + z) below: one exp, no overflow.
            let z = (-signed.abs()).exp();
            loss += f64::from((-signed).max(0.0) + z.ln_1p());
            if grads {
                let sigmoid_neg = if signed >= 0.0 { z } else { 1.0 } / (1.0 + z);
                let g = if j == 0 { -sigmoid_neg } else { sigmoid_neg } * scale;
                let gu = &mut grad_u[i * d..][..d];
                gu.iter_mut().zip(tj).for_each(|(o, &x)| *o += g * x);
                grad_t.extend(ui.iter().map(|&x| g * x));
            }
        }
    }
    let loss = Tensor::from_data(TensorData::new(vec![loss as f32 / n as f32], [1]), &device);
    let grads = grads.then(|| {
        (
            Tensor::from_data(TensorData::new(grad_u, [n, 1, d]), &device),
            Tensor::from_data(TensorData::new(grad_t, [n, targets, d]), &device),
        )
    });
    (loss, grads)
}

/// `a . b`, summed in eight lanes so that the loop vectorises (a single running sum cannot be
/// reordered by the compiler).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
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

    /// The loss and its gradients are computed on the lookups' values in closed form
    /// (`negative_sampling`) and handed to the lookups by one seeded backward: the autodiff
    /// graph is the two lookups.
    fn step(&self, batch: SkipGramBatch<B>) -> TrainOutput<Word2VecOutput<B>> {
        let (u, t) = self.vectors(batch);
        // Taken apart, the values are the only handles on their buffers: read without a copy.
        let (u, u_value) = TrackedOutput::split(u);
        let (t, t_value) = TrackedOutput::split(t);
        let (loss, grads) = negative_sampling(u_value, t_value, true);
        let (grad_u, grad_t) = grads.expect("gradients asked for");
        let grads = backward_with_tracked([(u, grad_u), (t, grad_t)]);
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

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;
    use burn::tensor::activation::log_sigmoid;

    use super::*;

    type A = Autodiff<NdArray>;

    /// The closed-form loss and gradients equal burn's autodiff of the loss written as tensor
    /// ops, scores large enough to saturate the sigmoid included.
    #[test]
    fn negative_sampling_matches_autodiff() {
        let device = Default::default();
        let (n, targets, d) = (7, 4, 19);
        let u = Tensor::<A, 3>::random([n, 1, d], Distribution::Normal(0.0, 3.0), &device)
            .require_grad();
        let t = Tensor::<A, 3>::random([n, targets, d], Distribution::Normal(0.0, 3.0), &device)
            .require_grad();
        let signs: Vec<f32> = (0..targets)
            .map(|j| if j == 0 { 1.0 } else { -1.0 })
            .collect();
        let signs = Tensor::<A, 2>::from_data(TensorData::new(signs, [1, targets]), &device);
        let scores = (t.clone() * u.clone()).sum_dim(2).reshape([n, targets]);
        let loss = log_sigmoid(scores * signs).sum().neg().div_scalar(n as f32);
        let grads = loss.backward();

        let (ours, ours_grads) = negative_sampling(u.clone().inner(), t.clone().inner(), true);
        let (grad_u, grad_t) = ours_grads.unwrap();
        // f32 sums in another order: within 1e-5 of the value's size (the loss is O(100)).
        let tolerance = burn::tensor::Tolerance::<f32>::rel_abs(1e-5, 1e-5);
        ours.into_data()
            .assert_approx_eq::<f32>(&loss.inner().into_data(), tolerance);
        grad_u
            .into_data()
            .assert_approx_eq::<f32>(&u.grad(&grads).unwrap().into_data(), tolerance);
        grad_t
            .into_data()
            .assert_approx_eq::<f32>(&t.grad(&grads).unwrap().into_data(), tolerance);
        let (loss_only, none) = negative_sampling(u.inner(), t.inner(), false);
        assert!(none.is_none());
        assert!(loss_only.into_scalar().is_finite());
    }
}
