//! A seeded robustness loop over bad input (10^5 cases): random indices (in and out of range,
//! negative), padding and `max_norm` values, bag offsets and per-sample weights, and damaged
//! word-vector files. Every case must return `Ok` of the documented shape or the crate's typed
//! error: no panic, no hang. A case that panics is printed for replay.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::rng::Rng;
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::vectors::{ReadOptions, VectorFormat, read_vectors};
use burn_embedding::{
    BagMode, EmbeddingBackend, EmbeddingOptions, try_embedding, try_embedding_bag,
};

/// Options with random padding and `max_norm` (some invalid: NaN, negative, out of range).
fn options(rng: &mut Rng, v: usize) -> EmbeddingOptions {
    let max_norm = [
        None,
        Some(1.0),
        Some(0.0),
        Some(-1.0),
        Some(f64::NAN),
        Some(1e-30),
    ][rng.below(6)];
    EmbeddingOptions {
        padding_idx: (rng.below(3) == 0).then(|| rng.below(v + 3)),
        max_norm,
        ..EmbeddingOptions::new()
    }
    .with_scale_grad_by_freq(rng.below(2) == 0)
}

/// Runs `f`, failing with the case's description if it panics.
fn no_panic<T>(what: &str, seed: u64, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        panic!("{what} (seed {seed:#x}) panicked instead of returning an error")
    })
}

/// Runs `cases` cases of each kind from `seed` on `B`: lookups, bags and vector files (4 : 4 : 2).
pub fn run<B: EmbeddingBackend>(device: &B::Device, seed: u64, cases: usize) {
    let (mut lookups_ok, mut bags_ok, mut files_ok) = (0, 0, 0);
    for k in 0..cases * 4 / 10 {
        let case_seed = seed ^ (k as u64) << 1;
        let mut rng = Rng(case_seed);
        let (v, d) = (1 + rng.below(6), 1 + rng.below(3));
        let n = rng.below(7);
        let ids: Vec<i64> = (0..n).map(|_| rng.int(-2, v as i64 + 2)).collect();
        let options = options(&mut rng, v);
        let what = format!("lookup of {ids:?} in [{v}, {d}] with {options:?}");
        let out = no_panic(&what, case_seed, || {
            let weight = Tensor::<B, 2>::ones([v, d], device);
            let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.clone(), [n]), device);
            try_embedding::<B, 1, 2>(weight, indices, &options).map(|out| out.dims())
        });
        let valid = ids.iter().all(|&i| (0..v as i64).contains(&i))
            && options.padding_idx.is_none_or(|p| p < v)
            && options.max_norm.is_none_or(|m| m.is_finite() && m >= 0.0);
        match out {
            Ok(dims) => {
                assert!(valid, "{what} (seed {case_seed:#x}) was accepted");
                assert_eq!(dims, [n, d], "{what}");
                lookups_ok += 1;
            }
            Err(_) => assert!(!valid, "{what} (seed {case_seed:#x}) was refused"),
        }
    }
    for k in 0..cases * 4 / 10 {
        let case_seed = seed ^ (k as u64) << 1 | 1;
        let mut rng = Rng(case_seed);
        let (v, d) = (1 + rng.below(6), 1 + rng.below(3));
        let n = rng.below(8);
        let ids: Vec<i64> = (0..n).map(|_| rng.int(-1, v as i64 + 1)).collect();
        let offsets: Vec<i64> = (0..rng.below(5))
            .map(|_| rng.int(-2, n as i64 + 3))
            .collect();
        let weights = (rng.below(3) == 0).then(|| vec![0.5f32; n + rng.below(2)]);
        let include_last_offset = rng.below(2) == 0;
        let mode = [BagMode::Sum, BagMode::Mean, BagMode::Max][rng.below(3)];
        let options = options(&mut rng, v);
        let what = format!(
            "bag of {ids:?} at {offsets:?} (last offset included: {include_last_offset}, \
             weights {weights:?}, {mode:?}) in [{v}, {d}] with {options:?}"
        );
        let out = no_panic(&what, case_seed, || {
            let weight = Tensor::<B, 2>::ones([v, d], device);
            let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.clone(), [n]), device);
            let offsets_len = offsets.len();
            let offsets = Tensor::<B, 1, Int>::from_data(
                TensorData::new(offsets.clone(), [offsets_len]),
                device,
            );
            let weights = weights.clone().map(|w| {
                let len = w.len();
                Tensor::<B, 1>::from_data(TensorData::new(w, [len]), device)
            });
            try_embedding_bag(
                weight,
                indices,
                offsets,
                weights,
                include_last_offset,
                mode,
                &options,
            )
            .map(|out| out.dims())
        });
        if let Ok([bags, dim]) = out {
            let expected_bags =
                offsets.len() - usize::from(include_last_offset && !offsets.is_empty());
            assert_eq!(
                (bags, dim),
                (expected_bags, d),
                "{what} (seed {case_seed:#x})"
            );
            bags_ok += 1;
        }
    }
    let dir =
        std::env::temp_dir().join(format!("burn-embedding-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let valid_text = b"3 2\nthe 0.1 0.2\nof -1 0.5\nand 3 4\n".to_vec();
    let mut valid_binary = b"2 2\n".to_vec();
    for (word, values) in [("a", [1.0f32, 2.0]), ("b", [-0.5, 0.25])] {
        valid_binary.extend_from_slice(word.as_bytes());
        valid_binary.push(b' ');
        values
            .iter()
            .for_each(|v| valid_binary.extend_from_slice(&v.to_le_bytes()));
        valid_binary.push(b'\n');
    }
    for k in 0..cases * 2 / 10 {
        let case_seed = seed ^ (k as u64) << 2 | 2;
        let mut rng = Rng(case_seed);
        let format = [
            VectorFormat::Word2VecText,
            VectorFormat::GloveText,
            VectorFormat::Word2VecBinary,
        ][rng.below(3)];
        let mut bytes = match format {
            VectorFormat::Word2VecBinary => valid_binary.clone(),
            _ => valid_text.clone(),
        };
        // Damage: truncate, flip bytes, insert bytes from a set that breaks the grammar.
        for _ in 0..1 + rng.below(3) {
            match rng.below(3) {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
                _ => {
                    let at = rng.below(bytes.len() + 1);
                    let grammar_breakers = b" \n9-.e\xff\x000";
                    let byte = grammar_breakers[rng.below(grammar_breakers.len())];
                    bytes.insert(at, byte);
                }
            }
        }
        let path = dir.join(format!("{k}.vec"));
        std::fs::write(&path, &bytes).expect("write a case");
        let what = format!("{format:?} file {:?}", String::from_utf8_lossy(&bytes));
        let read = no_panic(&what, case_seed, || {
            read_vectors::<B>(&path, format, ReadOptions::default(), device)
                .map(|read| (read.words.len(), read.embedding.weight.dims()))
        });
        if let Ok((words, [rows, _])) = read {
            assert_eq!(words, rows, "{what}");
            files_ok += 1;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "robustness: {cases} bad-input cases, no panic ({lookups_ok} lookups, {bags_ok} bags, \
         {files_ok} files accepted; the rest refused with typed errors)"
    );
}
