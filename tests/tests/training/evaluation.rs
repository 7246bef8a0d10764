//! The main job's evaluation against gensim's: `word2vec::eval::similarity` and `analogies` on
//! vectors we write give what gensim's `evaluate_word_pairs` and `evaluate_word_analogies` give
//! on the same file, on the WordSim-353 and `questions-words.txt` files gensim ships. Runs the
//! venv's python (`BURN_EMBEDDING_PYTHON`, set by `cargo xtask test`).

use burn::tensor::{Tensor, TensorData};
use burn_embedding::vectors::{VectorFormat, write_vectors};
use burn_embedding::{Embedding, EmbeddingOptions};
use word2vec::corpus::Vocab;
use word2vec::eval;
use word2vec::model::Table;
use word2vec::train::normalized_vectors;

use burn_embedding_conformance::python;

use super::B;

const SCRIPT: &str = r#"
import json, os, sys
import gensim
from gensim.models import KeyedVectors
from gensim.test.utils import datapath
kv = KeyedVectors.load_word2vec_format(sys.argv[1])
pearson, spearman, oov = kv.evaluate_word_pairs(datapath("wordsim353.tsv"))
score, sections = kv.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=30000)
print(json.dumps({
    "spearman": float(spearman[0]), "oov": oov,
    "wordsim": datapath("wordsim353.tsv"), "questions": datapath("questions-words.txt"),
    "sections": [[s["section"], len(s["correct"]), len(s["incorrect"])] for s in sections],
}))
"#;

#[test]
fn evaluation_matches_gensim() {
    // Words of both files, most frequent first, and random vectors.
    let words: Vec<&str> = [
        "tiger", "cat", "love", "sex", "book", "paper", "computer", "keyboard", "king", "queen",
        "man", "woman", "boy", "girl", "brother", "sister", "father", "mother", "son", "daughter",
        "he", "she", "his", "her", "athens", "greece", "baghdad", "iraq", "bangkok", "thailand",
        "money", "cash", "bank", "football", "soccer", "water", "zebra",
    ]
    .to_vec();
    let sentences: Vec<Vec<String>> = words
        .iter()
        .enumerate()
        .map(|(i, w)| vec![w.to_string(); words.len() + 1 - i])
        .collect();
    let vocab = Vocab::build(&sentences, 1);
    assert_eq!(vocab.words, words, "the vocabulary keeps this order");
    let dim = 16;
    let data: Vec<f32> = (0..words.len() * dim)
        .map(|i| (i as f32 * 0.618).sin() * 1.7 + (i % 3) as f32 * 0.2)
        .collect();
    let weight = Tensor::<B, 2>::from_data(
        TensorData::new(data, [words.len(), dim]),
        &Default::default(),
    );
    let emb = Embedding::from_pretrained(weight, true, EmbeddingOptions::new()).unwrap();
    let path = std::env::temp_dir().join(format!("burn-embedding-eval-{}.txt", std::process::id()));
    write_vectors(&path, VectorFormat::Word2VecText, &vocab.words, &emb).unwrap();

    let Some(theirs) = python::run_json("evaluation", SCRIPT, [&path]) else {
        return;
    };

    let model = word2vec::model::Word2Vec {
        input: Table::Sparse(emb.clone()),
        output: Table::Sparse(emb),
    };
    let (vectors, d) = normalized_vectors(&model);
    let wordsim = std::path::PathBuf::from(theirs["wordsim"].as_str().unwrap());
    let ours = eval::similarity(&wordsim, &vocab, &vectors, d).unwrap();
    let spearman = theirs["spearman"].as_f64().unwrap();
    assert!(
        (ours.spearman - spearman).abs() < 1e-6,
        "Spearman {} vs gensim's {spearman}",
        ours.spearman
    );
    let oov = theirs["oov"].as_f64().unwrap();
    assert!(
        (ours.oov_share * 100.0 - oov).abs() < 1e-9,
        "OOV {} vs gensim's {oov}%",
        ours.oov_share
    );

    let questions = std::path::PathBuf::from(theirs["questions"].as_str().unwrap());
    let sections = eval::analogies(&questions, &vocab, &vectors, d, 30_000).unwrap();
    for their in theirs["sections"].as_array().unwrap() {
        let name = their[0].as_str().unwrap();
        let (correct, incorrect) = (
            their[1].as_u64().unwrap() as usize,
            their[2].as_u64().unwrap() as usize,
        );
        let name = if name == "Total accuracy" {
            "total"
        } else {
            name
        };
        let ours = sections
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no section {name:?}"));
        assert_eq!(
            (ours.correct, ours.answered),
            (correct, correct + incorrect),
            "section {name}"
        );
    }
    println!(
        "evaluation: Spearman {:.4} and {} analogy sections as gensim's",
        ours.spearman,
        sections.len()
    );
}
