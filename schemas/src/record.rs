//! Records that workers leave on the store under `jobs/<id>/`. They are the source of truth for what is
//! done: events on the broker only make the coordinator look sooner.

use serde::{Deserialize, Serialize};

/// The folder of every job's records.
pub const JOBS_DIR: &str = "jobs/";

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
/// The folder of a job's attempt history: one record per delivery a worker settled, and one per rerun
/// that cleared a failure.
pub fn attempts_dir(id: &str) -> String {
    format!("jobs/{id}/attempts/")
}
/// One attempt's record; the nanosecond timestamp first, so a listing is in time order, and `nonce`
/// last, so two records of one instant both stay.
pub fn attempt_path(id: &str, at_ns: u128, by: &str, nonce: &str) -> String {
    let by: String = by.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("{}{at_ns:020}-{by}-{nonce}.json", attempts_dir(id))
}

/// A worker took the job (`attempt` counts deliveries). While the job runs, the worker rewrites it every
/// few seconds with a new `beat_unix`: a running job whose beat is old has lost its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub worker: String,
    pub attempt: u32,
    pub at_unix: u64,
    /// The worker's last heartbeat (absent in records written before heartbeats).
    #[serde(default)]
    pub beat_unix: Option<u64>,
}

impl Started {
    /// When the worker was last known alive.
    pub fn last_seen(&self) -> u64 {
        self.beat_unix.unwrap_or(self.at_unix).max(self.at_unix)
    }
}

/// How one delivery of a job ended, as its attempt history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum AttemptOutcome {
    /// The output is recorded.
    Done,
    /// Another delivery had recorded the job already: this one did nothing.
    AlreadyDone,
    /// The input is wrong: dead-lettered at once.
    Failed { error: String },
    /// The handler panicked: the delivery counts, and the broker redelivers it up to its limit.
    Panicked { error: String },
    /// A transient error outlasted the worker's retries: the delivery went back to the queue.
    GaveBack { error: String, retries: u32 },
    /// A rerun found the job failed or dead-lettered, cleared that record and published it again.
    Rerun { previous: String },
}

/// One line of a job's attempt history (`jobs/<id>/attempts/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker, or `coordinator` for a rerun.
    pub by: String,
    /// The broker's delivery count (0 for a rerun).
    pub delivery: u32,
    pub at_unix: u64,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            AttemptOutcome::Rerun { previous } => write!(f, "rerun by {}: cleared `{previous}`", self.by),
            o => {
                write!(f, "delivery {} on {}: ", self.delivery, self.by)?;
                match o {
                    AttemptOutcome::Done => write!(f, "done"),
                    AttemptOutcome::AlreadyDone => write!(f, "already done (no-op)"),
                    AttemptOutcome::Failed { error } => write!(f, "bad input: {error}"),
                    AttemptOutcome::Panicked { error } => write!(f, "panicked: {error}"),
                    AttemptOutcome::GaveBack { error, retries } => write!(f, "gave the job back after {retries} retries: {error}"),
                    AttemptOutcome::Rerun { .. } => unreachable!(),
                }
            }
        }
    }
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
/// The run ledger: one Parquet file per run, never overwritten.
pub const RUNS_DIR: &str = "runs/";
/// The metrics of every run: one Parquet file per run, beside its row in [`RUNS_DIR`].
pub const RUN_METRICS_DIR: &str = "metrics/";
/// The reader's answers of every run (with `[reader]`): one Parquet file per run.
pub const RUN_READING_DIR: &str = "reading/";

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
    /// Parquet files of the reader's answers from the evidence at each budget.
    Answers,
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
            StageKind::Answers => "read".into(),
            StageKind::Reader => "train-reader".into(),
            StageKind::PhraseModel => "train-phrase".into(),
            StageKind::Qsft { epoch } => format!("qsft-epoch-{epoch}"),
        }
    }
}

/// The coordinator leases of a store, `leases/<n>.json`: the highest `n` is the lease in force.
pub const LEASES_DIR: &str = "leases/";
pub fn lease_path(n: u64) -> String {
    format!("{LEASES_DIR}{n:010}.json")
}

/// A coordinator's claim on a store: one coordinator plans and commits at a time. Only its holder
/// rewrites it (to renew or release it); another coordinator takes over an expired lease by creating
/// the next one with a conditional put, which exactly one of several can win.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub run: String,
    pub since_unix: u64,
    pub expires_unix: u64,
    /// Set when the holder finished: the next coordinator need not wait for the expiry.
    #[serde(default)]
    pub released: bool,
}

/// The stage's latest commit, whichever jobs it was for.
pub fn stage_path(stage: &str) -> String {
    format!("stages/{stage}.json")
}

/// The stage's commit for exactly the jobs of `jobs_hash`: the points of a sweep, or several configs,
/// share a store and each finds its own stage's commit here, whoever committed last.
pub fn stage_commit_path(stage: &str, jobs_hash: &str) -> String {
    format!("stages/{stage}/{jobs_hash}.json")
}
