//! `retrieve`: one shard of questions × one retrieval → ranked evidence as Parquet (one row per question and
//! rank, with the span and the encoder that produced it).

use super::{JobError, read_shard};
use crate::index::bm25::Bm25;
use crate::model::device::{Job, job_device};
use crate::model::encoders::encode_queries;
use crate::model::registry::{load_query_encoder, local_model};
use crate::io::parquet::write_parquet;
use crate::progress::RateLog;
use crate::text::questions::{Question, parse_questions};
use crate::text::truecase::query_texts;
use crate::index::units::{Hit, Mode, SpanKey, Unit, drop_contained_phrases, dynamic_merge, static_merge};
use crate::index::scan::Candidates;
use crate::index::search::{PhraseIndex, Span, hits, hits_for};
use crate::text::corpus::CorpusRow;
use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array};
use phrasesweep_schemas::job::{LineShard, RetrieveConfig, RetrieveInputs};
use phrasesweep_schemas::outcome::RetrieveOutcome;
use phrasesweep_schemas::tables::results_schema;
use phrasesweep_schemas::settings::SearchMethod;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use tracing::info;

/// Queries per forward pass of a query encoder.
pub const QUERY_BATCH: usize = 32;

/// Questions whose start hits are compared with exact search when a job measures the index's recall:
/// an exact search reads every vector (3–7 s per question over the 2.2 M of the dev corpus here).
const RECALL_SAMPLE: usize = 25;

/// Reads a shard of a questions file, checking it did not change since planning.
pub async fn read_questions(store: &Store, shard: &LineShard) -> Result<Vec<Question>, JobError> {
    let bytes = read_shard(store, shard).await?;
    parse_questions(&shard.path, shard.first_line, &bytes).map_err(|e| JobError::Input(e.to_string()))
}

pub async fn run(store: &Store, inputs: &RetrieveInputs, config: &RetrieveConfig) -> Result<RetrieveOutcome, JobError> {
    let started = std::time::Instant::now();
    let questions = read_questions(store, &inputs.questions).await?;
    let r = &config.retrieval;
    let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let mut per_question: Vec<Vec<Hit>> = Vec::with_capacity(questions.len());
    let mut recall_at_100 = None;
    let mut log = RateLog::new(format!("retrieve {} shard {}", r.name, inputs.questions.shard), questions.len() as u64, "questions");
    match &r.mode {
        Mode::Bm25 { unit } => {
            let index = inputs.bm25.as_deref().ok_or_else(|| JobError::Input(format!("retrieval {}: a BM25 retrieval needs its index (planned by the scan stage)", r.name)))?;
            let bm25 = Bm25::fetch(store, index).await?;
            if bm25.unit() != *unit {
                return Err(JobError::Input(format!("{index} indexes {}s, retrieval {} asks for {unit}s", bm25.unit(), r.name)));
            }
            for q in &texts {
                per_question.push(bm25.search(q, r.k)?);
                log.add(1);
            }
        }
        Mode::Single { unit, encoder, opt } => {
            let dense = Dense::open(store, inputs, config, &texts).await?;
            recall_at_100 = dense.recall_at_100;
            for i in 0..texts.len() {
                per_question.push(apply_opt(*opt, dense.search(i, encoder, *unit)));
                log.add(1);
            }
        }
        Mode::Static { phrase_encoder, sentence_encoder, opt } | Mode::Dynamic { phrase_encoder, sentence_encoder, opt, .. } => {
            let dense = Dense::open(store, inputs, config, &texts).await?;
            recall_at_100 = dense.recall_at_100;
            for i in 0..texts.len() {
                let phrases = apply_opt(*opt, dense.search(i, phrase_encoder, Unit::Phrase));
                let spans = dense.spans(i, sentence_encoder, Unit::Sentence);
                let sentences = dense.hits(&spans, sentence_encoder, Unit::Sentence);
                per_question.push(match &r.mode {
                    Mode::Dynamic { merge, .. } => dynamic_merge(phrases, sentences, &dense.span_keys(&spans), *merge),
                    _ => static_merge(phrases, sentences),
                });
                log.add(1);
            }
        }
    }
    let batch = results_batch(&questions, &per_question).context("cannot build the results table")?;
    let rows = batch.num_rows() as u64;
    let metadata = vec![
        ("phrasesweep.retrieval".to_string(), serde_json::to_string(r).unwrap_or_default()),
        ("phrasesweep.questions".to_string(), inputs.questions.path.clone()),
        ("phrasesweep.questions_sha256".to_string(), inputs.questions.sha256.clone()),
        ("phrasesweep.phrases".to_string(), format!("{}@{}", inputs.phrases.dataset, inputs.phrases.version)),
        ("phrasesweep.encoders".to_string(), serde_json::to_string(&config.encoders).unwrap_or_default()),
        ("phrasesweep.search".to_string(), serde_json::to_string(&config.search).unwrap_or_default()),
    ];
    write_parquet(store, &config.output, results_schema(), &[batch], &metadata).await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(retrieval = r.name, questions = questions.len(), rows, seconds, "retrieved");
    let out = RetrieveOutcome { questions: questions.len() as u64, recall_at_100, rows, seconds, output: config.output.clone() };
    Ok(out)
}

/// Query vectors (start, end) of one question.
pub type QueryVectors = (Vec<f32>, Vec<f32>);

/// Query vectors of recent jobs by question shard, query encoder and question settings: the retrieve jobs
/// of a sweep (IVF) and the scan jobs of one shard's fragment ranges ask for the same queries, and a
/// worker that runs several of them loads the encoder and encodes the shard once.
static QUERIES: LazyLock<moka::sync::Cache<[u8; 32], Arc<tokio::sync::OnceCell<Arc<Vec<QueryVectors>>>>>> = LazyLock::new(|| moka::sync::Cache::new(16));

/// The query vectors of `questions` (the questions of `shard`) by the encoder `model`, prepared as
/// `question` says and cut to `query_len` pieces.
pub async fn shard_queries(
    store: &Store,
    shard: &LineShard,
    questions: &[&str],
    corpus: &phrasesweep_schemas::job::DatasetVersion,
    model: &phrasesweep_schemas::job::ModelRef,
    query_len: usize,
    question: &phrasesweep_schemas::settings::QuestionText,
) -> Result<Arc<Vec<QueryVectors>>> {
    let key: [u8; 32] = Sha256::digest(serde_json::to_vec(&(shard, corpus, model, query_len, question))?).into();
    let cell = QUERIES.get_with(key, Default::default);
    let vectors = cell
        .get_or_try_init(|| async {
            let device = job_device()?;
            let (encoder, text) = load_query_encoder::<Job>(&local_model(store, model).await?, &device)?;
            let prepared = query_texts(store, corpus, questions, question, text.keeps_case()).await?;
            let prepared: Vec<&str> = prepared.iter().map(String::as_str).collect();
            anyhow::Ok(Arc::new(encode_queries(&encoder, &text, &prepared, query_len, QUERY_BATCH, &device)?))
        })
        .await?;
    Ok(vectors.clone())
}

/// Candidates of recent jobs by [`Dense::key`]: a sweep runs many retrievals with the same query encoders
/// over the same question shard (each unit, static and dynamic, with and without opt), and a worker
/// that runs several of them searches once. Concurrent jobs with the same key wait for the first one's
/// search rather than repeating it.
type Searched = Arc<tokio::sync::OnceCell<Arc<Vec<Candidates>>>>;
static SEARCHES: LazyLock<moka::sync::Cache<[u8; 32], Searched>> = LazyLock::new(|| moka::sync::Cache::new(16));

/// The phrase index, and every question's candidates from each query encoder of a dense mode, searched
/// together (one scan for all of them) with the corpus paragraphs they lie in.
struct Dense {
    /// Candidates of question `i` by encoder `e`: `candidates[offset[e] + i]`.
    candidates: Arc<Vec<Candidates>>,
    offset: HashMap<String, usize>,
    paragraphs: HashMap<u64, CorpusRow>,
    k: usize,
    /// Mean recall@100 of start hits, IVF index vs exact search, when the job measures it.
    recall_at_100: Option<f64>,
}

impl Dense {
    async fn open(store: &Store, inputs: &RetrieveInputs, config: &RetrieveConfig, texts: &[&str]) -> Result<Self> {
        let index = PhraseIndex::open(store, &inputs.phrases, &inputs.corpus, &config.search).await?;
        let mut encoders = config.retrieval.encoders();
        encoders.sort();
        encoders.dedup();
        let k = config.retrieval.k;
        let hits = hits_for(Unit::Sentence, k);
        let mut recall_at_100 = None;
        let (candidates, offset) = if !inputs.scans.is_empty() {
            Self::merge_scans(store, &encoders, &inputs.scans, texts.len(), hits).await?
        } else {
            let (mut queries, mut offset) = (Vec::new(), HashMap::new());
            for name in &encoders {
                let model = config.encoders.get(name).with_context(|| format!("the job names no model for encoder `{name}`"))?;
                offset.insert(name.clone(), queries.len());
                let s = &config.search;
                queries.extend(shard_queries(store, &inputs.questions, texts, &inputs.corpus, model, s.query_len, &s.question).await?.iter().cloned());
            }
            let cell = SEARCHES.get_with(Self::key(inputs, config, hits, &queries), Default::default);
            let candidates = cell.get_or_try_init(|| async { index.batch(&queries, hits, false).await.map(Arc::new) }).await?.clone();
            if config.measure_recall && config.search.method == SearchMethod::Ivf {
                let sample = &queries[..texts.len().min(RECALL_SAMPLE)];
                let mut sum = 0.0;
                for (qs, _) in sample {
                    sum += index.recall_at(qs, 100).await?;
                }
                let recall = sum / sample.len().max(1) as f64;
                info!(recall_at_100 = recall, questions = sample.len(), nprobes = config.search.nprobes, refine = config.search.refine, "index recall against exact search");
                recall_at_100 = Some(recall);
            }
            (candidates, offset)
        };
        let rows: Vec<u64> = candidates.iter().flat_map(|c| c.starts.iter().chain(&c.ends)).map(|a| a.span.corpus_row).collect();
        let paragraphs = index.paragraphs(&rows).await?;
        Ok(Self { candidates, offset, paragraphs, k, recall_at_100 })
    }

    /// The scan stage's top hits of each encoder, every fragment range merged, for `questions` questions.
    async fn merge_scans(
        store: &Store,
        encoders: &[String],
        scans: &std::collections::BTreeMap<String, Vec<String>>,
        questions: usize,
        hits: usize,
    ) -> Result<(Arc<Vec<Candidates>>, HashMap<String, usize>)> {
        let (mut all, mut offset) = (Vec::new(), HashMap::new());
        for name in encoders {
            let paths = scans.get(name).with_context(|| format!("no scan of encoder `{name}` for this shard"))?;
            let mut parts: Vec<std::vec::IntoIter<Candidates>> = Vec::new();
            for path in paths {
                let part: Vec<Candidates> = store.get_json(path).await?.with_context(|| format!("the scan output {path} is missing"))?;
                anyhow::ensure!(part.len() == questions, "{path} holds {} questions, the shard {questions}", part.len());
                parts.push(part.into_iter());
            }
            offset.insert(name.clone(), all.len());
            for _ in 0..questions {
                all.push(Candidates::merge(parts.iter_mut().filter_map(Iterator::next), hits));
            }
        }
        Ok((Arc::new(all), offset))
    }

    /// Everything a job's candidates depend on: the index version, the search settings, the hit count and
    /// the query vectors.
    fn key(inputs: &RetrieveInputs, config: &RetrieveConfig, hits: usize, queries: &[(Vec<f32>, Vec<f32>)]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(format!("{}@{}", inputs.phrases.dataset, inputs.phrases.version));
        h.update(serde_json::to_vec(&config.search).unwrap_or_default());
        h.update((hits as u64).to_le_bytes());
        for (qs, qe) in queries {
            qs.iter().chain(qe).for_each(|x| h.update(x.to_le_bytes()));
        }
        h.finalize().into()
    }

    /// Question `i`'s top-k units of one kind, by one query encoder.
    fn search(&self, i: usize, encoder: &str, unit: Unit) -> Vec<Hit> {
        self.hits(&self.spans(i, encoder, unit), encoder, unit)
    }

    /// The spans behind question `i`'s units of one kind.
    fn spans(&self, i: usize, encoder: &str, unit: Unit) -> Vec<Span> {
        self.candidates[self.offset[encoder] + i].spans(hits_for(unit, self.k))
    }

    /// The top-k units of `spans`.
    fn hits(&self, spans: &[Span], encoder: &str, unit: Unit) -> Vec<Hit> {
        hits(spans, &self.paragraphs, unit, self.k, encoder)
    }

    /// The index hits of `spans`, named as evidence names them.
    fn span_keys<'a>(&'a self, spans: &[Span]) -> HashSet<SpanKey<'a>> {
        spans.iter().filter_map(|s| self.paragraphs.get(&s.corpus_row).map(|p| (p.doc_id.as_str(), p.paragraph, (s.char_start, s.char_end)))).collect()
    }
}

/// `opt`: drops each phrase contained in a phrase ranked above it.
fn apply_opt(opt: bool, hits: Vec<Hit>) -> Vec<Hit> {
    if opt { drop_contained_phrases(hits) } else { hits }
}

fn results_batch(questions: &[Question], hits: &[Vec<Hit>]) -> Result<RecordBatch> {
    let rows: Vec<(&Question, usize, &Hit)> =
        questions.iter().zip(hits).flat_map(|(q, hs)| hs.iter().enumerate().map(move |(r, h)| (q, r, h))).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(q, _, _)| q.id.as_str()))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(_, r, _)| *r as u32 + 1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.unit.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.text.as_str()))),
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|(_, _, h)| h.score))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.doc_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.title.as_str()))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(_, _, h)| h.paragraph))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(_, _, h)| h.span.0))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(_, _, h)| h.span.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.phrase.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, h)| h.encoder.as_str()))),
    ];
    Ok(RecordBatch::try_new(results_schema(), columns)?)
}
