//! Job handlers: what a worker does for each job kind.

pub mod bm25;
pub mod encode;
pub mod index;
pub mod ingest;
pub mod read;
pub mod retrieve;
pub mod scan;
pub mod score;
pub mod train;

use crate::io::store::{InputChanged, InputMissing, Store, read_pinned};
use phrasesweep_schemas::JobSpec;
use phrasesweep_schemas::job::{InputFile, LineShard};

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input is wrong: retrying cannot help, the job is dead-lettered and the run fails.
    #[error("{0}")]
    Input(String),
    /// The handler panicked. The delivery counts: the broker delivers it again up to its delivery
    /// limit, then dead-letters it with this message.
    #[error("panicked: {0}")]
    Panicked(String),
    /// Anything else (the store, the network): retried with backoff, then the job is delivered again.
    #[error(transparent)]
    Other(anyhow::Error),
}

/// A pinned input that changed ([`InputChanged`]) or a file that is not there ([`InputMissing`], or a
/// local file's `NotFound`), wherever it was found, is an input error; anything else may pass on a retry.
impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        let permanent = e.chain().any(|c| {
            c.is::<InputChanged>()
                || c.is::<InputMissing>()
                || c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        });
        if permanent { JobError::Input(format!("{e:#}")) } else { JobError::Other(e) }
    }
}

/// A whole input file, checked against the sha256 it was planned with: the one check of every handler
/// that reads a file whole.
pub async fn read_file(store: &Store, f: &InputFile) -> Result<Vec<u8>, JobError> {
    Ok(read_pinned(store, &f.path, None, &f.sha256, &f.path).await?)
}

/// A shard of a JSON Lines input, checked as [`read_file`] checks a whole file.
pub async fn read_shard(store: &Store, s: &LineShard) -> Result<Vec<u8>, JobError> {
    Ok(read_pinned(store, &s.path, Some(s.byte_start..s.byte_end), &s.sha256, &format!("{}: lines {}.. (shard {})", s.path, s.first_line, s.shard)).await?)
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
        JobSpec::Scan { inputs, config } => record(scan::run(store, inputs, config).await?),
        JobSpec::Bm25Index { inputs, config } => record(bm25::run(store, inputs, config).await?),
        JobSpec::Retrieve { inputs, config } => record(retrieve::run(store, inputs, config).await?),
        JobSpec::Score { inputs, config } => record(score::run(store, inputs, config).await?),
        JobSpec::Read { inputs, config } => record(read::run(store, inputs, config).await?),
        JobSpec::TrainReader { inputs, config } => record(train::train_reader(store, inputs, config).await?),
        JobSpec::TrainPhrase { inputs, config } => record(train::train_phrase(store, inputs, config).await?),
        JobSpec::QsftEpoch { inputs, config } => record(train::qsft_epoch(store, inputs, config).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A changed data file and changed model weights are input errors (dead-lettered at once, with the
    /// reason), not errors a retry could fix.
    #[tokio::test]
    async fn changed_inputs_and_models_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().to_str().unwrap()).unwrap();
        let file = dir.path().join("q.jsonl");
        std::fs::write(&file, b"{}\n").unwrap();
        let path = file.to_str().unwrap().to_string();
        let planned = InputFile { path: path.clone(), sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"{}\n")) };
        assert_eq!(read_file(&store, &planned).await.unwrap(), b"{}\n");
        std::fs::write(&file, b"{\"x\": 1}\n").unwrap();
        match read_file(&store, &planned).await {
            Err(JobError::Input(e)) => assert!(e.contains(&path) && e.contains("changed since the run was planned"), "{e}"),
            other => panic!("a changed file must be an input error, got {other:?}"),
        }

        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::copy(crate::model::load::default_model_dir().join(f), model.join(f)).expect("the default model (make setup)");
        }
        let pinned = crate::model::registry::model_ref(model.to_str().unwrap()).unwrap();
        std::fs::OpenOptions::new().append(true).open(model.join("model.safetensors")).unwrap().write_all(b"more").unwrap();
        let device = crate::model::device::job_device().unwrap();
        let e: JobError = crate::model::registry::load_query_encoder::<crate::model::device::Job>(&pinned, &device).err().expect("changed weights must not load").into();
        assert!(matches!(&e, JobError::Input(m) if m.contains("weights of") && m.contains("rerun to plan again")), "{e:?}");
        let transient: JobError = anyhow::anyhow!("connection reset").into();
        assert!(matches!(transient, JobError::Other(_)));
        let missing: JobError = anyhow::Error::from(std::fs::read(dir.path().join("absent")).unwrap_err()).context("cannot read the tokenizer").into();
        assert!(matches!(&missing, JobError::Input(m) if m.contains("cannot read the tokenizer")), "{missing:?}");
    }
}
