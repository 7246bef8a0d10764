//! PyTorch checkpoints (`checkpoint/` golden cases: state_dicts of an `nn.Embedding` and an
//! `nn.EmbeddingBag`, saved by `torch.save` and as safetensors, in float32 and in bfloat16 /
//! float16): one named tensor as an `Embedding` (half precision lands in the backend's float
//! type), and a model of our modules loaded through burn-store's stores with key remapping.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_embedding::checkpoint::{CheckpointError, read_embedding};
use burn_embedding::{
    BagMode, Embedding, EmbeddingBackend, EmbeddingBag, EmbeddingBagConfig, EmbeddingConfig,
    EmbeddingOptions,
};
use burn_store::{ModuleSnapshot, PytorchStore, SafetensorsStore};

use crate::golden::{Case, GoldenTensor, load_cases};
use crate::report::Report;

/// A model holding our modules under other names than the checkpoint's.
#[derive(Module, Debug)]
pub struct Tables<B: Backend> {
    emb: Embedding<B>,
    bag: EmbeddingBag<B>,
}

fn compare(what: &str, got: Vec<f32>, expected: &GoldenTensor) -> Result<(), String> {
    (got == expected.floats())
        .then_some(())
        .ok_or_else(|| format!("{what}: {got:?} != {:?}", expected.floats()))
}

fn values<B: Backend>(t: burn::tensor::Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec().expect("f32 values")
}

fn run_case<B: EmbeddingBackend>(case: &Case, device: &B::Device) -> Result<(), String> {
    let encoder = GoldenTensor::from_json(&case.json["tensors"]["encoder.weight"]);
    let pooled = GoldenTensor::from_json(&case.json["tensors"]["pooled.weight"]);
    for format in ["pytorch", "safetensors"] {
        let path = case
            .path
            .with_file_name(case.json["files"][format].as_str().ok_or("no file")?);
        // One tensor as an embedding, float32 and bfloat16.
        for (name, expected) in [("encoder.weight", &encoder), ("pooled.weight", &pooled)] {
            let emb = read_embedding::<B>(&path, name, true, EmbeddingOptions::new(), device)
                .map_err(|e| e.to_string())?;
            compare(
                &format!("{format} {name}"),
                values(emb.weight.val()),
                expected,
            )?;
        }
        match read_embedding::<B>(
            &path,
            "decoder.weight",
            true,
            EmbeddingOptions::new(),
            device,
        ) {
            Err(CheckpointError::NoTensor { available, .. })
                if available == ["encoder.weight", "pooled.weight"] => {}
            other => return Err(format!("{format}: a missing name gave {other:?}")),
        }
        // A model of our modules, keys remapped. (burn-store 0.21 applies a tensor in the
        // checkpoint's own dtype: a half-precision state_dict goes through `read_embedding`.)
        if case.json["whole_model"] != true {
            continue;
        }
        let mut model = Tables::<B> {
            emb: EmbeddingConfig::new(7, 3).init(device),
            bag: EmbeddingBagConfig::new(5, 4)
                .with_mode(BagMode::Sum)
                .init(device),
        };
        let applied = if format == "pytorch" {
            let mut store = PytorchStore::from_file(&path)
                .with_key_remapping("^encoder\\.", "emb.")
                .with_key_remapping("^pooled\\.", "bag.");
            model.load_from(&mut store).map_err(|e| format!("{e:?}"))?
        } else {
            let mut store = SafetensorsStore::from_file(&path)
                .with_key_remapping("^encoder\\.", "emb.")
                .with_key_remapping("^pooled\\.", "bag.");
            model.load_from(&mut store).map_err(|e| format!("{e:?}"))?
        };
        if !applied.errors.is_empty() {
            return Err(format!("{format}: {:?}", applied.errors));
        }
        compare(
            &format!("{format} model emb"),
            values(model.emb.weight.val()),
            &encoder,
        )?;
        compare(
            &format!("{format} model bag"),
            values(model.bag.weight.val()),
            &pooled,
        )?;
    }
    Ok(())
}

/// Runs every `checkpoint/` case on `B`; prints `golden-<label>-checkpoint: ...`.
pub fn run<B: EmbeddingBackend>(label: &str, device: &B::Device) {
    let mut report = Report::default();
    for case in load_cases("checkpoint") {
        let name = format!("{} ({})", case.name(), case.path.display());
        report.record(&name, run_case::<B>(&case, device));
    }
    report.finish(&format!("{label}-checkpoint"));
}
