//! How users compare word vectors: the correlation with human similarity judgements
//! (WordSim-353, SimLex-999) and the accuracy on analogies (`questions-words.txt`), computed as
//! gensim's `evaluate_word_pairs` and `evaluate_word_analogies` do.

use std::path::Path;

use crate::corpus::Vocab;

/// The result of [`similarity`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityScore {
    /// Spearman's rank correlation between the human scores and the cosines of the pairs whose
    /// words are both in the vocabulary (NaN with fewer than two such pairs).
    pub spearman: f64,
    /// Pairs scored.
    pub pairs: usize,
    /// Share of the file's pairs with a word outside the vocabulary.
    pub oov_share: f64,
}

/// Scores the pairs of `path`: one `word1 word2 score` per line, tab- (or space-) separated;
/// blank lines and lines starting with `#` are skipped, words are lower-cased.
pub fn similarity(
    path: &Path,
    vocab: &Vocab,
    vectors: &[f32],
    dim: usize,
) -> Result<SimilarityScore, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut human, mut model, mut total) = (Vec::new(), Vec::new(), 0usize);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        let [a, b, score] = fields[..] else {
            return Err(format!(
                "{}: line {}: expected `word1 word2 score`, got {line:?}",
                path.display(),
                number + 1
            ));
        };
        let score: f64 = score.parse().map_err(|_| {
            format!(
                "{}: line {}: {score:?} is not a number",
                path.display(),
                number + 1
            )
        })?;
        total += 1;
        if let (Some(a), Some(b)) = (vocab.id(&a.to_lowercase()), vocab.id(&b.to_lowercase())) {
            human.push(score);
            model.push(f64::from(dot(vectors, dim, a, b)));
        }
    }
    Ok(SimilarityScore {
        spearman: spearman(&human, &model),
        pairs: human.len(),
        oov_share: if total == 0 {
            0.0
        } else {
            (total - human.len()) as f64 / total as f64
        },
    })
}

/// Accuracy on one section of an analogy file.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionScore {
    /// The section's name (after `: `), or `total`.
    pub name: String,
    /// Questions answered correctly.
    pub correct: usize,
    /// Questions whose four words are all among the most frequent words kept.
    pub answered: usize,
    /// Questions left out because a word is not among them.
    pub skipped: usize,
}

impl SectionScore {
    /// `correct / answered` (0 when nothing was answered).
    pub fn accuracy(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.correct as f64 / self.answered as f64
        }
    }
}

/// Answers the questions of `path` (`questions-words.txt` format: `: section` lines, then
/// `a b c d` lines meaning a : b :: c : d) with `argmax cos(x, b - a + c)` over the
/// `restrict` most frequent words, leaving out `a`, `b` and `c`; questions with a word outside
/// those are skipped, as gensim does. Returns each section, then the total.
pub fn analogies(
    path: &Path,
    vocab: &Vocab,
    vectors: &[f32],
    dim: usize,
    restrict: usize,
) -> Result<Vec<SectionScore>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kept = restrict.min(vocab.len());
    let id = |word: &str| vocab.id(&word.to_lowercase()).filter(|&i| i < kept);
    let mut sections: Vec<SectionScore> = Vec::new();
    let section = |name: &str| SectionScore {
        name: name.to_string(),
        correct: 0,
        answered: 0,
        skipped: 0,
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            sections.push(section(name.trim()));
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [a, b, c, d] = words[..] else {
            return Err(format!(
                "{}: line {}: expected four words, got {line:?}",
                path.display(),
                number + 1
            ));
        };
        if sections.is_empty() {
            sections.push(section(""));
        }
        let current = sections.last_mut().expect("a section");
        let (Some(a), Some(b), Some(c), Some(d)) = (id(a), id(b), id(c), id(d)) else {
            current.skipped += 1;
            continue;
        };
        let target: Vec<f32> = (0..dim)
            .map(|j| vectors[b * dim + j] - vectors[a * dim + j] + vectors[c * dim + j])
            .collect();
        let norm = target.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let best = (0..kept)
            .filter(|&w| w != a && w != b && w != c)
            .map(|w| {
                let row = &vectors[w * dim..][..dim];
                (
                    w,
                    row.iter().zip(&target).map(|(x, t)| x * t).sum::<f32>() / norm,
                )
            })
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(w, _)| w);
        current.answered += 1;
        if best == Some(d) {
            current.correct += 1;
        }
    }
    let mut total = section("total");
    for s in &sections {
        total.correct += s.correct;
        total.answered += s.answered;
        total.skipped += s.skipped;
    }
    sections.push(total);
    Ok(sections)
}

/// The dot product of rows `a` and `b` (their cosine for unit rows).
fn dot(vectors: &[f32], dim: usize, a: usize, b: usize) -> f32 {
    vectors[a * dim..][..dim]
        .iter()
        .zip(&vectors[b * dim..][..dim])
        .map(|(x, y)| x * y)
        .sum()
}

/// Spearman's rank correlation: Pearson's on the ranks, ties given their mean rank.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    pearson(&ranks(x), &ranks(y))
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mean;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        let sentences = vec![
            "king queen man woman king queen man woman apple"
                .split(' ')
                .map(String::from)
                .collect(),
        ];
        Vocab::build(&sentences, 1)
    }

    /// Unit vectors by word: king = man + royal, queen = woman + royal.
    fn vectors(vocab: &Vocab) -> Vec<f32> {
        let raw = |w: &str| -> [f32; 3] {
            match w {
                "king" => [1.0, 0.0, 1.0],
                "queen" => [0.0, 1.0, 1.0],
                "man" => [1.0, 0.0, 0.0],
                "woman" => [0.0, 1.0, 0.0],
                _ => [-1.0, -1.0, 0.2],
            }
        };
        vocab
            .words
            .iter()
            .flat_map(|w| {
                let v = raw(w);
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.map(|x| x / n)
            })
            .collect()
    }

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("w2v-eval-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn spearman_of_ranks() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties take their mean rank: x ranks [1.5, 1.5, 3].
        let r = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
    }

    #[test]
    fn similarity_scores_pairs_in_the_vocabulary() {
        let vocab = vocab();
        let path = file(
            "sim",
            "# word1\tword2\tscore\nking\tqueen\t8.5\nKing\tman\t7\nman\tapple\t1\nking\tzebra\t5\n",
        );
        let score = similarity(&path, &vocab, &vectors(&vocab), 3).unwrap();
        assert_eq!(score.pairs, 3);
        assert!((score.oov_share - 0.25).abs() < 1e-12);
        // Human ranks [3, 2, 1]; cosines 0.5, 0.71 and < 0 rank [2, 3, 1]: 1 - 6 * 2 / 24.
        assert!((score.spearman - 0.5).abs() < 1e-9, "{score:?}");
        let bad = file("bad", "king queen x\n");
        assert!(
            similarity(&bad, &vocab, &vectors(&vocab), 3)
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn analogies_by_section() {
        let vocab = vocab();
        let path = file(
            "analogy",
            ": royal\nman king woman queen\nwoman queen man king\n: fruit\nman woman king apple\nman woman king zebra\n",
        );
        let scores = analogies(&path, &vocab, &vectors(&vocab), 3, 30_000).unwrap();
        assert_eq!(scores[0].name, "royal");
        assert_eq!((scores[0].correct, scores[0].answered), (2, 2));
        assert_eq!(
            (scores[1].correct, scores[1].answered, scores[1].skipped),
            (0, 1, 1)
        );
        let total = &scores[2];
        assert_eq!(
            (total.name.as_str(), total.correct, total.answered),
            ("total", 2, 3)
        );
        // Restricted to the 2 most frequent words, no question has all four.
        let scores = analogies(&path, &vocab, &vectors(&vocab), 3, 2).unwrap();
        assert_eq!(scores.last().unwrap().answered, 0);
    }
}
