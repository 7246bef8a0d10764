//! Two SVG plots of the medians, one panel per op, log-log: time against tokens (the largest
//! V) and time against V (4096 tokens), both at D = 128 where measured. Drawn with plotters'
//! SVG backend (text stays SVG text: no font files are needed).

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::record::{OPS, Record, SERIES};

const COLORS: [RGBColor; SERIES.len()] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x8c, 0x56, 0x4b),
];
const PANEL_W: u32 = 320;
const PANEL_H: u32 = 240;
const COLUMNS: usize = 4;

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
    let size = (COLUMNS as u32 * PANEL_W, rows as u32 * PANEL_H + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).expect("draw");
        let root = root.titled(title, ("sans-serif", 15)).expect("draw");
        for (area, op) in root.split_evenly((rows, COLUMNS)).iter().zip(&ops) {
            panel(area, records, op, x_of, x_label);
        }
        root.present().expect("draw");
    }
    svg
}

/// One op's medians against `x_of`, log-log, a line per implementation.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    records: &[&Record],
    op: &str,
    x_of: fn(&Record) -> usize,
    x_label: &str,
) {
    let points: Vec<&&Record> = records.iter().filter(|r| r.op == op).collect();
    let bounds = |values: Vec<f64>| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo / 1.5, hi * 1.5)
    };
    let (x_lo, x_hi) = bounds(points.iter().map(|r| x_of(r) as f64).collect());
    let (y_lo, y_hi) = bounds(points.iter().map(|r| r.timing.median_ms).collect());
    let mut chart = ChartBuilder::on(area)
        .caption(op, ("sans-serif", 13))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .expect("draw");
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("ms")
        .x_labels(4)
        .y_labels(4)
        .x_label_formatter(&|x| fmt_count(*x as usize))
        .label_style(("sans-serif", 10))
        .draw()
        .expect("draw");
    for (i, series) in SERIES.iter().enumerate() {
        let line: BTreeMap<usize, f64> = points
            .iter()
            .filter(|r| r.series() == *series)
            .map(|r| (x_of(r), r.timing.median_ms))
            .collect();
        if line.is_empty() {
            continue;
        }
        let color = COLORS[i];
        let coords: Vec<(f64, f64)> = line.iter().map(|(&x, &y)| (x as f64, y)).collect();
        chart
            .draw_series(LineSeries::new(coords.clone(), color.stroke_width(2)))
            .expect("draw")
            .label(*series)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
        chart
            .draw_series(
                coords
                    .into_iter()
                    .map(|c| Circle::new(c, 3, color.filled())),
            )
            .expect("draw");
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 9))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .expect("draw");
}

fn fmt_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}
