//! Records that workers leave on the store under `jobs/<id>/`. They are the source of truth for what is
//! done: events on the broker only make the coordinator look sooner.

use serde::{Deserialize, Serialize};

pub fn started_path(id: &str) -> String {
    format!("jobs/{id}/started.json")
}
pub fn done_path(id: &str) -> String {
    format!("jobs/{id}/done.json")
}
pub fn failed_path(id: &str) -> String {
    format!("jobs/{id}/failed.json")
}
pub fn dead_path(id: &str) -> String {
    format!("jobs/{id}/dead.json")
}

/// A worker took the job (`attempt` counts deliveries).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub worker: String,
    pub attempt: u32,
    pub at_unix: u64,
}

/// The job's output is durable. Written once, with a conditional put.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub worker: String,
    pub seconds: f64,
    pub at_unix: u64,
    /// Kind-specific output (for ingest: the uncommitted Lance fragments and counts).
    pub output: serde_json::Value,
}

/// The job failed for good (bad input) or was dead-lettered by the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    pub worker: String,
    pub error: String,
    pub at_unix: u64,
}

/// A stage's output was committed (for ingest: one Lance version holding every shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageCommit {
    pub stage: String,
    /// sha256 over the sorted ids of the stage's jobs.
    pub jobs_hash: String,
    pub jobs: usize,
    pub dataset: String,
    pub version: u64,
    pub rows: u64,
    pub at_unix: u64,
    /// The stage's job ids, sorted. A later plan holding all of them grows the stage: only the new jobs
    /// run, and their fragments are appended (row addresses and the index of what is there stay valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_ids: Vec<String>,
    /// Read from commits written before `shard_ends`: where their last shard ended. Not written.
    #[serde(default, skip_serializing)]
    pub input_bytes: Option<u64>,
    /// The corpus stage: where each of its shards ends in the file, ascending. The file may grow past
    /// the last; the bytes before must not change. A corpus that grew has a shard ending where each
    /// earlier run's file ended, and planning again must cut it there again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_ends: Vec<u64>,
}

impl StageCommit {
    /// The corpus stage's shard ends; an older commit knows only the last.
    pub fn corpus_shard_ends(&self) -> Vec<u64> {
        if self.shard_ends.is_empty() { self.input_bytes.into_iter().collect() } else { self.shard_ends.clone() }
    }
}

/// The datasets and tables at a store's root.
pub const CORPUS_DATASET: &str = "corpus.lance";
pub const PHRASES_DATASET: &str = "phrases.lance";
/// The metrics of every retrieval of the last run.
pub const METRICS_FILE: &str = "metrics.parquet";

/// What a stage leaves behind; it names the stage and decides how its outputs are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// `corpus.lance`, from ingest jobs' fragments.
    Corpus,
    /// `phrases.lance`, from encode jobs' fragments.
    Phrases,
    /// The phrase index: a version of `phrases.lance` written by the index job itself.
    Index,
    /// Every question shard's top hits per query encoder, per range of phrase fragments (JSON).
    Candidates,
    /// Parquet files of ranked evidence.
    Evidence,
    /// Parquet files of metrics.
    Metrics,
    /// The reader's checkpoint.
    Reader,
    /// The phrase encoder's and its query encoders' checkpoints.
    PhraseModel,
    /// The query encoders' checkpoints after one epoch of every QSFT run that has it.
    Qsft { epoch: u32 },
}

impl StageKind {
    /// The stage's name in logs, `status` and its commit record (`stages/<name>.json`).
    pub fn name(self) -> String {
        match self {
            StageKind::Corpus => "ingest".into(),
            StageKind::Phrases => "encode".into(),
            StageKind::Index => "index".into(),
            StageKind::Candidates => "scan".into(),
            StageKind::Evidence => "retrieve".into(),
            StageKind::Metrics => "score".into(),
            StageKind::Reader => "train-reader".into(),
            StageKind::PhraseModel => "train-phrase".into(),
            StageKind::Qsft { epoch } => format!("qsft-epoch-{epoch}"),
        }
    }
}

pub fn stage_path(stage: &str) -> String {
    format!("stages/{stage}.json")
}
