//! Tables from PyTorch checkpoints: one named tensor of a `.pt` state_dict (through burn-store's
//! `PytorchReader`) or of a safetensors file, as an [`Embedding`]. A half-precision tensor
//! (`bf16`, `f16`) lands in the backend's float type.
//!
//! To load whole models holding these modules, burn-store's stores apply to them as to any burn
//! module (their parameter is `weight`, as in PyTorch's `nn.Embedding` and `nn.EmbeddingBag`):
//! `model.load_from(&mut PytorchStore::from_file(path).with_key_remapping("^encoder\\.", "emb."))`.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use thiserror::Error;

use crate::{Embedding, EmbeddingBackend, EmbeddingError, EmbeddingOptions};

/// What can go wrong reading a table from a checkpoint.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be read or parsed.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// No tensor has this name; the names the file holds are listed.
    #[error("{path}: no tensor {name:?} (the file holds {available:?})")]
    NoTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names in the file.
        available: Vec<String>,
    },
    /// The tensor is not a `[V, D]` float table.
    #[error(
        "{path}: tensor {name:?} is {dtype} {shape:?}, not a [num_embeddings, dim] float table"
    )]
    NotATable {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its element type.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The table makes no valid embedding with these options.
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
}

/// Reads the tensor `name` of the checkpoint at `path` (a safetensors file by its `.safetensors`
/// extension, a PyTorch `.pt` / `.pth` / `.bin` state_dict otherwise) as an [`Embedding`] with
/// `from_pretrained`'s semantics.
///
/// ```no_run
/// use burn::backend::NdArray;
/// use burn_embedding::EmbeddingOptions;
/// use burn_embedding::checkpoint::read_embedding;
///
/// // torch.save(model.state_dict(), "model.pt") with model.embed = nn.Embedding(..)
/// let emb = read_embedding::<NdArray>("model.pt", "embed.weight", true,
///     EmbeddingOptions::new().with_padding_idx(Some(0)), &Default::default()).unwrap();
/// ```
pub fn read_embedding<B: EmbeddingBackend>(
    path: impl AsRef<Path>,
    name: &str,
    freeze: bool,
    options: EmbeddingOptions,
    device: &B::Device,
) -> Result<Embedding<B>, CheckpointError> {
    let path = path.as_ref();
    let data = if path.extension().is_some_and(|e| e == "safetensors") {
        read_safetensors(path, name)?
    } else {
        read_pytorch(path, name)?
    };
    let shape = data.shape.to_vec();
    let is_float = data.dtype.is_float();
    if shape.len() != 2 || !is_float {
        return Err(CheckpointError::NotATable {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: format!("{:?}", data.dtype),
            shape,
        });
    }
    let weight = Tensor::<B, 2>::from_data(data.convert::<f32>(), device);
    Ok(Embedding::from_pretrained(weight, freeze, options)?)
}

fn read_error(path: &Path, reason: impl ToString) -> CheckpointError {
    CheckpointError::Read {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_pytorch(path: &Path, name: &str) -> Result<TensorData, CheckpointError> {
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| read_error(path, e))?;
    let Some(snapshot) = reader.get(name) else {
        let mut available = reader.keys();
        available.sort();
        return Err(CheckpointError::NoTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            available,
        });
    };
    snapshot
        .to_data()
        .map_err(|e| read_error(path, format!("{e:?}")))
}

fn read_safetensors(path: &Path, name: &str) -> Result<TensorData, CheckpointError> {
    use burn::tensor::DType;
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| read_error(path, e))?;
    let view = file.tensor(name).map_err(|_| {
        let mut available: Vec<String> = file.names().into_iter().map(String::from).collect();
        available.sort();
        CheckpointError::NoTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            available,
        }
    })?;
    let dtype = match view.dtype() {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            return Err(CheckpointError::NotATable {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
                shape: view.shape().to_vec(),
            });
        }
    };
    Ok(TensorData::from_bytes_vec(
        view.data().to_vec(),
        view.shape().to_vec(),
        dtype,
    ))
}
