//! Scoring retrieved evidence: mean answer recall over word budgets (mAR) in the reference study's `seed`
//! form, in a `strict` form and in the earlier `mentor` form, plus recall at word budgets, recall@k and
//! exact match.

use serde::{Deserialize, Serialize};

/// Word budgets 100, 200, …, 3000: bin `b` holds recall once the evidence reaches `b·100` words.
pub const BINS: usize = 30;

/// The mentor form's budgets: 0, 100, …, 25,000 words.
pub const MENTOR_BINS: usize = 251;

/// How answers are matched against evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarMode {
    /// The reference study's number, exactly: words split on a single space, raw case-sensitive substring
    /// matches, the fraction of answers found, and as many bins as the longest evidence reached.
    Seed,
    /// SQuAD-normalised whole-token matches, a question is recalled when any answer is found, words are
    /// whitespace tokens, and all 30 bins are always averaged.
    Strict,
    /// The earlier evaluation: the seed form's words and matches, but no early stop (every text is
    /// walked; one past 25,000 words lands in the last bin) and all 251 bins (0 … 25,000 words) averaged.
    Mentor,
}

impl MarMode {
    /// Bins of the walk: the word budgets 100, 200, … it reports.
    pub fn bins(self) -> usize {
        match self {
            MarMode::Seed | MarMode::Strict => BINS,
            MarMode::Mentor => MENTOR_BINS,
        }
    }
}

/// SQuAD's answer normalisation: lowercase, punctuation removed, the articles a/an/the removed,
/// whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let lower: String =
        text.to_lowercase().chars().filter(|c| !(c.is_ascii_punctuation() || is_unicode_punctuation(*c))).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Python's `string.punctuation` is ASCII only; SQuAD's script strips exactly that set. Typographic quotes
/// and dashes are common in Wikipedia text, so they go too (they never carry an answer).
fn is_unicode_punctuation(c: char) -> bool {
    matches!(c, '‘' | '’' | '“' | '”' | '–' | '—' | '…')
}

/// Whether normalised `answer` occurs in normalised `text` as whole tokens.
fn contains_tokens(text_norm: &str, answer_norm: &str) -> bool {
    !answer_norm.is_empty() && format!(" {text_norm} ").contains(&format!(" {answer_norm} "))
}

/// One question's walk through its ranked texts: the recall curve by word bin and the longest running
/// word total reached (the text that stopped the walk included).
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// [`MarMode::bins`] of them.
    pub bins: Vec<f64>,
    pub max_total: usize,
    /// The 1-based rank of the first text with an answer within the budget, if any.
    pub first_hit_rank: Option<usize>,
}

/// Walks `texts` (in rank order) against `answers`.
pub fn walk<S: AsRef<str>>(texts: &[S], answers: &[String], mode: MarMode) -> Walk {
    let mut bins = vec![0.0; mode.bins()];
    let mut total = 0usize;
    let mut found = vec![false; answers.len()];
    let mut first_hit_rank = None;
    let normalized: Vec<String> = match mode {
        MarMode::Seed | MarMode::Mentor => Vec::new(),
        MarMode::Strict => answers.iter().map(|a| normalize(a)).collect(),
    };
    for (rank, text) in texts.iter().enumerate() {
        let text = text.as_ref();
        total += match mode {
            MarMode::Seed | MarMode::Mentor => text.split(' ').count(),
            MarMode::Strict => text.split_whitespace().count(),
        };
        let b = match mode {
            MarMode::Mentor => (total / 100).min(MENTOR_BINS - 1),
            _ if total / 100 >= BINS => break,
            _ => total / 100,
        };
        let recall = match mode {
            MarMode::Seed | MarMode::Mentor => {
                for (f, a) in found.iter_mut().zip(answers) {
                    *f |= text.contains(a.as_str());
                }
                if answers.is_empty() { 0.0 } else { found.iter().filter(|f| **f).count() as f64 / answers.len() as f64 }
            }
            MarMode::Strict => {
                if !found.iter().any(|f| *f) {
                    let t = normalize(text);
                    if let Some(i) = normalized.iter().position(|a| contains_tokens(&t, a)) {
                        found[i] = true;
                    }
                }
                if found.iter().any(|f| *f) { 1.0 } else { 0.0 }
            }
        };
        if recall > 0.0 && first_hit_rank.is_none() {
            first_hit_rank = Some(rank + 1);
        }
        bins[b] = recall;
    }
    for b in 1..bins.len() {
        if bins[b] == 0.0 {
            bins[b] = bins[b - 1];
        }
    }
    Walk { bins, max_total: total, first_hit_rank }
}

/// mAR over questions, and the averaged recall curve it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mar {
    pub mar: f64,
    /// Mean recall of each bin over all questions (all of the mode's, whichever were averaged into `mar`).
    pub curve: Vec<f64>,
    /// Bins averaged into `mar`.
    pub bins_used: usize,
}

/// mAR of `walks`, one per evaluated question (a question with no text is a walk over no texts).
pub fn mar(walks: &[Walk], mode: MarMode) -> Mar {
    let n = walks.len().max(1) as f64;
    let curve: Vec<f64> = (0..mode.bins()).map(|b| walks.iter().map(|w| w.bins[b]).sum::<f64>() / n).collect();
    let bins_used = match mode {
        MarMode::Seed => {
            let max_total = walks.iter().map(|w| w.max_total).max().unwrap_or(0);
            BINS.min(max_total / 100 + 1)
        }
        MarMode::Strict | MarMode::Mentor => mode.bins(),
    };
    let mar = curve[..bins_used].iter().sum::<f64>() / bins_used as f64;
    Mar { mar, curve, bins_used }
}

/// Whether any answer is in the evidence cut at `budget` words (strict matching).
pub fn recall_at_words<S: AsRef<str>>(texts: &[S], answers: &[String], budget: usize) -> bool {
    let answers: Vec<String> = answers.iter().map(|a| normalize(a)).collect();
    cut_at_words(texts, budget).iter().any(|t| {
        let t = normalize(t);
        answers.iter().any(|a| contains_tokens(&t, a))
    })
}

/// The evidence cut at `budget` words: the texts in rank order, the last one cut short (whitespace
/// words, rejoined with single spaces).
pub fn cut_at_words<S: AsRef<str>>(texts: &[S], budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0;
    for text in texts {
        let words: Vec<&str> = text.as_ref().split_whitespace().collect();
        let room = budget.saturating_sub(total);
        if room == 0 {
            break;
        }
        out.push(words[..words.len().min(room)].join(" "));
        total += words.len();
    }
    out
}

/// Whether any answer is in the first `k` texts (strict matching).
pub fn recall_at_k<S: AsRef<str>>(texts: &[S], answers: &[String], k: usize) -> bool {
    let answers: Vec<String> = answers.iter().map(|a| normalize(a)).collect();
    texts.iter().take(k).any(|t| {
        let t = normalize(t.as_ref());
        answers.iter().any(|a| contains_tokens(&t, a))
    })
}

/// SQuAD exact match: the prediction equals an answer after normalisation.
pub fn exact_match(prediction: &str, answers: &[String]) -> bool {
    let p = normalize(prediction);
    answers.iter().any(|a| normalize(a) == p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` filler words, `with` (an answer) in the middle.
    pub(crate) fn words(n: usize, with: Option<&str>) -> String {
        let mut w: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        if let Some(a) = with {
            w[n / 2] = a.to_string();
        }
        w.join(" ")
    }

    fn answers(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn seed_worked_example_half_the_answers_from_the_second_bin() {
        let mut texts = vec![words(50, None), words(80, Some("A"))];
        texts.extend((0..40).map(|_| words(80, None)));
        let w = walk(&texts, &answers(&["A", "B"]), MarMode::Seed);
        assert_eq!(w.max_total, 3010, "the walk stops at the text that crosses 3,000 words");
        let m = mar(&[w], MarMode::Seed);
        assert_eq!(m.bins_used, 30);
        assert!((m.mar - 0.483_333).abs() < 1e-5, "{}", m.mar);
    }

    #[test]
    fn seed_worked_example_an_answer_past_the_budget_counts_nothing() {
        let mut texts: Vec<String> = (0..49).map(|_| words(60, None)).collect();
        assert_eq!(texts.iter().map(|t| t.split(' ').count()).sum::<usize>(), 2940);
        texts.push(words(61, Some("X")));
        let m = mar(&[walk(&texts, &answers(&["X"]), MarMode::Seed)], MarMode::Seed);
        assert_eq!(m.mar, 0.0);
    }

    #[test]
    fn seed_worked_example_found_at_once_is_one() {
        let texts = vec![words(50, Some("X")), words(151, None), words(100, None)];
        let w = walk(&texts, &answers(&["X"]), MarMode::Seed);
        assert_eq!(w.max_total, 301);
        let m = mar(&[w], MarMode::Seed);
        assert_eq!(m.bins_used, 4);
        assert_eq!(m.mar, 1.0);
    }

    #[test]
    fn seed_is_case_sensitive_raw_substring_and_counts_empty_questions_as_zero() {
        let texts = vec!["the Beatles played".to_string()];
        assert_eq!(walk(&texts, &answers(&["beatles"]), MarMode::Seed).bins[0], 0.0);
        assert_eq!(walk(&texts, &answers(&["Beat"]), MarMode::Seed).bins[0], 1.0);
        let found = walk(&texts, &answers(&["Beat"]), MarMode::Seed);
        let empty = walk::<String>(&[], &answers(&["X"]), MarMode::Seed);
        assert_eq!(mar(&[found, empty], MarMode::Seed).mar, 0.5);
    }

    #[test]
    fn strict_normalises_matches_whole_tokens_and_averages_all_bins() {
        let texts = vec!["In 1969, THE Beatles' last concert.".to_string()];
        let w = walk(&texts, &answers(&["the beatles"]), MarMode::Strict);
        assert_eq!(w.bins[0], 1.0);
        assert_eq!(mar(&[w.clone()], MarMode::Strict).bins_used, 30);
        assert_eq!(mar(&[w], MarMode::Strict).mar, 1.0, "forward-filled to every bin");
        // A substring inside a word is not a hit in strict mode, but is one in seed mode.
        assert_eq!(walk(&texts, &answers(&["concer"]), MarMode::Strict).bins[0], 0.0);
        assert_eq!(walk(&texts, &answers(&["concer"]), MarMode::Seed).bins[0], 1.0);
        // Any answer is a full hit.
        assert_eq!(walk(&texts, &answers(&["1969", "nope"]), MarMode::Strict).bins[0], 1.0);
        assert_eq!(walk(&texts, &answers(&["1969", "nope"]), MarMode::Seed).bins[0], 0.5);
        // Strict keeps 30 bins even when the evidence is short: 0.5 over 300 words found at 200.
        let texts = vec![words(150, None), words(100, Some("X"))];
        let m = mar(&[walk(&texts, &answers(&["X"]), MarMode::Strict)], MarMode::Strict);
        assert!((m.mar - 28.0 / 30.0).abs() < 1e-12, "{}", m.mar);
    }

    #[test]
    fn mentor_walks_past_3000_words_and_averages_251_bins() {
        // The answer at 3,010 words: nothing for seed, the bins from 3,000 on for mentor.
        let mut texts: Vec<String> = (0..49).map(|_| words(60, None)).collect();
        texts.push(words(70, Some("X")));
        let w = walk(&texts, &answers(&["X"]), MarMode::Mentor);
        assert_eq!(w.bins.len(), MENTOR_BINS);
        let m = mar(&[w], MarMode::Mentor);
        assert_eq!(m.bins_used, 251);
        assert!((m.mar - 221.0 / 251.0).abs() < 1e-12, "{}", m.mar);
        // Found at once: 1, however short the evidence.
        let m = mar(&[walk(&[words(50, Some("X"))], &answers(&["X"]), MarMode::Mentor)], MarMode::Mentor);
        assert_eq!(m.mar, 1.0);
        // Past 25,000 words: the last bin.
        let long: Vec<String> = (0..26).map(|i| words(1000, (i == 25).then_some("X"))).collect();
        let w = walk(&long, &answers(&["X"]), MarMode::Mentor);
        assert_eq!((w.bins[249], w.bins[250]), (0.0, 1.0));
    }

    #[test]
    fn normalisation_is_squads() {
        assert_eq!(normalize("The  Quick, brown fox!"), "quick brown fox");
        assert_eq!(normalize("“An” apple — a day"), "apple day");
        assert!(exact_match("the Denver Broncos", &answers(&["Denver Broncos"])));
        assert!(!exact_match("Denver", &answers(&["Denver Broncos"])));
    }

    #[test]
    fn recall_at_words_cuts_inside_a_text_and_at_k_counts_texts() {
        let texts = vec![words(90, None), words(40, Some("X"))];
        // X sits at word 90 + 20 = 110.
        assert!(!recall_at_words(&texts, &answers(&["X"]), 100));
        assert!(recall_at_words(&texts, &answers(&["X"]), 111));
        assert!(!recall_at_k(&texts, &answers(&["X"]), 1));
        assert!(recall_at_k(&texts, &answers(&["X"]), 2));
    }
}
