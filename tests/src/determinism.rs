//! Determinism: every backward is bit-identical from run to run on a backend (and, on
//! NdArray, across thread counts: `tests/conformance.rs` runs it under 1 and 2 threads).
//!
//! The batch repeats a few ids thousands of times with distinct upstream gradients, so that a
//! backward whose summation order changed between runs would show in the low bits.

use burn::backend::Autodiff;
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{BagMode, Embedding, EmbeddingBackend, EmbeddingBag, EmbeddingOptions};

const V: usize = 37;
const D: usize = 33;
const N: usize = 3000;
const BAG: usize = 7;

/// Every gradient of the suite, as bits, in a fixed order.
pub fn gradients<B: EmbeddingBackend + SparseUpdate>(
    device: &B::Device,
) -> Vec<(String, Vec<u32>)> {
    type Ad<B> = Autodiff<B>;
    let ids: Vec<i64> = (0..N as i64).map(|i| (i * i + 3 * i) % V as i64).collect();
    // Upstream gradients with mixed magnitudes, so that rounding depends on the order.
    let upstream: Vec<f32> = (0..N * D)
        .map(|k| ((k * 7919 % 1009) as f32 - 504.0) * if k % 3 == 0 { 1e-3 } else { 1.0 })
        .collect();
    let weight: Vec<f32> = (0..V * D).map(|k| (k % 17) as f32 * 0.25 - 2.0).collect();
    let weight = || {
        Tensor::<Ad<B>, 2>::from_data(TensorData::new(weight.clone(), [V, D]), device)
            .require_grad()
    };
    let bits =
        |t: Tensor<B, 2>| -> Vec<u32> { t.into_data().iter::<f32>().map(f32::to_bits).collect() };
    let mut out = Vec::new();
    let options = [
        ("dense", EmbeddingOptions::new()),
        (
            "dense+freq+padding",
            EmbeddingOptions::new()
                .with_scale_grad_by_freq(true)
                .with_padding_idx(Some(4)),
        ),
        ("sparse", EmbeddingOptions::new().with_sparse(true)),
        (
            "sparse+freq",
            EmbeddingOptions::new()
                .with_sparse(true)
                .with_scale_grad_by_freq(true),
        ),
    ];
    let idx = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(ids.clone(), [N]), device);
    let up = Tensor::<Ad<B>, 2>::from_data(TensorData::new(upstream.clone(), [N, D]), device);
    for (name, opts) in options {
        let emb = Embedding::from_pretrained(weight(), false, opts).expect("valid");
        let y: Tensor<Ad<B>, 2> = emb.forward(idx.clone());
        let mut grads = (y * up.clone()).sum().backward();
        let grad = if opts.sparse {
            emb.sparse_grad_remove(&mut grads).expect("rows").to_dense()
        } else {
            emb.weight.grad(&grads).expect("dense gradient")
        };
        out.push((format!("lookup {name}"), bits(grad)));
    }
    let offsets: Vec<i64> = (0..(N / BAG) as i64).map(|b| b * BAG as i64).collect();
    let bags = offsets.len();
    let offsets = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(offsets, [bags]), device);
    let up = Tensor::<Ad<B>, 2>::from_data(
        TensorData::new(upstream[..bags * D].to_vec(), [bags, D]),
        device,
    );
    for (mode, sparse) in [
        (BagMode::Sum, true),
        (BagMode::Mean, true),
        (BagMode::Mean, false),
        (BagMode::Max, true),
    ] {
        let opts = EmbeddingOptions::new().with_sparse(sparse);
        let bag = EmbeddingBag::from_pretrained(weight(), false, opts, mode, false).expect("valid");
        let y = bag.forward(idx.clone(), offsets.clone(), None);
        let mut grads = (y * up.clone()).sum().backward();
        let grad = if sparse {
            bag.sparse_grad_remove(&mut grads).expect("rows").to_dense()
        } else {
            bag.weight.grad(&grads).expect("dense gradient")
        };
        out.push((format!("bag {mode:?} sparse={sparse}"), bits(grad)));
    }
    out
}

/// Runs [`gradients`] `runs` times (each run through `run`, e.g. under a thread pool) and
/// asserts all are bit-identical to the first; prints `determinism-<label>: ...`.
pub fn check<F>(label: &str, runs: usize, mut run: F)
where
    F: FnMut(usize) -> Vec<(String, Vec<u32>)>,
{
    let first = run(0);
    for r in 1..runs {
        let again = run(r);
        for ((name, a), (_, b)) in first.iter().zip(&again) {
            let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                differing,
                0,
                "determinism-{label}: {name}: run {r} differs from run 0 in {differing} of {} values",
                a.len()
            );
        }
    }
    println!(
        "determinism-{label}: {} gradients bit-identical over {runs} runs",
        first.len()
    );
}

/// With `deterministic` off, each lookup gradient matches the deterministic one up to the
/// rounding of a different summation order; prints `nondeterministic-<label>: ...` with how
/// many values differ in their bits (0 where the backend has no faster, unordered path).
pub fn check_nondeterministic<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device) {
    let ids: Vec<i64> = (0..N as i64).map(|i| (i * i + 3 * i) % V as i64).collect();
    let upstream: Vec<f32> = (0..N * D)
        .map(|k| ((k * 7919 % 1009) as f32 - 504.0) * if k % 3 == 0 { 1e-3 } else { 1.0 })
        .collect();
    let weight = Tensor::<Autodiff<B>, 2>::zeros([V, D], device);
    let idx = Tensor::<Autodiff<B>, 1, Int>::from_data(TensorData::new(ids, [N]), device);
    let up = Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(upstream, [N, D]), device);
    let gradient = |options: EmbeddingOptions| -> Vec<f32> {
        let emb = Embedding::from_pretrained(weight.clone().require_grad(), false, options)
            .expect("valid");
        let y: Tensor<Autodiff<B>, 2> = emb.forward(idx.clone());
        let mut grads = (y * up.clone()).sum().backward();
        let grad = match options.sparse {
            true => emb.sparse_grad_remove(&mut grads).expect("rows").to_dense(),
            false => emb.weight.grad(&grads).expect("dense gradient"),
        };
        grad.into_data().iter::<f32>().collect()
    };
    let cases = [
        ("dense", EmbeddingOptions::new()),
        (
            "dense+padding",
            EmbeddingOptions::new().with_padding_idx(Some(4)),
        ),
        (
            "dense+freq",
            EmbeddingOptions::new().with_scale_grad_by_freq(true),
        ),
        ("sparse", EmbeddingOptions::new().with_sparse(true)),
    ];
    let mut differing = 0;
    for (name, options) in cases {
        let exact = gradient(options);
        let unordered = gradient(options.with_deterministic(false));
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (k, (a, b)) in exact.iter().zip(&unordered).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "nondeterministic-{label}: {name}: value {k} is {b}, the deterministic one {a}"
            );
            differing += usize::from(a.to_bits() != b.to_bits());
        }
    }
    println!(
        "nondeterministic-{label}: {} gradients match the deterministic ones ({differing} values differ in their last bits)",
        cases.len()
    );
}
