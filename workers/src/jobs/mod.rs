//! Job handlers: what a worker does for each job kind.

pub mod encode;
pub mod index;
pub mod ingest;
pub mod retrieve;
pub mod score;
pub mod train;

use crate::io::store::Store;
use phrasesweep_schemas::JobSpec;

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input is wrong: retrying cannot help, the job is dead-lettered and the run fails.
    #[error("{0}")]
    Input(String),
    /// Anything else (the store, the network): the job is delivered again.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs one job and returns its outcome (a type of `phrasesweep_schemas::outcome`), as the JSON of its
/// `done.json` record. Must be idempotent: a redelivered job runs again from the start and its earlier,
/// unrecorded output is simply never committed.
pub async fn execute(store: &Store, spec: &JobSpec) -> Result<serde_json::Value, JobError> {
    fn record<T: serde::Serialize>(outcome: T) -> Result<serde_json::Value, JobError> {
        Ok(serde_json::to_value(outcome).map_err(anyhow::Error::from)?)
    }
    match spec {
        JobSpec::Ingest { inputs, config } => record(ingest::run(store, inputs, config).await?),
        JobSpec::Encode { inputs, config } => record(encode::run(store, inputs, config).await?),
        JobSpec::Index { inputs, config } => record(index::run(store, inputs, config).await?),
        JobSpec::Retrieve { inputs, config } => record(retrieve::run(store, inputs, config).await?),
        JobSpec::Score { inputs, config } => record(score::run(store, inputs, config).await?),
        JobSpec::TrainReader { inputs, config } => record(train::train_reader(store, inputs, config).await?),
        JobSpec::TrainPhrase { inputs, config } => record(train::train_phrase(store, inputs, config).await?),
        JobSpec::QsftEpoch { inputs, config } => record(train::qsft_epoch(store, inputs, config).await?),
    }
}
