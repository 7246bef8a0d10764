//! The optimizer fused into the backward ([`FusedEmbedding`]) against the unfused sparse-aware
//! optimizer of the same rule: equal weights after 10 steps for every rule and the options that
//! change the backward, a checkpoint that resumes exactly, a learning rate changed between
//! steps, accumulation refused, a frozen table, and `valid()` snapshots.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use burn_embedding::optim::{
    LazyAdamConfig, LazyAdamWConfig, RowwiseAdagradConfig, SparseAdagradConfig, SparseOptimizer,
    SparseRule, SparseSgdConfig, SparseUpdate,
};
use burn_embedding::{
    Embedding, EmbeddingBackend, EmbeddingConfig, FusedEmbedding, NormType, backward_with,
};

type Ad<B> = Autodiff<B>;

const V: usize = 30;
const D: usize = 6;
const STEPS: usize = 10;

/// Every rule, with the options that change what it does.
fn rules() -> Vec<(&'static str, SparseRule)> {
    vec![
        ("sgd", SparseSgdConfig::new().rule()),
        (
            "sgd_decay",
            SparseSgdConfig::new().with_weight_decay(0.1).rule(),
        ),
        (
            "adagrad",
            SparseAdagradConfig::new()
                .with_lr_decay(0.05)
                .with_initial_accumulator_value(0.1)
                .rule(),
        ),
        ("rowwise_adagrad", RowwiseAdagradConfig::new().rule()),
        (
            "rowwise_adagrad_decay",
            RowwiseAdagradConfig::new().with_weight_decay(0.2).rule(),
        ),
        ("lazy_adam", LazyAdamConfig::new().rule()),
        ("lazy_adamw", LazyAdamWConfig::new().rule()),
    ]
}

/// The unfused optimizer of `rule` for a lone embedding.
fn unfused<B: EmbeddingBackend + SparseUpdate>(
    rule: SparseRule,
) -> impl Optimizer<Embedding<Ad<B>>, Ad<B>> {
    // The dense half never runs (the embedding is the only parameter): any will do.
    SparseOptimizer::new(
        rule,
        SparseSgdConfig::new().init::<Ad<B>, Embedding<Ad<B>>>(),
    )
}

fn config(options: &str) -> EmbeddingConfig {
    let config = EmbeddingConfig::new(V, D).with_sparse(true);
    match options {
        "plain" => config,
        "padding_freq" => config
            .with_padding_idx(Some(3))
            .with_scale_grad_by_freq(true),
        "max_norm" => config
            .with_max_norm(Some(1.2))
            .with_norm_type(NormType(1.5)),
        other => panic!("no options {other}"),
    }
}

/// The batches of step `k`: ids `[2, 5]` with repeats, and an output gradient.
fn batch<B: EmbeddingBackend>(k: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 3>) {
    let ids: Vec<i64> = (0..10)
        .map(|i| ((i * 7 + k * 11) % V) as i64 / 2 * 2)
        .collect();
    let ids = Tensor::from_data(TensorData::new(ids, [2, 5]), device);
    let grad = Tensor::random([2, 5, D], Distribution::Normal(0.0, 1.0), device);
    (ids, grad)
}

fn max_diff<B: EmbeddingBackend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
    (a - b).abs().max().into_scalar().elem()
}

/// One step of the fused table: forward + seeded backward (the update happens there).
fn fused_step<B: EmbeddingBackend + SparseUpdate>(
    emb: &FusedEmbedding<Ad<B>>,
    (ids, grad): (Tensor<B, 2, Int>, Tensor<B, 3>),
) {
    let out: Tensor<Ad<B>, 3> = emb.forward(Tensor::from_inner(ids));
    let _ = backward_with(out, grad);
}

/// One step of the unfused model.
fn unfused_step<B: EmbeddingBackend + SparseUpdate>(
    emb: Embedding<Ad<B>>,
    optim: &mut impl Optimizer<Embedding<Ad<B>>, Ad<B>>,
    lr: f64,
    (ids, grad): (Tensor<B, 2, Int>, Tensor<B, 3>),
) -> Embedding<Ad<B>> {
    let out: Tensor<Ad<B>, 3> = emb.forward(Tensor::from_inner(ids));
    let grads = GradientsParams::from_grads(backward_with(out, grad), &emb);
    optim.step(lr, emb, grads)
}

/// Fused and unfused give the same weights after 10 steps (within 1e-6), for every rule and
/// for plain, padding + `scale_grad_by_freq`, and `max_norm` lookups.
pub fn matches_unfused<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device) {
    let mut checked = 0;
    for options in ["plain", "padding_freq", "max_norm"] {
        for (name, rule) in rules() {
            let mut emb = config(options).init::<Ad<B>>(device);
            let fused = emb.clone().fused(rule, 0.05);
            let mut optim = unfused::<B>(rule);
            for k in 0..STEPS {
                let batch = batch::<B>(k, device);
                fused_step::<B>(&fused, batch.clone());
                emb = unfused_step::<B>(emb, &mut optim, 0.05, batch);
            }
            let diff = max_diff(fused.weight().inner(), emb.weight.val().inner());
            assert!(
                diff <= 1e-6,
                "{label}: fused {name} ({options}) differs from unfused by {diff} after {STEPS} steps"
            );
            assert_eq!(fused.state().step, STEPS);
            checked += 1;
        }
    }
    println!("fused-{label}: {checked} rule x option cases equal to unfused (1e-6, {STEPS} steps)");
}

/// A record saved after 5 steps and loaded into another table (another init) resumes exactly;
/// a learning rate set between steps is the one the next update uses; `valid()` is a snapshot.
pub fn record_and_learning_rate<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    let rule = LazyAdamConfig::new().rule();
    let schedule = |k: usize| 0.1 / (1.0 + k as f64);
    let mut emb = config("plain").init::<Ad<B>>(device);
    let fused = emb.clone().fused(rule, schedule(0));
    let mut optim = unfused::<B>(rule);
    let mut resumed = None;
    for k in 0..STEPS {
        let batch = batch::<B>(k, device);
        fused.set_learning_rate(schedule(k));
        fused_step::<B>(&fused, batch.clone());
        if let Some(resumed) = &resumed {
            let resumed: &FusedEmbedding<Ad<B>> = resumed;
            resumed.set_learning_rate(schedule(k));
            fused_step::<B>(resumed, batch.clone());
        }
        emb = unfused_step::<B>(emb, &mut optim, schedule(k), batch);
        if k == 4 {
            let other = config("plain")
                .init::<Ad<B>>(device)
                .fused(rule, 1.0)
                .load_record(fused.clone().into_record());
            resumed = Some(other);
        }
    }
    let snapshot = fused.valid();
    let before = snapshot.weight().into_data();
    let diff = max_diff(fused.weight().inner(), emb.weight.val().inner());
    assert!(diff <= 1e-6, "a scheduled fused table differs by {diff}");
    let resumed = resumed.expect("resumed after step 5");
    let diff = max_diff(fused.weight().inner(), resumed.weight().inner());
    assert!(
        diff == 0.0,
        "a table resumed from its record differs by {diff}"
    );
    fused_step::<B>(&fused, batch::<B>(STEPS, device));
    snapshot.weight().into_data().assert_eq(&before, true);
}

/// Gradients of two backward passes accumulated into one step are refused, naming the count;
/// a frozen table does not change.
pub fn accumulation_and_freezing<B: EmbeddingBackend + SparseUpdate>(device: &B::Device) {
    #[derive(Module, Debug)]
    struct Model<B: burn::tensor::backend::Backend> {
        emb: FusedEmbedding<B>,
    }
    let fused = config("plain")
        .init::<Ad<B>>(device)
        .fused(SparseSgdConfig::new().rule(), 0.1);
    let model = Model { emb: fused };
    let mut accumulator = GradientsAccumulator::new();
    for k in 0..2 {
        let (ids, grad) = batch::<B>(k, device);
        let out: Tensor<Ad<B>, 3> = model.emb.forward(Tensor::from_inner(ids));
        let grads = GradientsParams::from_grads(backward_with(out, grad), &model);
        accumulator.accumulate(&model, grads);
    }
    let mut optim = LazyAdamConfig::new().init::<Ad<B>, Model<Ad<B>>>();
    let grads = accumulator.grads();
    let err = catch_unwind(AssertUnwindSafe(|| optim.step(0.1, model.clone(), grads)))
        .expect_err("accumulated gradients of a fused table were taken");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("were summed or scaled"), "{message}");

    // Averaged accumulation (the sum times 1/2) and one backward pass scaled are refused too:
    // the table already applied each update as it came.
    for batches in [2, 1] {
        let mut accumulator = GradientsAccumulator::new();
        for k in 0..batches {
            let (ids, grad) = batch::<B>(k, device);
            let out: Tensor<Ad<B>, 3> = model.emb.forward(Tensor::from_inner(ids));
            let grads = GradientsParams::from_grads(backward_with(out, grad), &model);
            accumulator.accumulate(&model, grads);
        }
        let mut grads = accumulator.grads();
        // Any scaling of the whole gradient: a clip by the global norm is one.
        burn_embedding::sparse::clip_grad_norm(&model, &mut grads, 0.5);
        let err = catch_unwind(AssertUnwindSafe(|| optim.step(0.1, model.clone(), grads)))
            .expect_err("scaled gradients of a fused table were taken");
        let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("were summed or scaled"),
            "{batches}: {message}"
        );
    }

    // One backward per step is taken (the probe's gradient removed, the table untouched).
    let (ids, grad) = batch::<B>(3, device);
    let out: Tensor<Ad<B>, 3> = model.emb.forward(Tensor::from_inner(ids));
    let grads = GradientsParams::from_grads(backward_with(out, grad), &model);
    let after_backward = model.emb.weight().into_data();
    let model = optim.step(0.1, model, grads);
    model
        .emb
        .weight()
        .into_data()
        .assert_eq(&after_backward, true);

    let frozen = model.no_grad();
    let before = frozen.emb.weight().into_data();
    let (ids, _) = batch::<B>(4, device);
    let out: Tensor<Ad<B>, 3> = frozen.emb.forward(Tensor::from_inner(ids));
    let _ = out.sum().backward();
    frozen.emb.weight().into_data().assert_eq(&before, true);
}
