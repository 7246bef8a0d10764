//! Our layer and burn::nn::Embedding on burn backends.
//!
//! Ops (`bench/README.md`), plus three of ours: `forward_autodiff` (the forward on an
//! autodiff backend, no backward: burn::nn's keeps the [V, D] weight as backward state),
//! `sum_backward` (burn's `sum().backward()` of a leaf of the output's shape: the part of every
//! backward op that is burn's, not the embedding's) and `step_sparse_adam_on_clone`
//! (`step_sparse_adam` as burn-train's Learner runs it: the step takes a clone of the model while
//! the old one lives on until the assignment).

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Distribution, Element, Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::optim::{LazyAdamConfig, RowwiseAdagradConfig, SparseSgdConfig};
use burn_embedding::{
    BagMode, Embedding, EmbeddingBackend, EmbeddingBag, EmbeddingOptions, backward_with,
    clear_pending_sparse_grads,
};

use crate::record::{Record, Timing};
use crate::{BAG_SIZE, Workload};

/// Thread count for rayon (NdArray) and libtorch.
pub fn set_threads(threads: usize) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    #[cfg(feature = "tch")]
    tch::set_num_threads(threads as i32);
}

/// Median and minimum in ms over `steps` runs, after `warmup` runs.
pub fn time<F: FnMut()>(warmup: usize, steps: usize, mut f: F) -> Timing {
    for _ in 0..warmup {
        f();
    }
    Timing::of(
        (0..steps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Timed calls of an op over the touched rows (the forward, sparse backwards and steps, bags).
const TOUCHED_STEPS: usize = 200;

/// Resets the process's peak resident set (Linux: `clear_refs` 5), so that the peak read after
/// a case belongs to that case (plus whatever earlier cases left alive).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

/// Peak resident set of the process since the last reset, in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Builds the records of one workload for one implementation on one backend.
pub struct Recorder<'a, F: FnMut(Record)> {
    pub w: &'a Workload,
    pub implementation: &'a str,
    pub backend: &'a str,
    pub emit: &'a mut F,
}

impl<F: FnMut(Record)> Recorder<'_, F> {
    pub fn record(&mut self, op: &str, timing: Timing) {
        let bags = op.starts_with("bag_").then_some((self.w.tokens, BAG_SIZE));
        (self.emit)(Record {
            implementation: self.implementation.into(),
            backend: self.backend.into(),
            op: op.into(),
            vocab: self.w.vocab,
            dim: self.w.dim,
            tokens: bags.map_or(self.w.tokens, |(b, s)| b * s),
            bags,
            timing,
            threads: self.w.threads,
            peak_rss_mb: peak_rss_mb(),
        });
        reset_peak_rss();
    }

    /// Times `f` with the workload's steps (`dense`: an op over all V x D values), unless
    /// `--ops` leaves `op` out.
    pub fn time(&mut self, op: &str, dense: bool, f: impl FnMut()) {
        if !crate::selected(op) {
            return;
        }
        // Ops over the touched rows take milliseconds: at least 200 timed calls after 10
        // warm-up runs, so that a p90 means something and a median is not a page fault's (a
        // fresh output buffer maps its pages on the first runs).
        let (warmup, steps) = match dense {
            true if self.w.dense_steps() < self.w.steps => (1, self.w.dense_steps()),
            true => (3, self.w.steps),
            false => (10, self.w.steps.max(TOUCHED_STEPS)),
        };
        self.record(op, time(warmup, steps, f));
    }
}

/// What [`ours`] times besides the lookup, its backwards and the bags.
#[derive(Clone, Copy)]
struct Extras {
    /// `step_sgd`, `step_adam`: optimizer steps on dense gradients (a pass over all V x D).
    dense_steps: bool,
    /// `step_sparse_sgd`, `step_sparse_adam`: optimizer steps on row-sparse gradients.
    sparse_steps: bool,
    /// `forward_backward_nondeterministic`: the dense backward with `deterministic` off.
    nondeterministic: bool,
}

/// The sparse-aware optimizer of a step op.
#[derive(Clone, Copy)]
enum Rule {
    Sgd,
    Adam,
    RowwiseAdagrad,
}

/// An optimizer step of a lone embedding.
type Step<B> = Box<dyn FnMut(Embedding<Autodiff<B>>, GradientsParams) -> Embedding<Autodiff<B>>>;

impl Rule {
    fn optimizer<B: EmbeddingBackend + SparseUpdate>(self) -> Step<B> {
        match self {
            Rule::Sgd => {
                let mut optim = SparseSgdConfig::new().init();
                Box::new(move |m, g| optim.step(0.01, m, g))
            }
            Rule::Adam => {
                let mut optim = LazyAdamConfig::new().init();
                Box::new(move |m, g| optim.step(0.01, m, g))
            }
            Rule::RowwiseAdagrad => {
                let mut optim = RowwiseAdagradConfig::new().init();
                Box::new(move |m, g| optim.step(0.01, m, g))
            }
        }
    }
}

/// Ours and burn::nn on NdArray.
pub fn ndarray(w: &Workload, emit: &mut impl FnMut(Record)) {
    let extras = Extras {
        dense_steps: true,
        sparse_steps: true,
        nondeterministic: false,
    };
    ours::<NdArray>(w, "ndarray", extras, emit);
    burn_nn(w, emit);
}

/// Ours on LibTorch, with f32 and with bf16 tables: the lookup, its backwards, the sparse steps
/// and the bags (the dense steps are libtorch's own elementwise ops over all V x D values,
/// minutes per run at V = 1M).
#[cfg(feature = "tch")]
pub fn libtorch(w: &Workload, emit: &mut impl FnMut(Record)) {
    let extras = Extras {
        dense_steps: false,
        sparse_steps: true,
        nondeterministic: false,
    };
    ours::<burn::backend::LibTorch>(w, "tch", extras, emit);
    // A bf16 table: the lookups and backwards in bf16, the sparse rules in f32 with f32 state.
    ours::<burn::backend::LibTorch<burn::tensor::bf16>>(w, "tch-bf16", extras, emit);
}

/// The largest buffer lavapipe (the CPU Vulkan driver CI runs wgpu on) binds: 128 MiB.
#[cfg(feature = "wgpu")]
const WGPU_MAX_BUFFER_BYTES: usize = 128 << 20;

/// Ours on wgpu, with the dense backward also timed nondeterministic (float atomics), where
/// the `[V, D]` table fits one buffer.
#[cfg(feature = "wgpu")]
pub fn wgpu(w: &Workload, emit: &mut impl FnMut(Record)) {
    let bytes = w.vocab * w.dim * size_of::<f32>();
    if bytes > WGPU_MAX_BUFFER_BYTES {
        eprintln!(
            "bench: wgpu skipped at V = {}, D = {}: the {} MiB table is over the 128 MiB buffer limit",
            w.vocab,
            w.dim,
            bytes >> 20
        );
        return;
    }
    let extras = Extras {
        dense_steps: true,
        sparse_steps: true,
        nondeterministic: true,
    };
    ours::<burn::backend::Wgpu>(w, "wgpu", extras, emit);
}

fn ours<B: EmbeddingBackend + SparseUpdate>(
    w: &Workload,
    backend: &str,
    extras: Extras,
    emit: &mut impl FnMut(Record),
) {
    type Ad<B> = Autodiff<B>;
    let device = Default::default();
    // Waits for the device's queued work (a no-op on the CPU backends), so that an
    // asynchronous backend is timed for its work and not for queueing it.
    let sync = || B::sync(&device).expect("the device finishes its work");
    let (v, d, n) = (w.vocab, w.dim, w.tokens);
    let mut rec = Recorder {
        w,
        implementation: "ours",
        backend,
        emit,
    };
    reset_peak_rss();
    // Every float tensor in `B`'s own float type: burn 0.21 keeps one default type per device
    // for the process, set by the first backend to use it (LibTorch<f32> before LibTorch<bf16>).
    let float = (&device, <B::FloatElem as Element>::dtype());
    let weight = Tensor::<B, 2>::random([v, d], Distribution::Normal(0.0, 1.0), float);
    let ids = TensorData::new(w.ids(n), [1, n]);

    let inference =
        Embedding::<B>::from_pretrained(weight.clone(), true, EmbeddingOptions::new()).unwrap();
    let idx = Tensor::<B, 2, Int>::from_data(ids.clone(), &device);
    rec.time("forward", false, || {
        let _: Tensor<B, 3> = inference.forward(idx.clone());
        sync();
    });
    drop(inference);

    let idx = Tensor::<Ad<B>, 2, Int>::from_data(ids.clone(), &device);
    let weight_ad = Tensor::<Ad<B>, 2>::from_inner(weight.clone());
    let dense_tracked =
        Embedding::<Ad<B>>::from_pretrained(weight_ad.clone(), false, EmbeddingOptions::new())
            .unwrap();
    rec.time("forward_autodiff", false, || {
        let _: Tensor<Ad<B>, 3> = dense_tracked.forward(idx.clone());
        sync();
    });
    let leaf = Tensor::<Ad<B>, 3>::zeros([1, n, d], float).require_grad();
    rec.time("sum_backward", false, || {
        let _ = leaf.clone().sum().backward();
        sync();
    });
    // The output gradient of every backward below: a seeded backward hands it to the output
    // as PyTorch's `out.backward(grad)` does; the `_sum` rows start from `out.sum()` instead,
    // whose backward is burn's, not the layer's.
    let seed = Tensor::<B, 3>::random([1, n, d], Distribution::Normal(0.0, 1.0), float);
    let backward = |out: Tensor<Ad<B>, 3>, summed: bool| match summed {
        true => out.sum().backward(),
        false => backward_with(out, seed.clone()),
    };
    let sparse = EmbeddingOptions::new().with_sparse(true);
    let tracked = Embedding::<Ad<B>>::from_pretrained(weight_ad.clone(), false, sparse).unwrap();
    let tracked_weight = tracked.weight.val();
    for (op, summed) in [
        ("forward_backward_sparse", false),
        ("forward_backward_sparse_sum", true),
    ] {
        // As PyTorch's `.grad` after a sparse backward (an uncoalesced COO tensor of the
        // tokens' gradients), the gradient stays in `grads` as it came out of the backward;
        // dropping it is PyTorch's `weight.grad = None`.
        rec.time(op, false, || {
            let out: Tensor<Ad<B>, 3> = tracked.forward(idx.clone());
            let grads = backward(out, summed);
            assert!(tracked_weight.grad(&grads).is_some());
            drop(grads);
            clear_pending_sparse_grads();
            sync();
        });
    }
    // The same, with the gradient read out as coalesced rows (one per unique id).
    rec.time("forward_backward_sparse_rows", false, || {
        let out: Tensor<Ad<B>, 3> = tracked.forward(idx.clone());
        let mut grads = backward(out, false);
        let rows = tracked.sparse_grad_remove(&mut grads).expect("rows");
        assert_eq!(rows.values.dims()[1], d);
        sync();
    });
    drop(tracked_weight);
    drop(tracked);

    // Training steps: forward + backward + an optimizer step. The weight is copied once per op
    // so that updates can work in place, as in a real training loop.
    let fresh = || Tensor::<Ad<B>, 2>::from_inner(weight.clone().add_scalar(0.0));
    let step =
        |model: Embedding<Ad<B>>,
         summed: bool,
         optim: &mut dyn FnMut(Embedding<Ad<B>>, GradientsParams) -> Embedding<Ad<B>>| {
            let out: Tensor<Ad<B>, 3> = model.forward(idx.clone());
            let grads = GradientsParams::from_grads(backward(out, summed), &model);
            let model = optim(model, grads);
            sync();
            model
        };
    let run_steps = |rec: &mut Recorder<'_, _>, steps: &[(&str, EmbeddingOptions, bool, Rule)]| {
        for &(op, options, summed, optim) in steps {
            let mut emb = Some(Embedding::from_pretrained(fresh(), false, options).unwrap());
            let mut optim = optim.optimizer::<B>();
            rec.time(op, !options.sparse, || {
                let model = emb.take().unwrap();
                emb = Some(step(model, summed, &mut optim));
            });
        }
    };
    if extras.sparse_steps {
        run_steps(
            &mut rec,
            &[
                ("step_sparse_sgd", sparse, false, Rule::Sgd),
                ("step_sparse_sgd_sum", sparse, true, Rule::Sgd),
                ("step_sparse_adam", sparse, false, Rule::Adam),
                ("step_sparse_adam_sum", sparse, true, Rule::Adam),
                ("step_rowwise_adagrad", sparse, false, Rule::RowwiseAdagrad),
            ],
        );
    }
    if extras.sparse_steps {
        // The optimizer fused into the backward: forward + backward is the whole step.
        let fused_ops = [
            ("step_fused_sgd", SparseSgdConfig::new().rule()),
            ("step_fused_lazy_adam", LazyAdamConfig::new().rule()),
            (
                "step_fused_rowwise_adagrad",
                RowwiseAdagradConfig::new().rule(),
            ),
        ];
        for (op, rule) in fused_ops {
            let emb = Embedding::from_pretrained(fresh(), false, sparse)
                .unwrap()
                .fused(rule, 0.01);
            rec.time(op, false, || {
                let out: Tensor<Ad<B>, 3> = emb.forward(idx.clone());
                let _ = backward_with(out, seed.clone());
                sync();
            });
            let state = emb.state();
            let floats: usize = [state.first, state.second]
                .iter()
                .flatten()
                .map(|t| t.shape().num_elements())
                .sum();
            eprintln!(
                "bench: {op} on {backend}: optimizer state of the [{v}, {d}] table: {:.1} MB",
                (floats * size_of::<f32>()) as f64 / 1e6
            );
        }
        let mut emb = Embedding::from_pretrained(fresh(), false, sparse).unwrap();
        let mut optim = Rule::Adam.optimizer::<B>();
        rec.time("step_sparse_adam_on_clone", false, || {
            // burn-train's `self.model = self.model().optimize(..)`.
            emb = step(emb.clone(), false, &mut optim);
        });
    }

    // Bags: `tokens` bags of BAG_SIZE ids (1-D ids + offsets) + sum().backward(), row-sparse.
    let n = w.tokens * BAG_SIZE;
    let bag_ids = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(w.ids(n), [n]), &device);
    let offsets: Vec<i64> = (0..w.tokens).map(|b| (b * BAG_SIZE) as i64).collect();
    let offsets = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(offsets, [w.tokens]), &device);
    for (op, mode) in [("bag_sum", BagMode::Sum), ("bag_mean", BagMode::Mean)] {
        let bag =
            EmbeddingBag::<Ad<B>>::from_pretrained(weight_ad.clone(), false, sparse, mode, false)
                .unwrap();
        rec.time(op, false, || {
            let out = bag.forward(bag_ids.clone(), offsets.clone(), None);
            let mut grads = out.sum().backward();
            assert!(bag.sparse_grad_remove(&mut grads).is_some());
            sync();
        });
    }

    // The dense ops last, so that the ops on the touched rows are timed before the dense ops'
    // [V, D] allocations churn the process's memory (no sparse training loop makes them).
    for (op, summed) in [("forward_backward", false), ("forward_backward_sum", true)] {
        rec.time(op, true, || {
            let out: Tensor<Ad<B>, 3> = dense_tracked.forward(idx.clone());
            let grads = backward(out, summed);
            assert!(dense_tracked.weight.grad(&grads).is_some());
            sync();
        });
    }
    drop(dense_tracked);
    if extras.nondeterministic {
        let options = EmbeddingOptions::new().with_deterministic(false);
        let tracked =
            Embedding::<Ad<B>>::from_pretrained(weight_ad.clone(), false, options).unwrap();
        rec.time("forward_backward_nondeterministic", true, || {
            let out: Tensor<Ad<B>, 3> = tracked.forward(idx.clone());
            let grads = backward(out, false);
            assert!(tracked.weight.grad(&grads).is_some());
            sync();
        });
    }
    if extras.dense_steps {
        let dense = EmbeddingOptions::new();
        run_steps(
            &mut rec,
            &[
                ("step_sgd", dense, false, Rule::Sgd),
                ("step_adam", dense, false, Rule::Adam),
            ],
        );
    }
}

/// burn::nn::Embedding with burn's own optimizers (it has dense gradients only).
fn burn_nn(w: &Workload, emit: &mut impl FnMut(Record)) {
    type B = NdArray;
    type Ad = Autodiff<NdArray>;
    let device = Default::default();
    let (v, d, n) = (w.vocab, w.dim, w.tokens);
    let mut rec = Recorder {
        w,
        implementation: "burn-nn",
        backend: "ndarray",
        emit,
    };
    reset_peak_rss();
    let weight = Tensor::<B, 2>::random([v, d], Distribution::Normal(0.0, 1.0), &device);
    let ids = TensorData::new(w.ids(n), [1, n]);
    let idx = Tensor::<B, 2, Int>::from_data(ids.clone(), &device);
    let inference = burn::nn::Embedding {
        weight: Param::from_tensor(weight.clone()),
    };
    rec.time("forward", false, || {
        let _ = inference.forward(idx.clone());
    });
    drop(inference);
    let idx = Tensor::<Ad, 2, Int>::from_data(ids, &device);
    let tracked = burn::nn::Embedding {
        weight: Param::from_tensor(Tensor::<Ad, 2>::from_inner(weight.clone())),
    };
    rec.time("forward_autodiff", false, || {
        let _ = tracked.forward(idx.clone());
    });
    let seed = Tensor::<B, 3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    rec.time("forward_backward", true, || {
        let grads = backward_with(tracked.forward(idx.clone()), seed.clone());
        assert!(tracked.weight.grad(&grads).is_some());
    });
    rec.time("forward_backward_sum", true, || {
        let grads = tracked.forward(idx.clone()).sum().backward();
        assert!(tracked.weight.grad(&grads).is_some());
    });
    drop(tracked);
    let fresh = || burn::nn::Embedding {
        weight: Param::from_tensor(Tensor::<Ad, 2>::from_inner(weight.clone().add_scalar(0.0))),
    };
    let mut nn = Some(fresh());
    let mut optim = SgdConfig::new().init();
    rec.time("step_sgd", true, || {
        let model = nn.take().unwrap();
        let grads = backward_with(model.forward(idx.clone()), seed.clone());
        let grads = GradientsParams::from_grads(grads, &model);
        nn = Some(optim.step(0.01, model, grads));
    });
    let mut nn = Some(fresh());
    let mut optim = AdamConfig::new().init();
    rec.time("step_adam", true, || {
        let model = nn.take().unwrap();
        let grads = backward_with(model.forward(idx.clone()), seed.clone());
        let grads = GradientsParams::from_grads(grads, &model);
        nn = Some(optim.step(0.01, model, grads));
    });
}
