//! The options of a lookup, normalised and validated, shared by the module and the functional form.

use crate::EmbeddingError;

/// The `p` of the p-norm used by `max_norm`: any `p > 0`, or infinity (the largest absolute
/// value of the row), as in PyTorch.
///
/// A newtype rather than a bare `f64` so that a saved config keeps infinity: JSON has no
/// infinity and would write `null`, which would not load back. It serialises as a number, or
/// as the string `"inf"`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct NormType(pub f64);

impl NormType {
    /// The Euclidean norm, PyTorch's default.
    pub const L2: Self = Self(2.0);
    /// The max-norm.
    pub const INFINITY: Self = Self(f64::INFINITY);

    /// The value of `p`.
    pub const fn p(self) -> f64 {
        self.0
    }
}

impl Default for NormType {
    fn default() -> Self {
        Self::L2
    }
}

impl From<f64> for NormType {
    fn from(p: f64) -> Self {
        Self(p)
    }
}

impl core::fmt::Display for NormType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for NormType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            serializer.serialize_f64(self.0)
        } else if self.0 > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> serde::Deserialize<'de> for NormType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Number(p) => Ok(Self(p)),
            Repr::Text(t) => match t.to_ascii_lowercase().as_str() {
                "inf" | "infinity" => Ok(Self::INFINITY),
                other => other
                    .parse()
                    .map(Self)
                    .map_err(|_| serde::de::Error::custom(format!("invalid norm_type {t:?}"))),
            },
        }
    }
}

/// Normalised options of an embedding lookup (PyTorch's `F.embedding` arguments).
///
/// Unlike [`EmbeddingConfig`](crate::EmbeddingConfig), the padding index here is already
/// normalised to `0..num_embeddings`. Build one with [`EmbeddingOptions::new`] and the `with_*`
/// methods, or get it from a config or a module.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddingOptions {
    /// Row whose gradient is always zero (PyTorch's `padding_idx`, normalised).
    pub padding_idx: Option<usize>,
    /// Rows referenced by a lookup whose `norm_type`-norm exceeds this are rescaled to it.
    pub max_norm: Option<f64>,
    /// The `p` of the norm used with `max_norm`.
    pub norm_type: NormType,
    /// Divide each row's gradient by the number of times its index occurs in the batch.
    pub scale_grad_by_freq: bool,
    /// Produce a row-sparse gradient (only the rows the batch touched) instead of a dense one.
    pub sparse: bool,
    /// Make the backward the same bits on every run (the default). Turning it off lets a
    /// backend add gradient rows in whatever order its threads finish (wgpu: float atomics
    /// for the dense gradient, with no host round trip); the CPU backends are deterministic
    /// either way, at no cost.
    pub deterministic: bool,
}

impl Default for EmbeddingOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddingOptions {
    /// Plain lookup: no padding row, no renormalisation, dense unscaled deterministic gradient.
    pub const fn new() -> Self {
        Self {
            padding_idx: None,
            max_norm: None,
            norm_type: NormType::L2,
            scale_grad_by_freq: false,
            sparse: false,
            deterministic: true,
        }
    }

    /// Sets the (already normalised) padding row.
    pub const fn with_padding_idx(mut self, padding_idx: Option<usize>) -> Self {
        self.padding_idx = padding_idx;
        self
    }

    /// Sets `max_norm`.
    pub const fn with_max_norm(mut self, max_norm: Option<f64>) -> Self {
        self.max_norm = max_norm;
        self
    }

    /// Sets the `p` of the norm used with `max_norm`.
    pub const fn with_norm_type(mut self, norm_type: NormType) -> Self {
        self.norm_type = norm_type;
        self
    }

    /// Sets `scale_grad_by_freq`.
    pub const fn with_scale_grad_by_freq(mut self, scale_grad_by_freq: bool) -> Self {
        self.scale_grad_by_freq = scale_grad_by_freq;
        self
    }

    /// Sets `sparse`.
    pub const fn with_sparse(mut self, sparse: bool) -> Self {
        self.sparse = sparse;
        self
    }

    /// Sets `deterministic`.
    pub const fn with_deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = deterministic;
        self
    }

    /// Checks the options against a weight of `num_embeddings` rows.
    pub fn validate(&self, num_embeddings: usize) -> Result<(), EmbeddingError> {
        if let Some(padding_idx) = self.padding_idx
            && padding_idx >= num_embeddings
        {
            return Err(EmbeddingError::PaddingIdxOutOfRange {
                padding_idx: padding_idx as i64,
                num_embeddings,
            });
        }
        validate_norm(self.max_norm, self.norm_type)
    }
}

/// Normalises a PyTorch-style padding index (negative counts from the end).
pub fn normalize_padding_idx(
    padding_idx: Option<i64>,
    num_embeddings: usize,
) -> Result<Option<usize>, EmbeddingError> {
    let Some(p) = padding_idx else {
        return Ok(None);
    };
    let n = num_embeddings as i64;
    if p >= n || p < -n {
        return Err(EmbeddingError::PaddingIdxOutOfRange {
            padding_idx: p,
            num_embeddings,
        });
    }
    Ok(Some(if p < 0 { (n + p) as usize } else { p as usize }))
}

/// Checks `max_norm` and `norm_type`.
pub(crate) fn validate_norm(
    max_norm: Option<f64>,
    norm_type: NormType,
) -> Result<(), EmbeddingError> {
    validate_norm_inner(max_norm, norm_type.p())
}

fn validate_norm_inner(max_norm: Option<f64>, norm_type: f64) -> Result<(), EmbeddingError> {
    if let Some(max_norm) = max_norm
        && !(max_norm.is_finite() && max_norm >= 0.0)
    {
        return Err(EmbeddingError::InvalidMaxNorm { max_norm });
    }
    // NaN is rejected too: it is not > 0.
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(EmbeddingError::InvalidNormType { norm_type });
    }
    Ok(())
}
