//! Comparing results with golden values and reporting per backend.

use burn::tensor::TensorData;

use crate::golden::GoldenTensor;

/// `|a - b| <= atol + rtol * |b|`, as `tests/golden/README.md` specifies.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    /// Absolute part.
    pub atol: f64,
    /// Relative part.
    pub rtol: f64,
}

impl Tol {
    /// The default tolerance, 1e-5.
    pub const DEFAULT: Self = Self {
        atol: 1e-5,
        rtol: 1e-5,
    };
    /// For reductions ordered differently (wgpu renorm and bag means), 1e-4.
    pub const LOOSE: Self = Self {
        atol: 1e-4,
        rtol: 1e-4,
    };
}

/// Checks `actual` against `expected`, returning a message with the largest error on mismatch.
pub fn compare(
    what: &str,
    actual: TensorData,
    expected: &GoldenTensor,
    tol: Tol,
) -> Result<(), String> {
    let shape = actual.shape.to_vec();
    let expected_numel: usize = expected.shape.iter().product();
    if shape != expected.shape && !(expected_numel == 0 && shape.iter().product::<usize>() == 0) {
        return Err(format!(
            "{what}: shape {shape:?}, expected {:?}",
            expected.shape
        ));
    }
    let actual: Vec<f64> = actual.iter::<f64>().collect();
    let mut worst = (0.0f64, 0usize);
    let mut failed = false;
    for (i, (&a, &b)) in actual.iter().zip(&expected.data).enumerate() {
        let err = (a - b).abs();
        let ok = err <= tol.atol + tol.rtol * b.abs() || (a.is_nan() && b.is_nan());
        // The largest error among the values out of tolerance (of all values while none is).
        if !ok && !failed {
            worst = (err, i);
        }
        if (err > worst.0 || err.is_nan()) && (!ok || !failed) {
            worst = (err, i);
        }
        failed |= !ok;
    }
    if failed {
        let i = worst.1;
        Err(format!(
            "{what}: largest error {:.3e} at flat index {i} (got {}, expected {})",
            worst.0, actual[i], expected.data[i]
        ))
    } else {
        Ok(())
    }
}

/// Outcome of a run of cases on one backend.
#[derive(Debug, Default)]
pub struct Report {
    /// Names of the cases that passed.
    pub passed: Vec<String>,
    /// Names of the cases that failed, with the reason (largest error).
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// Records one case.
    pub fn record(&mut self, name: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.passed.push(name.to_string()),
            Err(why) => self.failed.push((name.to_string(), why)),
        }
    }

    /// Prints `golden-<label>: N passed, M failed` and each failure, and panics on any failure
    /// or when no case ran at all (a suite that checks nothing must not pass).
    pub fn finish(self, label: &str) {
        for (name, why) in &self.failed {
            println!("  FAILED {label} {name}: {why}");
        }
        // On a line of its own, so that test harness output never shares it.
        println!(
            "\ngolden-{label}: {} passed, {} failed",
            self.passed.len(),
            self.failed.len()
        );
        assert!(
            !self.passed.is_empty() || !self.failed.is_empty(),
            "golden-{label}: no case was found in {:?}",
            crate::golden::golden_dirs()
        );
        assert!(
            self.failed.is_empty(),
            "golden-{label}: {} case(s) failed",
            self.failed.len()
        );
    }
}
