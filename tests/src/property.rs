//! A seeded property test: random small lookups with every option combination, compared with a
//! plain-loop reference written from PyTorch's documented semantics (`F.embedding` and
//! `embedding_renorm_`): the forward output, the dense gradient and the densified row-sparse
//! gradient.

use burn::backend::Autodiff;
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions, NormType, sparse_grad_remove};

use crate::rng::Rng;

type Ad<B> = Autodiff<B>;

/// One random case.
#[derive(Debug, Clone)]
pub struct Case {
    v: usize,
    d: usize,
    shape: Vec<usize>,
    indices: Vec<i64>,
    weight: Vec<f32>,
    upstream: Vec<f32>,
    padding_idx: Option<usize>,
    max_norm: Option<f64>,
    norm_type: f64,
    scale_grad_by_freq: bool,
}

impl Case {
    fn random(rng: &mut Rng) -> Self {
        let v = 1 + rng.below(9);
        let d = 1 + rng.below(5);
        let rank = 1 + rng.below(3);
        // Zero-size batches are tested on their own (`training::patterns`).
        let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(4)).collect();
        let n: usize = shape.iter().product();
        // Few distinct ids, so that repeats are common.
        let pool = 1 + rng.below(v);
        let indices = (0..n).map(|_| rng.below(pool) as i64).collect();
        let scale = if rng.chance(50) { 3.0 } else { 1.0 };
        let weight = (0..v * d).map(|_| rng.uniform(-scale, scale)).collect();
        let upstream = (0..n * d).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let padding_idx = rng.chance(40).then(|| rng.below(v));
        let max_norm = rng.chance(50).then(|| f64::from(rng.uniform(0.3, 2.5)));
        let norm_type = [1.0, 2.0, f64::INFINITY][rng.below(3)];
        let scale_grad_by_freq = rng.chance(50);
        Self {
            v,
            d,
            shape,
            indices,
            weight,
            upstream,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
        }
    }

    fn options(&self, sparse: bool) -> EmbeddingOptions {
        EmbeddingOptions::new()
            .with_padding_idx(self.padding_idx)
            .with_max_norm(self.max_norm)
            .with_norm_type(NormType(self.norm_type))
            .with_scale_grad_by_freq(self.scale_grad_by_freq)
            .with_sparse(sparse)
    }

    fn norm(&self, row: &[f32]) -> f64 {
        let p = self.norm_type;
        if p.is_infinite() {
            row.iter().fold(0.0f64, |m, &x| m.max(f64::from(x.abs())))
        } else {
            row.iter()
                .map(|&x| f64::from(x.abs()).powf(p))
                .sum::<f64>()
                .powf(1.0 / p)
        }
    }

    /// The output `[.., D]` and the weight gradient `[V, D]`, by PyTorch's definitions: every
    /// referenced row (padding included) whose norm exceeds `max_norm` is scaled by
    /// `max_norm / (norm + 1e-7)` before the gather; the gradient is the gather's (the rescale
    /// is constant), the padding row gets none, and with `scale_grad_by_freq` each contribution
    /// is divided by its index's count in the batch.
    fn reference(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.d;
        let mut weight = self.weight.clone();
        if let Some(max_norm) = self.max_norm {
            let mut seen = vec![false; self.v];
            for &i in &self.indices {
                seen[i as usize] = true;
            }
            for (row, _) in weight.chunks_mut(d).zip(&seen).filter(|(_, s)| **s) {
                let norm = self.norm(row);
                if norm > max_norm {
                    let scale = max_norm / (norm + 1e-7);
                    row.iter_mut()
                        .for_each(|x| *x = (f64::from(*x) * scale) as f32);
                }
            }
        }
        let output = self
            .indices
            .iter()
            .flat_map(|&i| weight[i as usize * d..][..d].to_vec())
            .collect();
        let mut counts = vec![0usize; self.v];
        for &i in &self.indices {
            counts[i as usize] += 1;
        }
        let mut grad = vec![0.0f32; self.v * d];
        for (pos, &i) in self.indices.iter().enumerate() {
            let i = i as usize;
            if Some(i) == self.padding_idx {
                continue;
            }
            let scale = if self.scale_grad_by_freq {
                counts[i] as f32
            } else {
                1.0
            };
            for j in 0..d {
                grad[i * d + j] += self.upstream[pos * d + j] / scale;
            }
        }
        (output, grad)
    }
}

fn close(what: &str, got: &[f32], expected: &[f32], case: &Case) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (k, (g, e)) in got.iter().zip(expected).enumerate() {
        if (g - e).abs() > 1e-4 * (1.0 + e.abs()) {
            return Err(format!("{what}[{k}] = {g}, expected {e}, in {case:?}"));
        }
    }
    Ok(())
}

fn run_case<B: EmbeddingBackend + SparseUpdate>(
    case: &Case,
    device: &B::Device,
) -> Result<(), String> {
    let (expected_out, expected_grad) = case.reference();
    let n = case.indices.len();
    let mut out_shape = case.shape.clone();
    out_shape.push(case.d);
    for sparse in [false, true] {
        let weight = Tensor::<Ad<B>, 2>::from_data(
            TensorData::new(case.weight.clone(), [case.v, case.d]),
            device,
        );
        let emb = Embedding::from_pretrained(weight, false, case.options(sparse))
            .map_err(|e| e.to_string())?;
        let flat =
            Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(case.indices.clone(), [n]), device);
        let upstream = Tensor::<Ad<B>, 2>::from_data(
            TensorData::new(case.upstream.clone(), [n, case.d]),
            device,
        );
        // The lookup at the case's rank, flattened for the loss.
        let out: Tensor<Ad<B>, 2> = match case.shape.len() {
            1 => emb.forward::<1, 2>(flat),
            2 => emb
                .forward::<2, 3>(flat.reshape([case.shape[0], case.shape[1]]))
                .reshape([n, case.d]),
            _ => emb
                .forward::<3, 4>(flat.reshape([case.shape[0], case.shape[1], case.shape[2]]))
                .reshape([n, case.d]),
        };
        let got_out: Vec<f32> = out
            .clone()
            .into_data()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        close("output", &got_out, &expected_out, case)?;
        let grads = (out * upstream).sum().backward();
        let mut grads = grads;
        let weight = emb.weight.val();
        // A `[1, 1]` weight gets its gradient dense even with `sparse`.
        let rows = sparse_grad_remove(&weight, &mut grads);
        let touched = case
            .indices
            .iter()
            .any(|&i| Some(i as usize) != case.padding_idx);
        if sparse && touched && (case.v, case.d) != (1, 1) && rows.is_none() {
            return Err(format!("no row-sparse gradient in {case:?}"));
        }
        if !sparse && rows.is_some() {
            return Err(format!(
                "a row-sparse gradient of a dense layer in {case:?}"
            ));
        }
        let grad = match rows {
            Some(rows) => rows.to_dense(),
            None => weight
                .grad(&grads)
                .unwrap_or_else(|| Tensor::zeros([case.v, case.d], device)),
        };
        let got: Vec<f32> = grad.into_data().to_vec().map_err(|e| format!("{e:?}"))?;
        let what = if sparse {
            "sparse gradient"
        } else {
            "dense gradient"
        };
        close(what, &got, &expected_grad, case)?;
    }
    Ok(())
}

/// Runs `cases` random cases from `seed` on `B`; panics on the first that fails, printing it.
pub fn run<B: EmbeddingBackend + SparseUpdate>(
    label: &str,
    device: &B::Device,
    seed: u64,
    cases: usize,
) {
    let mut rng = Rng(seed);
    for k in 0..cases {
        let case = Case::random(&mut rng);
        if let Err(err) = run_case::<B>(&case, device) {
            panic!("property-{label}: case {k} (seed {seed}) failed: {err}");
        }
    }
    println!("property-{label}: {cases} random cases passed");
}
