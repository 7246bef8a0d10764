//! Tables stored in f16 or bf16: the `half/` golden cases (PyTorch's lookup in the half type,
//! its optimizers on an f32 copy rounded back to nearest), the sparse gradient's exact transport
//! through sums and scalings, and stochastic rounding.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::{DType, ElementConversion, Int, Tensor, TensorData};
use burn_embedding::optim::{LazyAdamConfig, Rounding, SparseSgdConfig, SparseUpdate};
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingConfig, sparse};

use crate::embedding_cases::{check_backward, check_forward};
use crate::golden::{GoldenTensor, load_cases};
use crate::optimizer_cases::run_case;
use crate::report::{Report, Tol};

type Ad<B> = Autodiff<B>;

/// One unit in the last place of a value of `dtype` at the bottom of its binade, relative:
/// what a half type's results may differ by where two exact computations round a tie apart.
fn tolerance(dtype: DType) -> Tol {
    let rtol = match dtype {
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-10),
    };
    Tol { atol: 1e-6, rtol }
}

/// PyTorch's name of `dtype`, as the cases write it.
fn torch_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        other => panic!("{other:?} is not a half type"),
    }
}

/// Runs every `half/` case of type `dtype` (f16 or bf16: `B`'s float type, or a table cast to
/// it) on `B`: lookups and their gradients on `Autodiff<B>`, and steps of each rule. Prints
/// `golden-<label>-half: ...`.
pub fn run<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device, dtype: DType) {
    let tol = tolerance(dtype);
    let mut report = Report::default();
    for case in load_cases("half") {
        if case.json["dtype"] != torch_name(dtype) {
            continue;
        }
        let name = format!("{} ({})", case.name(), case.path.display());
        let outcome = match case.kind() {
            "embedding" => check_forward::<B>(&case, device, tol)
                .and_then(|()| check_backward::<B, NoCheckpointing>(&case, device, tol)),
            "optimizer" => run_case::<B>(&case, device, tol),
            other => Err(format!("kind {other:?} does not belong in half/")),
        };
        report.record(&name, outcome);
    }
    report.finish(&format!("{label}-half"));
}

/// Values of few significant bits (multiples of 1/4 in [-4, 4]): sums of a few are exact in
/// both half types.
fn few_bit_values(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|k| {
            let h = (k ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59; // 0..32
            (h as f32 - 16.0) / 4.0
        })
        .collect()
}

/// The sparse gradient of a half table arrives exactly through what training code does to it:
/// three backward passes accumulated, averaged (a scaling by 1/3, which a marker in the table's
/// type could not hold), its norm read and checked for finiteness; the step then applies the
/// average of the rows.
pub fn exact_transport<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, dtype: DType) {
    let (v, d) = (16, 8);
    let weight = Tensor::<Ad<B>, 2>::from_data(
        TensorData::new(few_bit_values(v * d, 1), [v, d]),
        (device, dtype),
    );
    let options = EmbeddingConfig::new(v, d)
        .with_sparse(true)
        .options()
        .unwrap();
    let emb = Embedding::from_pretrained(weight, false, options).unwrap();
    let batches: [&[i64]; 3] = [&[1, 4, 4, 9], &[4, 2, 2, 15], &[0, 9, 1, 1]];
    let mut expected = vec![0.0f64; v * d];
    let mut accumulator = GradientsAccumulator::new();
    for (k, ids) in batches.iter().enumerate() {
        let n = ids.len();
        let g = few_bit_values(n * d, 10 + k as u64);
        for (t, &id) in ids.iter().enumerate() {
            for c in 0..d {
                expected[id as usize * d + c] += f64::from(g[t * d + c]) / 3.0;
            }
        }
        let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::<Ad<B>, 1, Int>::from_data(
            TensorData::new(ids.to_vec(), [n]),
            device,
        ));
        let grad_output = Tensor::from_data(TensorData::new(g, [n, d]), (device, dtype));
        let grads = GradientsParams::from_grads((out * grad_output).sum().backward(), &emb);
        accumulator.accumulate(&emb, grads);
    }
    let mut grads = accumulator.grads();
    let id = emb.weight.id;
    let marker = grads.remove::<B, 2>(id).expect("the table's gradient");
    grads.register(id, marker.div_scalar(3.0));
    assert!(sparse::grads_are_finite(&emb, &grads));
    let norm = sparse::grad_norm(&emb, &grads);
    let expected_norm = expected.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(
        (norm - expected_norm).abs() <= 1e-3 * expected_norm,
        "norm {norm}, expected {expected_norm}"
    );
    let rows = sparse::grad_rows(&emb.weight, &grads).expect("the averaged rows");
    assert_eq!(rows.values.dtype(), dtype);
    let dense = GoldenTensor {
        shape: vec![v, d],
        data: expected.clone(),
    };
    let averaged = rows.to_dense().into_data();
    crate::report::compare("averaged rows", averaged.clone(), &dense, tolerance(dtype)).unwrap();
    // The step applies the rows as read (rounded once to the table's type).
    let averaged: Vec<f64> = averaged.iter::<f64>().collect();
    let before: Vec<f64> = emb.weight.val().into_data().iter::<f64>().collect();
    let mut optim = SparseSgdConfig::new().init::<Ad<B>, Embedding<Ad<B>>>();
    let emb = optim.step(0.5, emb, grads);
    let after = GoldenTensor {
        shape: vec![v, d],
        data: before
            .iter()
            .zip(&averaged)
            .map(|(w, g)| w - 0.5 * g)
            .collect(),
    };
    crate::report::compare(
        "weight after the averaged step",
        emb.valid().weight.val().into_data(),
        &after,
        tolerance(dtype),
    )
    .unwrap();
}

/// Stochastic rounding: steps too small for the half type (2^-14 on values of 1) leave a table
/// rounded to nearest as it was, and move a stochastically rounded one by the f32 result in
/// expectation; a seed gives the same bits again, fused or not, and another seed others. The
/// rules' state is f32.
pub fn stochastic_rounding<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, dtype: DType) {
    let (d, steps) = (1024, 128);
    let lr = 2f64.powi(-14);
    let train = |rounding: Rounding| -> Vec<f32> {
        let options = EmbeddingConfig::new(3, d)
            .with_sparse(true)
            .options()
            .unwrap();
        let ones = Tensor::<Ad<B>, 2>::ones([3, d], (device, dtype));
        let mut emb = Embedding::from_pretrained(ones, false, options).unwrap();
        let mut optim = SparseSgdConfig::new()
            .init::<Ad<B>, Embedding<Ad<B>>>()
            .with_rounding(rounding);
        for _ in 0..steps {
            let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([1], device));
            let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
            assert_eq!(emb.weight.val().dtype(), dtype);
            emb = optim.step(lr, emb, grads);
        }
        emb.weight.val().into_data().iter::<f32>().collect()
    };
    let fused = |seed: u64| -> Vec<f32> {
        let ones = Tensor::<Ad<B>, 2>::ones([3, d], (device, dtype));
        let options = EmbeddingConfig::new(3, d).options().unwrap();
        let emb = Embedding::from_pretrained(ones, false, options)
            .unwrap()
            .fused(SparseSgdConfig::new().rule(), lr);
        emb.set_rounding(Rounding::Stochastic { seed });
        for _ in 0..steps {
            let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([1], device));
            let _ = out.sum().backward();
        }
        emb.weight().into_data().iter::<f32>().collect()
    };
    let nearest = train(Rounding::Nearest);
    assert!(
        nearest.iter().all(|&x| x == 1.0),
        "rounded to nearest, the row moved"
    );
    let seeded = train(Rounding::Stochastic { seed: 7 });
    let row = &seeded[d..2 * d];
    let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / d as f64;
    let target = 1.0 - steps as f64 * lr;
    assert!(
        (mean - target).abs() < 0.0025,
        "stochastic rounding: mean {mean}, the f32 result {target}"
    );
    assert!(
        seeded[..d]
            .iter()
            .chain(&seeded[2 * d..])
            .all(|&x| x == 1.0),
        "untouched rows moved"
    );
    assert_eq!(
        seeded,
        train(Rounding::Stochastic { seed: 7 }),
        "the same seed"
    );
    assert_eq!(seeded, fused(7), "fused and unfused, the same seed");
    assert_ne!(
        seeded,
        train(Rounding::Stochastic { seed: 8 }),
        "another seed"
    );

    // Lazy Adam's moments of a half table are f32.
    let ones = Tensor::<Ad<B>, 2>::ones([3, d], (device, dtype));
    let options = EmbeddingConfig::new(3, d).options().unwrap();
    let emb = Embedding::from_pretrained(ones, false, options)
        .unwrap()
        .fused(LazyAdamConfig::new().rule(), 0.01);
    let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([1, 2], device));
    let _ = out.sum().backward();
    let state = emb.state();
    for moment in [state.first, state.second] {
        assert_eq!(moment.expect("a moment").dtype(), DType::F32);
    }
    let moved: f32 = emb.weight().slice([1..2, 0..1]).into_scalar().elem();
    assert!(moved < 1.0, "lazy Adam moved the row: {moved}");
}

/// The gradient of a half table is the same, bit for bit, dense or row-sparse (with and without
/// `scale_grad_by_freq`), however many tokens share a row: both sum in f32 and round once.
pub fn dense_equals_sparse<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, dtype: DType) {
    let (v, d, n) = (8, 16, 4000);
    // Seeded values in [-2, 2) of 16 significant bits, rounded to the table's type on creation.
    let values = |n: usize, salt: u64| -> Vec<f32> {
        (0..n as u64)
            .map(|k| ((k ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as f32 / 16384.0 - 2.0)
            .collect()
    };
    let weight =
        Tensor::<Ad<B>, 2>::from_data(TensorData::new(values(v * d, 1), [v, d]), (device, dtype));
    let grad_output =
        Tensor::<Ad<B>, 2>::from_data(TensorData::new(values(n * d, 2), [n, d]), (device, dtype));
    let ids: Vec<i64> = (0..n as i64).map(|k| (k * 7 + k / 3) % 5).collect();
    let indices = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(ids, [n]), device);
    // The sums in f64 on the host, for the check that they were not summed in the half type.
    let g: Vec<f64> = grad_output.to_data().iter::<f64>().collect();
    let ids_host: Vec<i64> = indices.to_data().iter::<i64>().collect();
    let mut counts = vec![0usize; v];
    ids_host.iter().for_each(|&id| counts[id as usize] += 1);
    for scale_grad_by_freq in [false, true] {
        let mut exact = vec![0.0f64; v * d];
        for (t, &id) in ids_host.iter().enumerate() {
            let by = if scale_grad_by_freq {
                counts[id as usize] as f64
            } else {
                1.0
            };
            for c in 0..d {
                exact[id as usize * d + c] += g[t * d + c] / by;
            }
        }
        let gradient = |sparse: bool| -> Vec<f32> {
            let options = EmbeddingConfig::new(v, d)
                .with_sparse(sparse)
                .with_scale_grad_by_freq(scale_grad_by_freq)
                .options()
                .unwrap();
            let emb = Embedding::from_pretrained(weight.clone().detach(), false, options).unwrap();
            let out: Tensor<Ad<B>, 2> = emb.forward(indices.clone());
            let mut grads = (out * grad_output.clone()).sum().backward();
            let grad = match sparse {
                true => emb.sparse_grad_remove(&mut grads).unwrap().to_dense(),
                false => emb.weight.grad(&grads).unwrap(),
            };
            assert_eq!(grad.dtype(), dtype);
            grad.into_data().iter::<f32>().collect()
        };
        let dense = gradient(false);
        assert_eq!(
            dense,
            gradient(true),
            "dense and sparse gradients differ (scale_grad_by_freq: {scale_grad_by_freq})"
        );
        // Rounded once: within half a unit in the last place (at the bottom of the binade) of
        // the exact sum, where sums in the half type are off by many units.
        let half_ulp = tolerance(dtype).rtol / 2.0;
        for (k, (&got, &want)) in dense.iter().zip(&exact).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= half_ulp * want.abs() + 1e-7,
                "value {k}: {got}, the exact sum {want} (scale_grad_by_freq: {scale_grad_by_freq})"
            );
        }
    }
}

/// Special values of a half table: an infinite value stays infinite through a step (not NaN), a
/// gradient and a row of norm far beyond f16's range of squares clip and renormalise to 1 (not
/// to zero or NaN).
pub fn special_values<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, dtype: DType) {
    let values = vec![
        0.5f32,
        0.5,
        0.5,
        0.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0,
        -1.0,
        300.0,
        300.0,
        -300.0,
        300.0,
    ];
    let weight = Tensor::<Ad<B>, 2>::from_data(TensorData::new(values, [3, 4]), (device, dtype));
    let options = EmbeddingConfig::new(3, 4)
        .with_sparse(true)
        .options()
        .unwrap();
    let emb = Embedding::from_pretrained(weight.clone(), false, options).unwrap();
    let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([1], device));
    let grads = GradientsParams::from_grads(out.sum().backward(), &emb);
    let mut optim = SparseSgdConfig::new().init::<Ad<B>, Embedding<Ad<B>>>();
    let emb = optim.step(1.0, emb, grads);
    let row: Vec<f32> = emb.weight.val().into_data().iter::<f32>().collect();
    assert_eq!(
        row[4..8],
        [f32::INFINITY, f32::NEG_INFINITY, 0.0, -2.0],
        "{:?}",
        &row[4..8]
    );

    // Clipped by norm to 1 although the gradient's norm (600) squares beyond f16's range.
    let emb = Embedding::from_pretrained(weight.clone(), false, options).unwrap();
    let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([0], device));
    let grad_output = Tensor::<Ad<B>, 2>::full([1, 4], 300.0, (device, dtype));
    let grads = GradientsParams::from_grads((out * grad_output).sum().backward(), &emb);
    let mut optim = SparseSgdConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<Ad<B>, Embedding<Ad<B>>>();
    let emb = optim.step(1.0, emb, grads);
    let row: Vec<f32> = emb.weight.val().into_data().iter::<f32>().collect();
    for &x in &row[..4] {
        assert!((x - 0.0).abs() < 0.01, "clipped step: {:?}", &row[..4]);
    }

    let options = EmbeddingConfig::new(3, 4)
        .with_max_norm(Some(1.0))
        .options()
        .unwrap();
    let emb = Embedding::from_pretrained(weight, true, options).unwrap();
    let out: Tensor<Ad<B>, 2> = emb.forward(Tensor::from_ints([2, 0], device));
    let out: Vec<f64> = out.into_data().iter::<f64>().collect();
    let norm = out[..4].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(
        (norm - 1.0).abs() < 0.01,
        "renormalised row {:?}",
        &out[..4]
    );
    assert_eq!(out[4..], [0.5; 4], "a row within max_norm stays as it is");
}

/// A sparse half table stepped by `SparseSgd` trains as the same table with `sparse: false`
/// stepped by burn's `Sgd`, to within the roundings of the half type: burn's rounds `lr * g` and
/// the difference (up to one unit a step), ours the f32 result once.
pub fn trains_as_dense<B: EmbeddingBackend + SparseUpdate>(device: &B::Device, dtype: DType) {
    let (v, d, lr) = (12, 4, 0.25);
    let batches: [&[i64]; 3] = [&[1, 4, 4, 9], &[4, 2, 2, 11], &[0, 9, 1, 1]];
    let weight = || {
        Tensor::<Ad<B>, 2>::from_data(
            TensorData::new(few_bit_values(v * d, 3), [v, d]),
            (device, dtype),
        )
    };
    let train = |sparse: bool| -> TensorData {
        let options = EmbeddingConfig::new(v, d)
            .with_sparse(sparse)
            .options()
            .unwrap();
        let mut emb = Embedding::from_pretrained(weight(), false, options).unwrap();
        let mut sparse_optim = SparseSgdConfig::new().init::<Ad<B>, Embedding<Ad<B>>>();
        let mut dense_optim = burn::optim::SgdConfig::new().init::<Ad<B>, Embedding<Ad<B>>>();
        for (k, ids) in batches.iter().enumerate() {
            let n = ids.len();
            let indices =
                Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(ids.to_vec(), [n]), device);
            let out: Tensor<Ad<B>, 2> = emb.forward(indices);
            let g = TensorData::new(few_bit_values(n * d, 20 + k as u64), [n, d]);
            let grad_output = Tensor::from_data(g, (device, dtype));
            let grads = GradientsParams::from_grads((out * grad_output).sum().backward(), &emb);
            emb = match sparse {
                true => sparse_optim.step(lr, emb, grads),
                false => dense_optim.step(lr, emb, grads),
            };
        }
        let weight = emb.weight.val();
        assert_eq!(weight.dtype(), dtype);
        weight.into_data()
    };
    let dense = train(false);
    let expected = GoldenTensor {
        shape: vec![v, d],
        data: dense.iter::<f64>().collect(),
    };
    let Tol { atol, rtol } = tolerance(dtype);
    let tol = Tol {
        atol,
        rtol: 3.0 * rtol,
    };
    crate::report::compare("sparse vs dense after 3 steps", train(true), &expected, tol).unwrap();
}
