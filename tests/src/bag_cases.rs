//! Runs the `bag/` golden cases on one backend: forward and in-place renorm on `B`; weight and
//! `per_sample_weights` gradients on `Autodiff<B>` and `Autodiff<B, BalancedCheckpointing>`.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{
    BagMode, EmbeddingBackend, EmbeddingBag, EmbeddingBagConfig, EmbeddingError, NormType,
};
use serde_json::Value;

use crate::golden::{Case, GoldenTensor, load_cases, number};
use crate::report::{Report, Tol, compare};

fn config_of(config: &Value) -> EmbeddingBagConfig {
    let mode = match config["mode"].as_str().unwrap_or("mean") {
        "sum" => BagMode::Sum,
        "max" => BagMode::Max,
        _ => BagMode::Mean,
    };
    EmbeddingBagConfig::new(
        config["num_embeddings"].as_u64().expect("num_embeddings") as usize,
        config["embedding_dim"].as_u64().expect("embedding_dim") as usize,
    )
    .with_mode(mode)
    .with_padding_idx(config["padding_idx"].as_i64())
    .with_max_norm((!config["max_norm"].is_null()).then(|| number(&config["max_norm"])))
    .with_norm_type(NormType(if config["norm_type"].is_null() {
        2.0
    } else {
        number(&config["norm_type"])
    }))
    .with_scale_grad_by_freq(config["scale_grad_by_freq"].as_bool().unwrap_or(false))
    .with_sparse(config["sparse"].as_bool().unwrap_or(false))
    .with_include_last_offset(config["include_last_offset"].as_bool().unwrap_or(false))
}

fn bag_of<B: EmbeddingBackend>(
    case: &Case,
    device: &B::Device,
    freeze: bool,
) -> Result<EmbeddingBag<B>, EmbeddingError> {
    let config = config_of(&case.json["config"]);
    let w = case.tensor("weight");
    let weight = Tensor::<B, 2>::from_data(TensorData::new(w.floats(), w.shape.clone()), device);
    EmbeddingBag::from_pretrained(
        weight,
        freeze,
        config.options()?,
        config.mode,
        config.include_last_offset,
    )
}

fn optional(case: &Case, field: &str) -> Option<GoldenTensor> {
    let v = &case.json[field];
    (!v.is_null()).then(|| GoldenTensor::from_json(v))
}

/// The bag forward of a case; `psw` is the per-sample-weights tensor to use (flattened `[N]`).
fn run_forward<B: EmbeddingBackend>(
    bag: &EmbeddingBag<B>,
    case: &Case,
    psw: Option<Tensor<B, 1>>,
    device: &B::Device,
) -> Result<Tensor<B, 2>, EmbeddingError> {
    let idx = case.tensor("indices");
    match optional(case, "offsets") {
        Some(offsets) => bag.try_forward(
            Tensor::from_data(TensorData::new(idx.ints(), [idx.data.len()]), device),
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(offsets.ints(), [offsets.data.len()]),
                device,
            ),
            psw,
        ),
        None => {
            let [b, l] = [idx.shape[0], idx.shape[1]];
            bag.try_forward_fixed(
                Tensor::from_data(TensorData::new(idx.ints(), [b, l]), device),
                psw.map(|w| w.reshape([b, l])),
            )
        }
    }
}

fn psw_tensor<B: Backend>(case: &Case, device: &B::Device) -> Option<Tensor<B, 1>> {
    optional(case, "per_sample_weights")
        .map(|w| Tensor::from_data(TensorData::new(w.floats(), [w.data.len()]), device))
}

fn check_forward<B: EmbeddingBackend>(
    case: &Case,
    device: &B::Device,
    tol: Tol,
) -> Result<(), String> {
    let bag = bag_of::<B>(case, device, true).map_err(|e| e.to_string())?;
    let out = run_forward(&bag, case, psw_tensor::<B>(case, device), device)
        .map_err(|e| e.to_string())?;
    compare(
        "output",
        out.into_data(),
        &case.expected("output").expect("output"),
        tol,
    )?;
    let mut renormed = bag.clone();
    let idx = case.tensor("indices");
    renormed.renorm(Tensor::<B, 1, Int>::from_data(
        TensorData::new(idx.ints(), [idx.data.len()]),
        device,
    ));
    let expected = case
        .expected("weight_after_forward")
        .expect("weight_after_forward");
    compare(
        "weight_after_forward",
        renormed.weight.val().into_data(),
        &expected,
        tol,
    )
}

fn check_backward<B: EmbeddingBackend + SparseUpdate, C: CheckpointStrategy>(
    case: &Case,
    device: &B::Device,
    tol: Tol,
) -> Result<(), String> {
    let bag = bag_of::<Autodiff<B, C>>(case, device, false).map_err(|e| e.to_string())?;
    let psw = psw_tensor::<Autodiff<B, C>>(case, device).map(|w| w.require_grad());
    let out = run_forward(&bag, case, psw.clone(), device).map_err(|e| e.to_string())?;
    let g = case.tensor("grad_output");
    let grad_output =
        Tensor::<Autodiff<B, C>, 2>::from_data(TensorData::new(g.floats(), out.dims()), device);
    let mut grads = (out * grad_output).sum().backward();
    if let (Some(psw), Some(mut expected)) = (&psw, case.expected("per_sample_weights_grad")) {
        let grad = psw.grad(&grads).ok_or("no per_sample_weights gradient")?;
        // The runner passes 2-D weights flattened.
        expected.shape = vec![expected.data.len()];
        compare("per_sample_weights_grad", grad.into_data(), &expected, tol)?;
    }
    let expected = case.expected("weight_grad").expect("weight_grad");
    if bag.options().sparse {
        match bag.sparse_grad_remove(&mut grads) {
            Some(rows) => compare(
                "sparse rows as dense",
                rows.to_dense().into_data(),
                &expected,
                tol,
            ),
            None if expected.data.iter().all(|&x| x == 0.0) => Ok(()),
            None => Err("no row-sparse gradient".into()),
        }
    } else {
        let grad = bag.weight.grad(&grads).ok_or("no weight gradient")?;
        compare("weight_grad", grad.into_data(), &expected, tol)
    }
}

fn check_error<B: EmbeddingBackend>(case: &Case, device: &B::Device) -> Result<(), String> {
    let expect = case.json["expect_error"].as_str().unwrap_or("");
    let config = config_of(&case.json["config"]);
    let outcome = match case.json["op"].as_str() {
        Some("config_bag") => config.try_init::<B>(device).map(|_| ()),
        Some("embedding_bag") => {
            let bag = config
                .try_init::<B>(device)
                .map_err(|e| format!("config rejected: {e}"))?;
            run_forward(&bag, case, psw_tensor::<B>(case, device), device).map(|_| ())
        }
        other => return Err(format!("error op {other:?} is not a bag op")),
    };
    let err = match outcome {
        Ok(()) => return Err(format!("accepted input that PyTorch rejects ({expect})")),
        Err(err) => err,
    };
    let category = match err {
        EmbeddingError::IndexOutOfRange { .. } => "index_out_of_range",
        EmbeddingError::PaddingIdxOutOfRange { .. } => "padding_idx_out_of_range",
        EmbeddingError::InvalidOffsets { .. } => "invalid_offsets",
        EmbeddingError::PerSampleWeightsMode { .. } => "per_sample_weights_mode",
        EmbeddingError::MaxModeOptions { .. } => "max_mode_options",
        _ => "other",
    };
    if category == expect {
        Ok(())
    } else {
        Err(format!("error `{err}` is {category}, expected {expect}"))
    }
}

/// Runs every `bag/` case on `B`. Prints `golden-<label>: N passed, M failed`.
pub fn run<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device, loose: Tol) {
    let mut report = Report::default();
    for case in load_cases("bag") {
        let name = format!("{} ({})", case.name(), case.path.display());
        let config = &case.json["config"];
        let tol = if config["mode"] == "mean" || !config["max_norm"].is_null() {
            loose
        } else {
            Tol::DEFAULT
        };
        let outcome = match case.kind() {
            "embedding_bag" => check_forward::<B>(&case, device, tol)
                .and_then(|()| check_backward::<B, NoCheckpointing>(&case, device, tol))
                .and_then(|()| {
                    check_backward::<B, BalancedCheckpointing>(&case, device, tol)
                        .map_err(|e| format!("checkpointed: {e}"))
                }),
            "error" => check_error::<B>(&case, device),
            other => Err(format!("kind {other:?} does not belong in bag/")),
        };
        report.record(&name, outcome);
    }
    report.finish(label);
}
