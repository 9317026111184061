//! DensePhrases search over the Lance phrase index: the top start hits for q_start and end hits for q_end,
//! each completed into the best span of at most `MAX_SPAN` tokens of its paragraph with the exact vectors
//! of its neighbours, then mapped to a unit of evidence.

use crate::text::corpus::{CORPUS_COLUMNS, CorpusRow, corpus_rows};
use crate::io::lance::open_dataset;
use crate::model::encoders::MAX_SPAN;
use crate::index::units::{Hit, Unit, dedup};
use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::{AsArray, Float32Array, RecordBatch};
use arrow::datatypes::{Float32Type, UInt32Type, UInt64Type};
use futures::TryStreamExt;
use lance::Dataset;
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::tables::phrases;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

/// Completed spans of recent searches, without their vectors, by [`PhraseIndex::search_key`]. A sweep
/// runs many retrievals of one query encoder over the same questions (each unit, static and dynamic, with
/// and without opt), and a worker that runs several of them searches each question once per hit count.
static SEARCHES: LazyLock<moka::sync::Cache<[u8; 32], Arc<Vec<Span>>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .weigher(|_, spans: &Arc<Vec<Span>>| (spans.len() * size_of::<Span>()).try_into().unwrap_or(u32::MAX))
        .max_capacity(256 << 20)
        .build()
});

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
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub corpus_row: u64,
    pub score: f32,
    pub char_start: u32,
    pub char_end: u32,
    pub first_sentence: u32,
    pub last_sentence: u32,
    pub start_token: u32,
    pub end_token: u32,
    /// The stored vectors of the first and last token (QSFT scores candidates with them).
    pub start_vector: Vec<f32>,
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
        scan.project(&[phrases::TOKEN, "_distance"])?;
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
                    vector: v.as_primitive::<Float32Type>().values().to_vec(),
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

    /// The best spans for a query: `k` start hits and `k` end hits, each completed, best first, each span
    /// once.
    pub async fn spans(&self, q_start: &[f32], q_end: &[f32], k: usize, exact: bool) -> Result<Vec<Span>> {
        let starts = self.nearest(q_start, k, exact).await?;
        let ends = self.nearest(q_end, k, exact).await?;
        let mut needed = BTreeSet::new();
        for &a in starts.iter().chain(&ends) {
            needed.extend(self.neighbourhood(a));
        }
        let needed: Vec<u64> = needed.into_iter().collect();
        let tokens = self.tokens(&needed).await?;
        let mut spans = Vec::with_capacity(2 * k);
        let mut complete = |anchor: u64, is_start: bool| {
            let Some(a) = tokens.get(&anchor) else { return };
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
            if let Some((other, t)) = best {
                let (s, e) = if is_start { (a, t) } else { (t, a) };
                let anchor_score = if is_start { dot(q_start, &a.vector) } else { dot(q_end, &a.vector) };
                spans.push(Span {
                    corpus_row: a.corpus_row,
                    score: anchor_score + other,
                    char_start: s.start,
                    char_end: e.end,
                    first_sentence: s.sentence,
                    last_sentence: e.sentence,
                    start_token: s.token,
                    end_token: e.token,
                    start_vector: s.vector.clone(),
                    end_vector: e.vector.clone(),
                });
            }
        };
        for &a in &starts {
            complete(a, true);
        }
        for &a in &ends {
            complete(a, false);
        }
        spans.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut seen = std::collections::HashSet::new();
        spans.retain(|s| seen.insert((s.corpus_row, s.start_token, s.end_token)));
        Ok(spans)
    }

    /// Everything the spans of a search depend on: the index version, the search settings, the query.
    fn search_key(&self, q_start: &[f32], q_end: &[f32], hits: usize) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.phrases.uri());
        h.update(self.phrases.version().version.to_le_bytes());
        h.update([self.settings.nprobes as u64, self.settings.refine as u64, hits as u64].map(u64::to_le_bytes).concat());
        for x in q_start.iter().chain(q_end) {
            h.update(x.to_le_bytes());
        }
        h.finalize().into()
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

    /// The top `k` pieces of evidence of `unit` for one query. Units other than phrases search `2k` hits
    /// and keep `k` after deduplication.
    pub async fn search(&self, q_start: &[f32], q_end: &[f32], unit: Unit, k: usize, encoder: &str) -> Result<Vec<Hit>> {
        let hits_k = if unit == Unit::Phrase { k } else { 2 * k };
        let key = self.search_key(q_start, q_end, hits_k);
        let spans = match SEARCHES.get(&key) {
            Some(spans) => spans,
            None => {
                let mut spans = self.spans(q_start, q_end, hits_k, false).await?;
                for s in &mut spans {
                    (s.start_vector, s.end_vector) = (Vec::new(), Vec::new());
                }
                let spans = Arc::new(spans);
                SEARCHES.insert(key, spans.clone());
                spans
            }
        };
        let rows: Vec<u64> = spans.iter().map(|s| s.corpus_row).collect();
        let paragraphs = self.paragraphs(&rows).await?;
        let hits = spans
            .iter()
            .filter_map(|s| paragraphs.get(&s.corpus_row).map(|p| span_hit(s, p, encoder).as_unit(unit, &p.text)))
            .collect();
        Ok(dedup(hits, k))
    }
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
