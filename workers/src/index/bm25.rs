//! The BM25 baseline over the paragraphs or sentences of a committed corpus version: what a user gets
//! without dense retrieval, scored the same way. Okapi BM25 with Anserini's defaults (k1 = 0.9, b = 0.4,
//! the BM25 numbers DPR and DensePhrases report), lowercase alphanumeric terms, no stemming.
//!
//! Written here rather than with tantivy: tantivy's dependencies change the features of crates that
//! arrow, datafusion and lance share, which rebuilds that whole stack (tens of minutes on the 2-core
//! build machines) for an in-memory index of a few lines.

use crate::index::units::{Hit, Unit, dedup};
use crate::index::search::char_slice;
use crate::io::store::Store;
use anyhow::Result;
use crate::text::corpus::for_each_corpus_row;
use phrasesweep_schemas::job::DatasetVersion;
use std::collections::HashMap;

const K1: f32 = 0.9;
const B: f32 = 0.4;

/// Words too common to help (Lucene's English stop set).
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
];

/// Lowercase alphanumeric runs, stop words removed.
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).filter(|w| !STOPWORDS.contains(&w.as_str()))
}

pub struct Bm25 {
    /// Term → (unit, term frequency) postings.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Length of each unit in terms.
    lengths: Vec<u32>,
    mean_length: f32,
    /// The evidence, by unit number.
    units: Vec<Hit>,
}

impl Bm25 {
    /// Indexes every paragraph (or sentence) of `corpus`.
    pub async fn build(store: &Store, corpus: &DatasetVersion, unit: Unit) -> Result<Self> {
        let mut units = Vec::new();
        for_each_corpus_row(store, corpus, |p| {
            let hit = |span: (u32, u32), text: String| Hit {
                unit,
                sentence: if unit == Unit::Sentence { text.clone() } else { String::new() },
                text,
                score: 0.0,
                doc_id: p.doc_id.clone(),
                title: p.title.clone(),
                paragraph: p.paragraph,
                span,
                phrase: String::new(),
                encoder: "bm25".into(),
            };
            match unit {
                Unit::Sentence => units.extend(p.sentences.iter().map(|&(a, b)| hit((a, b), char_slice(&p.text, a, b)))),
                _ => units.push(hit((0, p.text.chars().count() as u32), p.text.clone())),
            }
        })
        .await?;
        Ok(Self::index(units))
    }

    /// Indexes ready-made units (their `text`).
    pub fn index(units: Vec<Hit>) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(units.len());
        for (i, u) in units.iter().enumerate() {
            let mut tf: HashMap<String, u32> = HashMap::new();
            let mut len = 0;
            for t in terms(&u.text) {
                *tf.entry(t).or_default() += 1;
                len += 1;
            }
            lengths.push(len);
            for (t, n) in tf {
                postings.entry(t).or_default().push((i as u32, n));
            }
        }
        let mean_length = lengths.iter().map(|&l| l as f32).sum::<f32>() / lengths.len().max(1) as f32;
        Self { postings, lengths, mean_length, units }
    }

    /// The top `k` units for `question` (searched `2k`, deduplicated by text).
    pub fn search(&self, question: &str, k: usize) -> Vec<Hit> {
        let n = self.units.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for t in terms(question) {
            if !seen.insert(t.clone()) {
                continue;
            }
            let Some(list) = self.postings.get(&t) else { continue };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(u, tf) in list {
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * self.lengths[u as usize] as f32 / self.mean_length);
                *scores.entry(u).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        // Ties broken by corpus order, so runs are reproducible.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(2 * k);
        let hits = ranked.into_iter().map(|(u, score)| Hit { score, ..self.units[u as usize].clone() }).collect();
        dedup(hits, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Hit {
        Hit {
            unit: Unit::Paragraph,
            text: text.into(),
            score: 0.0,
            doc_id: text.into(),
            title: text.into(),
            paragraph: 0,
            span: (0, 0),
            phrase: String::new(),
            sentence: String::new(),
            encoder: "bm25".into(),
        }
    }

    #[test]
    fn rare_terms_outweigh_common_ones_and_duplicates_collapse() {
        let bm25 = Bm25::index(vec![
            unit("the cat sat on the mat"),
            unit("a dog and a cat"),
            unit("Luther Vandross sang with Cheryl Lynn"),
            unit("Luther Vandross sang with Cheryl Lynn"),
            unit("dogs dogs dogs"),
        ]);
        let hits = bm25.search("Who sang with Luther Vandross?", 3);
        assert_eq!(hits.len(), 1, "only one unit matches, and its twin is a duplicate");
        assert_eq!(hits[0].text, "Luther Vandross sang with Cheryl Lynn");
        let hits = bm25.search("cat mat", 5);
        assert_eq!(hits[0].text, "the cat sat on the mat", "the rarer term decides");
        assert!(hits[0].score > hits[1].score);
        assert!(bm25.search("the of and", 5).is_empty(), "stop words match nothing");
    }
}
