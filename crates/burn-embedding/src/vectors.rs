//! Word vectors in the formats other tools read and write: the word2vec text and binary formats
//! (the C tool's, gensim's `KeyedVectors.save_word2vec_format` / `load_word2vec_format`) and the
//! GloVe text format.
//!
//! - word2vec text: a `"<count> <dim>"` header line, then `word v1 .. vD` per line;
//! - word2vec binary: the same header line, then per word its UTF-8 bytes, a space and `D`
//!   little-endian `f32` (a newline before a word is skipped, as gensim and the C tool do);
//! - GloVe text: `word v1 .. vD` per line, no header; `D` is the first line's.
//!
//! Reading streams: a file is read a line (or a row) at a time and only the rows kept are held,
//! so that `limit` reads the first rows of a file larger than memory. Every malformed input is a
//! [`VectorsError`] naming the line (text) or byte offset (binary).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use thiserror::Error;

use crate::{Embedding, EmbeddingBackend, EmbeddingError, EmbeddingOptions};

/// A file format of word vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorFormat {
    /// `"<count> <dim>"`, then `word v1 .. vD` per line.
    Word2VecText,
    /// `"<count> <dim>\n"`, then per word: the word, a space, `D` little-endian `f32`.
    Word2VecBinary,
    /// `word v1 .. vD` per line, no header.
    GloveText,
}

/// What can go wrong reading or writing word vectors; each variant names the place.
#[derive(Debug, Error)]
pub enum VectorsError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The header line is not two positive integers.
    #[error("{path}: line 1: the header {header:?} is not \"<count> <dim>\"")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// The line as read.
        header: String,
    },
    /// A line holds another number of values than the dimension.
    #[error("{path}: line {line}: {got} values after the word {word:?}, expected {expected}")]
    ValueCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The word of the line.
        word: String,
        /// The dimension.
        expected: usize,
        /// What the line holds.
        got: usize,
    },
    /// A value is not a number.
    #[error("{path}: line {line}: {token:?} is not a number")]
    BadFloat {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending token.
        token: String,
    },
    /// The file holds fewer vectors than its header says.
    #[error("{path}: the header announces {expected} vectors, the file holds {got}")]
    HeaderMismatch {
        /// The file.
        path: PathBuf,
        /// The header's count.
        expected: usize,
        /// The vectors found.
        got: usize,
    },
    /// A binary file ends inside a word or a vector.
    #[error("{path}: byte {offset}: the file ends inside vector {index} (of {expected})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the file ended.
        offset: u64,
        /// 0-based index of the incomplete vector.
        index: usize,
        /// The header's count.
        expected: usize,
    },
    /// A word is not valid UTF-8.
    #[error("{path}: byte {offset}: word {index} is not valid UTF-8")]
    BadWord {
        /// The file.
        path: PathBuf,
        /// Where the word starts.
        offset: u64,
        /// 0-based index of the vector.
        index: usize,
    },
    /// The file holds no vector.
    #[error("{path}: no vectors")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A word cannot be written: it is empty or holds whitespace, which the formats use as
    /// separators.
    #[error(
        "word {index} ({word:?}) cannot be written: a word must be non-empty, without whitespace"
    )]
    UnwritableWord {
        /// 0-based row of the word.
        index: usize,
        /// The word.
        word: String,
    },
    /// The words do not match the table's rows.
    #[error("{words} words for a table of {rows} rows")]
    WordCount {
        /// Words given.
        words: usize,
        /// Rows of the table.
        rows: usize,
    },
    /// The vectors make no valid embedding (for example a padding index past the rows kept).
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
}

/// Word vectors read from a file: the words, in file order, and an [`Embedding`] whose row `i`
/// is the vector of `words[i]`.
#[derive(Debug)]
pub struct WordVectors<B: EmbeddingBackend> {
    /// The words, row by row.
    pub words: Vec<String>,
    /// The table, `[words.len(), dim]`.
    pub embedding: Embedding<B>,
}

/// How to read word vectors: `from_pretrained`'s options and how many rows to keep.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Keep only the first `limit` vectors (the most frequent, in files written by frequency).
    pub limit: Option<usize>,
    /// The weight gets no gradient (`from_pretrained`'s default).
    pub freeze: bool,
    /// The lookup options of the embedding (its padding row is kept as read).
    pub options: EmbeddingOptions,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            limit: None,
            freeze: true,
            options: EmbeddingOptions::new(),
        }
    }
}

/// Reads word vectors from `path` in `format` into an [`Embedding`] on `device`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn_embedding::vectors::{ReadOptions, VectorFormat, read_vectors};
///
/// let path = std::env::temp_dir().join("burn-embedding-doc-read.txt");
/// std::fs::write(&path, "2 3\nthe 0.1 0.2 0.3\nof -1 0 1.5\n").unwrap();
/// let read = read_vectors::<NdArray>(&path, VectorFormat::Word2VecText, ReadOptions::default(),
///     &Default::default()).unwrap();
/// assert_eq!(read.words, ["the", "of"]);
/// assert_eq!(read.embedding.weight.dims(), [2, 3]);
/// ```
pub fn read_vectors<B: EmbeddingBackend>(
    path: impl AsRef<Path>,
    format: VectorFormat,
    options: ReadOptions,
    device: &B::Device,
) -> Result<WordVectors<B>, VectorsError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let mut reader = BufReader::new(file);
    let limit = options.limit.unwrap_or(usize::MAX);
    let (words, values, dim) = match format {
        VectorFormat::Word2VecText => read_text(&mut reader, path, true, limit)?,
        VectorFormat::GloveText => read_text(&mut reader, path, false, limit)?,
        VectorFormat::Word2VecBinary => read_binary(&mut reader, path, limit)?,
    };
    if words.is_empty() {
        return Err(VectorsError::Empty {
            path: path.to_path_buf(),
        });
    }
    let weight = Tensor::<B, 2>::from_data(TensorData::new(values, [words.len(), dim]), device);
    let embedding = Embedding::from_pretrained(weight, options.freeze, options.options)?;
    Ok(WordVectors { words, embedding })
}

fn io_error(path: &Path, source: io::Error) -> VectorsError {
    VectorsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `"<count> <dim>"`.
fn parse_header(path: &Path, line: &str) -> Result<(usize, usize), VectorsError> {
    let bad = || VectorsError::BadHeader {
        path: path.to_path_buf(),
        header: line.trim_end().to_string(),
    };
    let mut parts = line.split_whitespace();
    let count = parts
        .next()
        .and_then(|c| c.parse::<usize>().ok())
        .ok_or_else(bad)?;
    let dim = parts
        .next()
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(bad)?;
    if parts.next().is_some() || dim == 0 {
        return Err(bad());
    }
    Ok((count, dim))
}

type Rows = (Vec<String>, Vec<f32>, usize);

fn read_text(
    reader: &mut impl BufRead,
    path: &Path,
    header: bool,
    limit: usize,
) -> Result<Rows, VectorsError> {
    let mut line = String::new();
    let mut number = 0;
    let mut announced = None;
    let mut dim = None;
    let (mut words, mut values) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        if words.len() == limit
            || reader
                .read_line(&mut line)
                .map_err(|source| io_error(path, source))?
                == 0
        {
            break;
        }
        number += 1;
        if header && number == 1 {
            let (count, d) = parse_header(path, &line)?;
            announced = Some(count);
            dim = Some(d);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut tokens = line.split_whitespace();
        let word = tokens.next().expect("a non-blank line").to_string();
        let start = values.len();
        for token in tokens {
            let value = token.parse::<f32>().map_err(|_| VectorsError::BadFloat {
                path: path.to_path_buf(),
                line: number,
                token: token.to_string(),
            })?;
            values.push(value);
        }
        let got = values.len() - start;
        let expected = *dim.get_or_insert(got);
        if got != expected || got == 0 {
            return Err(VectorsError::ValueCount {
                path: path.to_path_buf(),
                line: number,
                word,
                expected,
                got,
            });
        }
        words.push(word);
    }
    if let Some(expected) = announced
        && words.len() < expected.min(limit)
    {
        return Err(VectorsError::HeaderMismatch {
            path: path.to_path_buf(),
            expected,
            got: words.len(),
        });
    }
    Ok((words, values, dim.unwrap_or(0)))
}

fn read_binary(reader: &mut impl BufRead, path: &Path, limit: usize) -> Result<Rows, VectorsError> {
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|source| io_error(path, source))?;
    let (count, dim) = parse_header(path, &header)?;
    let mut offset = header.len() as u64;
    let keep = count.min(limit);
    let (mut words, mut values) = (Vec::with_capacity(keep), Vec::with_capacity(keep * dim));
    let mut row = vec![0u8; dim * 4];
    for index in 0..keep {
        let truncated = |offset: u64| VectorsError::Truncated {
            path: path.to_path_buf(),
            offset,
            index,
            expected: count,
        };
        // The word: bytes up to a space, newlines before it skipped.
        let mut word = Vec::new();
        let mut start = offset;
        loop {
            let mut byte = [0u8];
            match reader
                .read(&mut byte)
                .map_err(|source| io_error(path, source))?
            {
                0 => return Err(truncated(offset)),
                _ => offset += 1,
            }
            match byte[0] {
                b' ' if !word.is_empty() => break,
                b'\n' | b'\r' | b' ' if word.is_empty() => start = offset,
                b => word.push(b),
            }
        }
        let word = String::from_utf8(word).map_err(|_| VectorsError::BadWord {
            path: path.to_path_buf(),
            offset: start,
            index,
        })?;
        let got = read_full(reader, &mut row).map_err(|source| io_error(path, source))?;
        offset += got as u64;
        if got < row.len() {
            return Err(truncated(offset));
        }
        values.extend(
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        words.push(word);
    }
    Ok((words, values, dim))
}

/// Fills `buf` from `reader`, stopping early only at the end of the file; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Writes row `i` of `embedding`'s table as the vector of `words[i]`, in `format`, to `path`.
///
/// Rows are written in table order; for gensim's convention (most frequent word first) order
/// the table so. Floats are written exactly (text: the shortest decimal that reads back to the
/// same `f32`).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use burn_embedding::{Embedding, EmbeddingOptions};
/// use burn_embedding::vectors::{VectorFormat, write_vectors};
///
/// let device = Default::default();
/// let weight = Tensor::<NdArray, 2>::from_floats([[0.5, -1.0], [2.0, 0.25]], &device);
/// let emb = Embedding::from_pretrained(weight, true, EmbeddingOptions::new()).unwrap();
/// let path = std::env::temp_dir().join("burn-embedding-doc-write.txt");
/// write_vectors(&path, VectorFormat::Word2VecText, &["king", "queen"], &emb).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "2 2\nking 0.5 -1\nqueen 2 0.25\n");
/// ```
pub fn write_vectors<B: Backend, S: AsRef<str>>(
    path: impl AsRef<Path>,
    format: VectorFormat,
    words: &[S],
    embedding: &Embedding<B>,
) -> Result<(), VectorsError> {
    let path = path.as_ref();
    let [rows, dim] = embedding.weight.dims();
    if words.len() != rows {
        return Err(VectorsError::WordCount {
            words: words.len(),
            rows,
        });
    }
    for (index, word) in words.iter().enumerate() {
        let word = word.as_ref();
        if word.is_empty() || word.contains(char::is_whitespace) {
            return Err(VectorsError::UnwritableWord {
                index,
                word: word.to_string(),
            });
        }
    }
    let values: Vec<f32> = embedding
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 values");
    let file = File::create(path).map_err(|source| io_error(path, source))?;
    let mut out = BufWriter::new(file);
    let mut write = || -> io::Result<()> {
        if format != VectorFormat::GloveText {
            writeln!(out, "{rows} {dim}")?;
        }
        for (word, row) in words.iter().zip(values.chunks_exact(dim.max(1))) {
            out.write_all(word.as_ref().as_bytes())?;
            if format == VectorFormat::Word2VecBinary {
                out.write_all(b" ")?;
                for v in row {
                    out.write_all(&v.to_le_bytes())?;
                }
            } else {
                for v in row {
                    write!(out, " {v}")?;
                }
                out.write_all(b"\n")?;
            }
        }
        out.flush()
    };
    write().map_err(|source| io_error(path, source))
}
