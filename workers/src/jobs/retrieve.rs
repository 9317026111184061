//! `retrieve`: one shard of questions × one retrieval → ranked evidence as Parquet (one row per question and
//! rank, with the span and the encoder that produced it).

use super::JobError;
use crate::bm25::Bm25;
use crate::model::device::{Job, job_device};
use crate::model::encoders::encode_queries;
use crate::model::registry::{load_query_encoder, local_model};
use crate::parquet_io::write_parquet;
use crate::progress::RateLog;
use crate::questions::{Question, parse_questions};
use crate::retrieval::{Hit, Mode, Unit, drop_contained_phrases, dynamic_merge, static_merge};
use crate::search::PhraseIndex;
use crate::store::{Store, read_input_range};
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array};
use phrasesweep_schemas::job::{LineShard, RetrieveConfig, RetrieveInputs};
use phrasesweep_schemas::tables::results_schema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

/// Queries per forward pass of a query encoder.
const QUERY_BATCH: usize = 32;

/// Questions whose start hits are compared with exact search when a job measures the index's recall:
/// an exact search reads every vector (3–7 s per question over the 2.2 M of the dev corpus here).
const RECALL_SAMPLE: usize = 25;

#[derive(Debug, Serialize, Deserialize)]
pub struct RetrieveOutput {
    pub questions: u64,
    /// Mean recall@100 of start hits, index vs exact search, when the job measured it.
    #[serde(default)]
    pub recall_at_100: Option<f64>,
    pub rows: u64,
    pub seconds: f64,
    pub output: String,
}

/// Reads a shard of a questions file, checking it did not change since planning.
pub async fn read_questions(store: &Store, shard: &LineShard) -> Result<Vec<Question>, JobError> {
    let bytes = read_input_range(store, &shard.path, shard.byte_start..shard.byte_end).await?;
    if hex::encode(Sha256::digest(&bytes)) != shard.sha256 {
        return Err(JobError::Input(format!(
            "{}: lines {}.. changed since the run was planned; rerun to plan again",
            shard.path, shard.first_line
        )));
    }
    parse_questions(&shard.path, shard.first_line, &bytes).map_err(|e| JobError::Input(e.to_string()))
}

pub async fn run(store: &Store, inputs: &RetrieveInputs, config: &RetrieveConfig) -> Result<serde_json::Value, JobError> {
    let started = std::time::Instant::now();
    let questions = read_questions(store, &inputs.questions).await?;
    let r = &config.retrieval;
    let mode = r.resolve().map_err(|(f, p)| JobError::Input(format!("retrieval `{}`: field `{f}`: {p}", r.name)))?;
    let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let mut per_question: Vec<Vec<Hit>> = Vec::with_capacity(questions.len());
    let mut recall_at_100 = None;
    let mut log = RateLog::new(format!("retrieve {} shard {}", r.name, inputs.questions.shard), questions.len() as u64, "questions");
    if let Mode::Bm25 { unit } = mode {
        let bm25 = Bm25::build(store, &inputs.corpus, unit).await?;
        for q in &texts {
            per_question.push(bm25.search(q, r.k));
            log.add(1);
        }
    } else {
        let index = PhraseIndex::open(store, &inputs.phrases, &inputs.corpus, &config.search).await?;
        let mut vectors: HashMap<String, Vec<(Vec<f32>, Vec<f32>)>> = HashMap::new();
        for name in r.encoders() {
            if vectors.contains_key(&name) {
                continue;
            }
            let model_ref = config.encoders.get(&name).with_context(|| format!("the job names no model for encoder `{name}`"))?;
            let device = job_device()?;
            let (model, text) = load_query_encoder::<Job>(&local_model(store, model_ref).await?, &device)?;
            let v = encode_queries(&model, &text, &texts, config.search.query_len, QUERY_BATCH, &device)?;
            vectors.insert(name, v);
        }
        if config.measure_recall {
            let sample = &vectors[&r.encoders()[0]][..questions.len().min(RECALL_SAMPLE)];
            let mut sum = 0.0;
            for (qs, _) in sample {
                sum += index.recall_at(qs, 100).await?;
            }
            let recall = sum / sample.len().max(1) as f64;
            info!(recall_at_100 = recall, questions = sample.len(), nprobes = config.search.nprobes, refine = config.search.refine, "index recall against exact search");
            recall_at_100 = Some(recall);
        }
        for i in 0..questions.len() {
            let search = async |enc: &str, unit: Unit| {
                let (qs, qe) = &vectors[enc][i];
                index.search(qs, qe, unit, r.k, enc).await
            };
            let opt = |hits: Vec<Hit>| if r.opt { drop_contained_phrases(hits) } else { hits };
            let hits = match &mode {
                Mode::Single { unit, encoder } => opt(search(encoder, *unit).await?),
                Mode::Static { phrase_encoder, sentence_encoder } => {
                    static_merge(opt(search(phrase_encoder, Unit::Phrase).await?), search(sentence_encoder, Unit::Sentence).await?)
                }
                Mode::Dynamic { phrase_encoder, sentence_encoder } => dynamic_merge(
                    opt(search(phrase_encoder, Unit::Phrase).await?),
                    search(sentence_encoder, Unit::Sentence).await?,
                    r.k,
                ),
                Mode::Bm25 { .. } => unreachable!("handled above"),
            };
            per_question.push(hits);
            log.add(1);
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
    let out = RetrieveOutput { questions: questions.len() as u64, recall_at_100, rows, seconds, output: config.output.clone() };
    Ok(serde_json::to_value(out).context("cannot encode the retrieve record")?)
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
