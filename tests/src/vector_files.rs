//! Word-vector files in and out: round trips in the three formats, `from_pretrained`'s options
//! and the row limit, one typed error per kind of malformed file, and gensim's files (`vectors/`
//! golden cases, written by `cargo xtask golden` with gensim's `save_word2vec_format`).

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use burn_embedding::vectors::{
    ReadOptions, VectorFormat, VectorsError, WordVectors, read_vectors, write_vectors,
};
use burn_embedding::{Embedding, EmbeddingBackend, EmbeddingOptions};

use crate::golden::{GoldenTensor, load_cases};
use crate::python;
use crate::report::Report;

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-embedding-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn write_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir().join(name);
    std::fs::write(&path, bytes).expect("write a test file");
    path
}

fn values<B: EmbeddingBackend>(read: &WordVectors<B>) -> Vec<f32> {
    read.embedding.weight.val().into_data().to_vec().unwrap()
}

fn read<B: EmbeddingBackend>(
    path: &Path,
    format: VectorFormat,
    device: &B::Device,
) -> Result<WordVectors<B>, VectorsError> {
    read_vectors::<B>(path, format, ReadOptions::default(), device)
}

/// Write then read in each format: the same words, the same floats (exactly: text is written
/// as the shortest decimal that reads back to the same `f32`).
pub fn round_trips<B: EmbeddingBackend>(device: &B::Device) {
    let words = ["the", "of", "königin", "x'y", "a-b", "Z"];
    let data: Vec<f32> = (0..30)
        .map(|i| (i as f32 * 1.37).sin() * 10f32.powi(i % 7 - 3))
        .collect();
    let weight = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [6, 5]), device);
    let emb = Embedding::from_pretrained(weight, true, EmbeddingOptions::new()).unwrap();
    for (name, format) in [
        ("rt.txt", VectorFormat::Word2VecText),
        ("rt.bin", VectorFormat::Word2VecBinary),
        ("rt.glove", VectorFormat::GloveText),
    ] {
        let path = dir().join(name);
        write_vectors(&path, format, &words, &emb).unwrap();
        let back = read::<B>(&path, format, device).unwrap();
        assert_eq!(back.words, words, "{name}");
        assert_eq!(values(&back), data, "{name}");
    }
    // from_pretrained's options: trainable, padding row kept as read, the first rows only.
    let path = dir().join("rt.bin");
    let options = ReadOptions {
        limit: Some(4),
        freeze: false,
        options: EmbeddingOptions::new().with_padding_idx(Some(2)),
    };
    let back =
        read_vectors::<Autodiff<B>>(&path, VectorFormat::Word2VecBinary, options, device).unwrap();
    assert_eq!(back.words, words[..4]);
    assert_eq!(
        back.embedding
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        data[..20]
    );
    assert!(back.embedding.weight.is_require_grad());
    assert_eq!(back.embedding.options().padding_idx, Some(2));
    let text = dir().join("rt.txt");
    let limited = ReadOptions {
        limit: Some(1),
        ..ReadOptions::default()
    };
    let back = read_vectors::<B>(&text, VectorFormat::Word2VecText, limited, device).unwrap();
    assert_eq!(
        (back.words.len(), back.embedding.weight.dims()),
        (1, [1, 5])
    );

    // What cannot be written.
    let err = write_vectors(
        dir().join("w"),
        VectorFormat::Word2VecText,
        &["a b"; 6],
        &emb,
    );
    assert!(
        matches!(err, Err(VectorsError::UnwritableWord { index: 0, .. })),
        "{err:?}"
    );
    let err = write_vectors(dir().join("w"), VectorFormat::Word2VecText, &["a"; 2], &emb);
    assert!(
        matches!(err, Err(VectorsError::WordCount { words: 2, rows: 6 })),
        "{err:?}"
    );
}

/// One typed error per kind of malformed file, naming the line or the byte offset.
pub fn malformed_files<B: EmbeddingBackend>(device: &B::Device) {
    let text = VectorFormat::Word2VecText;
    let check = |name: &str, bytes: &[u8], format: VectorFormat, expected: &str| {
        let path = write_file(name, bytes);
        let err = match read::<B>(&path, format, device) {
            Ok(_) => panic!("{name}: read a malformed file"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains(expected),
            "{name}: {err:?} does not say {expected:?}"
        );
    };
    check(
        "count.txt",
        b"2 3\na 1 2 3\nb 1 2\n",
        text,
        "line 3: 2 values after the word \"b\", expected 3",
    );
    check(
        "float.txt",
        b"2 3\na 1 2 x3\nb 1 2 3\n",
        text,
        "line 2: \"x3\" is not a number",
    );
    check(
        "header.txt",
        b"two 3\na 1 2 3\n",
        text,
        "line 1: the header \"two 3\"",
    );
    check(
        "short.txt",
        b"3 2\na 1 2\nb 3 4\n",
        text,
        "announces 3 vectors, the file holds 2",
    );
    check(
        "glove.txt",
        b"a 1 2 3\nb 1 2\n",
        VectorFormat::GloveText,
        "line 2: 2 values",
    );
    check("empty.txt", b"", VectorFormat::GloveText, "no vectors");
    let mut bin = b"2 2\nab ".to_vec();
    bin.extend(1.0f32.to_le_bytes());
    bin.extend(2.0f32.to_le_bytes());
    bin.extend(b"cd ");
    bin.extend(3.0f32.to_le_bytes());
    check(
        "trunc.bin",
        &bin,
        VectorFormat::Word2VecBinary,
        "byte 22: the file ends inside vector 1",
    );
    let mut bad = b"1 1\n\xff\xfe ".to_vec();
    bad.extend(1.0f32.to_le_bytes());
    check(
        "utf8.bin",
        &bad,
        VectorFormat::Word2VecBinary,
        "byte 4: word 0 is not valid UTF-8",
    );
}

/// gensim's files (`vectors/` golden cases): our reader gives the vectors gensim wrote, and the
/// cosine similarities gensim computed on them.
pub fn gensim_files<B: EmbeddingBackend>(label: &str, device: &B::Device) {
    let mut report = Report::default();
    for case in load_cases("vectors") {
        let name = format!("{} ({})", case.name(), case.path.display());
        let outcome = (|| -> Result<(), String> {
            let expected = GoldenTensor::from_json(&case.json["vectors"]);
            let words: Vec<String> =
                serde_json::from_value(case.json["words"].clone()).map_err(|e| e.to_string())?;
            for (file, format) in [
                ("text", VectorFormat::Word2VecText),
                ("binary", VectorFormat::Word2VecBinary),
            ] {
                let path = case
                    .path
                    .with_file_name(case.json["files"][file].as_str().ok_or("no file name")?);
                let read = read::<B>(&path, format, device).map_err(|e| e.to_string())?;
                if read.words != words {
                    return Err(format!("{file}: the words differ"));
                }
                let got = values(&read);
                let tol = if file == "binary" { 0.0 } else { 1e-6 };
                if let Some((k, (g, e))) = got
                    .iter()
                    .zip(expected.floats())
                    .enumerate()
                    .find(|(_, (g, e))| (**g - e).abs() > tol)
                {
                    return Err(format!("{file}: value {k} is {g}, gensim's {e}"));
                }
                for pair in case.json["similarities"]
                    .as_array()
                    .ok_or("no similarities")?
                {
                    let (a, b) = (
                        pair[0].as_u64().unwrap() as usize,
                        pair[1].as_u64().unwrap() as usize,
                    );
                    let sim = cosine(&got, expected.shape[1], a, b);
                    let theirs = pair[2].as_f64().unwrap();
                    if (sim - theirs).abs() > 1e-5 {
                        return Err(format!(
                            "{file}: similarity({a}, {b}) {sim}, gensim's {theirs}"
                        ));
                    }
                }
            }
            Ok(())
        })();
        report.record(&name, outcome);
    }
    report.finish(&format!("{label}-vectors"));
}

fn cosine(values: &[f32], d: usize, a: usize, b: usize) -> f64 {
    let (x, y) = (&values[a * d..][..d], &values[b * d..][..d]);
    let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
    let norm = |v: &[f32]| v.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
    dot / (norm(x) * norm(y))
}

/// gensim reads what our writer wrote: `KeyedVectors.load_word2vec_format` on our text and
/// binary files gives our words and vectors, and its `most_similar` the neighbours we compute.
/// Runs the venv's python (`BURN_EMBEDDING_PYTHON`, which `cargo xtask test` sets); without it
/// the check says so and does nothing.
pub fn gensim_reads_ours<B: EmbeddingBackend>(label: &str, device: &B::Device) {
    let (count, dim) = (30, 8);
    let words: Vec<String> = (0..count).map(|i| format!("word{i}")).collect();
    let data: Vec<f32> = (0..count * dim)
        .map(|i| (i as f32 * 0.731).sin() + (i % 5) as f32 * 0.1)
        .collect();
    let weight = Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [count, dim]), device);
    let emb = Embedding::from_pretrained(weight, true, EmbeddingOptions::new()).unwrap();
    let script = r#"
import json, sys
from gensim.models import KeyedVectors
kv = KeyedVectors.load_word2vec_format(sys.argv[1], binary=sys.argv[2] == "binary")
print(json.dumps({"words": list(kv.index_to_key), "vectors": kv.vectors.ravel().tolist(),
                  "most_similar": [kv.most_similar(w, topn=3) for w in ["word0", "word7"]]}))
"#;
    for (name, format) in [
        ("ours.txt", VectorFormat::Word2VecText),
        ("ours.bin", VectorFormat::Word2VecBinary),
    ] {
        let path = dir().join(name);
        write_vectors(&path, format, &words, &emb).unwrap();
        let binary = if format == VectorFormat::Word2VecBinary {
            "binary"
        } else {
            "text"
        };
        let args = [path.as_os_str(), std::ffi::OsStr::new(binary)];
        let Some(theirs) = python::run_json(&format!("gensim-{label}"), script, args) else {
            return;
        };
        let their_words: Vec<String> = serde_json::from_value(theirs["words"].clone()).unwrap();
        assert_eq!(their_words, words, "{name}: gensim's words");
        let their_vectors: Vec<f32> = serde_json::from_value(theirs["vectors"].clone()).unwrap();
        assert_eq!(their_vectors, data, "{name}: gensim's vectors");
        for (query, similar) in [0usize, 7]
            .iter()
            .zip(theirs["most_similar"].as_array().unwrap())
        {
            let mut ours: Vec<(usize, f64)> = (0..count)
                .filter(|&j| j != *query)
                .map(|j| (j, cosine(&data, dim, *query, j)))
                .collect();
            ours.sort_by(|a, b| b.1.total_cmp(&a.1));
            for ((j, sim), pair) in ours.iter().zip(similar.as_array().unwrap()) {
                assert_eq!(
                    pair[0].as_str().unwrap(),
                    words[*j],
                    "{name}: neighbour of {query}"
                );
                assert!(
                    (pair[1].as_f64().unwrap() - sim).abs() < 1e-5,
                    "{name}: similarity"
                );
            }
        }
    }
    println!(
        "gensim-{label}: gensim read our text and binary files: same words, vectors, neighbours"
    );
}
