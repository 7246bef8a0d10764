//! Runs the `embedding/` golden cases on one backend.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::tensor::{Int, Tensor, TensorData};
use burn_embedding::optim::SparseUpdate;
use burn_embedding::{
    Embedding, EmbeddingBackend, EmbeddingConfig, EmbeddingError, EmbeddingOptions, NormType,
    normalize_padding_idx,
};
use serde_json::Value;

use crate::golden::{Case, GoldenTensor, load_cases, number};
use crate::report::{Report, Tol, compare};

/// The options of a case's `config`, with PyTorch's defaults for absent fields.
pub fn config_of(config: &Value) -> EmbeddingConfig {
    let num_embeddings = config["num_embeddings"].as_u64().expect("num_embeddings") as usize;
    let embedding_dim = config["embedding_dim"].as_u64().expect("embedding_dim") as usize;
    EmbeddingConfig::new(num_embeddings, embedding_dim)
        .with_padding_idx(config["padding_idx"].as_i64())
        .with_max_norm((!config["max_norm"].is_null()).then(|| number(&config["max_norm"])))
        .with_norm_type(NormType(if config["norm_type"].is_null() {
            2.0
        } else {
            number(&config["norm_type"])
        }))
        .with_scale_grad_by_freq(config["scale_grad_by_freq"].as_bool().unwrap_or(false))
        .with_sparse(config["sparse"].as_bool().unwrap_or(false))
}

pub fn options_of(config: &Value) -> Result<EmbeddingOptions, EmbeddingError> {
    let config = config_of(config);
    let mut options = config.options()?;
    options.padding_idx = normalize_padding_idx(config.padding_idx, config.num_embeddings)?;
    Ok(options)
}

fn weight<B: EmbeddingBackend>(case: &Case, device: &B::Device) -> Tensor<B, 2> {
    let w = case.tensor("weight");
    Tensor::from_data(
        TensorData::new(w.floats(), w.shape.clone()),
        (device, case.dtype::<B>()),
    )
}

/// The lookup of a case's indices (any rank 1..=4), flattened to `[N, D]`.
fn lookup<B: EmbeddingBackend>(
    emb: &Embedding<B>,
    indices: &GoldenTensor,
    device: &B::Device,
    in_place: Option<&mut Embedding<B>>,
) -> Result<Tensor<B, 2>, EmbeddingError> {
    let n = indices.shape.iter().product::<usize>();
    let d = emb.embedding_dim();
    let data = TensorData::new(indices.ints(), indices.shape.clone());
    macro_rules! rank {
        ($di:literal, $do:literal) => {{
            let idx = Tensor::<B, $di, Int>::from_data(data, device);
            let out: Tensor<B, $do> = match in_place {
                Some(emb) => emb.try_forward_mut(idx)?,
                None => emb.try_forward(idx)?,
            };
            out.reshape([n, d])
        }};
    }
    Ok(match indices.shape.len() {
        1 => rank!(1, 2),
        2 => rank!(2, 3),
        3 => rank!(3, 4),
        4 => rank!(4, 5),
        r => panic!("index rank {r} is not supported by the runner"),
    })
}

pub fn check_forward<B: EmbeddingBackend>(
    case: &Case,
    device: &B::Device,
    tol: Tol,
) -> Result<(), String> {
    let options = options_of(&case.json["config"]).map_err(|e| e.to_string())?;
    let indices = case.tensor("indices");
    let emb = Embedding::<B>::from_pretrained(weight::<B>(case, device), true, options)
        .map_err(|e| e.to_string())?;
    let expected = case.expected("output").expect("output");
    let out = lookup(&emb, &indices, device, None).map_err(|e| e.to_string())?;
    let flat = GoldenTensor {
        shape: vec![out.dims()[0], out.dims()[1]],
        data: expected.data,
    };
    compare("output", out.into_data(), &flat, tol)?;

    // PyTorch's in-place renorm: the stored weight after the forward.
    let mut emb_mut = emb.clone();
    let out = lookup(&emb, &indices, device, Some(&mut emb_mut)).map_err(|e| e.to_string())?;
    compare("output of forward_mut", out.into_data(), &flat, tol)?;
    let expected = case
        .expected("weight_after_forward")
        .expect("weight_after_forward");
    compare(
        "weight_after_forward",
        emb_mut.weight.val().into_data(),
        &expected,
        tol,
    )
}

pub fn check_backward<B: EmbeddingBackend + SparseUpdate, C: CheckpointStrategy>(
    case: &Case,
    device: &B::Device,
    tol: Tol,
) -> Result<(), String> {
    type Ad<B, C> = Autodiff<B, C>;
    let options = options_of(&case.json["config"]).map_err(|e| e.to_string())?;
    let indices = case.tensor("indices");
    let emb =
        Embedding::<Ad<B, C>>::from_pretrained(weight::<Ad<B, C>>(case, device), false, options)
            .map_err(|e| e.to_string())?;
    let out = lookup(&emb, &indices, device, None).map_err(|e| e.to_string())?;
    let g = case.tensor("grad_output");
    let grad_output = Tensor::<Ad<B, C>, 2>::from_data(
        TensorData::new(g.floats(), [out.dims()[0], out.dims()[1]]),
        (device, case.dtype::<B>()),
    );
    let mut grads = (out * grad_output).sum().backward();
    let expected_dense = case.expected("weight_grad").expect("weight_grad");
    if options.sparse {
        // In the weight's place stands only a tiny marker, never a [V, D] tensor.
        if let Some(marker) = emb.weight.grad(&grads)
            && marker.dims() == emb.weight.dims()
        {
            return Err("sparse lookup left a dense weight gradient".into());
        }
        let rows = emb.sparse_grad_remove(&mut grads);
        let expected_rows = &case.json["expected"]["weight_grad_rows"];
        let expected_ids: Vec<i64> = GoldenTensor::from_json(&expected_rows["ids"]).ints();
        let expected_values = GoldenTensor::from_json(&expected_rows["values"]);
        match rows {
            None if expected_ids.is_empty() => Ok(()),
            None => Err(format!(
                "no row-sparse gradient, expected rows {expected_ids:?}"
            )),
            Some(rows) => {
                let ids = rows.ids_vec();
                if ids != expected_ids {
                    return Err(format!("sparse ids {ids:?}, expected {expected_ids:?}"));
                }
                compare(
                    "sparse values",
                    rows.values.clone().into_data(),
                    &expected_values,
                    tol,
                )?;
                compare(
                    "sparse rows as dense",
                    rows.to_dense().into_data(),
                    &expected_dense,
                    tol,
                )
            }
        }
    } else {
        let grad = emb
            .weight
            .grad(&grads)
            .ok_or_else(|| "no weight gradient".to_string())?;
        compare("weight_grad", grad.into_data(), &expected_dense, tol)
    }
}

fn check_error<B: EmbeddingBackend>(case: &Case, device: &B::Device) -> Result<(), String> {
    let expect = case.json["expect_error"].as_str().unwrap_or("");
    let config = config_of(&case.json["config"]);
    let outcome = match case.json["op"].as_str() {
        Some("config") => config.try_init::<B>(device).map(|_| ()),
        Some("embedding") => {
            let emb = config
                .try_init::<B>(device)
                .map_err(|e| format!("config rejected: {e}"))?;
            lookup(&emb, &case.tensor("indices"), device, None).map(|_| ())
        }
        other => return Err(format!("error op {other:?} is not an embedding op")),
    };
    let err = match outcome {
        Ok(()) => return Err(format!("accepted input that PyTorch rejects ({expect})")),
        Err(err) => err,
    };
    let category = match err {
        EmbeddingError::IndexOutOfRange { .. } => "index_out_of_range",
        EmbeddingError::PaddingIdxOutOfRange { .. } => "padding_idx_out_of_range",
        _ => "other",
    };
    if category == expect {
        Ok(())
    } else {
        Err(format!("error `{err}` is {category}, expected {expect}"))
    }
}

/// Runs every `embedding/` case on `B`: forward and in-place renorm on `B`, backward on
/// `Autodiff<B>` and `Autodiff<B, BalancedCheckpointing>`. Prints `golden-<label>: ...`.
pub fn run<B: EmbeddingBackend + SparseUpdate>(label: &str, device: &B::Device, renorm_tol: Tol) {
    let mut report = Report::default();
    for case in load_cases("embedding") {
        let name = format!("{} ({})", case.name(), case.path.display());
        let outcome = match case.kind() {
            "embedding" => {
                let tol = if case.json["config"]["max_norm"].is_null() {
                    Tol::DEFAULT
                } else {
                    renorm_tol
                };
                check_forward::<B>(&case, device, tol)
                    .and_then(|()| check_backward::<B, NoCheckpointing>(&case, device, tol))
                    .and_then(|()| {
                        check_backward::<B, BalancedCheckpointing>(&case, device, tol)
                            .map_err(|e| format!("checkpointed: {e}"))
                    })
            }
            "error" => check_error::<B>(&case, device),
            other => Err(format!("kind {other:?} does not belong in embedding/")),
        };
        report.record(&name, outcome);
    }
    report.finish(label);
}
