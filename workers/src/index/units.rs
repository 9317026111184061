//! From scored spans to evidence: units (phrase, sentence, paragraph, document), deduplication per unit,
//! and the multi-unit modes (`single`, `static`, `dynamic`, and `opt` on top of any of them).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub use phrasesweep_schemas::retrieval::{DynamicMerge, Mode, Unit};

/// One piece of evidence: the unit's text and the span that retrieved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub unit: Unit,
    /// The evidence: the span, its sentence(s), its paragraph or its document title.
    pub text: String,
    pub score: f32,
    pub doc_id: String,
    pub title: String,
    pub paragraph: u32,
    /// `[start, end)` of the span in Unicode characters of the paragraph.
    pub span: (u32, u32),
    /// The span's text (equal to `text` for phrase units).
    pub phrase: String,
    /// The sentence(s) the span lies in, joined with a space when it crosses a boundary.
    pub sentence: String,
    /// Name of the query encoder that produced the hit.
    pub encoder: String,
}

impl Hit {
    /// The index hit behind the evidence: its paragraph and span.
    pub fn span_key(&self) -> SpanKey<'_> {
        (&self.doc_id, self.paragraph, self.span)
    }

    /// The same hit seen as another unit.
    pub fn as_unit(&self, unit: Unit, paragraph_text: &str) -> Hit {
        let text = match unit {
            Unit::Phrase => self.phrase.clone(),
            Unit::Sentence => self.sentence.clone(),
            Unit::Paragraph => paragraph_text.to_string(),
            Unit::Document => self.title.clone(),
        };
        Hit { unit, text, ..self.clone() }
    }
}

/// Keeps the first (best) hit of each unit: phrases by (document, paragraph, span), sentences and
/// paragraphs by text, documents by title; then the first `k`. Input must be sorted best first.
pub fn dedup(hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for h in hits {
        let key = match h.unit {
            Unit::Phrase => format!("{:?}", h.span_key()),
            Unit::Sentence | Unit::Paragraph => h.text.clone(),
            Unit::Document => h.title.clone(),
        };
        if seen.insert(key) {
            out.push(h);
            if out.len() == k {
                break;
            }
        }
    }
    out
}

/// `opt`: drops a phrase whose text is a substring of a phrase kept before it (exact duplicates too).
/// Other units pass through.
pub fn drop_contained_phrases(hits: Vec<Hit>) -> Vec<Hit> {
    let mut kept: Vec<String> = Vec::new();
    hits.into_iter()
        .filter(|h| {
            if h.unit != Unit::Phrase {
                return true;
            }
            if kept.iter().any(|p| p.contains(h.text.as_str())) {
                return false;
            }
            kept.push(h.text.clone());
            true
        })
        .collect()
}

/// `static`: the phrases, then the sentences, in that order, nothing re-sorted.
pub fn static_merge(phrases: Vec<Hit>, sentences: Vec<Hit>) -> Vec<Hit> {
    phrases.into_iter().chain(sentences).collect()
}

/// An index hit as evidence names it: document, paragraph, `[start, end)` in characters.
pub type SpanKey<'a> = (&'a str, u32, (u32, u32));

/// `dynamic`: the phrase query encoder's k phrases and the sentence query encoder's k sentences, sorted
/// together by score (up to 2k texts, as `static` returns). A phrase that both found becomes its
/// sentence, which keeps the larger of the two scores. Which phrases both found is `rule`'s call:
/// `SharedHits` (the design), when the phrase's own span is among `sentence_spans` (every index hit of
/// the sentence encoder's search, 2k of them) and its sentence is among the retrieved ones;
/// `Sentence`, when the phrase's sentence has the text of a retrieved sentence.
pub fn dynamic_merge(phrases: Vec<Hit>, mut sentences: Vec<Hit>, sentence_spans: &HashSet<SpanKey>, rule: DynamicMerge) -> Vec<Hit> {
    let by_text: HashMap<&str, usize> = sentences.iter().enumerate().rev().map(|(i, s)| (s.text.as_str(), i)).collect();
    let spans = sentence_spans;
    let mut raised: Vec<(usize, f32)> = Vec::new();
    let mut merged = Vec::new();
    for p in phrases {
        let shared = match rule {
            DynamicMerge::SharedHits => spans.contains(&p.span_key()),
            DynamicMerge::Sentence => true,
        };
        match by_text.get(p.sentence.as_str()).filter(|_| shared) {
            Some(&i) => raised.push((i, p.score)),
            None => merged.push(p),
        }
    }
    for (i, score) in raised {
        sentences[i].score = sentences[i].score.max(score);
    }
    merged.extend(sentences);
    // Stable: equal scores keep phrases before sentences, each in rank order.
    merged.sort_by(|a, b| b.score.total_cmp(&a.score));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(unit: Unit, text: &str, score: f32, doc: &str, span: (u32, u32), sentence: &str) -> Hit {
        Hit {
            unit,
            text: text.into(),
            score,
            doc_id: doc.into(),
            title: format!("title of {doc}"),
            paragraph: 0,
            span,
            phrase: text.into(),
            sentence: sentence.into(),
            encoder: "e".into(),
        }
    }

    fn keys(spans: &[Hit]) -> HashSet<SpanKey<'_>> {
        spans.iter().map(Hit::span_key).collect()
    }

    fn texts(h: &[Hit]) -> Vec<&str> {
        h.iter().map(|h| h.text.as_str()).collect()
    }

    #[test]
    fn dedup_keys_differ_by_unit_and_keep_the_first() {
        let p = |t: &str, s, doc, span| hit(Unit::Phrase, t, s, doc, span, "");
        // Same span twice: one; same text at another span: both.
        let out = dedup(vec![p("x", 3.0, "d1", (0, 1)), p("x", 2.0, "d1", (0, 1)), p("x", 1.0, "d1", (5, 6))], 10);
        assert_eq!(out.iter().map(|h| h.score).collect::<Vec<_>>(), vec![3.0, 1.0]);
        let s = |t: &str, s, doc| hit(Unit::Sentence, t, s, doc, (0, 1), t);
        let out = dedup(vec![s("a", 3.0, "d1"), s("a", 2.0, "d2"), s("b", 1.0, "d1"), s("c", 0.5, "d1")], 2);
        assert_eq!(texts(&out), vec!["a", "b"], "by text, then cut to k");
        let d = |doc: &str, s| Hit { unit: Unit::Document, ..hit(Unit::Document, "", s, doc, (0, 1), "") };
        let out = dedup(vec![d("d1", 3.0), d("d1", 2.0), d("d2", 1.0)], 10);
        assert_eq!(out.len(), 2, "documents by title");
    }

    #[test]
    fn opt_drops_contained_and_duplicate_phrases_only() {
        let hits = vec![
            hit(Unit::Phrase, "Luther Vandross", 5.0, "d", (0, 2), ""),
            hit(Unit::Phrase, "Vandross", 4.0, "d", (7, 8), ""),
            hit(Unit::Sentence, "Vandross", 3.5, "d", (7, 8), "Vandross"),
            hit(Unit::Phrase, "Luther Vandross", 3.0, "e", (0, 2), ""),
            hit(Unit::Phrase, "Luther Vandross sang", 2.0, "e", (0, 3), ""),
        ];
        let out = drop_contained_phrases(hits);
        assert_eq!(texts(&out), vec!["Luther Vandross", "Vandross", "Luther Vandross sang"]);
        assert_eq!(out[1].unit, Unit::Sentence);
    }

    #[test]
    fn static_keeps_phrases_first_without_resorting() {
        let phrases = vec![hit(Unit::Phrase, "p1", 1.0, "d", (0, 1), "s1")];
        let sentences = vec![hit(Unit::Sentence, "s9", 9.0, "d", (0, 1), "s9")];
        assert_eq!(texts(&static_merge(phrases, sentences)), vec!["p1", "s9"]);
    }

    #[test]
    fn dynamic_sorts_by_score_and_merges_shared_hits_into_their_sentence() {
        let phrases = vec![
            hit(Unit::Phrase, "p-in-s1", 9.0, "d", (0, 1), "s1"),
            hit(Unit::Phrase, "p-alone", 5.0, "d", (3, 4), "s3"),
            hit(Unit::Phrase, "p-low", 0.5, "d", (5, 6), "s4"),
        ];
        let sentences = vec![
            hit(Unit::Sentence, "s2", 7.0, "d", (8, 9), "s2"),
            hit(Unit::Sentence, "s1", 2.0, "d", (0, 1), "s1"),
        ];
        // The sentence encoder found s1 through the span (0, 1), the phrase's own.
        let spans = vec![hit(Unit::Phrase, "x", 7.0, "d", (8, 9), "s2"), hit(Unit::Phrase, "p-in-s1", 2.0, "d", (0, 1), "s1")];
        let out = dynamic_merge(phrases, sentences, &keys(&spans), DynamicMerge::SharedHits);
        assert_eq!(texts(&out), vec!["s1", "s2", "p-alone", "p-low"], "shared hit becomes its sentence with score 9; nothing cut");
        assert_eq!(out[0].score, 9.0);
        assert_eq!(out[0].unit, Unit::Sentence);
    }

    #[test]
    fn dynamic_merge_rules_differ_on_a_phrase_whose_sentence_was_found_through_another_span() {
        let phrases = vec![hit(Unit::Phrase, "p", 9.0, "d", (0, 1), "s1")];
        let sentences = vec![hit(Unit::Sentence, "s1", 2.0, "d", (4, 6), "s1")];
        let spans = vec![hit(Unit::Phrase, "q", 2.0, "d", (4, 6), "s1")];
        let shared = dynamic_merge(phrases.clone(), sentences.clone(), &keys(&spans), DynamicMerge::SharedHits);
        assert_eq!(texts(&shared), vec!["p", "s1"], "the index hits differ: both stay");
        let contained = dynamic_merge(phrases, sentences, &keys(&spans), DynamicMerge::Sentence);
        assert_eq!(texts(&contained), vec!["s1"], "same sentence text: the phrase becomes it");
        assert_eq!(contained[0].score, 9.0);
    }

    /// The counterexample: k = 2, phrases P1 9.0 and P2 8.0 whose sentences were not retrieved,
    /// sentences S3 7.0 (holding the answer) and S4 6.0. Cut to k, dynamic kept [P1, P2] and scored
    /// mAR 0; the study's list is all four, and scores 1.
    #[test]
    fn dynamic_returns_k_phrases_and_k_sentences() {
        use crate::eval::metrics::{MarMode, mar, walk};
        let phrases = vec![hit(Unit::Phrase, "P1", 9.0, "d", (0, 1), "S1"), hit(Unit::Phrase, "P2", 8.0, "d", (2, 3), "S2")];
        let sentences = vec![
            hit(Unit::Sentence, "S3 holds the answer", 7.0, "d", (4, 5), "S3 holds the answer"),
            hit(Unit::Sentence, "S4", 6.0, "d", (6, 7), "S4"),
        ];
        let out = dynamic_merge(phrases, sentences.clone(), &keys(&sentences), DynamicMerge::SharedHits);
        assert_eq!(texts(&out), vec!["P1", "P2", "S3 holds the answer", "S4"]);
        let score = mar(&[walk(&texts(&out), &["answer".to_string()], MarMode::Seed)], MarMode::Seed).mar;
        assert_eq!(score, 1.0);
    }
}
