//! A bag-of-words text classifier trained with burn-train's Learner: an `EmbeddingBag` (mean,
//! row-sparse gradients) feeding a linear layer, with lazy Adam for the table and Adam for the
//! layer.
//!
//! `cargo run --release -p burn-embedding --example bag_of_words`
//!
//! The documents are generated: each of 4 classes has its own 40 words, and a document mixes
//! 4 words of its class with 8 words drawn from a shared vocabulary of 400, so the class is
//! only visible through a few ids in a bag of noise.

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_embedding::optim::LazyAdamConfig;
use burn_embedding::{BagMode, EmbeddingBackend, EmbeddingBag, EmbeddingBagConfig};

const CLASSES: usize = 4;
const CLASS_WORDS: usize = 40;
const SHARED_WORDS: usize = 400;
const VOCAB: usize = CLASSES * CLASS_WORDS + SHARED_WORDS;

#[derive(Debug, Clone)]
struct Document {
    ids: Vec<i64>,
    label: i64,
}

fn documents(n: usize, seed: u64) -> Vec<Document> {
    let mut state = seed;
    let mut next = move |bound: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % bound as u64) as usize
    };
    (0..n)
        .map(|_| {
            let label = next(CLASSES);
            let mut ids: Vec<i64> = (0..4)
                .map(|_| (label * CLASS_WORDS + next(CLASS_WORDS)) as i64)
                .collect();
            ids.extend((0..8).map(|_| (CLASSES * CLASS_WORDS + next(SHARED_WORDS)) as i64));
            Document {
                ids,
                label: label as i64,
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct DocumentBatch<B: Backend> {
    ids: Tensor<B, 1, Int>,
    offsets: Tensor<B, 1, Int>,
    labels: Tensor<B, 1, Int>,
}

#[derive(Clone)]
struct DocumentBatcher;

impl<B: Backend> Batcher<B, Document, DocumentBatch<B>> for DocumentBatcher {
    fn batch(&self, docs: Vec<Document>, device: &B::Device) -> DocumentBatch<B> {
        let mut offsets = Vec::with_capacity(docs.len());
        let mut ids: Vec<i64> = Vec::new();
        for doc in &docs {
            offsets.push(ids.len() as i64);
            ids.extend(&doc.ids);
        }
        let labels: Vec<i64> = docs.iter().map(|d| d.label).collect();
        DocumentBatch {
            ids: Tensor::from_data(TensorData::new(ids.clone(), [ids.len()]), device),
            offsets: Tensor::from_data(TensorData::new(offsets, [docs.len()]), device),
            labels: Tensor::from_data(TensorData::new(labels, [docs.len()]), device),
        }
    }
}

#[derive(Module, Debug)]
struct Classifier<B: Backend> {
    words: EmbeddingBag<B>,
    head: Linear<B>,
}

impl<B: EmbeddingBackend> Classifier<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            words: EmbeddingBagConfig::new(VOCAB, 16)
                .with_mode(BagMode::Mean)
                .with_sparse(true)
                .init(device),
            head: LinearConfig::new(16, CLASSES).init(device),
        }
    }

    fn classify(&self, batch: DocumentBatch<B>) -> ClassificationOutput<B> {
        let features = self.words.forward(batch.ids, batch.offsets, None);
        let output = self.head.forward(features);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, output, batch.labels)
    }
}

impl<B: AutodiffBackend + EmbeddingBackend> TrainStep for Classifier<B> {
    type Input = DocumentBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: DocumentBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: EmbeddingBackend> InferenceStep for Classifier<B> {
    type Input = DocumentBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: DocumentBatch<B>) -> ClassificationOutput<B> {
        self.classify(batch)
    }
}

fn main() {
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let dir = std::env::temp_dir().join("burn-embedding-bag-of-words");
    std::fs::remove_dir_all(&dir).ok();
    let train = DataLoaderBuilder::new(DocumentBatcher)
        .batch_size(64)
        .shuffle(1)
        .build(InMemDataset::new(documents(4000, 1)));
    let valid = DataLoaderBuilder::new(DocumentBatcher)
        .batch_size(256)
        .build(InMemDataset::new(documents(1000, 2)));
    let result = SupervisedTraining::new(&dir, train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .num_epochs(4)
        .summary()
        .launch(Learner::new(
            Classifier::<B>::new(&device),
            LazyAdamConfig::new().init(),
            1e-2,
        ));
    // Accuracy on fresh documents, with the trained (inference) model.
    let test = documents(2000, 3);
    let batch = <DocumentBatcher as Batcher<NdArray, _, _>>::batch(&DocumentBatcher, test, &device);
    let predicted = result
        .model
        .classify(batch)
        .output
        .argmax(1)
        .flatten::<1>(0, 1);
    let labels: Vec<i64> = documents(2000, 3).iter().map(|d| d.label).collect();
    let predicted: Vec<i64> = predicted.into_data().iter::<i64>().collect();
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    println!(
        "test accuracy: {:.1}% on {} new documents (chance: 25%)",
        100.0 * correct as f64 / labels.len() as f64,
        labels.len()
    );
}
