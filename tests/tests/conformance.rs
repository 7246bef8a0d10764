//! The conformance suite: one test per backend and capability, each printing
//! `golden-<backend>: N passed, M failed`.

#[cfg(all(feature = "ndarray", any(feature = "wgpu", feature = "tch")))]
mod learner_backends;
#[cfg(feature = "ndarray")]
mod training;

/// The tests every backend runs: `$label` names it in the printed lines, `$device` is its
/// device, `$tol` the tolerance of the golden comparisons, `$random` the number of random
/// cases, and `$determinism` runs the backward several times and returns each run's bits.
macro_rules! backend_suite {
    ($label:literal, $backend:ty, $device:expr, $tol:expr, $random:literal, $determinism:expr) => {
        use burn_embedding_conformance::report::Tol;
        use burn_embedding_conformance::{
            bag_cases, checkpoints, determinism, embedding_cases, fused, gradient_ops,
            optimizer_cases, patterns, property, vector_files,
        };

        type Backend = $backend;

        #[test]
        fn golden_embedding() {
            embedding_cases::run::<Backend>($label, &$device, $tol);
        }

        #[test]
        fn golden_optimizer() {
            optimizer_cases::run::<Backend>(concat!($label, "-optimizer"), &$device, $tol);
        }

        #[test]
        fn golden_bag() {
            bag_cases::run::<Backend>(concat!($label, "-bag"), &$device, $tol);
        }

        /// The backward gives the same bits on every run.
        #[test]
        fn deterministic_backward() {
            let (runs, gradients): (usize, fn(usize) -> Vec<(String, Vec<u32>)>) = $determinism;
            determinism::check($label, runs, gradients);
        }

        #[test]
        fn nondeterministic_backward() {
            determinism::check_nondeterministic::<Backend>($label, &$device);
        }

        /// A sparse gradient dropped, accumulated, and accumulated across `forward_mut`
        /// renorms trains as the dense one.
        #[test]
        fn training_patterns() {
            let device = $device;
            patterns::skipped_step::<Backend>(&device);
            patterns::accumulation::<Backend>(&device);
            patterns::forward_mut_with_accumulation::<Backend>(&device);
        }

        /// What training code does to gradients, on the backend's kernels: clipping, reads of
        /// values, dense terms in either order (sparse vs dense; `gradient_ops`).
        #[test]
        fn gradient_operations() {
            let device = $device;
            let tolerance = if $label == "wgpu" { 1e-4 } else { 1e-5 };
            gradient_ops::clipping::<Backend>(&device, tolerance);
            gradient_ops::reads::<Backend>(&device, tolerance);
            gradient_ops::dense_terms::<Backend>(&device, tolerance);
        }

        /// The optimizer fused into the backward equals the unfused one; records, learning
        /// rates, accumulation and freezing.
        #[test]
        fn fused_optimizer() {
            let device = $device;
            fused::matches_unfused::<Backend>($label, &device);
            fused::record_and_learning_rate::<Backend>(&device);
            fused::accumulation_and_freezing::<Backend>(&device);
        }

        /// Word-vector files: round trips, malformed files, gensim's files and gensim reading
        /// ours.
        #[test]
        fn vector_files() {
            let device = $device;
            vector_files::round_trips::<Backend>(&device);
            vector_files::malformed_files::<Backend>(&device);
            vector_files::gensim_files::<Backend>($label, &device);
            vector_files::gensim_reads_ours::<Backend>($label, &device);
        }

        /// PyTorch checkpoints (`.pt`, safetensors, float32 and bfloat16).
        #[test]
        fn golden_checkpoint() {
            checkpoints::run::<Backend>($label, &$device);
        }

        /// Random lookups with every option against a plain-loop reference.
        #[test]
        fn random_cases() {
            property::run::<Backend>($label, &$device, 0x5EED, $random);
        }
    };
}

#[cfg(feature = "ndarray")]
mod ndarray {
    backend_suite!(
        "ndarray",
        burn::backend::NdArray,
        Default::default(),
        Tol::DEFAULT,
        400,
        // Bit-identical over runs alternating 1 and 2 worker threads.
        (4, |run| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1 + run % 2)
                .build()
                .expect("a thread pool");
            pool.install(|| determinism::gradients::<Backend>(&Default::default()))
        })
    );
}

/// 10^5 cases of bad input (indices, options, bag offsets, damaged vector files): `Ok` or a
/// typed error, never a panic. On NdArray: the checks run before any kernel, the same on every
/// backend.
#[cfg(feature = "ndarray")]
#[test]
fn bad_input_gets_typed_errors() {
    burn_embedding_conformance::robustness::run::<burn::backend::NdArray>(
        &Default::default(),
        0xBAD_1D5,
        100_000,
    );
}

#[cfg(feature = "ndarray")]
mod ndarray_gradient_operations {
    //! The classes of `gradient_ops` that do not depend on the backend's kernels.
    use burn_embedding_conformance::gradient_ops;

    type Backend = burn::backend::NdArray;

    #[test]
    fn scaling_by_any_factor() {
        gradient_ops::scaling::<Backend>(&Default::default());
    }

    #[test]
    fn non_linear_edits_are_refused() {
        gradient_ops::non_linear_edits::<Backend>(&Default::default());
    }

    #[test]
    fn gradients_used_more_than_once() {
        gradient_ops::reuse::<Backend>(&Default::default());
    }

    #[test]
    fn capacity_and_isolation() {
        gradient_ops::capacity::<Backend>(&Default::default());
    }

    #[test]
    fn stock_optimizers_fail_on_the_marker() {
        let message = gradient_ops::stock_optimizer_message::<Backend>(&Default::default());
        println!("burn's SGD on a sparse table: {message}");
        assert!(message.contains("[2, 12352]"), "{message}");
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    backend_suite!(
        "wgpu",
        burn::backend::Wgpu,
        Default::default(),
        Tol::LOOSE,
        150,
        (
            3,
            |_| determinism::gradients::<Backend>(&Default::default())
        )
    );

    #[cfg(feature = "ndarray")]
    #[test]
    fn learner_matches_ndarray() {
        crate::learner_backends::matches_ndarray::<Backend>("wgpu", &Default::default());
    }
}

#[cfg(feature = "tch")]
mod tch {
    use burn::backend::libtorch::LibTorchDevice;

    backend_suite!(
        "tch",
        burn::backend::LibTorch<f32>,
        LibTorchDevice::Cpu,
        Tol::DEFAULT,
        400,
        (3, |_| determinism::gradients::<Backend>(
            &LibTorchDevice::Cpu
        ))
    );

    #[cfg(feature = "ndarray")]
    #[test]
    fn learner_matches_ndarray() {
        crate::learner_backends::matches_ndarray::<Backend>("tch", &LibTorchDevice::Cpu);
    }
}

/// Tables stored in a half-precision type `$dtype`: `$label` names the run, `$backend` is the
/// backend (whose float type is `$dtype`, or another, the table cast to `$dtype`), `$device` its
/// device.
#[cfg(any(feature = "tch", feature = "wgpu"))]
macro_rules! half_suite {
    ($label:literal, $backend:ty, $device:expr, $dtype:expr) => {
        use burn::tensor::DType;
        use burn_embedding_conformance::half_cases;

        #[test]
        fn golden_half() {
            half_cases::run::<$backend>($label, &$device, $dtype);
        }

        /// Sums and scalings of a sparse half table's gradient arrive exactly.
        #[test]
        fn exact_transport() {
            half_cases::exact_transport::<$backend>(&$device, $dtype);
        }

        #[test]
        fn stochastic_rounding() {
            half_cases::stochastic_rounding::<$backend>(&$device, $dtype);
        }

        #[test]
        fn dense_equals_sparse() {
            half_cases::dense_equals_sparse::<$backend>(&$device, $dtype);
        }

        #[test]
        fn special_values() {
            half_cases::special_values::<$backend>(&$device, $dtype);
        }

        /// Against `sparse: false` and burn's dense optimizer.
        #[test]
        fn trains_as_dense() {
            half_cases::trains_as_dense::<$backend>(&$device, $dtype);
        }
    };
}

#[cfg(feature = "tch")]
mod tch_bf16 {
    half_suite!(
        "tch-bf16",
        burn::backend::LibTorch<burn::tensor::bf16>,
        burn::backend::libtorch::LibTorchDevice::Cpu,
        DType::BF16
    );
}

#[cfg(feature = "tch")]
mod tch_f16 {
    half_suite!(
        "tch-f16",
        burn::backend::LibTorch<burn::tensor::f16>,
        burn::backend::libtorch::LibTorchDevice::Cpu,
        DType::F16
    );
}

/// A bf16 table on `LibTorch<f32>` (`Tensor::cast`).
#[cfg(feature = "tch")]
mod tch_f32_bf16_table {
    half_suite!(
        "tch-f32-bf16-table",
        burn::backend::LibTorch<f32>,
        burn::backend::libtorch::LibTorchDevice::Cpu,
        DType::BF16
    );
}

#[cfg(feature = "wgpu")]
mod wgpu_f16 {
    half_suite!(
        "wgpu-f16",
        burn::backend::Wgpu<burn::tensor::f16, i32>,
        Default::default(),
        DType::F16
    );
}

/// An f16 table on `Wgpu<f32>`: the kernels, typed f32, leave it to the generic path.
#[cfg(feature = "wgpu")]
mod wgpu_f32_f16_table {
    half_suite!(
        "wgpu-f32-f16-table",
        burn::backend::Wgpu,
        Default::default(),
        DType::F16
    );
}
