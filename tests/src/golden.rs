//! Loading golden cases (format `embedding-golden/1`, see `tests/golden/README.md`).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A tensor as the golden files write it.
#[derive(Debug, Clone)]
pub struct GoldenTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

impl GoldenTensor {
    /// Reads `{"shape": [...], "data": [...]}`.
    pub fn from_json(value: &Value) -> Self {
        let shape = value["shape"]
            .as_array()
            .expect("tensor shape")
            .iter()
            .map(|d| d.as_u64().expect("dimension") as usize)
            .collect();
        let data = value["data"]
            .as_array()
            .expect("tensor data")
            .iter()
            .map(number)
            .collect();
        Self { shape, data }
    }

    /// The values as indices.
    pub fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&x| x as i64).collect()
    }

    /// The values as f32.
    pub fn floats(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }
}

/// The float type of backend `B`'s tensors.
pub fn float_dtype<B: burn::tensor::backend::Backend>() -> burn::tensor::DType {
    <B::FloatElem as burn::tensor::Element>::dtype()
}

/// A JSON number, or one of the `Infinity` / `NaN` tokens written as strings by [`parse`].
pub fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().expect("finite number"),
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        Value::String(s) if s == "NaN" => f64::NAN,
        other => panic!("expected a number, got {other}"),
    }
}

/// Parses a golden file. Python's json writes `Infinity`, `-Infinity` and `NaN` as bare tokens,
/// which serde_json rejects: outside string literals they are quoted first.
pub fn parse(text: &str) -> Value {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(token) = token {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    serde_json::from_str(&out).expect("golden file is JSON")
}

/// One golden case: its file and parsed content.
#[derive(Debug, Clone)]
pub struct Case {
    /// Where it was read from.
    pub path: PathBuf,
    /// The parsed JSON.
    pub json: Value,
}

impl Case {
    /// The case's name.
    pub fn name(&self) -> &str {
        self.json["name"].as_str().unwrap_or("<unnamed>")
    }

    /// The case's kind.
    pub fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or("")
    }

    /// The float type every float tensor of the case is created in: its `dtype` field
    /// (`float16`, `bfloat16`), or else `B`'s float type. Never the device's default: burn 0.21
    /// keeps one default per device for the whole process, set by the first backend that uses
    /// the device (a `LibTorch<bf16>` after a `LibTorch<f32>` on the same CPU creates f32).
    pub fn dtype<B: burn::tensor::backend::Backend>(&self) -> burn::tensor::DType {
        use burn::tensor::DType;
        match self.json["dtype"].as_str() {
            Some("float16") => DType::F16,
            Some("bfloat16") => DType::BF16,
            Some(other) => panic!("{}: dtype {other:?} is not known", self.name()),
            None => float_dtype::<B>(),
        }
    }

    /// A tensor field at the top level or under `expected`.
    pub fn tensor(&self, field: &str) -> GoldenTensor {
        GoldenTensor::from_json(&self.json[field])
    }

    /// An expected tensor.
    pub fn expected(&self, field: &str) -> Option<GoldenTensor> {
        let value = &self.json["expected"][field];
        (!value.is_null()).then(|| GoldenTensor::from_json(value))
    }
}

/// The directories of cases, in order: the project's own, `../shared/golden` when it exists,
/// then each directory in `EMBEDDING_GOLDEN_DIR` (colon-separated).
pub fn golden_dirs() -> Vec<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![crate_dir.join("golden")];
    let shared = crate_dir.join("../../shared/golden");
    if shared.is_dir() {
        dirs.push(shared);
    }
    if let Ok(extra) = std::env::var("EMBEDDING_GOLDEN_DIR") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "EMBEDDING_GOLDEN_DIR names {}, which is not a directory",
                dir.display()
            );
            dirs.push(dir);
        }
    }
    dirs
}

/// Every case of one capability folder (`embedding`, `bag`, `optimizer`) across [`golden_dirs`].
pub fn load_cases(capability: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for dir in golden_dirs() {
        let dir = dir.join(capability);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // an absent folder has no cases
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let json = parse(&text);
            assert_eq!(
                json["format"],
                "embedding-golden/1",
                "{} is not an embedding-golden/1 case",
                path.display()
            );
            cases.push(Case { path, json });
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_infinity_outside_strings_only() {
        let v = parse(r#"{"a": Infinity, "b": -Infinity, "s": "Infinity NaN", "c": [NaN]}"#);
        assert_eq!(number(&v["a"]), f64::INFINITY);
        assert_eq!(number(&v["b"]), f64::NEG_INFINITY);
        assert_eq!(v["s"], "Infinity NaN");
        assert!(number(&v["c"][0]).is_nan());
    }
}
