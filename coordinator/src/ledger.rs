//! The run ledger: every run of a config appends its row to `runs/` and its metrics to `metrics/` on
//! the store, one Parquet file per run written with a conditional put. A run never overwrites another
//! (on S3 as on disk), so the numbers of every run stay, failed runs included, and `phrasesweep results`
//! can query them across runs and stores.

use crate::plan::Stage;
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::sweep::{Point, value_text};
use phrasesweep_schemas::{ExperimentConfig, JobSpec};
use phrasesweep_schemas::outcome::ReadOutcome;
use phrasesweep_schemas::record::{RUN_METRICS_DIR, RUN_READING_DIR, RUNS_DIR};
use phrasesweep_schemas::tables::{run_metrics_schema, run_reading_schema, runs_schema};
use phrasesweep_workers::eval::table::metrics_batch;
use phrasesweep_workers::io::parquet::{read_parquet, to_parquet};
use phrasesweep_workers::io::store::Store;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The crate version and the commit the coordinator was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("PHRASESWEEP_COMMIT");

/// What a run's results were made from: each model and each input file by its sha256.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Provenance {
    /// `phrase_encoder`, each query encoder by name, `reader` (of the read stage), `reader.base`,
    /// `phrase.base`.
    pub models: BTreeMap<String, String>,
    /// `corpus` (sha256 over its shards' sha256s, in order), `questions`, and the training files.
    pub data: BTreeMap<String, String>,
}

impl Provenance {
    /// Adds the models and inputs the jobs of `stage` read.
    pub fn add(&mut self, stage: &Stage) {
        let mut shards = Vec::new();
        for job in &stage.jobs {
            match &job.spec {
                JobSpec::Ingest { inputs, .. } => shards.push(inputs.sha256.as_str()),
                JobSpec::Encode { config, .. } => {
                    self.models.insert("phrase_encoder".into(), config.model.sha256.clone());
                }
                JobSpec::Retrieve { config, .. } => self.models.extend(config.encoders.iter().map(|(n, m)| (n.clone(), m.sha256.clone()))),
                JobSpec::Score { inputs, .. } => {
                    self.data.insert("questions".into(), inputs.questions_sha256.clone());
                }
                JobSpec::TrainReader { inputs, .. } | JobSpec::TrainPhrase { inputs, .. } => {
                    let role = if matches!(job.spec, JobSpec::TrainReader { .. }) { "reader" } else { "phrase" };
                    self.models.insert(format!("{role}.base"), inputs.model.sha256.clone());
                    for (name, file) in [("squad_train", Some(&inputs.squad_train)), ("squad_dev", Some(&inputs.squad_dev)), ("nq_train", inputs.nq_train.as_ref())] {
                        self.data.extend(file.map(|f| (name.to_string(), f.sha256.clone())));
                    }
                }
                JobSpec::QsftEpoch { inputs, .. } => {
                    self.data.insert("qsft_train".into(), inputs.train.sha256.clone());
                    self.data.insert("qsft_dev".into(), inputs.dev.sha256.clone());
                }
                JobSpec::Read { config, .. } => {
                    self.models.extend(config.reader.as_ref().map(|r| ("reader".to_string(), r.sha256.clone())));
                }
                JobSpec::Index { .. } | JobSpec::Scan { .. } | JobSpec::Bm25Index { .. } => {}
            }
        }
        if !shards.is_empty() {
            self.data.insert("corpus".into(), hex::encode(Sha256::digest(shards.join("\n").as_bytes())));
        }
    }
}

/// sha256 of what a config asks for, less where it runs (store, broker, embedded workers, coordinator):
/// two runs of one experiment on two stores or farms share it.
pub fn experiment_sha256(config: &ExperimentConfig) -> Result<String> {
    let mut value = toml::Value::try_from(config).context("cannot serialise the config")?;
    if let Some(t) = value.as_table_mut() {
        for place in ["store", "broker", "embedded", "coordinator"] {
            t.remove(place);
        }
    }
    Ok(hex::encode(Sha256::digest(toml::to_string(&value)?.as_bytes())))
}

/// One run, as the ledger records it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Sortable by start: the start's Unix seconds, then 8 random hex digits.
    pub run_id: String,
    /// The sweep point run (its config is the run's); a config without `[sweep]` is one unlabelled point.
    pub point: Point,
    pub status: String,
    pub started_unix: u64,
    pub ended_unix: u64,
    pub executed: usize,
    pub skipped: usize,
    pub workers: BTreeSet<String>,
    pub stage_seconds: BTreeMap<String, f64>,
    pub provenance: Provenance,
}

/// A new run's id.
pub fn new_run_id(started_unix: u64) -> String {
    format!("{started_unix:010}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Appends `run`, its `metrics` (one row per retrieval; `per_question` names each retrieval's
/// per-question table on the store) and its `reading` (per retrieval, the read stage's sums) to the
/// store's ledger.
pub async fn append(store: &Store, run: &RunRecord, metrics: &[Metrics], per_question: &BTreeMap<String, String>, reading: &[ReadOutcome]) -> Result<()> {
    // Secrets are never serialised (S3 keys are skipped, the broker URL loses its password), so the
    // config can be kept whole.
    let config = &run.point.config;
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let count = |v: u64| -> ArrayRef { Arc::new(UInt64Array::from(vec![v])) };
    let mut columns = vec![
        text(&run.run_id),
        text(&config.name),
        text(store.root_uri()),
        text(&run.status),
        text(&toml::to_string(config).context("cannot write the config into the ledger")?),
        text(&experiment_sha256(config)?),
        text(VERSION),
        text(COMMIT),
        count(run.started_unix),
        count(run.ended_unix),
        count(run.executed as u64),
        count(run.skipped as u64),
        text(&serde_json::to_string(&run.workers)?),
        text(&serde_json::to_string(&run.stage_seconds)?),
        text(&run.point.label),
        text(&serde_json::to_string(&run.provenance.models)?),
        text(&serde_json::to_string(&run.provenance.data)?),
    ];
    // Each axis value in a column of its own, named by its axis: numbers as floats, so that they sort
    // and compare as numbers.
    let mut fields: Vec<Field> = runs_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    for (axis, value) in &run.point.values {
        let (column, kind): (ArrayRef, DataType) = match value {
            toml::Value::Float(f) => (Arc::new(Float64Array::from(vec![*f])), DataType::Float64),
            toml::Value::Integer(i) => (Arc::new(Float64Array::from(vec![*i as f64])), DataType::Float64),
            toml::Value::Boolean(b) => (Arc::new(BooleanArray::from(vec![*b])), DataType::Boolean),
            v => (text(&value_text(v)), DataType::Utf8),
        };
        fields.push(Field::new(axis, kind, true));
        columns.push(column);
    }
    let schema = Arc::new(Schema::new(fields));
    let row = RecordBatch::try_new(schema.clone(), columns)?;
    put_new(store, &format!("{RUNS_DIR}{}.parquet", run.run_id), to_parquet(schema, &[row], &[])?).await?;
    if !metrics.is_empty() {
        let batch = metrics_batch(metrics)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![run.run_id.as_str(); batch.num_rows()]))];
        columns.extend(batch.columns().iter().cloned());
        let paths = metrics.iter().map(|m| per_question.get(&m.retrieval).map_or("", String::as_str));
        columns.push(Arc::new(StringArray::from_iter_values(paths)));
        let batch = RecordBatch::try_new(run_metrics_schema(), columns)?;
        put_new(store, &format!("{RUN_METRICS_DIR}{}.parquet", run.run_id), to_parquet(run_metrics_schema(), &[batch], &[])?).await?;
    }
    if !reading.is_empty() {
        put_new(store, &format!("{RUN_READING_DIR}{}.parquet", run.run_id), to_parquet(run_reading_schema(), &[reading_batch(&run.run_id, reading)?], &[])?).await?;
    }
    Ok(())
}

/// One row per retrieval and budget: the read stage's sums as means over questions.
fn reading_batch(run_id: &str, reading: &[ReadOutcome]) -> Result<RecordBatch> {
    let rows: Vec<(&ReadOutcome, usize)> = reading.iter().flat_map(|r| (0..r.budgets.len()).map(move |b| (r, b))).collect();
    let mean = |f: &dyn Fn(&ReadOutcome, usize) -> f64| -> ArrayRef { Arc::new(Float64Array::from_iter_values(rows.iter().map(|(r, b)| f(r, *b) / r.questions.max(1) as f64))) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; rows.len()])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(r, _)| r.retrieval.as_str()))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|(r, b)| r.budgets[*b] as u64))),
        mean(&|r, b| r.em[b]),
        mean(&|r, b| r.f1[b]),
        mean(&|r, b| r.words[b] as f64),
        mean(&|r, b| r.tokens[b] as f64),
        mean(&|r, b| r.tokens_out.get(b).copied().unwrap_or(0) as f64),
        mean(&|r, _| r.seconds),
    ];
    Ok(RecordBatch::try_new(run_reading_schema(), columns)?)
}

/// Writes a ledger file that must not exist yet.
async fn put_new(store: &Store, rel: &str, bytes: Vec<u8>) -> Result<()> {
    anyhow::ensure!(store.put_if_absent(rel, bytes).await?, "{}/{rel} exists already: run ids are unique", store.root_uri());
    Ok(())
}

/// Where each run's per-question tables are: (run id, retrieval, path on the store), from `metrics/`.
pub async fn per_question_tables(store: &Store) -> Result<Vec<(String, String, String)>> {
    use arrow::array::AsArray;
    let mut out = Vec::new();
    for m in read_table(store, RUN_METRICS_DIR).await? {
        let text = |name: &str| m.column_by_name(name).map(|c| c.as_string::<i32>().clone());
        let (Some(run), Some(retrieval), Some(path)) = (text("run_id"), text("retrieval"), text("per_question")) else { continue };
        out.extend((0..m.num_rows()).filter(|&i| !path.value(i).is_empty()).map(|i| (run.value(i).into(), retrieval.value(i).into(), path.value(i).into())));
    }
    Ok(out)
}

/// A per-question table (`scores/<retrieval>/…`) by question id: mAR in the study's `seed` form and the
/// rank of the first hit holding an answer (none when no hit does). An empty path reads as no questions.
pub async fn per_question(store: &Store, path: &str) -> Result<BTreeMap<String, (f64, Option<u32>)>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, UInt32Type};
    let mut out = BTreeMap::new();
    if path.is_empty() {
        return Ok(out);
    }
    for b in read_parquet(store, path).await.with_context(|| format!("{}/{path}", store.root_uri()))?.0 {
        let id = b.column_by_name("question_id").context("no question_id column")?.as_string::<i32>().clone();
        let mar = b.column_by_name("mar_seed").context("no mar_seed column")?.as_primitive::<Float64Type>().clone();
        let rank = b.column_by_name("first_hit_rank").context("no first_hit_rank column")?.as_primitive::<UInt32Type>().clone();
        out.extend((0..b.num_rows()).map(|i| (id.value(i).to_string(), (mar.value(i), rank.is_valid(i).then(|| rank.value(i))))));
    }
    Ok(out)
}

/// Every batch of the ledger table under `dir` (`runs/`, `metrics/`, `training/`) of `store`.
pub async fn read_table(store: &Store, dir: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for path in store.list(dir).await? {
        if path.ends_with(".parquet") {
            let (batches, _) = read_parquet(store, &path).await.with_context(|| format!("{}/{path}", store.root_uri()))?;
            out.extend(batches);
        }
    }
    Ok(out)
}
