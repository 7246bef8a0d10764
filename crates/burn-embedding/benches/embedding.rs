//! `cargo xtask bench`: our layer beside `burn::nn::Embedding` and PyTorch, in one run.
//!
//! Prints one JSON record per case (format: `shared/bench/README.md`) and a markdown table of
//! medians with ratios to PyTorch and to burn::nn. Ops: `forward` (no autodiff),
//! `forward_autodiff` (the forward on an autodiff backend, no backward), `forward_backward`
//! (dense gradient), `forward_backward_sparse` (row-sparse gradient), on
//! NdArray / Autodiff<NdArray>, D = 128, 4096 tokens, V in --vocab (default 32000,1000000).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn_embedding::optim::{LazyAdamConfig, SparseSgdConfig};
use burn_embedding::{BagMode, Embedding, EmbeddingBag, EmbeddingOptions};

type B = NdArray;

/// The bag workload: 4096 bags of 20 ids.
const BAGS: usize = 4096;
const BAG_SIZE: usize = 20;
type Ad = Autodiff<NdArray>;

struct Args {
    vocabs: Vec<usize>,
    dim: usize,
    tokens: usize,
    steps: usize,
    threads: usize,
    python: Option<String>,
    torch_script: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        vocabs: vec![32_000, 256_000, 1_000_000],
        dim: 128,
        tokens: 4096,
        steps: 20,
        threads: 2,
        python: None,
        torch_script: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--vocab" => args.vocabs = value().split(',').map(|v| v.parse().expect("V")).collect(),
            "--dim" => args.dim = value().parse().expect("D"),
            "--tokens" => args.tokens = value().parse().expect("tokens"),
            "--steps" => args.steps = value().parse().expect("steps"),
            "--threads" => args.threads = value().parse().expect("threads"),
            "--python" => args.python = Some(value()),
            "--torch-script" => args.torch_script = Some(value()),
            "--quick" => args.steps = 10,
            "--bench" => {} // passed by cargo bench
            other => panic!("unknown argument {other:?}"),
        }
    }
    args
}

/// Median and minimum in ms over `steps` runs after 3 warm-up runs.
fn time<F: FnMut()>(steps: usize, mut f: F) -> (f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut xs: Vec<f64> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0])
}

fn token_ids(vocab: usize, tokens: usize) -> Vec<i64> {
    (0..tokens as u64)
        .map(|i| (i * 2654435761 % vocab as u64) as i64)
        .collect()
}

#[derive(Clone)]
struct Record {
    implementation: String,
    backend: String,
    op: String,
    vocab: usize,
    median_ms: f64,
    min_ms: f64,
    peak_rss_mb: Option<f64>,
    /// Bags and bag size, for the bag ops.
    bags: Option<(usize, usize)>,
}

/// Resets the process's peak resident set (Linux: `clear_refs` 5), so that the peak read after
/// a case belongs to that case.
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

fn emit(records: &mut Vec<Record>, args: &Args, r: Record) {
    println!(
        "{}",
        serde_json::json!({
            "impl": r.implementation, "backend": r.backend, "op": r.op, "vocab": r.vocab,
            "dim": args.dim, "median_ms": (r.median_ms * 1e3).round() / 1e3,
            "tokens": r.bags.map_or(args.tokens, |(b, s)| b * s),
            "bags": r.bags.map(|b| b.0), "bag_size": r.bags.map(|b| b.1),
            "min_ms": (r.min_ms * 1e3).round() / 1e3, "threads": args.threads,
            "peak_rss_mb": r.peak_rss_mb.map(|m| m.round()),
        })
    );
    records.push(r);
}

fn bench_vocab(args: &Args, vocab: usize, records: &mut Vec<Record>) {
    let device = Default::default();
    let (d, n, steps) = (args.dim, args.tokens, args.steps);
    let ids = TensorData::new(token_ids(vocab, n), [1, n]);
    let weight = Tensor::<B, 2>::random([vocab, d], Distribution::Normal(0.0, 1.0), &device);
    let mut rec =
        |implementation: &str, backend: &str, op: &str, (median_ms, min_ms): (f64, f64)| {
            emit(
                records,
                args,
                Record {
                    implementation: implementation.into(),
                    backend: backend.into(),
                    op: op.into(),
                    vocab,
                    median_ms,
                    min_ms,
                    peak_rss_mb: peak_rss_mb(),
                    bags: op.starts_with("bag_").then_some((BAGS, BAG_SIZE)),
                },
            );
            reset_peak_rss();
        };
    reset_peak_rss();

    // forward: inference, no autodiff graph.
    let ours =
        Embedding::<B>::from_pretrained(weight.clone(), true, EmbeddingOptions::new()).unwrap();
    let idx = Tensor::<B, 2, Int>::from_data(ids.clone(), &device);
    rec(
        "ours",
        "ndarray",
        "forward",
        time(steps, || {
            let _: Tensor<B, 3> = ours.forward(idx.clone());
        }),
    );
    let theirs = burn::nn::Embedding {
        weight: Param::from_tensor(weight.clone()),
    };
    rec(
        "burn-nn",
        "ndarray",
        "forward",
        time(steps, || {
            let _ = theirs.forward(idx.clone());
        }),
    );

    // forward_backward (dense) and forward_backward_sparse on Autodiff<NdArray>.
    let idx = Tensor::<Ad, 2, Int>::from_data(ids.clone(), &device);
    let weight_ad = Tensor::<Ad, 2>::from_inner(weight.clone());
    // The autodiff forward alone (a graph is recorded, no backward): burn::nn's keeps the
    // [V, D] weight as backward state, ours the indices only.
    let ours = Embedding::<Ad>::from_pretrained(weight_ad.clone(), false, EmbeddingOptions::new())
        .unwrap();
    rec(
        "ours",
        "ndarray",
        "forward_autodiff",
        time(steps, || {
            let _: Tensor<Ad, 3> = ours.forward(idx.clone());
        }),
    );
    let theirs = burn::nn::Embedding {
        weight: Param::from_tensor(weight_ad.clone()),
    };
    rec(
        "burn-nn",
        "ndarray",
        "forward_autodiff",
        time(steps, || {
            let _ = theirs.forward(idx.clone());
        }),
    );

    for (op, sparse) in [
        ("forward_backward", false),
        ("forward_backward_sparse", true),
    ] {
        let ours = Embedding::<Ad>::from_pretrained(
            weight_ad.clone(),
            false,
            EmbeddingOptions::new().with_sparse(sparse),
        )
        .unwrap();
        rec(
            "ours",
            "ndarray",
            op,
            time(steps, || {
                let out: Tensor<Ad, 3> = ours.forward(idx.clone());
                let mut grads = out.sum().backward();
                if sparse {
                    let rows = ours.sparse_grad_remove(&mut grads).expect("rows");
                    assert_eq!(rows.values.dims()[1], d);
                } else {
                    assert!(ours.weight.grad(&grads).is_some());
                }
            }),
        );
    }
    rec(
        "burn-nn",
        "ndarray",
        "forward_backward",
        time(steps, || {
            let grads = theirs.forward(idx.clone()).sum().backward();
            assert!(theirs.weight.grad(&grads).is_some());
        }),
    );
    drop(theirs);

    // Training steps: zero grad + forward + sum().backward() + an optimizer step. The weight is
    // copied once so that the updates can work in place, as in a real training loop.
    let fresh = || Tensor::<Ad, 2>::from_inner(weight.clone().add_scalar(0.0));
    let sparse = EmbeddingOptions::new().with_sparse(true);
    let mut emb = Some(Embedding::<Ad>::from_pretrained(fresh(), false, sparse).unwrap());
    let mut optim = SparseSgdConfig::new().init();
    rec(
        "ours",
        "ndarray",
        "step_sparse_sgd",
        time(steps, || {
            let model = emb.take().unwrap();
            let out: Tensor<Ad, 3> = model.forward(idx.clone());
            let grads = GradientsParams::from_grads(out.sum().backward(), &model);
            emb = Some(optim.step(0.01, model, grads));
        }),
    );
    let mut emb = Some(Embedding::<Ad>::from_pretrained(fresh(), false, sparse).unwrap());
    let mut optim = LazyAdamConfig::new().init();
    rec(
        "ours",
        "ndarray",
        "step_sparse_adam",
        time(steps, || {
            let model = emb.take().unwrap();
            let out: Tensor<Ad, 3> = model.forward(idx.clone());
            let grads = GradientsParams::from_grads(out.sum().backward(), &model);
            emb = Some(optim.step(0.01, model, grads));
        }),
    );
    drop(emb);
    let mut nn = Some(burn::nn::Embedding {
        weight: Param::from_tensor(fresh()),
    });
    let mut optim = SgdConfig::new().init();
    rec(
        "burn-nn",
        "ndarray",
        "step_sgd",
        time(steps, || {
            let model = nn.take().unwrap();
            let grads =
                GradientsParams::from_grads(model.forward(idx.clone()).sum().backward(), &model);
            nn = Some(optim.step(0.01, model, grads));
        }),
    );
    let mut nn = Some(burn::nn::Embedding {
        weight: Param::from_tensor(fresh()),
    });
    let mut optim = AdamConfig::new().init();
    rec(
        "burn-nn",
        "ndarray",
        "step_adam",
        time(steps, || {
            let model = nn.take().unwrap();
            let grads =
                GradientsParams::from_grads(model.forward(idx.clone()).sum().backward(), &model);
            nn = Some(optim.step(0.01, model, grads));
        }),
    );

    drop(nn);
    drop(optim);
    // Bags: forward (1-D ids + offsets) + sum().backward() with a row-sparse gradient.
    let n = BAGS * BAG_SIZE;
    let bag_ids =
        Tensor::<Ad, 1, Int>::from_data(TensorData::new(token_ids(vocab, n), [n]), &device);
    let offsets: Vec<i64> = (0..BAGS).map(|b| (b * BAG_SIZE) as i64).collect();
    let offsets = Tensor::<Ad, 1, Int>::from_data(TensorData::new(offsets, [BAGS]), &device);
    // The bag forward alone, without autodiff (not a PyTorch op: for where the time goes).
    let inner =
        EmbeddingBag::<B>::from_pretrained(weight.clone(), true, sparse, BagMode::Sum, false)
            .unwrap();
    let (inner_ids, inner_offsets) = (bag_ids.clone().inner(), offsets.clone().inner());
    rec(
        "ours",
        "ndarray",
        "bag_sum_forward",
        time(steps, || {
            let _ = inner.forward(inner_ids.clone(), inner_offsets.clone(), None);
        }),
    );
    for (op, mode) in [("bag_sum", BagMode::Sum), ("bag_mean", BagMode::Mean)] {
        let bag =
            EmbeddingBag::<Ad>::from_pretrained(weight_ad.clone(), false, sparse, mode, false)
                .unwrap();
        rec(
            "ours",
            "ndarray",
            op,
            time(steps, || {
                let out = bag.forward(bag_ids.clone(), offsets.clone(), None);
                let mut grads = out.sum().backward();
                assert!(bag.sparse_grad_remove(&mut grads).is_some());
            }),
        );
    }
}

fn torch_records(args: &Args, vocab: usize, records: &mut Vec<Record>) {
    let (Some(python), Some(script)) = (&args.python, &args.torch_script) else {
        eprintln!("bench: no --python/--torch-script: PyTorch is not measured");
        return;
    };
    let output = Command::new(python)
        .arg(script)
        .args([
            "--vocab",
            &vocab.to_string(),
            "--dim",
            &args.dim.to_string(),
        ])
        .args([
            "--tokens",
            &args.tokens.to_string(),
            "--threads",
            &args.threads.to_string(),
        ])
        .args(["--steps", &args.steps.to_string()])
        .args(["--ops", "forward,forward_backward,forward_backward_sparse,step_sgd,step_adam,step_sparse_sgd,step_sparse_adam,bag_sum,bag_mean"])
        .args(["--bags", &BAGS.to_string(), "--bag-size", &BAG_SIZE.to_string()])
        .output()
        .expect("run the PyTorch benchmark");
    assert!(
        output.status.success(),
        "PyTorch benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON record");
        emit(
            records,
            args,
            Record {
                implementation: "torch".into(),
                backend: "torch-cpu".into(),
                op: v["op"].as_str().unwrap_or("").into(),
                vocab,
                median_ms: v["median_ms"].as_f64().unwrap_or(f64::NAN),
                min_ms: v["min_ms"].as_f64().unwrap_or(f64::NAN),
                peak_rss_mb: None,
                bags: v["bags"]
                    .as_u64()
                    .map(|b| (b as usize, v["bag_size"].as_u64().unwrap_or(0) as usize)),
            },
        );
    }
}

fn table(records: &[Record]) {
    let mut by_case: BTreeMap<(String, usize), BTreeMap<String, f64>> = BTreeMap::new();
    for r in records {
        by_case
            .entry((r.op.clone(), r.vocab))
            .or_default()
            .insert(r.implementation.clone(), r.median_ms);
        // burn-nn has only dense steps: compare our sparse step with its dense one.
        let sparse_op = match r.op.as_str() {
            "step_sgd" => "step_sparse_sgd",
            "step_adam" => "step_sparse_adam",
            _ => continue,
        };
        if r.implementation == "burn-nn" {
            by_case
                .entry((sparse_op.to_string(), r.vocab))
                .or_default()
                .insert("burn-nn (dense)".into(), r.median_ms);
        }
    }
    println!(
        "\n| op | V | ours (ms) | burn-nn (ms) | torch (ms) | ours / torch | burn-nn / ours |"
    );
    println!("|---|---|---|---|---|---|---|");
    let fmt = |x: Option<&f64>| x.map_or("-".into(), |v| format!("{v:.3}"));
    for ((op, vocab), m) in &by_case {
        let ours = m.get("ours");
        let ratio = |a: Option<&f64>, b: Option<&f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "| {op} | {vocab} | {} | {} | {} | {} | {} |",
            fmt(ours),
            fmt(m.get("burn-nn").or(m.get("burn-nn (dense)"))),
            fmt(m.get("torch")),
            ratio(ours, m.get("torch")),
            ratio(m.get("burn-nn").or(m.get("burn-nn (dense)")), ours),
        );
    }
    // The O(V) check: ours at the largest V over ours at the smallest V.
    let vocabs: Vec<usize> = {
        let mut v: Vec<usize> = by_case.keys().map(|k| k.1).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if let (Some(&lo), Some(&hi)) = (vocabs.first(), vocabs.last())
        && lo != hi
    {
        println!();
        for op in [
            "forward",
            "forward_autodiff",
            "forward_backward_sparse",
            "forward_backward",
            "step_sparse_sgd",
            "step_sparse_adam",
            "bag_sum",
            "bag_mean",
        ] {
            let get = |v| {
                by_case
                    .get(&(op.to_string(), v))
                    .and_then(|m| m.get("ours"))
                    .copied()
            };
            if let (Some(a), Some(b)) = (get(lo), get(hi)) {
                println!("ours {op}: V={hi} takes {:.2}x its time at V={lo}", b / a);
            }
        }
    }
}

fn main() {
    let args = parse_args();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l[l.find(':').map_or(0, |i| i + 2)..].to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    eprintln!(
        "bench: {machine}, {} threads, D={}, tokens={}, steps={}",
        args.threads, args.dim, args.tokens, args.steps
    );
    let mut records = Vec::new();
    for &vocab in &args.vocabs {
        bench_vocab(&args, vocab, &mut records);
        torch_records(&args, vocab, &mut records);
    }
    table(&records);
}
