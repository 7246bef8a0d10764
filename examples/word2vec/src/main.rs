//! `cargo run --release -p word2vec -- [--corpus PATH] [--backend ndarray|wgpu|tch] [--epochs N]
//! [--dim D] [--out DIR]`
//!
//! Without `--corpus`, trains on a generated corpus of words drawn from latent topics and
//! reports how often a word's nearest neighbours share its topic.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn_embedding::{EmbeddingBackend, SparseGradients};
use word2vec::corpus::{self, Vocab};
use word2vec::train::{
    Word2VecConfig, epoch_losses, nearest, normalized_vectors, save, topic_agreement, train,
};

struct Args {
    corpus: Option<PathBuf>,
    backend: String,
    out: PathBuf,
    config: Word2VecConfig,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        corpus: None,
        backend: "ndarray".into(),
        out: PathBuf::from("target/word2vec"),
        config: Word2VecConfig::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{arg} {v}: {e}"));
        match arg.as_str() {
            "--corpus" => args.corpus = Some(value()?.into()),
            "--backend" => args.backend = value()?,
            "--out" => args.out = value()?.into(),
            "--epochs" => args.config.epochs = number(value()?)?,
            "--dim" => args.config.dim = number(value()?)?,
            "--batch-size" => args.config.batch_size = number(value()?)?,
            "--grads-accumulation" => args.config.grads_accumulation = number(value()?)?,
            "-h" | "--help" => {
                return Err("usage: word2vec [--corpus PATH] [--backend ndarray|wgpu|tch] [--epochs N] [--dim D] [--batch-size B] [--grads-accumulation K] [--out DIR]".into())
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(args)
}

fn run<B>(args: &Args, device: &B::Device)
where
    B: SparseGradients,
    B::InnerBackend: EmbeddingBackend,
{
    let (sentences, generated) = match &args.corpus {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", path.display()));
            (corpus::tokenize(&text), false)
        }
        None => (corpus::generated(20, 50, 20_000, 7), true),
    };
    let vocab = Vocab::build(&sentences, args.config.min_count);
    assert!(
        vocab.len() > 1,
        "the corpus has fewer than two words seen {} times",
        args.config.min_count
    );
    let ids = vocab.encode(&sentences);
    let started = std::time::Instant::now();
    let training_dir = args.out.join("training");
    // Start afresh: the Learner would otherwise append to an earlier run's logs.
    std::fs::remove_dir_all(&training_dir).ok();
    let model = train::<B>(&args.config, &vocab, &ids, &training_dir, None, device);
    println!("trained in {:.1} s", started.elapsed().as_secs_f64());
    let valid = epoch_losses(&training_dir, "valid");
    for (epoch, train) in epoch_losses(&training_dir, "train").iter().enumerate() {
        let valid = valid
            .get(epoch)
            .map_or(String::new(), |v| format!(", valid loss {v:.4}"));
        println!("epoch {}: train loss {train:.4}{valid}", epoch + 1);
    }
    save(&model, &args.config, &args.out);
    println!(
        "saved the model record and config in {}",
        args.out.display()
    );

    let (vectors, d) = normalized_vectors(&model);
    let queries: Vec<usize> = if generated {
        (0..5)
            .map(|t| vocab.id(&format!("t{t}w0")).unwrap_or(t))
            .collect()
    } else {
        ["king", "love", "night", "sword", "father", "good"]
            .iter()
            .filter_map(|w| vocab.id(w))
            .collect()
    };
    for id in queries {
        let near: Vec<String> = nearest(&vectors, d, id, 6)
            .into_iter()
            .map(|(j, s)| format!("{} ({s:.2})", vocab.words[j]))
            .collect();
        println!("{:>10}: {}", vocab.words[id], near.join(", "));
    }
    if generated {
        let score = topic_agreement(&vocab, &vectors, d, 10);
        println!(
            "topic agreement of the 10 nearest neighbours: {:.1}% (chance: 5.0%)",
            score * 100.0
        );
    }
}

fn main() {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    match args.backend.as_str() {
        #[cfg(feature = "ndarray")]
        "ndarray" => run::<Autodiff<burn::backend::NdArray>>(&args, &Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => run::<Autodiff<burn::backend::Wgpu>>(&args, &Default::default()),
        #[cfg(feature = "tch")]
        "tch" => run::<Autodiff<burn::backend::LibTorch<f32>>>(
            &args,
            &burn::backend::libtorch::LibTorchDevice::Cpu,
        ),
        other => {
            eprintln!("backend {other:?} is not compiled in (features: ndarray, wgpu, tch)");
            std::process::exit(2);
        }
    }
}
