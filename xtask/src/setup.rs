//! Installing what the wgpu and tch backends need.

use std::path::Path;
use std::process::Command;

use crate::env::{Env, GENSIM_VERSION, TORCH_VERSION};

const LAVAPIPE_ICD: &str = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
const APT_PACKAGES: [&str; 2] = ["mesa-vulkan-drivers", "libvulkan1"];

pub fn all(env: &Env) -> Result<(), String> {
    lavapipe()?;
    torch_venv(env)
}

fn has_vulkan_loader() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

fn has_lavapipe() -> bool {
    has_vulkan_loader()
        && (Path::new(LAVAPIPE_ICD).exists()
            || Path::new("/usr/share/vulkan/icd.d/lvp_icd.aarch64.json").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Mesa's lavapipe: a Vulkan driver on the CPU, so that burn-wgpu runs without a GPU.
pub fn lavapipe() -> Result<(), String> {
    if has_lavapipe() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "the wgpu backend needs a Vulkan driver; without a GPU install Mesa's lavapipe: \
             `sudo apt-get install -y {}`",
            APT_PACKAGES.join(" ")
        ));
    }
    eprintln!("xtask: installing {} with apt-get", APT_PACKAGES.join(" "));
    let update = Command::new("apt-get").args(["update", "-qq"]).status();
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(APT_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match (update, install) {
        (_, Ok(s)) if s.success() && has_lavapipe() => Ok(()),
        (_, result) => Err(format!(
            "apt-get install {} failed ({result:?}); the wgpu backend cannot run",
            APT_PACKAGES.join(" ")
        )),
    }
}

/// Whether the venv's python runs `check` without error.
fn python_ok(env: &Env, check: &str) -> bool {
    Command::new(env.python())
        .args(["-c", check])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn torch_ok(env: &Env) -> bool {
    python_ok(
        env,
        &format!(
            "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '{TORCH_VERSION}' else 1)"
        ),
    )
}

fn gensim_ok(env: &Env) -> bool {
    python_ok(
        env,
        &format!(
            "import gensim, sys; sys.exit(0 if gensim.__version__ == '{GENSIM_VERSION}' else 1)"
        ),
    )
}

fn pip_install(env: &Env, packages: &[String]) -> Result<(), String> {
    let status = Command::new(env.venv().join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("pip install {} failed ({status})", packages.join(" ")))
}

/// The venv with torch==2.9.0 (libtorch for burn-tch, and the reference implementation) and
/// gensim (the client that reads and writes word2vec files, for the interop tests).
pub fn torch_venv(env: &Env) -> Result<(), String> {
    if !torch_ok(env) {
        create_torch_venv(env)?;
    }
    if !gensim_ok(env) {
        eprintln!(
            "xtask: installing gensim=={GENSIM_VERSION} into {}",
            env.venv().display()
        );
        pip_install(env, &[format!("gensim=={GENSIM_VERSION}")])?;
        if !gensim_ok(env) {
            return Err(format!(
                "gensim=={GENSIM_VERSION} does not import in the venv"
            ));
        }
    }
    Ok(())
}

fn create_torch_venv(env: &Env) -> Result<(), String> {
    let venv = env.venv();
    eprintln!(
        "xtask: creating {} with torch=={TORCH_VERSION} (about 7 GB; several minutes)",
        venv.display()
    );
    std::fs::create_dir_all(&env.cache).map_err(|e| format!("{}: {e}", env.cache.display()))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !status.success() {
        return Err(format!("`{python} -m venv {}` failed", venv.display()));
    }
    pip_install(
        env,
        &[
            format!("torch=={TORCH_VERSION}"),
            "numpy".into(),
            "setuptools".into(),
        ],
    )?;
    if torch_ok(env) {
        Ok(())
    } else {
        Err(format!(
            "pip install torch=={TORCH_VERSION} into {} failed; the tch backend cannot build",
            venv.display()
        ))
    }
}
