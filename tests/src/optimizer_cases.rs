//! Runs the `optimizer/` golden cases on one backend: a sparse embedding trained for several
//! steps by a sparse-aware optimizer, compared with PyTorch's weight after each step.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::optim::{
    LazyAdamConfig, RowwiseAdagradConfig, SparseAdagradConfig, SparseSgdConfig,
};
use burn_embedding::{Embedding, EmbeddingBackend};
use serde_json::Value;

use crate::embedding_cases::options_of;
use crate::golden::{Case, GoldenTensor, load_cases, number};
use crate::report::{Report, Tol, compare};

type Ad<B> = Autodiff<B>;

fn train<B, O>(
    case: &Case,
    device: &B::Device,
    mut optim: O,
    lr: f64,
    tol: Tol,
) -> Result<(), String>
where
    B: EmbeddingBackend + SparseUpdate,
    O: Optimizer<Embedding<Ad<B>>, Ad<B>>,
{
    let options = options_of(&case.json["config"]).map_err(|e| e.to_string())?;
    let w = case.tensor("weight");
    let dtype = case.dtype::<B>();
    let weight = Tensor::<Ad<B>, 2>::from_data(
        TensorData::new(w.floats(), w.shape.clone()),
        (device, dtype),
    );
    let mut emb = Embedding::from_pretrained(weight, false, options).map_err(|e| e.to_string())?;
    let steps = case.json["steps"].as_array().ok_or("no steps")?;
    for (k, step) in steps.iter().enumerate() {
        let idx = GoldenTensor::from_json(&step["indices"]);
        let g = GoldenTensor::from_json(&step["grad_output"]);
        let n = idx.data.len();
        let indices = Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(idx.ints(), [n]), device);
        let out: Tensor<Ad<B>, 2> = emb.forward(indices);
        let grad_output = Tensor::from_data(
            TensorData::new(g.floats(), [n, emb.embedding_dim()]),
            (device, dtype),
        );
        let grads = (out * grad_output).sum().backward();
        let grads = GradientsParams::from_grads(grads, &emb);
        emb = optim.step(lr, emb, grads);
        let expected = GoldenTensor::from_json(&step["weight_after"]);
        compare(
            &format!("weight after step {}", k + 1),
            emb.valid().weight.val().into_data(),
            &expected,
            tol,
        )?;
    }
    Ok(())
}

pub fn run_case<B: EmbeddingBackend + SparseUpdate>(
    case: &Case,
    device: &B::Device,
    tol: Tol,
) -> Result<(), String> {
    let opt: &Value = &case.json["optimizer"];
    let lr = number(&opt["lr"]);
    let get = |name: &str, default: f64| {
        if opt[name].is_null() {
            default
        } else {
            number(&opt[name])
        }
    };
    match opt["name"].as_str() {
        Some("sgd") => {
            let optim = SparseSgdConfig::new()
                .with_weight_decay(get("weight_decay", 0.0))
                .init::<Ad<B>, Embedding<Ad<B>>>();
            train::<B, _>(case, device, optim, lr, tol)
        }
        Some("adagrad") => {
            let optim = SparseAdagradConfig::new()
                .with_lr_decay(get("lr_decay", 0.0))
                .with_initial_accumulator_value(get("initial_accumulator_value", 0.0))
                .with_eps(get("eps", 1e-10))
                .init::<Ad<B>, Embedding<Ad<B>>>();
            train::<B, _>(case, device, optim, lr, tol)
        }
        Some("rowwise_adagrad") => {
            let optim = RowwiseAdagradConfig::new()
                .with_eps(get("eps", 1e-8))
                .with_weight_decay(get("weight_decay", 0.0))
                .init::<Ad<B>, Embedding<Ad<B>>>();
            train::<B, _>(case, device, optim, lr, tol)
        }
        Some("sparse_adam") => {
            let betas = &opt["betas"];
            let (beta_1, beta_2) = if betas.is_null() {
                (0.9, 0.999)
            } else {
                (number(&betas[0]), number(&betas[1]))
            };
            let optim = LazyAdamConfig::new()
                .with_beta_1(beta_1)
                .with_beta_2(beta_2)
                .with_eps(get("eps", 1e-8))
                .init::<Ad<B>, Embedding<Ad<B>>>();
            train::<B, _>(case, device, optim, lr, tol)
        }
        other => Err(format!("optimizer {other:?} is not supported")),
    }
}

/// Runs every `optimizer/` case on `Autodiff<B>`. Prints `golden-<label>-optimizer: ...`.
pub fn run<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device, tol: Tol) {
    let mut report = Report::default();
    for case in load_cases("optimizer") {
        let name = format!("{} ({})", case.name(), case.path.display());
        let outcome = match case.kind() {
            "optimizer" => run_case::<B>(&case, device, tol),
            other => Err(format!("kind {other:?} does not belong in optimizer/")),
        };
        report.record(&name, outcome);
    }
    report.finish(label);
}
