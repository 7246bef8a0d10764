//! The conformance suite: one test per backend and capability, each printing
//! `golden-<backend>: N passed, M failed`.

use burn_embedding_conformance::report::Tol;

#[cfg(all(feature = "ndarray", any(feature = "wgpu", feature = "tch")))]
mod learner_backends;
#[cfg(feature = "ndarray")]
mod training;
use burn_embedding_conformance::{
    bag_cases, determinism, embedding_cases, optimizer_cases, patterns, property,
};

#[cfg(feature = "ndarray")]
mod ndarray {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn golden_embedding() {
        embedding_cases::run::<NdArray>("ndarray", &Default::default(), Tol::DEFAULT);
    }

    #[test]
    fn golden_optimizer() {
        optimizer_cases::run::<NdArray>("ndarray-optimizer", &Default::default(), Tol::DEFAULT);
    }

    #[test]
    fn golden_bag() {
        bag_cases::run::<NdArray>("ndarray-bag", &Default::default(), Tol::DEFAULT);
    }

    /// Bit-identical backwards over runs alternating 1 and 2 worker threads.
    #[test]
    fn deterministic_backward() {
        determinism::check("ndarray", 4, |run| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1 + run % 2)
                .build()
                .expect("a thread pool");
            pool.install(|| determinism::gradients::<NdArray>(&Default::default()))
        });
    }

    #[test]
    fn nondeterministic_backward() {
        determinism::check_nondeterministic::<NdArray>("ndarray", &Default::default());
    }

    /// A sparse gradient dropped, accumulated, and accumulated across `forward_mut` renorms
    /// trains as the dense one.
    #[test]
    fn training_patterns() {
        let device = Default::default();
        patterns::skipped_step::<NdArray>(&device);
        patterns::accumulation::<NdArray>(&device);
        patterns::forward_mut_with_accumulation::<NdArray>(&device);
    }

    /// Random lookups with every option against a plain-loop reference.
    #[test]
    fn random_cases() {
        property::run::<NdArray>("ndarray", &Default::default(), 0x5EED, 400);
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use burn::backend::Wgpu;

    #[test]
    fn golden_embedding() {
        embedding_cases::run::<Wgpu>("wgpu", &Default::default(), Tol::LOOSE);
    }

    #[test]
    fn golden_optimizer() {
        optimizer_cases::run::<Wgpu>("wgpu-optimizer", &Default::default(), Tol::LOOSE);
    }

    #[test]
    fn golden_bag() {
        bag_cases::run::<Wgpu>("wgpu-bag", &Default::default(), Tol::LOOSE);
    }

    #[test]
    fn deterministic_backward() {
        determinism::check("wgpu", 3, |_| {
            determinism::gradients::<Wgpu>(&Default::default())
        });
    }

    #[test]
    fn nondeterministic_backward() {
        determinism::check_nondeterministic::<Wgpu>("wgpu", &Default::default());
    }

    /// A sparse gradient dropped, accumulated, and accumulated across `forward_mut` renorms
    /// trains as the dense one.
    #[test]
    fn training_patterns() {
        let device = Default::default();
        patterns::skipped_step::<Wgpu>(&device);
        patterns::accumulation::<Wgpu>(&device);
        patterns::forward_mut_with_accumulation::<Wgpu>(&device);
    }

    /// Random lookups with every option against a plain-loop reference.
    #[test]
    fn random_cases() {
        property::run::<Wgpu>("wgpu", &Default::default(), 0x5EED, 150);
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn learner_matches_ndarray() {
        crate::learner_backends::matches_ndarray::<Wgpu>("wgpu", &Default::default());
    }
}

#[cfg(feature = "tch")]
mod tch {
    use super::*;
    use burn::backend::LibTorch;
    use burn::backend::libtorch::LibTorchDevice;

    #[test]
    fn golden_embedding() {
        embedding_cases::run::<LibTorch<f32>>("tch", &LibTorchDevice::Cpu, Tol::DEFAULT);
    }

    #[test]
    fn golden_optimizer() {
        optimizer_cases::run::<LibTorch<f32>>("tch-optimizer", &LibTorchDevice::Cpu, Tol::DEFAULT);
    }

    #[test]
    fn golden_bag() {
        bag_cases::run::<LibTorch<f32>>("tch-bag", &LibTorchDevice::Cpu, Tol::DEFAULT);
    }

    #[test]
    fn deterministic_backward() {
        determinism::check("tch", 3, |_| {
            determinism::gradients::<LibTorch<f32>>(&LibTorchDevice::Cpu)
        });
    }

    #[test]
    fn nondeterministic_backward() {
        determinism::check_nondeterministic::<LibTorch<f32>>("tch", &LibTorchDevice::Cpu);
    }

    /// A sparse gradient dropped, accumulated, and accumulated across `forward_mut` renorms
    /// trains as the dense one.
    #[test]
    fn training_patterns() {
        let device = LibTorchDevice::Cpu;
        patterns::skipped_step::<LibTorch<f32>>(&device);
        patterns::accumulation::<LibTorch<f32>>(&device);
        patterns::forward_mut_with_accumulation::<LibTorch<f32>>(&device);
    }

    /// Random lookups with every option against a plain-loop reference.
    #[test]
    fn random_cases() {
        property::run::<LibTorch<f32>>("tch", &LibTorchDevice::Cpu, 0x5EED, 400);
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn learner_matches_ndarray() {
        crate::learner_backends::matches_ndarray::<LibTorch<f32>>("tch", &LibTorchDevice::Cpu);
    }
}
