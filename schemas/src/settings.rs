//! The settings of the data-plane stages (encoding, the index, search) that both the experiment config
//! and the job messages carry. A leaf of the crate: it imports nothing else from it.

use serde::{Deserialize, Serialize};

/// The model folder name that means "the pretrained base model".
pub const DEFAULT_MODEL: &str = "default";

/// Names a DensePhrases checkpoint folder (three BERTs and the filter in one `pytorch_model.bin`):
/// `densephrases:PATH`, as a phrase encoder (`encode.model`) or a query encoder (`[encoders]`).
pub const DENSEPHRASES_PREFIX: &str = "densephrases:";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSettings {
    /// Phrase encoder: a HuggingFace BERT folder, a phrasesweep checkpoint, or `default`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Model window in tokens, special tokens included.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Tokens shared by consecutive windows of a long paragraph.
    #[serde(default = "default_overlap")]
    pub overlap: usize,
    /// Title pieces in `[CLS] title [SEP] paragraph [SEP]`.
    #[serde(default = "default_title_tokens")]
    pub title_tokens: usize,
    /// Keep a token when its larger filter logit reaches this; absent keeps every token (the filter
    /// head of an untrained phrase encoder is random).
    #[serde(default)]
    pub filter_threshold: Option<f32>,
    /// Windows per forward pass. Windows go in order of length, so a batch pads little; on a CPU, 8 ran
    /// fastest in `make bench`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most paragraphs one `encode` job takes; a larger corpus fragment is split into several jobs. Only
    /// the coordinator reads it (jobs carry their row range), so it is not part of a job's identity.
    #[serde(default = "default_job_paragraphs", skip_serializing)]
    pub job_paragraphs: usize,
    /// The float type the encoder computes in. `f16` is for CUDA workers (`Cuda<f16>`: half the memory
    /// and the GPU's half-precision matmuls); the vectors are stored as f32 either way. Left out of the
    /// job's JSON at its default, so configs that do not set it keep their job ids.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The float type the phrase vectors are stored in: `f16` halves the bytes stored and scanned (the
    /// scan computes in f32 either way). Left out of the job's JSON at its default.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub dtype: Precision,
}

/// The float type a model computes in, or vectors are stored in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            model: default_model(),
            max_len: default_max_len(),
            overlap: default_overlap(),
            title_tokens: default_title_tokens(),
            filter_threshold: None,
            batch_size: default_batch_size(),
            job_paragraphs: default_job_paragraphs(),
            precision: Precision::F32,
            dtype: Precision::F32,
        }
    }
}

fn default_model() -> String {
    DEFAULT_MODEL.into()
}
fn default_job_paragraphs() -> usize {
    1000
}
fn default_max_len() -> usize {
    256
}
fn default_overlap() -> usize {
    64
}
fn default_title_tokens() -> usize {
    10
}
fn default_batch_size() -> usize {
    8
}

/// The vector index over `phrases.vector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// IVF partitions; 0 means about the square root of the number of vectors.
    #[serde(default)]
    pub partitions: usize,
    /// How vectors are kept inside the partitions.
    #[serde(default)]
    pub quantizer: Quantizer,
    /// PQ sub-vectors (`quantizer = "pq"`); 0 means dimension / 8.
    #[serde(default)]
    pub sub_vectors: usize,
    /// Below this many vectors no IVF index is built and search is exact (flat).
    #[serde(default = "default_flat_below")]
    pub flat_below: usize,
    /// k-means iterations when training the IVF centroids and PQ codebooks.
    #[serde(default = "default_max_iters")]
    pub max_iters: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            partitions: 0,
            quantizer: Quantizer::default(),
            sub_vectors: 0,
            flat_below: default_flat_below(),
            max_iters: default_max_iters(),
        }
    }
}

/// The codes an IVF partition holds. Scalar quantization (one byte per dimension) is the default: on
/// the development benchmark's 2.2 M vectors it ranks candidates almost as well as the exact vectors,
/// where PQ with d/8 sub-vectors (8× smaller) loses a tenth of the recall that refine cannot win back
/// (docs/benchmarks.md, "IVF recall at this size").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantizer {
    /// Product quantization: `sub_vectors` bytes per vector.
    Pq,
    /// Scalar quantization: one byte per dimension.
    #[default]
    Sq,
    /// The vectors themselves.
    Flat,
}

fn default_flat_below() -> usize {
    20_000
}
fn default_max_iters() -> usize {
    50
}

/// How the index is searched (DensePhrases' start/end search).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// How a job's questions meet the phrase vectors: one exact scan for all of them, or a search per
    /// question through the IVF index.
    #[serde(default)]
    pub method: SearchMethod,
    /// IVF partitions probed per query (`method = "ivf"` and `phrasesweep search`).
    #[serde(default = "default_nprobes")]
    pub nprobes: usize,
    /// Candidates re-ranked with exact vectors, as a multiple of the hits asked for (0: no refine).
    #[serde(default = "default_refine")]
    pub refine: u32,
    /// Most phrase vectors one scan job reads: a larger index is scanned by several jobs per question
    /// shard and encoder (one per range of fragments, run in parallel by the workers), whose top hits
    /// the retrieve jobs merge. Only the coordinator reads it (scan jobs carry their fragments), so it is
    /// not part of a job's identity.
    #[serde(default = "default_scan_rows_per_job", skip_serializing)]
    pub scan_rows_per_job: u64,
    /// Questions are cut to this many tokens, `[CLS]` and `[SEP]` included (DensePhrases pads to 64;
    /// padding is masked, so only the cut changes the vectors).
    #[serde(default = "default_query_len")]
    pub query_len: usize,
    /// How a question's text is prepared for the query encoders (written always: it changes the
    /// vectors, so the job).
    #[serde(default)]
    pub question: QuestionText,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            method: SearchMethod::default(),
            nprobes: default_nprobes(),
            refine: default_refine(),
            scan_rows_per_job: default_scan_rows_per_job(),
            query_len: default_query_len(),
            question: QuestionText::default(),
        }
    }
}

/// How a question becomes the text its query encoder reads, as the study prepares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionText {
    /// Truecase a question written all in lowercase (NQ's are), from the corpus's own casing.
    #[serde(default)]
    pub truecase: Truecase,
    /// Drop a trailing `?`.
    #[serde(default = "yes")]
    pub strip_question_mark: bool,
}

impl Default for QuestionText {
    fn default() -> Self {
        Self { truecase: Truecase::default(), strip_question_mark: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truecase {
    /// When the query encoder's tokenizer keeps case (a no-op for an uncased one, such as MiniLM's).
    #[default]
    Auto,
    On,
    Off,
}

/// How a batch of questions is searched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMethod {
    /// Every phrase vector read once per job and scored against all its questions with one matrix
    /// product per batch: exact, and on a CPU faster than per-question IVF search for any job of more
    /// than a few questions (docs/benchmarks.md, "Batch scan").
    #[default]
    Scan,
    /// A search per question through the IVF index (`nprobes`, `refine`): for indexes too large to read
    /// once per job.
    Ivf,
}

/// With the default SQ index on the development benchmark's 2.2 M vectors (1,490 partitions), recall@100
/// of start hits is 0.95–0.96 at 256 probes and 0.98 at 384 (0.25 s per search), where PQ with 64
/// probes and refine 10 gave 0.75 in 0.22 s. A corpus many times larger has more partitions and needs
/// more probes: measure with `index_recall` (docs/benchmarks.md).
fn default_nprobes() -> usize {
    384
}
fn default_refine() -> u32 {
    3
}
/// About 1.5 GB of f32 vectors at d = 384: on a 2-core worker a scan job of 100 questions then takes
/// about 5 s (docs/benchmarks.md, "Batch scan"), and the dev index's 2.2 M vectors split in three jobs.
fn default_scan_rows_per_job() -> u64 {
    1_000_000
}
fn default_query_len() -> usize {
    64
}


#[cfg(test)]
mod tests {
    use super::*;

    /// `precision` is left out of the JSON at its default (job ids hash it) and read when set.
    #[test]
    fn precision_defaults_to_f32_and_keeps_job_json() {
        let default = serde_json::to_value(EncodeSettings::default()).unwrap();
        assert!(default.get("precision").is_none(), "{default}");
        let half: EncodeSettings = serde_json::from_value(serde_json::json!({ "precision": "f16" })).unwrap();
        assert_eq!(half.precision, Precision::F16);
        assert_eq!(serde_json::to_value(&half).unwrap()["precision"], "f16");
        assert!(serde_json::from_value::<EncodeSettings>(serde_json::json!({ "precision": "f8" })).is_err());
    }
}

/// `[reader]`: the read stage, which answers every question of every retrieval (or of those `retrievals`
/// names) from its evidence cut at each word budget (as mAR cuts it), the prompt a generative reader would
/// be given, and scores the answers: what retrieving fewer words costs in answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadSettings {
    /// `trained` (the reader `[train.reader]` trained), a phrasesweep reader checkpoint, or a HuggingFace
    /// BERT folder (`BertForQuestionAnswering` brings its `qa_outputs` head; a plain BERT gets a new one).
    #[serde(default = "default_reader")]
    pub model: String,
    /// Word budgets, ascending.
    #[serde(default = "default_budgets")]
    pub budgets: Vec<usize>,
    /// The retrievals read, by name; empty reads every one. Reading costs seconds a question (a window
    /// of the reader a few hundred words), so a benchmark with many retrievals reads the few it compares.
    /// Not part of a read job: each job reads one retrieval, named in the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrievals: Vec<String>,
    /// Pieces of one reader window: `[CLS] question [SEP] evidence [SEP]`. Longer evidence is read in
    /// overlapping windows, and the best span of any window is the answer.
    #[serde(default = "default_read_len")]
    pub max_len: usize,
    #[serde(default = "default_read_question")]
    pub question_pieces: usize,
    /// The longest answer, in pieces.
    #[serde(default = "default_read_answer")]
    pub max_answer: usize,
    /// An OpenAI-compatible chat endpoint (`https://…/v1`) to read with instead: `model` then names the
    /// endpoint's model, and `prompt` is what it is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The chat prompt; `{question}` and `{evidence}` are filled in.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// The environment variable holding the endpoint's API key. The key is read by the workers that
    /// call the endpoint, never written into a job message, a log or the store.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// At most this many requests a minute, per worker.
    #[serde(default = "default_per_minute")]
    pub requests_per_minute: u32,
    /// The longest answer the endpoint may write, in its tokens.
    #[serde(default = "default_answer_tokens")]
    pub max_tokens: u32,
}

/// The reader that `train-reader` trained.
pub const TRAINED_READER: &str = "trained";

fn default_reader() -> String {
    TRAINED_READER.into()
}
pub const DEFAULT_PROMPT: &str = "Answer the question from the evidence with a short phrase taken from it, and nothing else.\n\nEvidence:\n{evidence}\n\nQuestion: {question}\nAnswer:";
fn default_prompt() -> String {
    DEFAULT_PROMPT.into()
}
fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_per_minute() -> u32 {
    60
}
fn default_answer_tokens() -> u32 {
    32
}
fn default_budgets() -> Vec<usize> {
    vec![100, 200, 500, 1000, 3000]
}
fn default_read_len() -> usize {
    384
}
fn default_read_question() -> usize {
    64
}
fn default_read_answer() -> usize {
    30
}

impl ReadSettings {
    /// Budgets ascending and not empty, windows with room for evidence.
    pub fn check(&self) -> Result<(), String> {
        if self.budgets.is_empty() || self.budgets.windows(2).any(|w| w[0] >= w[1]) || self.budgets[0] == 0 {
            return Err("field `reader.budgets`: must list word budgets, ascending, from 1".into());
        }
        if self.endpoint.is_some() {
            if self.model == TRAINED_READER {
                return Err("field `reader.model`: with `reader.endpoint`, name the endpoint's model".into());
            }
            if !self.prompt.contains("{question}") || !self.prompt.contains("{evidence}") {
                return Err("field `reader.prompt`: must hold `{question}` and `{evidence}`".into());
            }
        }
        if self.max_len < self.question_pieces + 3 + 16 || self.max_answer == 0 {
            return Err("field `reader.max_len`: must leave room for 16 pieces of evidence after the question".into());
        }
        Ok(())
    }
}
