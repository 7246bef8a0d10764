//! burn-train's Learner with multi-device execution: a sparse model trains to the weights of the
//! same model built dense (rows from every device summed as dense gradients are), with the
//! optimizer on the main device and sharded, with and without gradient accumulation. NdArray
//! has one device, so the two "devices" are the CPU twice: two workers, each stepping its own
//! fork of the model, exactly as with two GPUs.

use std::path::PathBuf;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::SgdConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::metric::LossMetric;
use burn::train::{
    ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim, RegressionOutput,
    SupervisedTraining, TrainOutput, TrainStep,
};
use burn_embedding::optim::SparseSgdConfig;
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions};

use super::{Ad, table, values};

/// Two embeddings and a linear head, regressing a number from three ids.
#[derive(Module, Debug)]
pub struct Regressor<B: Backend> {
    emb: Embedding<B>,
    head: Linear<B>,
}

impl<B: EmbeddingBackend> Regressor<B> {
    fn forward(&self, batch: IdsBatch<B>) -> RegressionOutput<B> {
        let [n, k] = batch.ids.dims();
        let x: Tensor<B, 3> = self.emb.forward(batch.ids);
        let output = self
            .head
            .forward(x.sum_dim(1).reshape([n, 4]).div_scalar(k as f32));
        let loss = (output.clone() - batch.targets.clone()).square().mean();
        RegressionOutput {
            loss,
            output,
            targets: batch.targets,
        }
    }
}

impl<B: AutodiffBackend + EmbeddingBackend> TrainStep for Regressor<B> {
    type Input = IdsBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: IdsBatch<B>) -> TrainOutput<RegressionOutput<B>> {
        let item = self.forward(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: EmbeddingBackend> InferenceStep for Regressor<B> {
    type Input = IdsBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: IdsBatch<B>) -> RegressionOutput<B> {
        self.forward(batch)
    }
}

#[derive(Debug, Clone)]
pub struct IdsBatch<B: Backend> {
    ids: Tensor<B, 2, Int>,
    targets: Tensor<B, 2>,
}

#[derive(Clone, Default)]
struct IdsBatcher;

type Item = ([i64; 3], f32);

impl<B: Backend> Batcher<B, Item, IdsBatch<B>> for IdsBatcher {
    fn batch(&self, items: Vec<Item>, device: &B::Device) -> IdsBatch<B> {
        let n = items.len();
        let ids: Vec<i64> = items.iter().flat_map(|(ids, _)| *ids).collect();
        let targets: Vec<f32> = items.iter().map(|(_, t)| *t).collect();
        IdsBatch {
            ids: Tensor::from_data(TensorData::new(ids, [n, 3]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n, 1]), device),
        }
    }
}

fn items(count: usize, seed: usize) -> Vec<Item> {
    (0..count)
        .map(|i| {
            let k = i * 7 + seed;
            let ids = [
                (k % 40) as i64,
                ((k * 3 + 1) % 40) as i64,
                ((k * 11 + 5) % 40) as i64,
            ];
            (ids, ((k % 9) as f32 - 4.0) * 0.25)
        })
        .collect()
}

fn model(sparse: bool) -> Regressor<Ad> {
    let mut head = LinearConfig::new(4, 1)
        .with_bias(false)
        .init(&Default::default());
    head.weight = head.weight.map(|_| table(4, 1, 3.0).require_grad());
    Regressor {
        emb: Embedding::from_pretrained(
            table(40, 4, 1.0),
            false,
            EmbeddingOptions::new().with_sparse(sparse),
        )
        .unwrap(),
        head,
    }
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-embedding-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// Two epochs with `strategy`; the trained table.
fn run(sparse: bool, strategy: ExecutionStrategy<Ad>, accumulation: usize, name: &str) -> Vec<f32> {
    // The training's type depends on the optimizer's, hence a macro rather than a function.
    macro_rules! train {
        ($optim:expr) => {{
            let train = DataLoaderBuilder::new(IdsBatcher)
                .batch_size(8)
                .build(InMemDataset::new(items(64, 0)));
            let valid = DataLoaderBuilder::new(IdsBatcher)
                .batch_size(8)
                .build(InMemDataset::new(items(16, 3)));
            let training = SupervisedTraining::new(dir(name), train, valid)
                .metrics((LossMetric::new(),))
                .num_epochs(2)
                .grads_accumulation(accumulation)
                .with_training_strategy(strategy.into());
            let learner = Learner::new(model(sparse), $optim, 0.5);
            training.launch(learner).model.emb.weight.val()
        }};
    }
    let weight = if sparse {
        train!(SparseSgdConfig::new().init())
    } else {
        train!(SgdConfig::new().init())
    };
    values(weight)
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{what}: the sparse table differs from the dense one by {worst}"
    );
}

/// Trains the model dense and sparse with `strategy` and compares the tables.
fn compare(strategy: impl Fn() -> ExecutionStrategy<Ad>, accumulation: usize, name: &str) {
    let what = format!("{name}, accumulation {accumulation}");
    let dense = run(
        false,
        strategy(),
        accumulation,
        &format!("dense-{name}-{accumulation}"),
    );
    let sparse = run(
        true,
        strategy(),
        accumulation,
        &format!("sparse-{name}-{accumulation}"),
    );
    assert_ne!(
        dense,
        values(table(40, 4, 1.0).inner()),
        "{what}: the dense table trained"
    );
    assert_close(&what, &sparse, &dense);
}

#[test]
fn multi_device_learner_trains_as_the_dense_model() {
    for (optim, name) in [
        (MultiDeviceOptim::OptimMainDevice, "main"),
        (MultiDeviceOptim::OptimSharded, "sharded"),
    ] {
        for accumulation in [1, 2] {
            let devices = vec![Default::default(), Default::default()];
            compare(
                || ExecutionStrategy::MultiDevice(devices.clone(), optim),
                accumulation,
                name,
            );
        }
    }
}

#[test]
fn single_device_learner_trains_as_the_dense_model() {
    for accumulation in [1, 3] {
        compare(
            || ExecutionStrategy::SingleDevice(Default::default()),
            accumulation,
            "single",
        );
    }
}
