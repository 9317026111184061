//! DensePhrases search over the Lance phrase index: the top start hits for q_start and end hits for q_end,
//! each completed into the best span of at most `MAX_SPAN` tokens of its paragraph with the exact vectors
//! of its neighbours, then mapped to a unit of evidence.

use crate::text::corpus::{CORPUS_COLUMNS, CorpusRow, corpus_rows};
use crate::io::lance::open_dataset;
use crate::model::encoders::MAX_SPAN;
use crate::index::scan::{Anchor, BATCH_ROWS, Candidates, Queries, ScanStats, f32_values, queries_per_pass, scan};
use crate::index::units::{Hit, Unit, dedup};
use crate::progress::RateLog;
use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::{AsArray, Float32Array, RecordBatch};
use arrow::datatypes::{UInt32Type, UInt64Type};
use futures::TryStreamExt;
use lance::Dataset;
use phrasesweep_schemas::settings::{SearchMethod, SearchSettings};
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::tables::phrases;
use std::collections::{BTreeSet, HashMap};

/// A committed phrase index and the corpus it was encoded from, opened for search.
pub struct PhraseIndex {
    phrases: Dataset,
    corpus: Dataset,
    settings: SearchSettings,
    /// Rows of each phrases fragment, to keep neighbour lookups inside their fragment.
    fragment_rows: HashMap<u64, u64>,
}

/// One indexed token, as read back for span completion.
#[derive(Debug, Clone)]
struct Token {
    corpus_row: u64,
    token: u32,
    sentence: u32,
    start: u32,
    end: u32,
    vector: Vec<f32>,
}

/// A completed span: tokens `start..=end` of one paragraph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub corpus_row: u64,
    pub score: f32,
    pub char_start: u32,
    pub char_end: u32,
    pub first_sentence: u32,
    pub last_sentence: u32,
    pub start_token: u32,
    pub end_token: u32,
    /// The stored vectors of the first and last token (QSFT scores candidates with them); empty when
    /// the search did not keep them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_vector: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_vector: Vec<f32>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The share of `exact` that `found` holds.
pub fn recall(exact: &[u64], found: &[u64]) -> f64 {
    let found: std::collections::HashSet<&u64> = found.iter().collect();
    exact.iter().filter(|a| found.contains(a)).count() as f64 / exact.len().max(1) as f64
}

/// `text[start..end]` in Unicode characters.
pub fn char_slice(text: &str, start: u32, end: u32) -> String {
    text.chars().skip(start as usize).take(end.saturating_sub(start) as usize).collect()
}

impl PhraseIndex {
    pub async fn open(store: &Store, phrases: &DatasetVersion, corpus: &DatasetVersion, settings: &SearchSettings) -> Result<Self> {
        let open = |v: &DatasetVersion| {
            let v = v.clone();
            async move {
                let ds = open_dataset(store, &v.dataset).await?;
                ds.checkout_version(v.version).await.with_context(|| format!("{} has no version {}", v.dataset, v.version))
            }
        };
        let phrases = open(phrases).await?;
        let corpus = open(corpus).await?;
        let fragment_rows = phrases
            .get_fragments()
            .iter()
            .map(|f| (f.id() as u64, f.metadata().physical_rows.unwrap_or(0) as u64))
            .collect();
        Ok(Self { phrases, corpus, settings: settings.clone(), fragment_rows })
    }

    pub fn rows(&self) -> u64 {
        self.fragment_rows.values().sum()
    }

    /// Row addresses of the `k` tokens with the largest inner product with `q`.
    pub async fn nearest(&self, q: &[f32], k: usize, exact: bool) -> Result<Vec<u64>> {
        let mut scan = self.phrases.scan();
        scan.project(&["_distance"])?;
        scan.nearest(phrases::VECTOR, &Float32Array::from(q.to_vec()), k)?;
        scan.distance_metric(lance_linalg::distance::MetricType::Dot);
        if exact {
            scan.use_index(false);
        } else {
            scan.nprobes(self.settings.nprobes);
            if self.settings.refine > 0 {
                scan.refine(self.settings.refine);
            }
        }
        scan.with_row_address();
        let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
        let mut out = Vec::with_capacity(k);
        for b in &batches {
            let addr = b.column_by_name("_rowaddr").context("search returned no row addresses")?;
            out.extend(addr.as_primitive::<UInt64Type>().values().iter().copied());
        }
        Ok(out)
    }

    /// Recall@k of the index's start hits against exact (flat) search over the same vectors.
    pub async fn recall_at(&self, q: &[f32], k: usize) -> Result<f64> {
        Ok(recall(&self.nearest(q, k, true).await?, &self.nearest(q, k, false).await?))
    }

    /// Reads tokens by row address.
    async fn tokens(&self, addrs: &[u64]) -> Result<HashMap<u64, Token>> {
        if addrs.is_empty() {
            return Ok(HashMap::new());
        }
        let cols = [phrases::CORPUS_ROW, phrases::TOKEN, phrases::SENTENCE, phrases::CHAR_START, phrases::CHAR_END, phrases::VECTOR];
        let schema = self.phrases.schema().project(&cols)?;
        let batch = self.phrases.take_rows(addrs, schema).await.context("cannot read phrase rows")?;
        let get = |n: &str| batch.column_by_name(n).with_context(|| format!("phrases column {n} is missing"));
        let row = get(phrases::CORPUS_ROW)?.as_primitive::<UInt64Type>().clone();
        let tok = get(phrases::TOKEN)?.as_primitive::<UInt32Type>().clone();
        let sent = get(phrases::SENTENCE)?.as_primitive::<UInt32Type>().clone();
        let cs = get(phrases::CHAR_START)?.as_primitive::<UInt32Type>().clone();
        let ce = get(phrases::CHAR_END)?.as_primitive::<UInt32Type>().clone();
        let vectors = get(phrases::VECTOR)?.as_fixed_size_list().clone();
        anyhow::ensure!(batch.num_rows() == addrs.len(), "asked for {} phrase rows, got {}", addrs.len(), batch.num_rows());
        let mut out = HashMap::with_capacity(addrs.len());
        let mut buf = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let v = vectors.value(i);
            out.insert(
                addr,
                Token {
                    corpus_row: row.value(i),
                    token: tok.value(i),
                    sentence: sent.value(i),
                    start: cs.value(i),
                    end: ce.value(i),
                    vector: f32_values(&v, &mut buf)?.to_vec(),
                },
            );
        }
        Ok(out)
    }

    /// Addresses within `MAX_SPAN − 1` rows of `addr` in its fragment (tokens of one paragraph are
    /// stored in order, so every token a span could reach is among them).
    fn neighbourhood(&self, addr: u64) -> std::ops::RangeInclusive<u64> {
        let (frag, offset) = (addr >> 32, addr & 0xffff_ffff);
        let rows = self.fragment_rows.get(&frag).copied().unwrap_or(offset + 1);
        let reach = MAX_SPAN as u64 - 1;
        let lo = offset.saturating_sub(reach);
        let hi = (offset + reach).min(rows.saturating_sub(1));
        (frag << 32 | lo)..=(frag << 32 | hi)
    }

    /// The `k` start hits and `k` end hits of one query through Lance's nearest-neighbour search (the
    /// IVF index, or every vector when `exact`), each completed into its span with one read of the rows
    /// around them. Start and end are searched concurrently.
    pub async fn candidates(&self, q_start: &[f32], q_end: &[f32], k: usize, exact: bool, keep_vectors: bool) -> Result<Candidates> {
        let (starts, ends) = futures::try_join!(self.nearest(q_start, k, exact), self.nearest(q_end, k, exact))?;
        let mut needed = BTreeSet::new();
        for &a in starts.iter().chain(&ends) {
            needed.extend(self.neighbourhood(a));
        }
        let needed: Vec<u64> = needed.into_iter().collect();
        let tokens = self.tokens(&needed).await?;
        let complete = |anchor: u64, is_start: bool| -> Option<Anchor> {
            let a = tokens.get(&anchor)?;
            let mut best: Option<(f32, &Token)> = None;
            for addr in self.neighbourhood(anchor) {
                let Some(t) = tokens.get(&addr) else { continue };
                let reachable = t.corpus_row == a.corpus_row
                    && if is_start {
                        t.token >= a.token && t.token - a.token < MAX_SPAN as u32
                    } else {
                        t.token <= a.token && a.token - t.token < MAX_SPAN as u32
                    };
                if reachable {
                    let s = if is_start { dot(q_end, &t.vector) } else { dot(q_start, &t.vector) };
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, t));
                    }
                }
            }
            let (other, t) = best?;
            let (s, e) = if is_start { (a, t) } else { (t, a) };
            let score = if is_start { dot(q_start, &a.vector) } else { dot(q_end, &a.vector) };
            let span = Span {
                corpus_row: a.corpus_row,
                score: score + other,
                char_start: s.start,
                char_end: e.end,
                first_sentence: s.sentence,
                last_sentence: e.sentence,
                start_token: s.token,
                end_token: e.token,
                start_vector: if keep_vectors { s.vector.clone() } else { Vec::new() },
                end_vector: if keep_vectors { e.vector.clone() } else { Vec::new() },
            };
            Some(Anchor { score, addr: anchor, span })
        };
        Ok(Candidates {
            starts: starts.iter().filter_map(|&a| complete(a, true)).collect(),
            ends: ends.iter().filter_map(|&a| complete(a, false)).collect(),
        })
    }

    /// Every query's `k` start and `k` end hits in one exact pass over all phrase vectors (see
    /// [`scan`](crate::index::scan)).
    pub async fn scan(&self, queries: &Queries, k: usize, keep_vectors: bool) -> Result<(Vec<Candidates>, ScanStats)> {
        scan(&self.phrases, None, queries, k, keep_vectors, BATCH_ROWS).await
    }

    /// The same search, by the job's method: one scan for all queries, or a search per query through
    /// the IVF index.
    pub async fn batch(&self, queries: &[(Vec<f32>, Vec<f32>)], k: usize, keep_vectors: bool) -> Result<Vec<Candidates>> {
        match self.settings.method {
            SearchMethod::Scan => {
                let all = Queries::new(queries);
                let mut out = Vec::with_capacity(queries.len());
                let pass = queries_per_pass(k, all.d, keep_vectors);
                for start in (0..all.len()).step_by(pass) {
                    out.extend(self.scan(&all.slice(start..(start + pass).min(all.len())), k, keep_vectors).await?.0);
                }
                Ok(out)
            }
            SearchMethod::Ivf => {
                let mut out = Vec::with_capacity(queries.len());
                let mut log = RateLog::new("search through the IVF index", queries.len() as u64, "queries");
                for (qs, qe) in queries {
                    out.push(self.candidates(qs, qe, k, false, keep_vectors).await?);
                    log.add(1);
                }
                Ok(out)
            }
        }
    }

    /// Corpus paragraphs by row address.
    pub async fn paragraphs(&self, rows: &[u64]) -> Result<HashMap<u64, CorpusRow>> {
        let unique: Vec<u64> = rows.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        if unique.is_empty() {
            return Ok(HashMap::new());
        }
        let schema = self.corpus.schema().project(&CORPUS_COLUMNS)?;
        let batch = self.corpus.take_rows(&unique, schema).await.context("cannot read corpus rows")?;
        Ok(unique.into_iter().zip(corpus_rows(&batch)?).collect())
    }

    /// The top `k` pieces of evidence of `unit` for one query, through the IVF index.
    pub async fn search(&self, q_start: &[f32], q_end: &[f32], unit: Unit, k: usize, encoder: &str) -> Result<Vec<Hit>> {
        let candidates = self.candidates(q_start, q_end, hits_for(unit, k), false, false).await?;
        let spans = candidates.spans(hits_for(unit, k));
        let paragraphs = self.paragraphs(&spans.iter().map(|s| s.corpus_row).collect::<Vec<_>>()).await?;
        Ok(hits(&spans, &paragraphs, unit, k, encoder))
    }
}

/// Start and end hits a search of `k` units reads: `k` for phrases, `2k` for the coarser units (their
/// spans collapse into fewer units after deduplication).
pub fn hits_for(unit: Unit, k: usize) -> usize {
    if unit == Unit::Phrase { k } else { 2 * k }
}

/// Spans (best first) as the top `k` hits of `unit`, each unit once.
pub fn hits(spans: &[Span], paragraphs: &HashMap<u64, CorpusRow>, unit: Unit, k: usize, encoder: &str) -> Vec<Hit> {
    let hits = spans.iter().filter_map(|s| paragraphs.get(&s.corpus_row).map(|p| span_hit(s, p, encoder).as_unit(unit, &p.text))).collect();
    dedup(hits, k)
}

/// A span as a phrase hit, with its sentence(s) filled in.
pub fn span_hit(s: &Span, p: &CorpusRow, encoder: &str) -> Hit {
    let sentence = match (p.sentences.get(s.first_sentence as usize), p.sentences.get(s.last_sentence as usize)) {
        (Some(&(a, _)), Some(&(_, b))) => char_slice(&p.text, a, b),
        _ => p.text.clone(),
    };
    let phrase = char_slice(&p.text, s.char_start, s.char_end);
    Hit {
        unit: Unit::Phrase,
        text: phrase.clone(),
        score: s.score,
        doc_id: p.doc_id.clone(),
        title: p.title.clone(),
        paragraph: p.paragraph,
        span: (s.char_start, s.char_end),
        phrase,
        sentence,
        encoder: encoder.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_to_their_sentences_even_across_a_boundary() {
        let p = CorpusRow {
            doc_id: "d".into(),
            title: "T".into(),
            paragraph: 2,
            text: "Ünïcode first. Second one here. Third.".into(),
            sentences: vec![(0, 14), (15, 31), (32, 38)],
        };
        let span = |a, b, s1, s2| Span {
            corpus_row: 0,
            score: 1.0,
            char_start: a,
            char_end: b,
            first_sentence: s1,
            last_sentence: s2,
            start_token: 0,
            end_token: 1,
            start_vector: Vec::new(),
            end_vector: Vec::new(),
        };
        let h = span_hit(&span(0, 7, 0, 0), &p, "q");
        assert_eq!((h.phrase.as_str(), h.sentence.as_str()), ("Ünïcode", "Ünïcode first."));
        let h = span_hit(&span(8, 21, 0, 1), &p, "q");
        assert_eq!(h.phrase, "first. Second");
        assert_eq!(h.sentence, "Ünïcode first. Second one here.");
        assert_eq!(h.as_unit(Unit::Paragraph, &p.text).text, p.text);
        assert_eq!(h.as_unit(Unit::Document, &p.text).text, "T");
    }
}
