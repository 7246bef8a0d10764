//! Text to token ids: tokenising, the vocabulary, and a generated corpus with known structure.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Words and their counts, most frequent first; ids index `words`.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// The words, by id.
    pub words: Vec<String>,
    /// How often each word occurs in the corpus.
    pub counts: Vec<u64>,
    index: HashMap<String, usize>,
}

impl Vocab {
    /// The vocabulary of `sentences`, keeping words seen at least `min_count` times.
    pub fn build(sentences: &[Vec<String>], min_count: u64) -> Self {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for word in sentences.iter().flatten() {
            *counts.entry(word).or_default() += 1;
        }
        Self::from_counts(counts, min_count)
    }

    /// The vocabulary of a text file, read a line at a time (one sentence per line, tokenised
    /// as [`tokenize`]), keeping words seen at least `min_count` times.
    pub fn read(path: &Path, min_count: u64) -> std::io::Result<Self> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for_each_sentence(path, |words| {
            for word in words {
                match counts.get_mut(word.as_str()) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(word, 1);
                    }
                }
            }
        })?;
        Ok(Self::from_counts(
            counts.iter().map(|(w, &c)| (w.as_str(), c)).collect(),
            min_count,
        ))
    }

    fn from_counts(counts: HashMap<&str, u64>, min_count: u64) -> Self {
        let mut kept: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count)
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let words: Vec<String> = kept.iter().map(|(w, _)| w.to_string()).collect();
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i))
            .collect();
        Self {
            counts: kept.iter().map(|&(_, c)| c).collect(),
            words,
            index,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of `word`, if it is in the vocabulary.
    pub fn id(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// Each sentence as ids, leaving out words outside the vocabulary.
    pub fn encode(&self, sentences: &[Vec<String>]) -> Vec<Vec<usize>> {
        sentences
            .iter()
            .map(|s| s.iter().filter_map(|w| self.id(w)).collect())
            .collect()
    }
}

/// Lower-cased words of letters (and inner apostrophes), one sentence per non-empty line.
pub fn tokenize(text: &str) -> Vec<Vec<String>> {
    text.lines().map(words).filter(|s| !s.is_empty()).collect()
}

/// The words of one line, as [`tokenize`] splits them.
fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_alphabetic() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Calls `f` with the words of each non-empty sentence (line) of a text file, reading it a line
/// at a time.
fn for_each_sentence(path: &Path, mut f: impl FnMut(Vec<String>)) -> std::io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let words = words(&String::from_utf8_lossy(&line));
        if !words.is_empty() {
            f(words);
        }
    }
}

/// A corpus as one stream of word ids (words outside the vocabulary left out) and where each
/// sentence starts: 4 bytes a token, whatever the words.
#[derive(Debug, Clone, Default)]
pub struct TokenStream {
    /// The ids of every sentence, one after the other.
    pub tokens: Vec<u32>,
    /// Where each sentence starts in `tokens`, and `tokens.len()` last.
    pub sentence_starts: Vec<u32>,
}

impl TokenStream {
    /// The sentences of `sentences` as ids of `vocab`.
    pub fn encode(vocab: &Vocab, sentences: &[Vec<String>]) -> Self {
        let mut stream = Self::default();
        for sentence in sentences {
            stream.push(sentence.iter().filter_map(|w| vocab.id(w)));
        }
        stream.finish()
    }

    /// The sentences of a text file as ids of `vocab`, read a line at a time.
    pub fn read(path: &Path, vocab: &Vocab) -> std::io::Result<Self> {
        let mut stream = Self::default();
        for_each_sentence(path, |words| {
            stream.push(words.iter().filter_map(|w| vocab.id(w)));
        })?;
        Ok(stream.finish())
    }

    fn push(&mut self, ids: impl Iterator<Item = usize>) {
        let start = self.tokens.len();
        self.tokens.extend(ids.map(|id| id as u32));
        if self.tokens.len() > start {
            self.sentence_starts.push(start as u32);
        }
    }

    fn finish(mut self) -> Self {
        self.sentence_starts.push(self.tokens.len() as u32);
        self
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The bounds `start..end` of the sentence holding token `position`.
    pub fn sentence_of(&self, position: usize) -> (usize, usize) {
        let k = self
            .sentence_starts
            .partition_point(|&s| s as usize <= position)
            - 1;
        (
            self.sentence_starts[k] as usize,
            self.sentence_starts[k + 1] as usize,
        )
    }
}

/// A corpus with known structure: `topics` topics of `words_per_topic` words each (`t3w17` is
/// word 17 of topic 3). Each sentence draws its words from one topic, so words of one topic
/// share their contexts and should end up as each other's nearest neighbours.
pub fn generated(
    topics: usize,
    words_per_topic: usize,
    sentences: usize,
    seed: u64,
) -> Vec<Vec<String>> {
    let mut rng = SplitMix64(seed);
    (0..sentences)
        .map(|_| {
            let topic = rng.below(topics as u64);
            let len = 6 + rng.below(6);
            (0..len)
                .map(|_| format!("t{topic}w{}", rng.below(words_per_topic as u64)))
                .collect()
        })
        .collect()
}

/// The topic of a word of [`generated`].
pub fn topic_of(word: &str) -> Option<&str> {
    word.strip_prefix('t')?.split('w').next()
}

/// A small, fast, seedable generator (SplitMix64): the example needs no crate for randomness.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_and_counts() {
        let s = tokenize("To be, or not to be:\n\nthat is the question.");
        assert_eq!(s[0], vec!["to", "be", "or", "not", "to", "be"]);
        let v = Vocab::build(&s, 2);
        assert_eq!(v.words, vec!["be", "to"]);
        assert_eq!(v.encode(&s)[0], vec![1, 0, 1, 0]);
        let stream = TokenStream::encode(&v, &s);
        assert_eq!(stream.tokens, vec![1, 0, 1, 0]);
        assert_eq!(stream.sentence_starts, vec![0, 4]);
        assert_eq!(stream.sentence_of(2), (0, 4));
    }

    #[test]
    fn generated_words_know_their_topic() {
        let c = generated(3, 5, 10, 1);
        assert_eq!(c.len(), 10);
        assert!(
            c.iter()
                .all(|s| s.iter().all(|w| topic_of(w) == topic_of(&s[0])))
        );
    }
}
