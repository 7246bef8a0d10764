//! Paths and environment shared by the commands.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// PyTorch version pinned by burn-tch 0.21 (tch 0.22).
pub const TORCH_VERSION: &str = "2.9.0";

/// gensim, the word2vec files' reference client (its 4.4 line reads numpy 2).
pub const GENSIM_VERSION: &str = "4.4.0";

/// Where things live.
pub struct Env {
    /// The workspace root.
    pub root: PathBuf,
    /// `$XDG_CACHE_HOME/burn-embedding` or `~/.cache/burn-embedding`.
    pub cache: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        // `cargo xtask` (`cargo run -p xtask`) names the manifest at run time: clones that
        // share the cached target dir share one xtask binary, whose compile-time path may be
        // another clone's.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let root = manifest
            .parent()
            .expect("xtask lives in the workspace")
            .to_path_buf();
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| root.join("target/cache"))
            .join("burn-embedding");
        Self { root, cache }
    }

    /// The torch venv, keyed by version.
    pub fn venv(&self) -> PathBuf {
        self.cache.join(format!("torch-{TORCH_VERSION}"))
    }

    pub fn python(&self) -> PathBuf {
        self.venv().join("bin/python")
    }

    /// `<venv>/lib/pythonX.Y/site-packages/torch/lib`, where libtorch's shared libraries are.
    pub fn torch_lib(&self) -> Option<PathBuf> {
        let lib = self.venv().join("lib");
        std::fs::read_dir(&lib)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/torch/lib"))
            .find(|p| p.is_dir())
    }

    /// A cargo command in the workspace, with the shared target dir and, for tch, the
    /// variables that make torch-sys build and link against the venv's libtorch.
    pub fn cargo(&self, tch: bool) -> Command {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&self.root);
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            cmd.env("CARGO_TARGET_DIR", self.cache.join("target"));
        }
        // Autotuning every kernel is slow on lavapipe and buys nothing in tests.
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
            cmd.env("CUBECL_AUTOTUNE_LEVEL", "minimal");
        }
        // The venv's python, for the tests that run gensim on the files the crate writes.
        if self.python().exists() {
            cmd.env("BURN_EMBEDDING_PYTHON", self.python());
        }
        if tch {
            let bin = self.venv().join("bin");
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("LIBTORCH_USE_PYTORCH", "1")
                .env("VIRTUAL_ENV", self.venv())
                .env("PATH", format!("{}:{path}", bin.display()));
            if let Some(lib) = self.torch_lib() {
                let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
                cmd.env("LD_LIBRARY_PATH", format!("{}:{ld}", lib.display()));
            }
        }
        cmd
    }
}

/// Runs `cmd`, echoing its stdout as it comes, and returns that stdout; fails on a non-zero exit.
pub fn run_tee(mut cmd: Command) -> Result<String, String> {
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut captured = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| format!("reading output: {e}"))?;
        println!("{line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(captured)
    } else {
        Err(format!("{:?} failed: {status}", cmd.get_program()))
    }
}
