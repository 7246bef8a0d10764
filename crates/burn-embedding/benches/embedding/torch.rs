//! PyTorch's figures from `bench/torch_embedding_bench.py`, run as a subprocess with the
//! same thread count and workload.

use std::process::Command;

use crate::record::{Record, Timing};
use crate::{Args, BAG_SIZE, Workload};

const OPS: &str = "forward,forward_backward,forward_backward_sum,forward_backward_sparse,\
                   forward_backward_sparse_sum,step_sgd,step_adam,step_sparse_sgd,\
                   step_sparse_sgd_sum,step_sparse_adam,step_sparse_adam_sum,step_sparse_adagrad,\
                   bag_sum,bag_mean";

/// The ops of [`OPS`] that `--ops` selected.
fn ops() -> String {
    OPS.split(',')
        .filter(|op| crate::selected(op))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(args: &Args, w: &Workload, emit: &mut impl FnMut(Record)) {
    let (Some(python), Some(script)) = (&args.python, &args.torch_script) else {
        eprintln!("bench: no --python/--torch-script: PyTorch is not measured");
        return;
    };
    let output = Command::new(python)
        .arg(script)
        .args(["--vocab", &w.vocab.to_string(), "--dim", &w.dim.to_string()])
        .args(["--tokens", &w.tokens.to_string()])
        .args(["--threads", &w.threads.to_string()])
        .args(["--steps", &w.steps.to_string(), "--ops", &ops()])
        .args(["--bags", &w.tokens.to_string()])
        .args(["--bag-size", &BAG_SIZE.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "the PyTorch benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let number = |key: &str| v[key].as_f64().unwrap_or(f64::NAN);
        emit(Record {
            implementation: "torch".into(),
            backend: "torch-cpu".into(),
            op: v["op"].as_str().unwrap_or("?").into(),
            vocab: w.vocab,
            dim: w.dim,
            tokens: number("tokens") as usize,
            bags: v["bags"]
                .as_u64()
                .map(|b| (b as usize, number("bag_size") as usize)),
            timing: Timing {
                p10_ms: number("p10_ms"),
                median_ms: number("median_ms"),
                p90_ms: number("p90_ms"),
                min_ms: number("min_ms"),
            },
            threads: w.threads,
            peak_rss_mb: None,
        });
    }
}
