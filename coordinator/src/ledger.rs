//! The run ledger: every run of a config appends its row to `runs/` and its metrics to `metrics/` on
//! the store, one Parquet file per run written with a conditional put. A run never overwrites another
//! (on S3 as on disk), so the numbers of every run stay, failed runs included, and `phrasesweep results`
//! can query them across runs and stores.

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::record::{RUN_METRICS_DIR, RUNS_DIR};
use phrasesweep_schemas::tables::{run_metrics_schema, runs_schema};
use phrasesweep_workers::eval::table::metrics_batch;
use phrasesweep_workers::io::parquet::{read_parquet, to_parquet};
use phrasesweep_workers::io::store::Store;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The crate version and the commit the coordinator was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("PHRASESWEEP_COMMIT");

/// One run, as the ledger records it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Sortable by start: the start's Unix seconds, then 8 random hex digits.
    pub run_id: String,
    pub config: ExperimentConfig,
    pub status: String,
    pub started_unix: u64,
    pub ended_unix: u64,
    pub executed: usize,
    pub skipped: usize,
    pub workers: BTreeSet<String>,
    pub stage_seconds: BTreeMap<String, f64>,
}

/// A new run's id.
pub fn new_run_id(started_unix: u64) -> String {
    format!("{started_unix:010}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Appends `run` and its `metrics` (one row per retrieval; `per_question` names each retrieval's
/// per-question table on the store) to the store's ledger.
pub async fn append(store: &Store, run: &RunRecord, metrics: &[Metrics], per_question: &BTreeMap<String, String>) -> Result<()> {
    // Secrets are never serialised (S3 keys are skipped, the broker URL loses its password), so the
    // config can be kept whole.
    let config = toml::to_string(&run.config).context("cannot write the config into the ledger")?;
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let count = |v: u64| -> ArrayRef { Arc::new(UInt64Array::from(vec![v])) };
    let row = RecordBatch::try_new(
        runs_schema(),
        vec![
            text(&run.run_id),
            text(&run.config.name),
            text(store.root_uri()),
            text(&run.status),
            text(&config),
            text(&hex::encode(Sha256::digest(config.as_bytes()))),
            text(VERSION),
            text(COMMIT),
            count(run.started_unix),
            count(run.ended_unix),
            count(run.executed as u64),
            count(run.skipped as u64),
            text(&serde_json::to_string(&run.workers)?),
            text(&serde_json::to_string(&run.stage_seconds)?),
        ],
    )?;
    put_new(store, &format!("{RUNS_DIR}{}.parquet", run.run_id), to_parquet(runs_schema(), &[row], &[])?).await?;
    if !metrics.is_empty() {
        let batch = metrics_batch(metrics)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![run.run_id.as_str(); batch.num_rows()]))];
        columns.extend(batch.columns().iter().cloned());
        let paths = metrics.iter().map(|m| per_question.get(&m.retrieval).map_or("", String::as_str));
        columns.push(Arc::new(StringArray::from_iter_values(paths)));
        let batch = RecordBatch::try_new(run_metrics_schema(), columns)?;
        put_new(store, &format!("{RUN_METRICS_DIR}{}.parquet", run.run_id), to_parquet(run_metrics_schema(), &[batch], &[])?).await?;
    }
    Ok(())
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
