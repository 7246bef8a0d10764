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
    pub median_ms: f64,
    pub min_ms: f64,
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
            "median_ms": round(self.median_ms), "min_ms": round(self.min_ms),
            "threads": self.threads, "peak_rss_mb": self.peak_rss_mb.map(f64::round),
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

/// The series of the table, in column order.
pub const SERIES: [&str; 6] = [
    "ours",
    "burn-nn",
    "torch",
    "tch-rs",
    "ours (tch)",
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

/// Medians by case (op order, V, D, tokens) and series.
pub fn by_case(records: &[Record]) -> BTreeMap<Case, BTreeMap<String, f64>> {
    let mut cases: BTreeMap<Case, BTreeMap<String, f64>> = BTreeMap::new();
    for r in records {
        let order = OPS.iter().position(|&o| o == r.op).unwrap_or(OPS.len());
        let key = (order, r.op.clone(), r.vocab, r.dim, r.tokens);
        cases
            .entry(key)
            .or_default()
            .insert(r.series(), r.median_ms);
    }
    cases
}

/// A markdown table of medians (ms) with ratios to PyTorch and of burn::nn to ours.
pub fn table(records: &[Record]) -> String {
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
    for ((_, op, vocab, dim, tokens), m) in by_case(records) {
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
