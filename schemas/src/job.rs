//! Job messages. A job's id is a content hash of what it does, so the same work always has the same id:
//! that is what makes a finished sweep rerun for free and a redelivered message harmless.

use crate::settings::{EncodeSettings, IndexSettings, QuestionText, ReadSettings, SearchSettings};
use crate::retrieval::{RetrievalConfig, Unit};
use crate::train::{QsftRun, SupervisedSettings};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Bumped whenever a message stops being readable by an older worker.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JobId {
    /// The first 12 hex digits: enough to tell jobs apart in logs.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

/// Where a job reads and writes artifacts. Never holds credentials: each worker takes those from its own
/// environment, so secrets never travel through the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLocation {
    /// `file:///abs/path`, a plain absolute path, or `s3://bucket/prefix`.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
}

/// One shard of a JSON Lines file (corpus or questions): a byte range holding whole lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineShard {
    /// Where the file lives (a path or an object-store URI), as the config names it.
    pub path: String,
    pub shard: u32,
    /// 1-based line number of the first line, for error messages.
    pub first_line: u64,
    pub byte_start: u64,
    pub byte_end: u64,
    /// Non-blank lines (records) in the shard.
    pub records: u64,
    /// sha256 of the shard's bytes: the id changes exactly when the input does.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Dataset (relative to the store root) that receives the paragraphs.
    pub dataset: String,
}

/// One committed version of a Lance dataset on the job's store: what a job reads is pinned, so its id
/// changes when the data does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetVersion {
    pub dataset: String,
    pub version: u64,
}

/// A model folder (HuggingFace BERT or phrasesweep checkpoint) and the sha256 of its weights, which the
/// worker checks before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeInputs {
    pub corpus: DatasetVersion,
    /// The corpus fragment (one ingest shard) to encode.
    pub fragment: u64,
    /// The rows `[start, end)` of the fragment to encode, when it is split over several jobs; absent for the
    /// whole fragment. A shard of long articles can hold thousands of paragraphs: bounded jobs keep the
    /// work a killed worker loses, and the longest job that workers wait on at the end, small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<[u64; 2]>,
}

impl EncodeInputs {
    /// "fragment 3" or "fragment 3 rows 1000..2000", for labels and logs.
    pub fn part(&self) -> String {
        match self.rows {
            Some([a, b]) => format!("fragment {} rows {a}..{b}", self.fragment),
            None => format!("fragment {}", self.fragment),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// Dataset that receives the phrase vectors.
    pub dataset: String,
    pub model: ModelRef,
    pub settings: EncodeSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25IndexConfig {
    /// What a BM25 hit is: a paragraph or a sentence.
    pub unit: Unit,
    /// Folder (relative to the store root) that receives the index files, `manifest.json` last.
    pub output: String,
}

/// One shard of questions, one query encoder, one range of the phrase index's fragments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanInputs {
    pub questions: LineShard,
    /// The corpus the phrases came from (its casing truecases questions).
    pub corpus: DatasetVersion,
    pub phrases: DatasetVersion,
    /// Ids of the fragments to scan, in order.
    pub fragments: Vec<u64>,
}

impl ScanInputs {
    /// "fragments 3..5", for labels and logs.
    pub fn part(&self) -> String {
        match (self.fragments.first(), self.fragments.last()) {
            (Some(a), Some(b)) if a != b => format!("fragments {a}..={b}"),
            (Some(a), _) => format!("fragment {a}"),
            _ => "no fragments".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// The query encoder's name in the config, and its model.
    pub encoder: String,
    pub model: ModelRef,
    /// Start and end hits kept per question: the most any retrieval of this encoder reads.
    pub hits: usize,
    pub query_len: usize,
    pub question: QuestionText,
    /// JSON file (relative to the store root) that receives every question's top hits in the range.
    pub output: String,
}

/// The kind of worker a job wants; each class has its own queue on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobClass {
    Gpu,
    Cpu,
}

impl JobClass {
    pub const ALL: [JobClass; 2] = [JobClass::Gpu, JobClass::Cpu];

    pub fn name(self) -> &'static str {
        match self {
            JobClass::Gpu => "gpu",
            JobClass::Cpu => "cpu",
        }
    }
}

impl std::str::FromStr for JobClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gpu" => Ok(JobClass::Gpu),
            "cpu" => Ok(JobClass::Cpu),
            other => Err(format!("unknown job class `{other}` (known: gpu, cpu)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveInputs {
    pub questions: LineShard,
    pub phrases: DatasetVersion,
    pub corpus: DatasetVersion,
    /// Per query encoder, the scan stage's outputs for this question shard, one per fragment range:
    /// the job merges them rather than searching. Empty when the job searches itself
    /// (`[search] method = "ivf"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scans: BTreeMap<String, Vec<String>>,
    /// A BM25 retrieval's index: the folder the scan stage's `bm25-index` job wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveConfig {
    pub retrieval: RetrievalConfig,
    /// The query encoders the retrieval names.
    pub encoders: BTreeMap<String, ModelRef>,
    pub search: SearchSettings,
    /// Parquet file (relative to the store root) that receives the ranked evidence.
    pub output: String,
    /// Also measure recall@100 of the index's start hits against exact search (one retrieval per run
    /// does, since exact search is slow on a large index).
    #[serde(default)]
    pub measure_recall: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreInputs {
    /// The questions file (answers come from it) and its sha256.
    pub questions: String,
    pub questions_sha256: String,
    /// The retrieve outputs, one per question shard.
    pub results: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    pub retrieval: RetrievalConfig,
    /// Parquet files (relative to the store root): one metrics row, and one row per question.
    pub metrics: String,
    pub per_question: String,
}

/// The evidence of one retrieval for one question shard, read at each budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadInputs {
    /// The shard's questions (their gold answers score the reader's).
    pub questions: LineShard,
    /// The retrieve output for the shard (relative to the store root).
    pub results: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadConfig {
    pub retrieval: String,
    /// The extractive reader; none when `settings.endpoint` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ModelRef>,
    pub settings: ReadSettings,
    /// Parquet file (relative to the store root): one row per question and budget.
    pub output: String,
}

/// A whole input file pinned by its sha256 (training data is read whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedInputs {
    pub squad_train: InputFile,
    pub squad_dev: InputFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nq_train: Option<InputFile>,
    /// The model training starts from.
    pub model: ModelRef,
    /// `train-phrase` with distillation: the trained reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ModelRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedConfig {
    pub settings: SupervisedSettings,
    /// Folder (relative to the store root) that receives the checkpoints.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsftInputs {
    pub train: InputFile,
    pub dev: InputFile,
    pub phrases: DatasetVersion,
    pub corpus: DatasetVersion,
    /// The query encoders this epoch starts from; also the frozen copy that retrieves candidates.
    pub start: ModelRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ModelRef>,
    /// From epoch 2: the folder where epoch e − 1 left its optimiser (AdamW's moments and step counts,
    /// with the weights they belong to), so one AdamW runs over all epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimiser: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsftConfig {
    pub run: QsftRun,
    /// 1-based.
    pub epoch: u32,
    pub search: SearchSettings,
    /// Folder (relative to the store root) that receives the epoch's checkpoint.
    pub output: String,
}

/// What a job does: its kind, inputs and config. Serialised flat into the envelope as
/// `"kind": "...", "inputs": {...}, "config": {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum JobSpec {
    /// A corpus shard → uncommitted fragments of the `corpus` dataset.
    Ingest { inputs: LineShard, config: IngestConfig },
    /// A corpus fragment → uncommitted fragments of the `phrases` dataset.
    Encode { inputs: EncodeInputs, config: EncodeConfig },
    /// The vector index of a committed `phrases` version (built, or brought up to date).
    Index { inputs: DatasetVersion, config: IndexSettings },
    /// A shard of questions × one query encoder × a range of phrase fragments → the top hits, as JSON.
    Scan { inputs: ScanInputs, config: ScanConfig },
    /// The paragraphs or sentences of a committed corpus version → a BM25 index (tantivy) on the store,
    /// built once and read by every BM25 retrieve job of that corpus version.
    Bm25Index { inputs: DatasetVersion, config: Bm25IndexConfig },
    /// A shard of questions × one retrieval → ranked evidence as Parquet.
    Retrieve { inputs: RetrieveInputs, config: RetrieveConfig },
    /// Every shard of one retrieval → metrics as Parquet.
    Score { inputs: ScoreInputs, config: ScoreConfig },
    /// A shard of one retrieval's evidence, cut at each word budget → the reader's answers, scored.
    Read { inputs: ReadInputs, config: ReadConfig },
    /// The cross-encoder reader on reading comprehension → a checkpoint.
    TrainReader { inputs: SupervisedInputs, config: SupervisedConfig },
    /// The phrase encoder and its query encoders on reading comprehension → two checkpoints.
    TrainPhrase { inputs: SupervisedInputs, config: SupervisedConfig },
    /// One epoch of one QSFT run → the query encoders' checkpoint and their dev scores.
    QsftEpoch { inputs: QsftInputs, config: QsftConfig },
}

impl JobSpec {
    /// Which workers should take the job: model work (encoding, training, QSFT, dense search) is `gpu`;
    /// reading and writing data (ingest, the index, merging scans, BM25, scoring) is `cpu`.
    pub fn class(&self) -> JobClass {
        match self {
            JobSpec::Read { config, .. } if config.settings.endpoint.is_some() => JobClass::Cpu,
            JobSpec::Encode { .. }
            | JobSpec::Scan { .. }
            | JobSpec::Read { .. }
            | JobSpec::TrainReader { .. }
            | JobSpec::TrainPhrase { .. }
            | JobSpec::QsftEpoch { .. } => {
                JobClass::Gpu
            }
            JobSpec::Retrieve { inputs, config } if inputs.scans.is_empty() && !config.encoders.is_empty() => JobClass::Gpu,
            JobSpec::Ingest { .. } | JobSpec::Index { .. } | JobSpec::Bm25Index { .. } | JobSpec::Retrieve { .. } | JobSpec::Score { .. } => {
                JobClass::Cpu
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Ingest { .. } => "ingest",
            JobSpec::Encode { .. } => "encode",
            JobSpec::Index { .. } => "index",
            JobSpec::Scan { .. } => "scan",
            JobSpec::Bm25Index { .. } => "bm25-index",
            JobSpec::Retrieve { .. } => "retrieve",
            JobSpec::Score { .. } => "score",
            JobSpec::Read { .. } => "read",
            JobSpec::TrainReader { .. } => "train-reader",
            JobSpec::TrainPhrase { .. } => "train-phrase",
            JobSpec::QsftEpoch { .. } => "qsft-epoch",
        }
    }

    /// A short human label for progress and logs.
    pub fn label(&self) -> String {
        match self {
            JobSpec::Ingest { inputs, .. } => format!("ingest shard {} ({} docs)", inputs.shard, inputs.records),
            JobSpec::Encode { inputs, .. } => format!("encode corpus {}", inputs.part()),
            JobSpec::Index { inputs, .. } => format!("index {} version {}", inputs.dataset, inputs.version),
            JobSpec::Scan { inputs, config } => {
                format!("scan {} for question shard {}, {}", config.encoder, inputs.questions.shard, inputs.part())
            }
            JobSpec::Bm25Index { inputs, config } => format!("bm25 index of the {}s of {} version {}", config.unit, inputs.dataset, inputs.version),
            JobSpec::Retrieve { inputs, config } => {
                format!("retrieve {} for question shard {}", config.retrieval.name, inputs.questions.shard)
            }
            JobSpec::Score { config, .. } => format!("score {}", config.retrieval.name),
            JobSpec::Read { inputs, config } => format!("read {} for question shard {}", config.retrieval, inputs.questions.shard),
            JobSpec::TrainReader { .. } => "train the reader".into(),
            JobSpec::TrainPhrase { .. } => "train the phrase encoder".into(),
            JobSpec::QsftEpoch { config, .. } => format!("qsft {} epoch {}", config.run.name, config.epoch),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub schema_version: u32,
    pub id: JobId,
    pub store: StoreLocation,
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Queue that receives this job's outcome events; not part of the id.
    pub reply_to: String,
}

impl JobEnvelope {
    pub fn new(store: StoreLocation, spec: JobSpec, reply_to: impl Into<String>) -> Self {
        let id = job_id(&store, &spec);
        Self { schema_version: SCHEMA_VERSION, id, store, spec, reply_to: reply_to.into() }
    }

    /// Checks that a received message is one this build understands and that its id matches its content.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "job {} has schema version {}, this worker reads version {SCHEMA_VERSION}",
                self.id, self.schema_version
            ));
        }
        let expected = job_id(&self.store, &self.spec);
        if expected != self.id {
            return Err(format!("job {} does not match its content (expected id {expected})", self.id));
        }
        Ok(())
    }
}

/// sha256 over the kind, the store root, and the canonical JSON of the inputs and config (less a retrieve
/// job's scan outputs: see [`identity`]).
pub fn job_id(store: &StoreLocation, spec: &JobSpec) -> JobId {
    let mut h = Sha256::new();
    h.update(spec.kind().as_bytes());
    h.update([0]);
    h.update(store.uri.as_bytes());
    h.update([0]);
    // Struct fields serialise in declaration order, so this JSON is canonical for a given schema version.
    h.update(serde_json::to_vec(&identity(spec)).expect("job specs serialise"));
    JobId(hex::encode(h.finalize()))
}

/// What a job's id stands for. A retrieve job's scan outputs are named by how the scan stage was cut
/// (`[search] scan_rows_per_job`, the most hits any retrieval of the encoder reads), not by what they
/// hold: the scan is exact, so its merged top hits, and the job's results, are the same however it was
/// cut. Leaving them out keeps a finished retrieval finished when only the cut changes.
fn identity(spec: &JobSpec) -> std::borrow::Cow<'_, JobSpec> {
    match spec {
        JobSpec::Retrieve { inputs, config } if !inputs.scans.is_empty() => {
            let inputs = RetrieveInputs { scans: BTreeMap::new(), ..inputs.clone() };
            std::borrow::Cow::Owned(JobSpec::Retrieve { inputs, config: config.clone() })
        }
        _ => std::borrow::Cow::Borrowed(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shard: u32) -> JobSpec {
        JobSpec::Ingest {
            inputs: LineShard {
                path: "/data/docs.jsonl".into(),
                shard,
                first_line: 1,
                byte_start: 0,
                byte_end: 10,
                records: 2,
                sha256: "ab".into(),
            },
            config: IngestConfig { dataset: "corpus.lance".into() },
        }
    }

    fn store() -> StoreLocation {
        StoreLocation { uri: "file:///tmp/x".into(), endpoint: None, region: None, allow_http: None }
    }

    #[test]
    fn same_work_same_id_other_work_other_id() {
        let a = JobEnvelope::new(store(), spec(0), "q1");
        let b = JobEnvelope::new(store(), spec(0), "q2");
        let c = JobEnvelope::new(store(), spec(1), "q1");
        assert_eq!(a.id, b.id, "reply queue must not change the id");
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.0.len(), 64);
    }

    /// The scan stage cut another way (other outputs) is the same retrieval; another retrieval is not.
    #[test]
    fn a_retrieve_job_is_the_same_however_its_scan_was_cut() {
        let retrieve = |scans: &[&str], k: usize| {
            let version = |dataset: &str| DatasetVersion { dataset: dataset.into(), version: 3 };
            JobSpec::Retrieve {
                inputs: RetrieveInputs {
                    questions: LineShard { path: "q.jsonl".into(), shard: 0, first_line: 1, byte_start: 0, byte_end: 9, records: 1, sha256: "ab".into() },
                    phrases: version("phrases.lance"),
                    corpus: version("corpus.lance"),
                    scans: BTreeMap::from([("base".to_string(), scans.iter().map(|s| s.to_string()).collect())]),
                    bm25: None,
                },
                config: RetrieveConfig {
                    retrieval: serde_json::from_str(&format!(r#"{{"name":"s","mode":"single","unit":"sentence","encoder":"base","k":{k}}}"#)).unwrap(),
                    encoders: BTreeMap::new(),
                    search: SearchSettings::default(),
                    output: "results/s/shard-00000".into(),
                    measure_recall: false,
                },
            }
        };
        let id = |spec| JobEnvelope::new(store(), spec, "q").id;
        assert_eq!(id(retrieve(&["scans/a"], 10)), id(retrieve(&["scans/b", "scans/c"], 10)));
        assert_ne!(id(retrieve(&["scans/a"], 10)), id(retrieve(&["scans/a"], 20)));
        // The message still carries the outputs the worker merges.
        let json = serde_json::to_string(&JobEnvelope::new(store(), retrieve(&["scans/b"], 10), "q")).unwrap();
        assert!(json.contains("scans/b"), "{json}");
    }

    #[test]
    fn envelope_round_trips_and_validates() {
        let a = JobEnvelope::new(store(), spec(3), "q");
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"kind\":\"ingest\""), "{json}");
        let back: JobEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        back.validate().unwrap();

        let mut tampered = back.clone();
        let JobSpec::Ingest { inputs, .. } = &mut tampered.spec else { unreachable!() };
        inputs.records = 99;
        assert!(tampered.validate().unwrap_err().contains("does not match"));
        let mut future = a;
        future.schema_version = SCHEMA_VERSION + 1;
        assert!(future.validate().unwrap_err().contains("schema version"));
    }
}
