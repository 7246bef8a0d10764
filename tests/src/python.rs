//! Running the venv's Python (gensim, PyTorch) on files the crate wrote.

use std::ffi::OsStr;

/// Runs `script` with `args` on the venv's python (`BURN_EMBEDDING_PYTHON`, which `cargo xtask
/// test` sets) and parses what it prints as JSON. `None`, saying so, when the variable is unset
/// (a plain `cargo test`); a panic with Python's error when the script fails.
pub fn run_json<I, S>(what: &str, script: &str, args: I) -> Option<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let Some(python) = std::env::var_os("BURN_EMBEDDING_PYTHON") else {
        println!("{what}: not run (BURN_EMBEDDING_PYTHON is unset; `cargo xtask test` sets it)");
        return None;
    };
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .expect("the venv's python runs");
    assert!(
        output.status.success(),
        "{what}: python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("python printed JSON"))
}
