//! `cargo run --release -p word2vec -- [--corpus PATH] [--backend ndarray|wgpu|tch]
//! [--similarity FILE] [--analogies FILE] [--out DIR] ...` (`--help` lists every option)
//!
//! Without `--corpus`, trains on a generated corpus of words drawn from latent topics and
//! reports how often a word's nearest neighbours share its topic.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn_embedding::optim::SparseUpdate;
use burn_embedding::vectors::{VectorFormat, write_vectors};
use burn_embedding::{EmbeddingBackend, SeededBackward, SparseGradients};
use clap::{Parser, ValueEnum};
use word2vec::corpus::{self, TokenStream, Vocab};
use word2vec::eval;
use word2vec::train::{
    Word2VecConfig, epoch_losses, nearest, normalized_vectors, save, topic_agreement, train,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Ndarray,
    Wgpu,
    Tch,
}

/// Skip-gram with negative sampling, trained by burn-train's Learner with two sparse
/// embeddings and lazy Adam. Writes the model record, its config, the vocabulary with counts
/// and the input vectors in the word2vec text and binary formats to `--out`.
#[derive(Debug, Parser)]
#[command(name = "word2vec")]
struct Args {
    /// A text file to train on (one sentence per line); without it, a generated corpus of
    /// words drawn from latent topics.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The backend (compiled in with the cargo feature of the same name).
    #[arg(long, value_enum, default_value = "ndarray")]
    backend: Backend,
    /// Where to write the model, the vocabulary and the vectors.
    #[arg(long, default_value = "target/word2vec")]
    out: PathBuf,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Vector size.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Batches whose gradients add up before one optimizer step (more than one needs
    /// `--unfused`).
    #[arg(long, default_value_t = 1)]
    grads_accumulation: usize,
    /// Lazy Adam's learning rate.
    #[arg(long, default_value_t = Word2VecConfig::new().lr)]
    lr: f64,
    /// Training threads: batches trained at once on forks of the model, whose fused tables
    /// take each batch's update as soon as its backward ends (asynchronous, as gensim's
    /// workers; `1` makes a run reproducible bit for bit).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Step the tables with the Learner's sparse-aware lazy Adam instead of fusing it into their
    /// backward.
    #[arg(long)]
    unfused: bool,
    /// Word-pair similarities to score (tab-separated `word1 word2 score` lines, as
    /// WordSim-353 or SimLex-999): Spearman correlation and the share of pairs out of
    /// vocabulary.
    #[arg(long)]
    similarity: Option<PathBuf>,
    /// Analogies to answer (`questions-words.txt` format): accuracy per section and overall,
    /// over the 30,000 most frequent words.
    #[arg(long)]
    analogies: Option<PathBuf>,
}

impl Args {
    fn config(&self) -> Word2VecConfig {
        Word2VecConfig::new()
            .with_epochs(self.epochs)
            .with_dim(self.dim)
            .with_batch_size(self.batch_size)
            .with_grads_accumulation(self.grads_accumulation)
            .with_lr(self.lr)
            .with_fused(!self.unfused)
            .with_workers(self.workers)
    }
}

/// The vocabulary with counts, `word count` per line (gensim's `fvocab`), most frequent first.
fn write_vocab(vocab: &Vocab, path: &Path) -> std::io::Result<()> {
    let lines: String = vocab
        .words
        .iter()
        .zip(&vocab.counts)
        .map(|(w, c)| format!("{w} {c}\n"))
        .collect();
    std::fs::write(path, lines)
}

fn run<B>(args: &Args, device: &B::Device)
where
    B: SparseGradients + SeededBackward + SparseUpdate,
    B::InnerBackend: EmbeddingBackend,
{
    let config = args.config();
    // A corpus file is read a line at a time, twice (the vocabulary, then the ids): memory is
    // the vocabulary and 4 bytes a token.
    let read = match &args.corpus {
        Some(path) => Vocab::read(path, config.min_count).and_then(|vocab| {
            let stream = TokenStream::read(path, &vocab)?;
            Ok((vocab, stream))
        }),
        None => {
            let sentences = corpus::generated(20, 50, 20_000, 7);
            let vocab = Vocab::build(&sentences, config.min_count);
            let stream = TokenStream::encode(&vocab, &sentences);
            Ok((vocab, stream))
        }
    };
    let (vocab, stream) = read.unwrap_or_else(|e| {
        let path = args.corpus.as_ref().map(|p| p.display().to_string());
        eprintln!(
            "word2vec: cannot read the corpus {}: {e}",
            path.unwrap_or_default()
        );
        std::process::exit(1);
    });
    let generated = args.corpus.is_none();
    if vocab.len() < 2 {
        eprintln!(
            "word2vec: the corpus has fewer than two words seen {} times",
            config.min_count
        );
        std::process::exit(1);
    }
    let started = std::time::Instant::now();
    let training_dir = args.out.join("training");
    // Start afresh: the Learner would otherwise append to an earlier run's logs.
    std::fs::remove_dir_all(&training_dir).ok();
    let model = train::<B>(&config, &vocab, stream, &training_dir, None, device);
    println!("trained in {:.1} s", started.elapsed().as_secs_f64());
    let valid = epoch_losses(&training_dir, "valid");
    for (epoch, train) in epoch_losses(&training_dir, "train").iter().enumerate() {
        let valid = valid
            .get(epoch)
            .map_or(String::new(), |v| format!(", valid loss {v:.4}"));
        println!("epoch {}: train loss {train:.4}{valid}", epoch + 1);
    }
    save(&model, &config, &args.out);
    let written = write_vocab(&vocab, &args.out.join("vocab.txt"))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            for (name, format) in [
                ("vectors.txt", VectorFormat::Word2VecText),
                ("vectors.bin", VectorFormat::Word2VecBinary),
            ] {
                write_vectors(
                    args.out.join(name),
                    format,
                    &vocab.words,
                    &model.input.embedding(),
                )
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    if let Err(err) = written {
        eprintln!("word2vec: {err}");
        std::process::exit(1);
    }
    println!(
        "saved the model record, config, vocab.txt, vectors.txt and vectors.bin in {}",
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
    if let Err(err) = evaluate(args, &vocab, &vectors, d) {
        eprintln!("word2vec: {err}");
        std::process::exit(1);
    }
}

/// `--similarity` and `--analogies`.
fn evaluate(args: &Args, vocab: &Vocab, vectors: &[f32], d: usize) -> Result<(), String> {
    if let Some(path) = &args.similarity {
        let score = eval::similarity(path, vocab, vectors, d)?;
        println!(
            "similarity ({}): Spearman {:.3} over {} pairs, {:.1}% of pairs out of vocabulary",
            path.display(),
            score.spearman,
            score.pairs,
            score.oov_share * 100.0
        );
    }
    if let Some(path) = &args.analogies {
        println!(
            "analogies ({}), 30,000 most frequent words:",
            path.display()
        );
        for s in eval::analogies(path, vocab, vectors, d, 30_000)? {
            println!(
                "  {:<28} {:>6.1}% of {} answered ({} skipped)",
                s.name,
                s.accuracy() * 100.0,
                s.answered,
                s.skipped
            );
        }
    }
    Ok(())
}

fn main() {
    // A bad value is one line naming it (`--help` and `--version` print in full).
    let args = Args::try_parse().unwrap_or_else(|err| {
        if err.use_stderr() {
            eprintln!(
                "word2vec: {}",
                err.to_string().lines().next().unwrap_or_default()
            );
            std::process::exit(2);
        }
        err.exit()
    });
    if args.grads_accumulation > 1 && !args.unfused {
        eprintln!(
            "word2vec: --grads-accumulation {} needs --unfused: a fused table applies each \
             batch's update in its backward",
            args.grads_accumulation
        );
        std::process::exit(2);
    }
    match args.backend {
        #[cfg(feature = "ndarray")]
        Backend::Ndarray => run::<Autodiff<burn::backend::NdArray>>(&args, &Default::default()),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => run::<Autodiff<burn::backend::Wgpu>>(&args, &Default::default()),
        #[cfg(feature = "tch")]
        Backend::Tch => run::<Autodiff<burn::backend::LibTorch<f32>>>(
            &args,
            &burn::backend::libtorch::LibTorchDevice::Cpu,
        ),
        #[allow(unreachable_patterns)]
        other => {
            eprintln!(
                "word2vec: the {other:?} backend is not compiled in (cargo features: ndarray, wgpu, tch)"
            );
            std::process::exit(2);
        }
    }
}
