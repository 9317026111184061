//! The BM25 baseline over the paragraphs or sentences of a committed corpus version: what a user gets
//! without dense retrieval, scored the same way. Okapi BM25 with Anserini's defaults (k1 = 0.9, b = 0.4,
//! the BM25 numbers DPR and DensePhrases report), lowercase alphanumeric terms, no stemming.
//!
//! The inverted index is tantivy's, written once per corpus version and unit by a `bm25-index` job and
//! uploaded to the store; each retrieve job fetches it (once per machine) and opens it memory-mapped, so
//! no job holds the corpus in memory. Scoring is ours, term at a time over tantivy's postings, because
//! tantivy's BM25 fixes k1 = 1.2 and b = 0.75; document lengths are exact (a fast field), not tantivy's
//! lossy field norms.

use crate::index::search::char_slice;
use crate::index::units::{Hit, Unit, dedup};
use crate::io::store::Store;
use crate::text::corpus::for_each_corpus_row;
use anyhow::{Context, Result, bail};
use phrasesweep_schemas::job::DatasetVersion;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tantivy::columnar::Column;
use tantivy::schema::{FAST, Field, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::WhitespaceTokenizer;
use tantivy::{DocAddress, Index, IndexWriter, Searcher, TERMINATED, TantivyDocument, Term};

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

/// The index's last file: written after every other, so a reader that finds it finds the rest.
const MANIFEST: &str = "manifest.json";
/// The terms are made by [`terms`] and joined by spaces; tantivy only splits them again.
const TOKENIZER: &str = "phrasesweep-terms";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The folder under the job's output that holds this build's files: each delivery of the job
    /// uploads into a folder of its own, so a reader of one manifest never sees another build's files
    /// (tantivy's `meta.json` has the same name in every build).
    #[serde(default)]
    folder: String,
    unit: Unit,
    units: u64,
    /// Terms over all units: the mean unit length is `terms / units`.
    terms: u64,
    /// The tantivy files and their sizes.
    files: Vec<(String, u64)>,
}

/// What [`build`] wrote.
pub struct Built {
    pub units: u64,
    pub terms: u64,
    pub bytes: u64,
}

struct Fields {
    terms: Field,
    unit: Field,
    len: Field,
    text: Field,
    doc_id: Field,
    title: Field,
    paragraph: Field,
    span_start: Field,
    span_end: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexed = TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::WithFreqs);
    let fields = Fields {
        terms: b.add_text_field("terms", TextOptions::default().set_indexing_options(indexed)),
        // The unit's number in corpus order (ties rank by it) and its length in terms.
        unit: b.add_u64_field("unit", FAST),
        len: b.add_u64_field("len", FAST),
        text: b.add_text_field("text", STORED),
        doc_id: b.add_text_field("doc_id", STORED),
        title: b.add_text_field("title", STORED),
        paragraph: b.add_u64_field("paragraph", STORED),
        span_start: b.add_u64_field("span_start", STORED),
        span_end: b.add_u64_field("span_end", STORED),
    };
    (b.build(), fields)
}

fn register_tokenizer(index: &Index) {
    index.tokenizers().register(TOKENIZER, WhitespaceTokenizer::default());
}

/// Indexes `units` (their `text`) into the empty folder `dir`.
pub fn write(dir: &Path, unit: Unit, units: impl IntoIterator<Item = Hit>) -> Result<Built> {
    let (schema, f) = schema();
    let index = Index::create_in_dir(dir, schema).with_context(|| format!("cannot create a BM25 index in {}", dir.display()))?;
    register_tokenizer(&index);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let mut writer: IndexWriter = index.writer_with_num_threads(threads, threads * 100_000_000)?;
    let (mut count, mut total) = (0u64, 0u64);
    for u in units {
        let terms: Vec<String> = terms(&u.text).collect();
        total += terms.len() as u64;
        let mut doc = TantivyDocument::new();
        doc.add_text(f.terms, terms.join(" "));
        doc.add_u64(f.unit, count);
        doc.add_u64(f.len, terms.len() as u64);
        doc.add_text(f.text, &u.text);
        doc.add_text(f.doc_id, &u.doc_id);
        doc.add_text(f.title, &u.title);
        doc.add_u64(f.paragraph, u.paragraph as u64);
        doc.add_u64(f.span_start, u.span.0 as u64);
        doc.add_u64(f.span_end, u.span.1 as u64);
        writer.add_document(doc)?;
        count += 1;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !name.ends_with(".lock") {
            files.push((name, entry.metadata()?.len()));
        }
    }
    files.sort();
    let bytes = files.iter().map(|(_, n)| n).sum();
    let manifest = Manifest { folder: String::new(), unit, units: count, terms: total, files };
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(Built { units: count, terms: total, bytes })
}

/// Every paragraph (or sentence) of `corpus` as evidence, streamed in corpus order.
fn corpus_units(row: crate::text::corpus::CorpusRow, unit: Unit, out: &mut Vec<Hit>) {
    let hit = |span: (u32, u32), text: String| Hit {
        unit,
        sentence: if unit == Unit::Sentence { text.clone() } else { String::new() },
        text,
        score: 0.0,
        doc_id: row.doc_id.clone(),
        title: row.title.clone(),
        paragraph: row.paragraph,
        span,
        phrase: String::new(),
        encoder: "bm25".into(),
    };
    match unit {
        Unit::Sentence => out.extend(row.sentences.iter().map(|&(a, b)| hit((a, b), char_slice(&row.text, a, b)))),
        _ => out.push(hit((0, row.text.chars().count() as u32), row.text.clone())),
    }
}

impl Manifest {
    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a BM25 index manifest", path.display()))
    }

    fn built(&self) -> Built {
        Built { units: self.units, terms: self.terms, bytes: self.files.iter().map(|(_, n)| n).sum() }
    }
}

/// The `bm25-index` job: indexes every `unit` of `corpus` and uploads the index to a folder of its own
/// under `output/` on the store, then `output/manifest.json`, which names the folder. A delivery that
/// finds the manifest there (an earlier delivery finished) has nothing to do.
pub async fn build(store: &Store, corpus: &DatasetVersion, unit: Unit, output: &str) -> Result<Built> {
    let manifest_path = format!("{output}/{MANIFEST}");
    if let Some(bytes) = store.get(&manifest_path).await? {
        let manifest: Manifest = serde_json::from_slice(&bytes).with_context(|| format!("{manifest_path} is not a BM25 index manifest"))?;
        return Ok(manifest.built());
    }
    let dir = tempfile::tempdir().context("cannot create a folder for the BM25 index")?;
    // Rows arrive on this task; the writer indexes on its own threads as they come.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Hit>>(64);
    let path = dir.path().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || write(&path, unit, rx.into_iter().flatten()));
    let read = for_each_corpus_row(store, corpus, |row| {
        let mut units = Vec::new();
        corpus_units(row, unit, &mut units);
        // A closed channel means the writer failed; its error is the one reported below.
        let _ = tx.send(units);
    })
    .await;
    drop(tx);
    let built = writer.await??;
    read?;
    let mut manifest = Manifest::read(&dir.path().join(MANIFEST))?;
    manifest.folder = format!("build-{}", uuid::Uuid::new_v4());
    for (name, _) in &manifest.files {
        let path = dir.path().join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        store.put(&format!("{output}/{}/{name}", manifest.folder), bytes).await?;
    }
    store.put(&manifest_path, serde_json::to_vec_pretty(&manifest)?).await?;
    Ok(built)
}

/// A BM25 index opened for search.
pub struct Bm25 {
    searcher: Searcher,
    f: Fields,
    unit: Unit,
    units: u64,
    mean_length: f32,
    /// Per segment: each document's length and unit number.
    columns: Vec<(Column<u64>, Column<u64>)>,
}

impl Bm25 {
    /// The index the `bm25-index` job wrote to `output/` on the store, fetched into the local cache the
    /// first time this machine needs it (keyed by its manifest's sha256).
    pub async fn fetch(store: &Store, output: &str) -> Result<Self> {
        let manifest_bytes = store
            .get(&format!("{output}/{MANIFEST}"))
            .await?
            .with_context(|| format!("{output}/{MANIFEST} is missing from {}: the BM25 index was not built", store.root_uri()))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).with_context(|| format!("{output}/{MANIFEST} is unreadable"))?;
        let dir = crate::env::get().checkpoint_cache.join("bm25").join(hex::encode(Sha256::digest(&manifest_bytes)));
        crate::io::store::cached_folder(&dir, MANIFEST, async |tmp: &Path| {
            for (name, size) in &manifest.files {
                let rel = [output, &manifest.folder, name].iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/");
                let bytes = store.get(&rel).await?.with_context(|| format!("{rel} is missing from {}", store.root_uri()))?;
                if bytes.len() as u64 != *size {
                    bail!("{rel} holds {} bytes, its manifest says {size}", bytes.len());
                }
                std::fs::write(tmp.join(name), bytes).with_context(|| format!("cannot write {}", tmp.join(name).display()))?;
            }
            std::fs::write(tmp.join(MANIFEST), &manifest_bytes).with_context(|| format!("cannot write into {}", tmp.display()))?;
            // Only an index that opens enters the cache.
            Self::open(tmp).map(drop)
        })
        .await?;
        Self::open(&dir)
    }

    /// The index in the local folder `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(&dir.join(MANIFEST))?;
        let index = Index::open_in_dir(dir).with_context(|| format!("cannot open the BM25 index in {}", dir.display()))?;
        register_tokenizer(&index);
        let (_, f) = schema();
        let searcher = index.reader()?.searcher();
        let columns = searcher
            .segment_readers()
            .iter()
            .map(|s| Ok((s.fast_fields().u64("len")?, s.fast_fields().u64("unit")?)))
            .collect::<tantivy::Result<_>>()?;
        let mean_length = (manifest.terms as f64 / manifest.units.max(1) as f64) as f32;
        Ok(Self { searcher, f, unit: manifest.unit, units: manifest.units, mean_length, columns })
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The top `k` units for `question` (searched `2k`, deduplicated by text).
    pub fn search(&self, question: &str, k: usize) -> Result<Vec<Hit>> {
        let n = self.units as f32;
        let mut scores: HashMap<DocAddress, f32> = HashMap::new();
        let mut seen = HashSet::new();
        for t in terms(question) {
            if !seen.insert(t.clone()) {
                continue;
            }
            let term = Term::from_field_text(self.f.terms, &t);
            let df = self.searcher.doc_freq(&term)? as f32;
            if df == 0.0 {
                continue;
            }
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (ord, segment) in self.searcher.segment_readers().iter().enumerate() {
                let Some(mut postings) = segment.inverted_index(self.f.terms)?.read_postings(&term, IndexRecordOption::WithFreqs)? else { continue };
                let lengths = &self.columns[ord].0;
                let mut doc = tantivy::DocSet::doc(&postings);
                while doc != TERMINATED {
                    let tf = tantivy::postings::Postings::term_freq(&postings) as f32;
                    let len = lengths.first(doc).unwrap_or(0) as f32;
                    let norm = K1 * (1.0 - B + B * len / self.mean_length);
                    *scores.entry(DocAddress::new(ord as u32, doc)).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
                    doc = tantivy::DocSet::advance(&mut postings);
                }
            }
        }
        let unit_of = |a: &DocAddress| self.columns[a.segment_ord as usize].1.first(a.doc_id).unwrap_or(u64::MAX);
        let mut ranked: Vec<(u64, DocAddress, f32)> = scores.into_iter().map(|(a, s)| (unit_of(&a), a, s)).collect();
        // Ties broken by corpus order, so runs are reproducible.
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        ranked.truncate(2 * k);
        let hits = ranked.into_iter().map(|(_, a, score)| self.hit(a, score)).collect::<Result<Vec<_>>>()?;
        Ok(dedup(hits, k))
    }

    fn hit(&self, address: DocAddress, score: f32) -> Result<Hit> {
        let doc: TantivyDocument = self.searcher.doc(address)?;
        let text = |f: Field| doc.get_first(f).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let number = |f: Field| doc.get_first(f).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let body = text(self.f.text);
        Ok(Hit {
            unit: self.unit,
            sentence: if self.unit == Unit::Sentence { body.clone() } else { String::new() },
            text: body,
            score,
            doc_id: text(self.f.doc_id),
            title: text(self.f.title),
            paragraph: number(self.f.paragraph),
            span: (number(self.f.span_start), number(self.f.span_end)),
            phrase: String::new(),
            encoder: "bm25".into(),
        })
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

    fn index(unit: Unit, units: Vec<Hit>) -> (tempfile::TempDir, Bm25) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), unit, units).unwrap();
        let bm25 = Bm25::open(dir.path()).unwrap();
        (dir, bm25)
    }

    #[test]
    fn rare_terms_outweigh_common_ones_and_duplicates_collapse() {
        let (_dir, bm25) = index(
            Unit::Paragraph,
            vec![
                unit("the cat sat on the mat"),
                unit("a dog and a cat"),
                unit("Luther Vandross sang with Cheryl Lynn"),
                unit("Luther Vandross sang with Cheryl Lynn"),
                unit("dogs dogs dogs"),
            ],
        );
        let hits = bm25.search("Who sang with Luther Vandross?", 3).unwrap();
        assert_eq!(hits.len(), 1, "only one unit matches, and its twin is a duplicate");
        assert_eq!(hits[0].text, "Luther Vandross sang with Cheryl Lynn");
        let hits = bm25.search("cat mat", 5).unwrap();
        assert_eq!(hits[0].text, "the cat sat on the mat", "the rarer term decides");
        assert!(hits[0].score > hits[1].score);
        assert!(bm25.search("the of and", 5).unwrap().is_empty(), "stop words match nothing");
    }

    /// The in-memory Okapi BM25 that the tantivy index replaced (same terms, k1, b and tie order), kept
    /// to check the replacement against.
    fn reference(units: &[Hit], question: &str, k: usize) -> Vec<(String, f32)> {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::new();
        for (i, u) in units.iter().enumerate() {
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in terms(&u.text) {
                *tf.entry(t).or_default() += 1;
            }
            lengths.push(tf.values().sum::<u32>());
            for (t, n) in tf {
                postings.entry(t).or_default().push((i as u32, n));
            }
        }
        let mean = lengths.iter().map(|&l| l as f32).sum::<f32>() / lengths.len() as f32;
        let n = units.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut seen = HashSet::new();
        for t in terms(question) {
            let Some(list) = postings.get(&t).filter(|_| seen.insert(t.clone())) else { continue };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(u, tf) in list {
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * lengths[u as usize] as f32 / mean);
                *scores.entry(u).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(2 * k);
        let hits = ranked.into_iter().map(|(u, score)| Hit { score, ..units[u as usize].clone() }).collect();
        dedup(hits, k).into_iter().map(|h| (h.text, h.score)).collect()
    }

    /// The fixture's paragraphs and sentences (split as ingest splits them) and its 40 questions: the
    /// tantivy index gives the reference's top 10 for at least 95 % of questions (the bar), and
    /// here in fact for all of them, with the same scores.
    #[test]
    fn tantivy_bm25_equals_the_in_memory_reference_on_the_fixture() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fixture");
        let docs = std::fs::read_to_string(data.join("docs.jsonl")).expect("../shared/data/fixture/docs.jsonl (see the README: the shared data)");
        let questions = std::fs::read_to_string(data.join("questions.jsonl")).unwrap();
        let questions: Vec<String> = questions.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["question"].as_str().unwrap().to_string()).collect();
        for unit in [Unit::Paragraph, Unit::Sentence] {
            let mut units = Vec::new();
            for line in docs.lines() {
                let d: serde_json::Value = serde_json::from_str(line).unwrap();
                for (i, p) in d["paragraphs"].as_array().unwrap().iter().enumerate() {
                    let text = p.as_str().unwrap().to_string();
                    let sentences = crate::text::sentences::split_sentences(&text);
                    let row = crate::text::corpus::CorpusRow { doc_id: d["id"].as_str().unwrap().into(), title: d["title"].as_str().unwrap().into(), paragraph: i as u32, text, sentences };
                    corpus_units(row, unit, &mut units);
                }
            }
            let (_dir, bm25) = index(unit, units.clone());
            let mut same = 0;
            for q in &questions {
                let want = reference(&units, q, 10);
                let got: Vec<(String, f32)> = bm25.search(q, 10).unwrap().into_iter().map(|h| (h.text, h.score)).collect();
                assert_eq!(got.len(), want.len(), "{unit}s for {q:?}");
                for ((_, g), (_, w)) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{unit}s for {q:?}: score {g} against {w}");
                }
                same += usize::from(got.iter().map(|h| &h.0).eq(want.iter().map(|h| &h.0)));
            }
            assert!(units.len() > 100, "{} {unit}s", units.len());
            assert_eq!(same, questions.len(), "{unit}s: the top 10 differ for {} of {} questions", questions.len() - same, questions.len());
        }
    }
}
