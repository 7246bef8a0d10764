//! Text to token ids: tokenising, the vocabulary, and a generated corpus with known structure.

use std::collections::HashMap;

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
    text.lines()
        .map(|line| {
            line.split(|c: char| !(c.is_alphabetic() || c == '\''))
                .map(|w| w.trim_matches('\'').to_lowercase())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
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
