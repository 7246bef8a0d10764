//! `cargo xtask`: set-up, tests on every backend, golden cases and benchmarks.
//!
//! ```text
//! cargo xtask setup                                 install lavapipe (apt) and the torch venv
//! cargo xtask test [--backend ndarray|wgpu|tch|all] run every test on those backends (default all),
//!                                                   then `miri` where nightly Miri is installed
//! cargo xtask golden                                regenerate tests/golden with PyTorch
//! cargo xtask miri                                  the unsafe code's unit tests under Miri
//! cargo xtask bench [--quick] [--vocab V,..] [--dim D,..] [--tokens N,..]
//!                                                   benchmarks beside PyTorch, tch-rs, burn::nn
//! ```
//!
//! The torch venv and the cargo target dir live under `$XDG_CACHE_HOME/burn-embedding` (by
//! default `~/.cache/burn-embedding`), keyed by version, so a fresh clone on the same machine
//! reuses them and a fresh machine recreates them.

mod env;
mod setup;

use std::process::{Command, ExitCode};

use env::Env;

const BACKENDS: [&str; 3] = ["ndarray", "wgpu", "tch"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::all(&Env::new()),
        Some("test") => test(&args[1..]),
        Some("golden") => golden(),
        Some("bench") => bench(&args[1..]),
        Some("miri") => miri(),
        _ => Err(format!(
            "usage: cargo xtask <setup | test [--backend ndarray|wgpu|tch|all] | golden | bench [--quick] | miri>\n(got {args:?})"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_backends(args: &[String]) -> Result<Vec<&'static str>, String> {
    let mut chosen = "all".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" => chosen = it.next().ok_or("--backend needs a value")?.clone(),
            other if other.starts_with("--backend=") => chosen = other[10..].to_string(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if chosen == "all" {
        return Ok(BACKENDS.to_vec());
    }
    chosen
        .split(',')
        .map(|b| {
            BACKENDS
                .into_iter()
                .find(|k| *k == b)
                .ok_or_else(|| format!("unknown backend {b:?}: expected ndarray, wgpu, tch or all"))
        })
        .collect()
}

/// Runs the whole suite with the requested backends compiled in, then checks that each
/// backend printed its `golden-<backend>: N passed, 0 failed` line.
fn test(args: &[String]) -> Result<(), String> {
    let backends = parse_backends(args)?;
    let env = Env::new();
    if backends.contains(&"wgpu") {
        setup::lavapipe()?;
    }
    if backends.contains(&"tch") {
        setup::torch_venv(&env)?;
    }
    // burn-embedding's doc examples run on NdArray (its default feature), whatever the backend.
    let features: Vec<String> = std::iter::once("burn-embedding/ndarray".to_string())
        .chain(
            backends
                .iter()
                .map(|b| format!("burn-embedding-conformance/{b},burn-embedding/{b},word2vec/{b}")),
        )
        .collect();
    let mut cmd = env.cargo(backends.contains(&"tch"));
    cmd.args(["test", "--workspace", "--no-default-features", "--features"])
        .arg(features.join(","))
        .args(["--", "--nocapture", "--test-threads=1"]);
    let output = env::run_tee(cmd)?;
    let mut missing = Vec::new();
    for backend in &backends {
        // `golden-<backend>: ...` for embeddings, `golden-<backend>-<capability>: ...` for others.
        let lines: Vec<&str> = output
            .lines()
            .filter_map(|l| {
                let at = l.find(&format!("golden-{backend}"))?;
                let line = &l[at..];
                let label = &line[..line.find(':')?];
                (label == format!("golden-{backend}")
                    || label.starts_with(&format!("golden-{backend}-")))
                .then_some(line)
            })
            .collect();
        if !lines
            .iter()
            .any(|l| l.starts_with(&format!("golden-{backend}:")))
        {
            missing.push(format!(
                "{backend}: no golden line was printed (the backend did not run)"
            ));
        }
        for line in lines {
            if !line.ends_with(" 0 failed") || line.contains(": 0 passed") {
                missing.push(format!("{backend}: {line}"));
            }
        }
    }
    if missing.is_empty() {
        println!(
            "xtask test: every backend ran and passed: {}",
            backends.join(", ")
        );
        // The unsafe code under Miri where the toolchain is there (it installs with rustup,
        // which a machine without network cannot run).
        match has_miri() {
            true => run_miri(&env),
            false => {
                println!("xtask test: Miri not run: no `cargo +nightly miri` on this machine");
                Ok(())
            }
        }
    } else {
        Err(format!(
            "backends that did not pass:\n  {}",
            missing.join("\n  ")
        ))
    }
}

/// The unit tests that reach every `unsafe` block of the CPU fast paths on small slices.
const MIRI_TESTS: [&str; 3] = [
    "backend::cpu::tests",
    "backend::ndarray::tests::unsafe_paths_on_small_slices",
    "id_chains::tests",
];

/// Whether `cargo +nightly miri` runs here.
fn has_miri() -> bool {
    Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// [`MIRI_TESTS`] under Miri (nightly with its `miri` component: `rustup +nightly component add
/// miri`), in a target dir of their own.
fn miri() -> Result<(), String> {
    if !has_miri() {
        return Err(
            "cargo +nightly miri is not installed: rustup +nightly component add miri".into(),
        );
    }
    run_miri(&Env::new())
}

/// [`MIRI_TESTS`] under Miri, which the caller found installed.
fn run_miri(env: &Env) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&env.root)
        .env("CARGO_TARGET_DIR", env.cache.join("target-miri"))
        .args(["+nightly", "miri", "test", "-p", "burn-embedding"])
        .args([
            "--no-default-features",
            "--features",
            "ndarray",
            "--lib",
            "--",
        ])
        .args(MIRI_TESTS);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo miri: {e}"))?;
    status
        .success()
        .then(|| println!("xtask miri: the unsafe code's tests ran clean under Miri"))
        .ok_or_else(|| format!("cargo miri test failed: {status}"))
}

fn golden() -> Result<(), String> {
    let env = Env::new();
    setup::torch_venv(&env)?;
    let status = Command::new(env.python())
        .arg(env.root.join("xtask/golden.py"))
        .arg(env.root.join("tests/golden"))
        .status()
        .map_err(|e| format!("cannot run the generator: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("golden.py failed: {status}"))
}

fn bench(args: &[String]) -> Result<(), String> {
    let env = Env::new();
    setup::torch_venv(&env)?;
    setup::lavapipe()?;
    let mut cmd = env.cargo(true);
    cmd.args(["bench", "-p", "burn-embedding", "--features", "tch,wgpu"])
        .args(["--bench", "embedding", "--"])
        .arg("--python")
        .arg(env.python())
        .arg("--torch-script")
        .arg(env.root.join("bench/torch_embedding_bench.py"))
        .args(args);
    env::run_tee(cmd).map(|_| ())
}
