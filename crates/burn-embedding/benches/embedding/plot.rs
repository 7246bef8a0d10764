//! Two SVG plots of the medians, one panel per op, log-log: time against tokens (the largest
//! V) and time against V (4096 tokens), both at D = 128 where measured. Plain SVG text, so
//! that the bench needs no plotting crate.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::record::{OPS, Record, SERIES};

const COLORS: [&str; SERIES.len()] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const PANEL_W: f64 = 280.0;
const PANEL_H: f64 = 200.0;
const COLUMNS: usize = 4;
const MARGIN: f64 = 48.0;

/// `(file name, SVG)` of each plot.
pub fn plots(records: &[Record], machine: &str) -> Vec<(String, String)> {
    let pick = |values: Vec<usize>, preferred: usize| {
        if values.contains(&preferred) {
            preferred
        } else {
            values[values.len() / 2]
        }
    };
    let sorted = |f: fn(&Record) -> usize| {
        let mut v: Vec<usize> = records.iter().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if records.is_empty() {
        return Vec::new();
    }
    let dim = pick(sorted(|r| r.dim), 128);
    let vocab = *sorted(|r| r.vocab).last().expect("records");
    let tokens = pick(sorted(workload_tokens), 4096);
    let by_tokens: Vec<&Record> = records
        .iter()
        .filter(|r| r.dim == dim && r.vocab == vocab)
        .collect();
    let by_vocab: Vec<&Record> = records
        .iter()
        .filter(|r| r.dim == dim && workload_tokens(r) == tokens)
        .collect();
    vec![
        (
            "time_vs_tokens.svg".into(),
            panels(
                &by_tokens,
                workload_tokens,
                "tokens (bags for bag ops)",
                &format!("median ms against tokens, V = {vocab}, D = {dim}; {machine}"),
            ),
        ),
        (
            "time_vs_vocab.svg".into(),
            panels(
                &by_vocab,
                |r| r.vocab,
                "V",
                &format!("median ms against V, {tokens} tokens, D = {dim}; {machine}"),
            ),
        ),
    ]
}

/// Tokens of the workload: for the bag ops, the number of bags.
fn workload_tokens(r: &Record) -> usize {
    r.bags.map_or(r.tokens, |b| b.0)
}

fn panels(records: &[&Record], x_of: fn(&Record) -> usize, x_label: &str, title: &str) -> String {
    let ops: Vec<&str> = OPS
        .iter()
        .copied()
        .filter(|op| records.iter().any(|r| r.op == *op))
        .collect();
    let rows = ops.len().div_ceil(COLUMNS).max(1);
    let (width, height) = (
        COLUMNS as f64 * (PANEL_W + MARGIN) + MARGIN,
        rows as f64 * (PANEL_H + MARGIN * 1.5) + 90.0,
    );
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN}\" y=\"20\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for (i, series) in SERIES.iter().enumerate() {
        let x = MARGIN + i as f64 * 120.0;
        writeln!(
            svg,
            "<rect x=\"{x}\" y=\"32\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"42\">{series}</text>",
            COLORS[i],
            x + 16.0
        )
        .unwrap();
    }
    for (k, op) in ops.iter().enumerate() {
        let x0 = MARGIN + (k % COLUMNS) as f64 * (PANEL_W + MARGIN);
        let y0 = 70.0 + (k / COLUMNS) as f64 * (PANEL_H + MARGIN * 1.5);
        panel(&mut svg, records, op, x_of, x_label, (x0, y0));
    }
    svg + "</svg>\n"
}

fn panel(
    svg: &mut String,
    records: &[&Record],
    op: &str,
    x_of: fn(&Record) -> usize,
    x_label: &str,
    (x0, y0): (f64, f64),
) {
    let points: Vec<&&Record> = records.iter().filter(|r| r.op == op).collect();
    let log = |v: f64| v.max(1e-6).log10();
    let range = |values: Vec<f64>, round: bool| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if round {
            (lo.floor(), hi.ceil())
        } else {
            (lo, hi)
        };
        if hi - lo < 1e-9 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        }
    };
    let (xl, xh) = range(points.iter().map(|r| log(x_of(r) as f64)).collect(), false);
    let (yl, yh) = range(points.iter().map(|r| log(r.median_ms)).collect(), true);
    let pad = 0.06 * (xh - xl);
    let px = |x: f64| x0 + (log(x) - xl + pad) / (xh - xl + 2.0 * pad) * PANEL_W;
    let py = |y: f64| y0 + PANEL_H - (log(y) - yl) / (yh - yl) * PANEL_H;
    writeln!(
        svg,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{PANEL_W}\" height=\"{PANEL_H}\" fill=\"none\" \
         stroke=\"#888\"/>\n<text x=\"{}\" y=\"{}\" font-size=\"12\">{op}</text>",
        x0 + 4.0,
        y0 - 6.0
    )
    .unwrap();
    // Decade ticks on y, one tick per measured x.
    for e in (yl as i32)..=(yh as i32) {
        let y = py(10f64.powi(e));
        writeln!(
            svg,
            "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            x0 + PANEL_W,
            x0 - 4.0,
            y + 4.0,
            fmt_ms(10f64.powi(e))
        )
        .unwrap();
    }
    let mut xs: Vec<usize> = points.iter().map(|r| x_of(r)).collect();
    xs.sort_unstable();
    xs.dedup();
    for &x in &xs {
        writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x as f64),
            y0 + PANEL_H + 14.0,
            fmt_count(x)
        )
        .unwrap();
    }
    writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{x_label}</text>",
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 28.0
    )
    .unwrap();
    for (i, series) in SERIES.iter().enumerate() {
        let line: BTreeMap<usize, f64> = points
            .iter()
            .filter(|r| r.series() == *series)
            .map(|r| (x_of(r), r.median_ms))
            .collect();
        let coords: Vec<String> = line
            .iter()
            .map(|(&x, &y)| format!("{:.1},{:.1}", px(x as f64), py(y)))
            .collect();
        if coords.len() > 1 {
            writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                coords.join(" "),
                COLORS[i]
            )
            .unwrap();
        }
        for (&x, &y) in &line {
            writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                px(x as f64),
                py(y),
                COLORS[i]
            )
            .unwrap();
        }
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn fmt_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}
