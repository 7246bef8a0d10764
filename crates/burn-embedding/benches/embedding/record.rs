//! One measured case, as a JSON record (`bench/README.md`), and the table of them.

use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug)]
pub struct Record {
    pub implementation: String,
    pub backend: String,
    pub op: String,
    pub vocab: usize,
    pub dim: usize,
    /// Indices per step (for bags: bags x bag size).
    pub tokens: usize,
    /// Bags and bag size, for the bag ops.
    pub bags: Option<(usize, usize)>,
    pub timing: Timing,
    pub threads: usize,
    pub peak_rss_mb: Option<f64>,
}

impl Record {
    pub fn json(&self) -> String {
        let round = |x: f64| (x * 1e3).round() / 1e3;
        serde_json::json!({
            "impl": self.implementation, "backend": self.backend, "op": self.op,
            "vocab": self.vocab, "dim": self.dim, "tokens": self.tokens,
            "bags": self.bags.map(|b| b.0), "bag_size": self.bags.map(|b| b.1),
            "p10_ms": round(self.timing.p10_ms), "median_ms": round(self.timing.median_ms),
            "p90_ms": round(self.timing.p90_ms), "min_ms": round(self.timing.min_ms),
            "threads": self.threads, "peak_rss_mb": self.peak_rss_mb.map(f64::round),
            "cpu": machine().0, "allocator": machine().1,
        })
        .to_string()
    }

    /// The column of the table: implementation, and backend where one runs on several.
    pub fn series(&self) -> String {
        match (self.implementation.as_str(), self.backend.as_str()) {
            ("ours", "ndarray") => "ours".into(),
            ("ours", backend) => format!("ours ({backend})"),
            (implementation, _) => implementation.into(),
        }
    }
}

/// Percentiles of one case's timed calls, in ms.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub p10_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

impl Timing {
    /// The percentiles of `ms`, one time per call (at least one).
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64) as usize).min(ms.len() - 1)];
        Self {
            p10_ms: at(0.1),
            median_ms: ms[ms.len() / 2],
            p90_ms: at(0.9),
            min_ms: ms[0],
        }
    }
}

/// The CPU model and the allocator's settings of this run, for every record: a result on one
/// machine or heap state can be 3x off on another.
pub fn machine() -> &'static (String, String) {
    static MACHINE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    MACHINE.get_or_init(|| {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                let line = info
                    .lines()
                    .find(|l| l.starts_with("model name"))?
                    .to_owned();
                Some(line.split_once(':')?.1.trim().to_owned())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.into());
        let allocator = match std::env::var("GLIBC_TUNABLES") {
            Ok(tunables) => format!("system ({tunables})"),
            Err(_) => "system (defaults)".into(),
        };
        (cpu, allocator)
    })
}

/// The series of the table, in column order.
pub const SERIES: [&str; 7] = [
    "ours",
    "burn-nn",
    "torch",
    "tch-rs",
    "ours (tch)",
    "ours (tch-bf16)",
    "ours (wgpu)",
];

/// Ops in table order; the `sparse` steps of burn::nn are its dense ones (it has no other).
pub const OPS: [&str; 14] = [
    "forward",
    "forward_autodiff",
    "sum_backward",
    "forward_backward",
    "forward_backward_nondeterministic",
    "forward_backward_sparse",
    "forward_backward_sparse_rows",
    "step_sgd",
    "step_adam",
    "step_sparse_sgd",
    "step_sparse_adam",
    "step_sparse_adam_on_clone",
    "bag_sum",
    "bag_mean",
];

type Case = (usize, String, usize, usize, usize);

/// One percentile (`pick`) by case (op order, V, D, tokens) and series.
pub fn by_case(
    records: &[Record],
    pick: impl Fn(&Timing) -> f64,
) -> BTreeMap<Case, BTreeMap<String, f64>> {
    let mut cases: BTreeMap<Case, BTreeMap<String, f64>> = BTreeMap::new();
    for r in records {
        let order = OPS.iter().position(|&o| o == r.op).unwrap_or(OPS.len());
        let key = (order, r.op.clone(), r.vocab, r.dim, r.tokens);
        cases
            .entry(key)
            .or_default()
            .insert(r.series(), pick(&r.timing));
    }
    cases
}

/// Markdown tables of medians and of p90s (ms), with ratios to PyTorch and of burn::nn to
/// ours.
pub fn tables(records: &[Record]) -> String {
    format!(
        "p50:\n\n{}\np90:\n\n{}",
        table(records, |t| t.median_ms),
        table(records, |t| t.p90_ms)
    )
}

fn table(records: &[Record], pick: impl Fn(&Timing) -> f64) -> String {
    let mut out = String::from("| op | V | D | tokens |");
    for s in SERIES {
        write!(out, " {s} (ms) |").unwrap();
    }
    out += " ours / torch | burn-nn / ours |\n|---|---|---|---|";
    out += &"---|".repeat(SERIES.len() + 2);
    out.push('\n');
    let fmt = |x: Option<&f64>| x.map_or("-".into(), |v| format!("{v:.3}"));
    let ratio = |a: Option<&f64>, b: Option<&f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    for ((_, op, vocab, dim, tokens), m) in by_case(records, pick) {
        write!(out, "| {op} | {vocab} | {dim} | {tokens} |").unwrap();
        for s in SERIES {
            write!(out, " {} |", fmt(m.get(s))).unwrap();
        }
        let ours = m.get("ours");
        writeln!(
            out,
            " {} | {} |",
            ratio(ours, m.get("torch")),
            ratio(m.get("burn-nn"), ours)
        )
        .unwrap();
    }
    out
}
