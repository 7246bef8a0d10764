//! `cargo xtask bench`: our layer beside `burn::nn::Embedding`, PyTorch and tch-rs, in one run.
//!
//! Ops and the record format: `bench/README.md` (and [`cases`]). Every (V, D, tokens)
//! of the matrix runs ours and burn::nn on NdArray / Autodiff<NdArray>, and with the `tch`
//! feature ours on LibTorch and tch's own `Tensor::embedding`, with the `wgpu` feature ours on
//! wgpu (its dense backward also with `deterministic` off); PyTorch runs in a subprocess
//! with the same thread count. Prints the JSON records and markdown tables of p50s and p90s, and
//! writes both plus two plots (time against tokens and against V, log scale) under
//! `--out` (default `target/bench`). `--quick`: the D = 128, 4096-token subset, 10 steps.

mod cases;
mod plot;
mod record;
#[cfg(feature = "tch")]
mod tch_rs;
mod torch;

use std::path::PathBuf;

use clap::Parser;

use record::Record;

/// What to measure.
pub struct Args {
    pub vocabs: Vec<usize>,
    pub dims: Vec<usize>,
    pub tokens: Vec<usize>,
    pub steps: usize,
    pub threads: usize,
    pub python: Option<String>,
    pub torch_script: Option<String>,
    pub out: PathBuf,
}

/// The ops `--ops` selected (all when empty).
static OPS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Whether `op` is measured in this run.
pub fn selected(op: &str) -> bool {
    OPS.get()
        .is_none_or(|ops| ops.is_empty() || ops.iter().any(|o| o == op))
}

/// One point of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub vocab: usize,
    pub dim: usize,
    pub tokens: usize,
    pub steps: usize,
    pub threads: usize,
}

impl Workload {
    /// Token ids `i * 2654435761 mod V`: a fixed spread over the whole vocabulary.
    pub fn ids(&self, n: usize) -> Vec<i64> {
        (0..n as u64)
            .map(|i| (i * 2654435761 % self.vocab as u64) as i64)
            .collect()
    }

    /// Timed repetitions of an op that touches all `V x D` values (dense gradients and
    /// optimizers): fewer where one rep takes seconds.
    pub fn dense_steps(&self) -> usize {
        match self.vocab * self.dim {
            n if n >= 100_000_000 => (self.steps / 10).max(2),
            n if n >= 10_000_000 => (self.steps / 4).max(3),
            _ => self.steps,
        }
    }
}

/// Bags of the bag ops: `tokens` bags of this many ids.
pub const BAG_SIZE: usize = 20;

/// Our layer beside `burn::nn::Embedding`, PyTorch and tch-rs, in one run (see `bench/README.md`).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask bench")]
struct Cli {
    /// Vocabulary sizes V.
    #[arg(long = "vocab", value_delimiter = ',', default_values_t = [32_000usize, 1_000_000])]
    vocabs: Vec<usize>,
    /// Embedding dimensions D.
    #[arg(long = "dim", value_delimiter = ',', default_values_t = [64usize, 128, 512])]
    dims: Vec<usize>,
    /// Tokens per step (bag ops: that many bags of 20 ids).
    #[arg(long, value_delimiter = ',', default_values_t = [512usize, 4096, 32768])]
    tokens: Vec<usize>,
    /// Timed repetitions of each op.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// CPU threads of every implementation.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The Python that runs PyTorch's script (PyTorch's rows are left out without it).
    #[arg(long)]
    python: Option<String>,
    /// PyTorch's timing script.
    #[arg(long)]
    torch_script: Option<String>,
    /// Where the records, the table and the plots go [default: target/bench].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The D = 128, 4096-token subset, 10 steps.
    #[arg(long)]
    quick: bool,
    /// Only these ops (ours and burn::nn; PyTorch runs its own set) [default: all].
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_args() -> Args {
    // A bad value is one line naming it (`--help` prints in full).
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        if err.use_stderr() {
            eprintln!(
                "bench: {}",
                err.to_string().lines().next().unwrap_or_default()
            );
            std::process::exit(2);
        }
        err.exit()
    });
    OPS.set(cli.ops).expect("set once");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = Args {
        vocabs: cli.vocabs,
        dims: cli.dims,
        tokens: cli.tokens,
        steps: cli.steps,
        threads: cli.threads,
        python: cli.python,
        torch_script: cli.torch_script,
        out: cli.out.unwrap_or_else(|| root.join("target/bench")),
    };
    if cli.quick {
        args.dims = vec![128];
        args.tokens = vec![4096];
        args.steps = 10;
    }
    args
}

fn main() {
    let args = parse_args();
    let (cpu, allocator) = record::machine();
    let machine = format!("{cpu}, {} threads, allocator: {allocator}", args.threads);
    eprintln!(
        "bench: {machine}; V {:?}, D {:?}, tokens {:?}, {} steps",
        args.vocabs, args.dims, args.tokens, args.steps
    );
    cases::set_threads(args.threads);
    let mut records: Vec<Record> = Vec::new();
    let mut emit = |r: Record| {
        println!("{}", r.json());
        records.push(r);
    };
    for &vocab in &args.vocabs {
        for &dim in &args.dims {
            for &tokens in &args.tokens {
                let w = Workload {
                    vocab,
                    dim,
                    tokens,
                    steps: args.steps,
                    threads: args.threads,
                };
                cases::ndarray(&w, &mut emit);
                #[cfg(feature = "tch")]
                {
                    cases::libtorch(&w, &mut emit);
                    tch_rs::run(&w, &mut emit);
                }
                #[cfg(feature = "wgpu")]
                cases::wgpu(&w, &mut emit);
                torch::run(&args, &w, &mut emit);
            }
        }
    }
    let table = record::tables(&records);
    println!("\n{table}");
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let jsonl: String = records.iter().map(|r| r.json() + "\n").collect();
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("bench: wrote {}", path.display());
    };
    write("records.jsonl", &jsonl);
    write("table.md", &format!("Machine: {machine}\n\n{table}"));
    for (name, svg) in plot::plots(&records, &machine) {
        write(&name, &svg);
    }
}
