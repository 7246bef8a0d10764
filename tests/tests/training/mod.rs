//! Sparse training end to end on ndarray: the path of the row-sparse gradient from the
//! backward to the optimizers, in hand-written loops and in burn-train's Learner.

mod evaluation;
mod learner_strategies;
mod patterns;

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::{LazyAdamConfig, SparseSgdConfig};
use burn_embedding::{Embedding, EmbeddingOptions, embedding, sparse_grad_remove};
use word2vec::corpus::{self, Vocab};
use word2vec::train::{Word2VecConfig, epoch_losses, train};

type B = NdArray;
type Ad = Autodiff<NdArray>;

fn ids<const D: usize>(values: &[i64], shape: [usize; D]) -> Tensor<Ad, D, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn values(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn table(v: usize, d: usize, seed: f32) -> Tensor<Ad, 2> {
    let data: Vec<f32> = (0..v * d)
        .map(|i| ((i as f32 + seed) * 0.37).sin())
        .collect();
    Tensor::from_data(TensorData::new(data, [v, d]), &Default::default())
}

fn sparse(v: usize, d: usize, seed: f32) -> Embedding<Ad> {
    layer_of(v, d, seed, true)
}

fn layer_of(v: usize, d: usize, seed: f32, sparse: bool) -> Embedding<Ad> {
    Embedding::from_pretrained(
        table(v, d, seed),
        false,
        EmbeddingOptions::new().with_sparse(sparse),
    )
    .unwrap()
}

/// Two sparse embeddings of the same shape and a dense layer, side by side.
#[derive(Module, Debug)]
struct TwoTables<B: burn::tensor::backend::Backend> {
    a: Embedding<B>,
    b: Embedding<B>,
    head: Linear<B>,
}

impl TwoTables<Ad> {
    fn new() -> Self {
        Self::new_with(true)
    }

    /// The same model every time: the head's initial weights come from a fixed table.
    fn new_with(sparse: bool) -> Self {
        let mut head = LinearConfig::new(3, 1).init(&Default::default());
        head.weight = head.weight.map(|_| table(3, 1, 7.0).require_grad());
        Self {
            a: layer_of(10, 3, 0.0, sparse),
            b: layer_of(10, 3, 100.0, sparse),
            head,
        }
    }

    fn loss(&self, x: &[i64], y: &[i64]) -> Tensor<Ad, 1> {
        let a: Tensor<Ad, 2> = self.a.forward(ids(x, [x.len()]));
        let b: Tensor<Ad, 2> = self.b.forward(ids(y, [y.len()]));
        self.head.forward(a * b).sum()
    }
}

#[test]
fn sparse_and_dense_parameters_train_side_by_side_with_sgd() {
    let model = TwoTables::new();
    let before = model.clone();
    let (x, y) = ([1, 4, 1], [2, 2, 7]);
    let mut grads = model.loss(&x, &y).backward();
    // Reference gradients from the same graph: rows of a and b, and the dense head.
    let expected_a = sparse_grad_remove(&model.a.weight.val(), &mut grads).unwrap();
    let expected_b = sparse_grad_remove(&model.b.weight.val(), &mut grads).unwrap();
    assert_eq!(expected_a.ids_vec(), vec![1, 4]);
    assert_eq!(expected_b.ids_vec(), vec![2, 7]);
    let grads = model.loss(&x, &y).backward();
    let grads = GradientsParams::from_grads(grads, &model);
    let lr = 0.5;
    let model = SparseSgdConfig::new().init().step(lr, model, grads);

    for (new, old, rows) in [
        (&model.a, &before.a, expected_a),
        (&model.b, &before.b, expected_b),
    ] {
        let expected = old.weight.val().inner() - rows.to_dense().mul_scalar(lr);
        new.weight
            .val()
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(
                &expected.into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
    }
    let head_moved =
        values(model.head.weight.val().inner()) != values(before.head.weight.val().inner());
    assert!(head_moved, "the dense head is updated by burn's SGD");
}

#[test]
fn a_weight_shared_by_two_lookups_gets_both_contributions() {
    let weight = table(8, 2, 3.0).require_grad();
    let options = EmbeddingOptions::new().with_sparse(true);
    let first: Tensor<Ad, 2> = embedding(weight.clone(), ids(&[1, 5], [2]), &options);
    let second: Tensor<Ad, 2> = embedding(weight.clone(), ids(&[5, 6, 5], [3]), &options);
    let mut grads = (first.sum() + second.mul_scalar(2.0).sum()).backward();
    let rows = sparse_grad_remove(&weight, &mut grads).unwrap();
    assert_eq!(rows.ids_vec(), vec![1, 5, 6]);
    assert_eq!(values(rows.values), vec![1., 1., 5., 5., 2., 2.]);
}

/// Backward passes that no step follows leave at most 8192 row sets of a weight shape waiting
/// (`sparse::marker::SLOTS`; fewer when their rows exceed twice the dense gradient's size), and
/// none of them reaches a later step.
#[test]
fn backward_without_step_keeps_memory_bounded() {
    let emb = sparse(1000, 4, 0.0);
    let first = {
        let out: Tensor<Ad, 2> = emb.forward(ids(&[5], [1]));
        out.sum().backward()
    };
    for _ in 0..8300 {
        let out: Tensor<Ad, 2> = emb.forward(ids(&[3, 9, 3, 700], [4]));
        let _ = out.sum().backward();
    }
    // The oldest went first, and a read of it says why.
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| emb.sparse_grad(&first)))
        .expect_err("the oldest rows were kept");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("names rows that were dropped"),
        "{message}"
    );
    let mut grads = {
        let out: Tensor<Ad, 2> = emb.forward(ids(&[3], [1]));
        out.sum().backward()
    };
    let rows = emb.sparse_grad_remove(&mut grads).unwrap();
    assert_eq!(rows.ids_vec(), vec![3]);
    assert_eq!(
        values(rows.values),
        [1.0; 4],
        "only the last backward's rows"
    );
}

#[test]
#[should_panic(expected = "incompatible shapes")]
fn an_optimizer_that_ignores_sparse_gradients_fails_loudly() {
    let emb = sparse(10, 4, 0.0);
    let out: Tensor<Ad, 2> = emb.forward(ids(&[1, 2], [2]));
    let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
    // burn's SGD meets the marker, whose shape cannot broadcast against [10, 4].
    let _ = SgdConfig::new().init().step(0.1, emb, grads);
}

#[test]
fn gradient_accumulation_adds_the_contributions_of_each_batch() {
    let emb = sparse(10, 2, 1.0);
    let before = emb.clone();
    let mut accumulator = GradientsAccumulator::new();
    for batch in [[1i64, 2], [2, 9]] {
        let out: Tensor<Ad, 2> = emb.forward(ids(&batch, [2]));
        let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
        accumulator.accumulate(&emb, grads);
    }
    let emb = SparseSgdConfig::new()
        .init()
        .step(1.0, emb, accumulator.grads());
    let delta: Vec<f32> = values(before.weight.val().inner())
        .iter()
        .zip(values(emb.weight.val().inner()))
        .map(|(a, b)| a - b)
        .collect();
    let mut expected = vec![0.0f32; 20];
    for (row, count) in [(1, 1.0), (2, 2.0), (9, 1.0)] {
        expected[row * 2] = count;
        expected[row * 2 + 1] = count;
    }
    for (d, e) in delta.iter().zip(&expected) {
        assert!((d - e).abs() < 1e-6, "{delta:?} != {expected:?}");
    }
}

fn train_lazy_adam(seed: f32, steps: usize) -> Vec<f32> {
    let mut emb = sparse(50, 4, seed);
    let mut optim = LazyAdamConfig::new().init();
    for step in 0..steps {
        let batch: Vec<i64> = (0..6).map(|i| ((step * 7 + i * 13) % 50) as i64).collect();
        let out: Tensor<Ad, 2> = emb.forward(ids(&batch, [6]));
        let grads = GradientsParams::from_grads(out.square().sum().backward(), &emb);
        emb = optim.step(0.01, emb, grads);
    }
    values(emb.valid().weight.val())
}

#[test]
fn two_models_trained_at_once_on_two_threads_do_not_interfere() {
    let alone = (train_lazy_adam(0.0, 30), train_lazy_adam(9.0, 30));
    let a = std::thread::spawn(|| train_lazy_adam(0.0, 30));
    let b = std::thread::spawn(|| train_lazy_adam(9.0, 30));
    let together = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(alone, together);
}

#[test]
fn optimizer_record_resumes_exactly() {
    let full = train_lazy_adam(2.0, 6);
    // Same run, with the optimizer saved and reloaded into a fresh one half-way.
    let mut emb = sparse(50, 4, 2.0);
    let mut optim = LazyAdamConfig::new().init::<Ad, Embedding<Ad>>();
    for step in 0..6 {
        if step == 3 {
            let record = optim.to_record();
            optim = LazyAdamConfig::new()
                .init::<Ad, Embedding<Ad>>()
                .load_record(record);
        }
        let batch: Vec<i64> = (0..6).map(|i| ((step * 7 + i * 13) % 50) as i64).collect();
        let out: Tensor<Ad, 2> = emb.forward(ids(&batch, [6]));
        let grads = GradientsParams::from_grads(out.square().sum().backward(), &emb);
        emb = optim.step(0.01, emb, grads);
    }
    assert_eq!(values(emb.valid().weight.val()), full);
}

fn tiny_run(dir: &Path, epochs: usize, resume: Option<usize>, accumulation: usize) -> Vec<f32> {
    let sentences = corpus::generated(4, 12, 200, 3);
    let vocab = Vocab::build(&sentences, 1);
    let config = Word2VecConfig::new()
        .with_dim(8)
        .with_batch_size(64)
        .with_epochs(epochs)
        .with_lr(0.01)
        .with_shuffle(false)
        .with_grads_accumulation(accumulation)
        // A fused table cannot wait for accumulated batches.
        .with_fused(accumulation == 1);
    let model = train::<Ad>(
        &config,
        &vocab,
        word2vec::corpus::TokenStream::encode(&vocab, &sentences),
        dir,
        resume,
        &Default::default(),
    );
    let mut w = values(model.input.weight());
    w.extend(values(model.output.weight()));
    w
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-embedding-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

#[test]
fn learner_resumes_from_a_checkpoint_to_the_same_weights() {
    let uninterrupted = tiny_run(&fresh_dir("uninterrupted"), 2, None, 1);
    let dir = fresh_dir("resumed");
    let after_one = tiny_run(&dir, 1, None, 1);
    assert_ne!(after_one, uninterrupted);
    let resumed = tiny_run(&dir, 2, Some(1), 1);
    assert_eq!(resumed, uninterrupted);
}

#[test]
fn learner_with_gradient_accumulation_trains() {
    let dir = fresh_dir("accumulation");
    let initial = {
        let model = word2vec::model::Word2Vec::<B>::new(4 * 12, 8, 42, &Default::default());
        values(model.output.weight())
    };
    let w = tiny_run(&dir, 2, None, 3);
    let losses = epoch_losses(&dir, "train");
    assert_eq!(losses.len(), 2);
    assert!(losses[1] < losses[0], "loss went down: {losses:?}");
    assert_ne!(
        &w[w.len() - initial.len()..],
        &initial[..],
        "the sparse output table trained"
    );
}

/// The resident peak of this process in MB (Linux), after resetting it with `clear_refs`.
fn peak_rss_mb(reset: bool) -> f64 {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (Linux)");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1024.0
}

/// Run alone in a child process by [`no_dense_gradient_on_the_sparse_path`]: backward,
/// accumulation over two batches and an SGD step on a 512 MB table, printing the peak growth.
#[test]
#[ignore = "a probe run in its own process by no_dense_gradient_on_the_sparse_path"]
fn sparse_path_memory_probe() {
    let (v, d) = (2_000_000, 64);
    let weight = Tensor::<Ad, 2>::from_inner(
        Tensor::<B, 2>::zeros([v, d], &Default::default()).add_scalar(1.0),
    );
    let mut emb =
        Embedding::from_pretrained(weight, false, EmbeddingOptions::new().with_sparse(true))
            .unwrap();
    let mut optim = SparseSgdConfig::new().init();
    let base = peak_rss_mb(true);
    for step in 0..3 {
        let mut accumulator = GradientsAccumulator::new();
        for batch in 0..2 {
            let tokens: Vec<i64> = (0..4096)
                .map(|i| ((i * 2654435761u64 as i64 + step * 7 + batch) % v as i64).abs())
                .collect();
            let out: Tensor<Ad, 2> = emb.forward(ids(&tokens, [4096]));
            let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
            accumulator.accumulate(&emb, grads);
        }
        emb = optim.step(0.1, emb, accumulator.grads());
    }
    println!("PEAK_GROWTH_MB={:.0}", peak_rss_mb(false) - base);
}

#[test]
fn no_dense_gradient_on_the_sparse_path() {
    // A [V, D] tensor here is 512 MB; the batch's own tensors are a few MB.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "training::sparse_path_memory_probe",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let growth: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_GROWTH_MB="))
        .expect("the probe reports its peak")
        .parse()
        .unwrap();
    assert!(
        growth < 128.0,
        "the sparse path grew the peak by {growth} MB: a [V, D] tensor was made"
    );
}

/// Where the weight's values live.
fn weight_ptr(emb: &Embedding<Ad>) -> *const f32 {
    match emb.weight.val().inner().into_primitive().tensor() {
        burn::backend::ndarray::NdArrayTensor::F32(storage) => storage.view().as_ptr(),
        _ => panic!("an f32 weight"),
    }
}

fn lazy_adam_step(
    emb: Embedding<Ad>,
    optim: &mut impl Optimizer<Embedding<Ad>, Ad>,
    step: usize,
) -> Embedding<Ad> {
    let batch: Vec<i64> = (0..6).map(|i| ((step * 7 + i * 13) % 50) as i64).collect();
    let out: Tensor<Ad, 2> = emb.forward(ids(&batch, [6]));
    let grads = GradientsParams::from_grads(out.square().sum().backward(), &emb);
    optim.step(0.01, emb, grads)
}

/// burn-train's Learner steps a clone of its model (`self.model = self.model().optimize(..)`),
/// so the old model holds the weight during the step. The rows still go in place (no copy of
/// the table per step), and the weights are those of a plain loop.
#[test]
fn a_step_on_a_clone_of_the_model_updates_the_weight_in_place() {
    let plain = train_lazy_adam(3.0, 5);
    let mut emb = sparse(50, 4, 3.0);
    let mut optim = LazyAdamConfig::new().init();
    let at = weight_ptr(&emb);
    for step in 0..5 {
        emb = lazy_adam_step(emb.clone(), &mut optim, step);
        assert_eq!(weight_ptr(&emb), at, "step {step} copied the weight");
    }
    assert_eq!(values(emb.valid().weight.val()), plain);
}

/// A clone kept across a step keeps its values, whether it was made before the step or after it
/// (before the stepped weight was first read), while training goes on.
#[test]
fn clones_kept_across_steps_keep_their_values() {
    let plain = train_lazy_adam(4.0, 3);
    let mut optim = LazyAdamConfig::new().init();
    let emb = sparse(50, 4, 4.0);
    let before = emb.clone();
    let initial = values(before.weight.val().inner());
    let emb = lazy_adam_step(emb, &mut optim, 0);
    let after_one = emb.clone();
    let mut emb = lazy_adam_step(emb, &mut optim, 1);
    emb = lazy_adam_step(emb, &mut optim, 2);
    assert_eq!(values(emb.valid().weight.val()), plain);
    assert_eq!(values(before.weight.val().inner()), initial);
    let once = train_lazy_adam(4.0, 1);
    assert_eq!(values(after_one.weight.val().inner()), once);
    assert_ne!(once, plain);
}

/// Clones of a stepped model made before its first read share one weight tensor (one autodiff
/// node), as clones of any parameter do: a forward through one clone gives the gradient that the
/// other clone's step reads.
#[test]
fn a_forward_through_a_clone_trains_the_model() {
    let plain = train_lazy_adam(5.0, 4);
    let mut emb = sparse(50, 4, 5.0);
    let mut optim = LazyAdamConfig::new().init();
    for step in 0..4 {
        let twin = emb.clone();
        let batch: Vec<i64> = (0..6).map(|i| ((step * 7 + i * 13) % 50) as i64).collect();
        let out: Tensor<Ad, 2> = twin.forward(ids(&batch, [6]));
        let grads = GradientsParams::from_grads(out.square().sum().backward(), &emb);
        emb = optim.step(0.01, emb, grads);
    }
    assert_eq!(values(emb.valid().weight.val()), plain);
}

/// A weight with a save mapper keeps it across sparse steps.
#[test]
fn a_save_mapper_survives_sparse_steps() {
    let mut emb = sparse(50, 4, 6.0);
    emb.weight = emb.weight.save_mapper(|w| w.mul_scalar(2.0));
    let mut optim = LazyAdamConfig::new().init();
    for step in 0..3 {
        emb = lazy_adam_step(emb, &mut optim, step);
    }
    let weight = values(emb.weight.val().inner());
    let saved = values(emb.into_record().weight.val().inner());
    let doubled: Vec<f32> = weight.iter().map(|w| w * 2.0).collect();
    assert_eq!(saved, doubled);
}

/// A seeded backward (`backward_with`) while other threads run backward passes of their own:
/// burn frees, from any thread's backward, the steps of a graph that no tensor refers to, and the
/// lookups of a seeded root were such a graph for an instant (their gradients then went missing,
/// one run in a few with two test threads).
#[test]
fn a_seeded_backward_keeps_its_graph_while_other_threads_run_theirs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Stops the other thread however the loop below ends.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let t = table(4, 2, 1.0).require_grad();
                let _ = t.mul_scalar(2.0).sum().backward();
            }
        });
        let _stop = Stop(&stop);
        // One table for every pass: after the first, its weight's node is no longer in the graph.
        let emb = sparse(50, 2, 0.0);
        for _ in 0..3000 {
            let out: Tensor<Ad, 2> = emb.forward(ids(&[3, 7, 3], [3]));
            let seed = Tensor::<B, 2>::ones([3, 2], &Default::default());
            let mut grads = burn_embedding::backward_with(out, seed);
            let rows = emb
                .sparse_grad_remove(&mut grads)
                .expect("the lookup's gradient");
            assert_eq!(rows.ids_vec(), vec![3, 7]);
        }
    });
}
