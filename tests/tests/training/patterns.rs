//! The training patterns of burn and burn-train with a row-sparse gradient, on NdArray: each
//! sparse run is compared with the same model built with `sparse: false` and stepped by burn's
//! dense optimizer of the same family, on the same batches.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SgdConfig};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::{
    LazyAdamConfig, RowwiseAdagradConfig, SparseAdagradConfig, SparseOptimizer, SparseRule,
    SparseSgdConfig,
};
use burn_embedding::{
    Embedding, EmbeddingBag, EmbeddingBagConfig, EmbeddingConfig, EmbeddingOptions, NormType,
    functional, sparse_grad,
};

use super::{Ad, B, ids, table, values};

fn layer(sparse: bool, seed: f32) -> Embedding<Ad> {
    Embedding::from_pretrained(
        table(12, 3, seed),
        false,
        EmbeddingOptions::new().with_sparse(sparse),
    )
    .unwrap()
}

fn assert_close(what: &str, a: Tensor<B, 2>, b: Tensor<B, 2>) {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{what}: differs by {worst}\n{a:?}\n{b:?}");
}

/// A weight-tied language model: the lookup table is also the output projection.
#[derive(Module, Debug)]
struct TiedLm<B: Backend> {
    emb: Embedding<B>,
}

impl TiedLm<Ad> {
    fn new(sparse: bool) -> Self {
        Self {
            emb: layer(sparse, 1.0),
        }
    }

    /// `logits = emb(x) @ W^T`, a squared loss on them; `weight_first` writes it `W @ h^T`
    /// instead, which changes the order in which burn runs the two backward ops.
    fn loss(&self, x: &[i64], weight_first: bool) -> Tensor<Ad, 1> {
        let h: Tensor<Ad, 2> = self.emb.forward(ids(x, [x.len()]));
        let w = self.emb.weight.val();
        let logits = if weight_first {
            w.matmul(h.transpose())
        } else {
            h.matmul(w.transpose())
        };
        logits.sin().sum()
    }
}

/// 5. A sparse weight also used densely (tied input and output embeddings) trains as the dense
///    model: the rows are added into the dense gradient.
#[test]
fn tied_weights_train_as_the_dense_model() {
    for weight_first in [false, true] {
        let mut trained = Vec::new();
        for sparse in [true, false] {
            let mut model = TiedLm::new(sparse);
            for batch in [[1i64, 4, 4, 9], [2, 4, 7, 0]] {
                let grads = GradientsParams::from_grads(
                    model.loss(&batch, weight_first).backward(),
                    &model,
                );
                model = if sparse {
                    SparseSgdConfig::new().init().step(0.1, model, grads)
                } else {
                    SgdConfig::new().init().step(0.1, model, grads)
                };
            }
            trained.push(model.emb.weight.val().inner());
        }
        let dense = trained.pop().unwrap();
        assert_close(
            &format!("tied (weight first: {weight_first})"),
            trained.pop().unwrap(),
            dense,
        );
    }
}

/// 6. The rows can be read from the `Gradients` without taking them (`sparse_grad`), and they are
///    the dense gradient's non-zero rows; a step after reading still applies them.
#[test]
fn reading_a_sparse_gradient_gives_the_dense_one() {
    let batch = [3i64, 1, 3, 8];
    let dense = layer(false, 2.0);
    let out: Tensor<Ad, 2> = dense.forward(ids(&batch, [4]));
    let dense_grad = dense
        .weight
        .val()
        .grad(&out.sin().sum().backward())
        .unwrap();

    let emb = layer(true, 2.0);
    let out: Tensor<Ad, 2> = emb.forward(ids(&batch, [4]));
    let grads = out.sin().sum().backward();
    let rows = sparse_grad(&emb.weight.val(), &grads).expect("rows");
    assert_eq!(rows.ids_vec(), vec![1, 3, 8]);
    assert_close("read rows", rows.to_dense(), dense_grad.clone());
    assert_eq!(emb.sparse_grad(&grads).unwrap().ids_vec(), vec![1, 3, 8]);

    let before = emb.weight.val().inner();
    let grads = GradientsParams::from_grads(grads, &emb);
    let emb = SparseSgdConfig::new().init().step(1.0, emb, grads);
    assert_close(
        "step after a read",
        emb.weight.val().inner(),
        before - dense_grad,
    );
}

/// 7. Two models loaded from the same record (the same `ParamId`s), their backward passes and
///    steps interleaved, each train as if alone.
#[test]
fn models_from_one_record_do_not_mix_rows() {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(layer(true, 3.0).into_record(), ()).unwrap();
    let load = || {
        let record = recorder.load(bytes.clone(), &Default::default()).unwrap();
        layer(true, 0.0).load_record(record)
    };
    let batches =
        |k: usize| -> Vec<i64> { (0..5).map(|i| ((k * 5 + i * 7) % 12) as i64).collect() };
    let step = |emb: Embedding<Ad>, optim: &mut _, grads| -> Embedding<Ad> {
        Optimizer::<Embedding<Ad>, Ad>::step(optim, 0.05, emb, grads)
    };
    let grads_of = |emb: &Embedding<Ad>, batch: &[i64]| {
        let out: Tensor<Ad, 2> = emb.forward(ids(batch, [batch.len()]));
        GradientsParams::from_grads(out.square().sum().backward(), emb)
    };
    // Alone, one after the other.
    let mut alone = Vec::new();
    for offset in [0, 100] {
        let mut emb = load();
        let mut optim = LazyAdamConfig::new().init();
        for k in 0..3 {
            let g = grads_of(&emb, &batches(k + offset));
            emb = step(emb, &mut optim, g);
        }
        alone.push(values(emb.weight.val().inner()));
    }
    // Interleaved: both backward passes, then both steps.
    let (mut a, mut b) = (load(), load());
    assert_eq!(a.weight.id, b.weight.id);
    let (mut optim_a, mut optim_b) = (LazyAdamConfig::new().init(), LazyAdamConfig::new().init());
    for k in 0..3 {
        let ga = grads_of(&a, &batches(k));
        let gb = grads_of(&b, &batches(k + 100));
        a = step(a, &mut optim_a, ga);
        b = step(b, &mut optim_b, gb);
    }
    assert_eq!(values(a.weight.val().inner()), alone[0]);
    assert_eq!(values(b.weight.val().inner()), alone[1]);
}

/// 9. Removing a weight's gradient freezes it for the step; one optimizer per sub-module, each
///    with its own rate, trains each table with its own optimizer.
#[test]
fn the_gradients_a_step_is_given_decide_what_it_applies() {
    // Freeze `a` for one step.
    let mut result = Vec::new();
    for sparse in [true, false] {
        let mut model = super::TwoTables::new_with(sparse);
        let before_a = values(model.a.weight.val().inner());
        let mut grads =
            GradientsParams::from_grads(model.loss(&[1, 4, 1], &[2, 2, 7]).backward(), &model);
        grads.remove::<B, 2>(model.a.weight.id);
        model = if sparse {
            SparseSgdConfig::new().init().step(0.5, model, grads)
        } else {
            SgdConfig::new().init().step(0.5, model, grads)
        };
        assert_eq!(
            values(model.a.weight.val().inner()),
            before_a,
            "a is frozen"
        );
        result.push(model);
    }
    assert_close(
        "b beside a frozen a",
        result[0].b.weight.val().inner(),
        result[1].b.weight.val().inner(),
    );

    // One optimizer per table, with its own rate, through `GradientsParams::from_module`.
    let mut result = Vec::new();
    for sparse in [true, false] {
        let mut model = super::TwoTables::new_with(sparse);
        let (mut optim_a, mut optim_b) =
            (SparseSgdConfig::new().init(), SparseSgdConfig::new().init());
        let (mut dense_a, mut dense_b) = (SgdConfig::new().init(), SgdConfig::new().init());
        for (x, y) in [([1i64, 4, 1], [2i64, 2, 7]), ([3, 3, 0], [7, 1, 5])] {
            let mut grads = model.loss(&x, &y).backward();
            let ga = GradientsParams::from_module(&mut grads, &model.a);
            let gb = GradientsParams::from_module(&mut grads, &model.b);
            model = if sparse {
                let model = optim_a.step(0.5, model, ga);
                optim_b.step(0.05, model, gb)
            } else {
                let model = dense_a.step(0.5, model, ga);
                dense_b.step(0.05, model, gb)
            };
        }
        result.push(model);
    }
    assert_close(
        "a with its own rate",
        result[0].a.weight.val().inner(),
        result[1].a.weight.val().inner(),
    );
    assert_close(
        "b with its own rate",
        result[0].b.weight.val().inner(),
        result[1].b.weight.val().inner(),
    );
}

/// 10. Index tensors with a zero dimension work in every entry point.
#[test]
fn empty_batches_work_everywhere() {
    let device = Default::default();
    let options = EmbeddingOptions::new()
        .with_sparse(true)
        .with_max_norm(Some(1.0))
        .with_norm_type(NormType::INFINITY);
    let mut emb = Embedding::from_pretrained(table(6, 4, 0.0), false, options).unwrap();
    let before = values(emb.weight.val().inner());
    let empty1 = Tensor::<Ad, 1, Int>::from_data(TensorData::new(Vec::<i64>::new(), [0]), &device);
    let empty2 =
        Tensor::<Ad, 2, Int>::from_data(TensorData::new(Vec::<i64>::new(), [2, 0]), &device);
    let empty3 =
        Tensor::<Ad, 3, Int>::from_data(TensorData::new(Vec::<i64>::new(), [2, 0, 3]), &device);
    let out: Tensor<Ad, 2> = emb.forward(empty1.clone());
    assert_eq!(out.dims(), [0, 4]);
    let out: Tensor<Ad, 3> = emb.forward(empty2.clone());
    assert_eq!(out.dims(), [2, 0, 4]);
    let out: Tensor<Ad, 4> = emb.forward(empty3.clone());
    assert_eq!(out.dims(), [2, 0, 3, 4]);
    let out: Tensor<Ad, 4> = emb.forward_mut(empty3.clone());
    assert_eq!(out.dims(), [2, 0, 3, 4]);
    let out: Tensor<Ad, 3> = emb.forward_mut(empty2.clone());
    emb.renorm(empty1.clone());
    // A step on a batch that touched nothing changes nothing.
    let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
    let emb = LazyAdamConfig::new().init().step(0.1, emb, grads);
    assert_eq!(values(emb.weight.val().inner()), before);
    let renormed = functional::embedding_renorm(emb.weight.val(), empty3, 1.0, 2.0).unwrap();
    assert_eq!(renormed.dims(), [6, 4]);

    for sparse in [true, false] {
        let bag: EmbeddingBag<Ad> = EmbeddingBagConfig::new(6, 4)
            .with_sparse(sparse)
            .with_max_norm(Some(1.0))
            .init(&device);
        let out = bag.forward_fixed(empty2.clone(), None);
        assert_eq!(out.dims(), [2, 4]);
        assert_eq!(values(out.clone().inner()), vec![0.0; 8]);
        let _ = out.sum().backward();
        let zero_bags =
            Tensor::<Ad, 2, Int>::from_data(TensorData::new(Vec::<i64>::new(), [0, 3]), &device);
        assert_eq!(bag.forward_fixed(zero_bags, None).dims(), [0, 4]);
        let offsets = Tensor::<Ad, 1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &device);
        assert_eq!(bag.forward(empty1.clone(), offsets, None).dims(), [2, 4]);
    }
}

/// The dense optimizer of a [`SparseOptimizer`], failing on demand: a simulated fault inside a
/// step (out of memory, a device lost, a bug in a custom optimizer).
#[derive(Clone)]
struct FailingSgd {
    inner: burn::optim::adaptor::OptimizerAdaptor<burn::optim::Sgd<B>, super::TwoTables<Ad>, Ad>,
    fail: Arc<AtomicBool>,
}

// A custom dense optimizer says which clipping it applies (none).
impl burn_embedding::optim::DenseOptimizer for FailingSgd {}

impl Optimizer<super::TwoTables<Ad>, Ad> for FailingSgd {
    type Record = <burn::optim::adaptor::OptimizerAdaptor<
        burn::optim::Sgd<B>,
        super::TwoTables<Ad>,
        Ad,
    > as Optimizer<super::TwoTables<Ad>, Ad>>::Record;

    fn step(
        &mut self,
        lr: LearningRate,
        module: super::TwoTables<Ad>,
        grads: GradientsParams,
    ) -> super::TwoTables<Ad> {
        assert!(!self.fail.load(Ordering::SeqCst), "simulated fault");
        self.inner.step(lr, module, grads)
    }

    fn step_multi(
        &mut self,
        _lr: LearningRate,
        _module: super::TwoTables<Ad>,
        _grads: MultiGradientsParams,
    ) -> super::TwoTables<Ad> {
        unimplemented!("this test trains on one device")
    }

    fn to_record(&self) -> Self::Record {
        self.inner.to_record()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.inner = self.inner.load_record(record);
        self
    }
}

/// 11. A panic inside a step leaves the optimizer state as it was and the model (the caller's
///     copy) whole: the step can be taken again and training ends where it would have.
#[test]
fn a_fault_inside_a_step_loses_nothing() {
    let batches = [
        ([1i64, 4, 1], [2i64, 2, 7]),
        ([3, 3, 0], [7, 1, 5]),
        ([1, 9, 9], [2, 5, 6]),
    ];
    let rule = SparseRule::LazyAdam {
        beta_1: 0.9,
        beta_2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let run = |fault_at: Option<usize>| {
        let fail = Arc::new(AtomicBool::new(false));
        let dense = FailingSgd {
            inner: SgdConfig::new().init(),
            fail: fail.clone(),
        };
        let mut optim = SparseOptimizer::<_, Ad>::new(rule, dense);
        let mut model = super::TwoTables::new_with(true);
        for (k, (x, y)) in batches.iter().enumerate() {
            if fault_at == Some(k) {
                fail.store(true, Ordering::SeqCst);
                let kept = model.clone();
                let grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
                let outcome = catch_unwind(AssertUnwindSafe(|| optim.step(0.01, model, grads)));
                assert!(outcome.is_err(), "the fault was raised");
                fail.store(false, Ordering::SeqCst);
                model = kept;
                // Every parameter still has its value.
                let _ = model.loss(x, y);
            }
            let grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        let mut w = values(model.a.weight.val().inner());
        w.extend(values(model.b.weight.val().inner()));
        w
    };
    assert_eq!(run(Some(1)), run(None));
}

/// 12. The unchecked entry points never read a wrong row or leave the table: an index out of
///     range panics naming it, and the checked `renorm` returns a typed error.
#[test]
fn unchecked_input_panics_naming_the_index() {
    let emb = layer(false, 4.0);
    // -1, and an index whose row offset would wrap around to row 3 if computed unchecked.
    for bad in [-1i64, (1i64 << 62) + 1, 12] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _: Tensor<Ad, 2> = emb.forward_unchecked(ids(&[0, bad], [2]));
        }));
        let message = outcome.expect_err("an out-of-range index panics");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains(&format!("index {bad} ")), "{message}");
    }
    let mut emb = Embedding::from_pretrained(
        table(12, 3, 4.0),
        false,
        EmbeddingOptions::new().with_max_norm(Some(1.0)),
    )
    .unwrap();
    let err = emb.try_renorm(ids(&[2, -3], [2])).unwrap_err();
    assert!(err.to_string().contains("index -3 at position 1"), "{err}");
    let err =
        functional::embedding_renorm(emb.weight.val(), ids(&[2], [1]), 1.0, -2.0).unwrap_err();
    assert!(err.to_string().contains("norm_type -2"), "{err}");
    assert!(
        EmbeddingConfig::new(4, 2)
            .with_max_norm(Some(-1.0))
            .try_init::<Ad>(&Default::default())
            .is_err()
    );
}

/// A record file saved from a `burn::nn::Embedding` loads into ours: the field is `weight` in
/// both.
#[test]
fn a_burn_nn_record_loads() {
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    let device = Default::default();
    let theirs = burn::nn::EmbeddingConfig::new(6, 3).init::<B>(&device);
    // Materialise the lazy weight, so that the clone saved below holds the same values.
    let expected = values(theirs.weight.val());
    let path = std::env::temp_dir().join(format!("burn-nn-embedding-{}", std::process::id()));
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    theirs.clone().save_file(&path, &recorder).unwrap();
    let ours = EmbeddingConfig::new(6, 3)
        .init::<B>(&device)
        .load_file(&path, &recorder, &device)
        .unwrap();
    assert_eq!(values(ours.weight.val()), expected);
}

/// 13. A step that finds the table's storage held by no one else updates it in place, straight
///     from the token gradients; a step whose table is also held elsewhere (a snapshot, an
///     earlier copy of the model) leaves that holder untouched. Both give the same bits, for
///     every rule, option and number of lookups.
#[test]
fn a_step_in_place_equals_a_step_on_a_shared_table() {
    let rules = [
        SparseSgdConfig::new().with_weight_decay(0.1).rule(),
        SparseAdagradConfig::new()
            .with_lr_decay(0.01)
            .with_initial_accumulator_value(0.1)
            .rule(),
        RowwiseAdagradConfig::new().rule(),
        LazyAdamConfig::new().rule(),
    ];
    let plain = EmbeddingOptions::new().with_sparse(true);
    let options = [
        plain,
        plain.with_scale_grad_by_freq(true),
        plain.with_padding_idx(Some(2)),
        plain.with_max_norm(Some(1.0)),
    ];
    let batches: [&[i64]; 3] = [&[1, 4, 1, 2], &[2, 7, 7, 7], &[0, 11, 4, 2]];
    for rule in rules {
        for options in options {
            for lookups in [1, 2] {
                let case = format!("{rule:?}, {options:?}, {lookups} lookup(s)");
                let new = || Embedding::from_pretrained(table(12, 3, 5.0), false, options).unwrap();
                let (mut alone, mut shared) = (new(), new());
                let mut optims =
                    [(); 2].map(|_| SparseOptimizer::<_, Ad>::new(rule, SgdConfig::new().init()));
                let loss = |emb: &Embedding<Ad>, batch: &[i64]| {
                    let mut loss = Tensor::<Ad, 2>::zeros([batch.len(), 3], &Default::default());
                    for k in 0..lookups {
                        let out: Tensor<Ad, 2> = emb.forward(ids(batch, [batch.len()]));
                        loss = loss + out.mul_scalar(k as f32 + 1.0);
                    }
                    loss.sin().sum()
                };
                for batch in batches {
                    let grads = GradientsParams::from_grads(loss(&alone, batch).backward(), &alone);
                    alone = Optimizer::<Embedding<Ad>, Ad>::step(&mut optims[0], 0.1, alone, grads);
                    // Updated now, or (renormalised rows) left to be added at the next read.
                    let in_place = options.max_norm.is_none();
                    assert_eq!(alone.weight.is_initialized(), in_place, "{case}");

                    let snapshot = shared.weight.val().inner();
                    let before = values(snapshot.clone());
                    let grads =
                        GradientsParams::from_grads(loss(&shared, batch).backward(), &shared);
                    shared =
                        Optimizer::<Embedding<Ad>, Ad>::step(&mut optims[1], 0.1, shared, grads);
                    assert!(!shared.weight.is_initialized(), "{case}: not in place");
                    assert_eq!(
                        values(snapshot),
                        before,
                        "{case}: the snapshot is untouched"
                    );
                }
                let (a, s) = (
                    values(alone.weight.val().inner()),
                    values(shared.weight.val().inner()),
                );
                assert_eq!(a, s, "{case}");
                assert_ne!(a, values(table(12, 3, 5.0).inner()), "{case}: it trained");
            }
        }
    }
}
