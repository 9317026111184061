//! Arrow schemas of the tables phrasesweep writes. Character offsets are Unicode scalar values (Python's
//! `str` indexing), half-open `[start, end)`.

use crate::settings::Precision;
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

pub mod corpus {
    pub const DOC_ID: &str = "doc_id";
    pub const TITLE: &str = "title";
    pub const PARAGRAPH: &str = "paragraph";
    pub const TEXT: &str = "text";
    pub const SENTENCE_STARTS: &str = "sentence_starts";
    pub const SENTENCE_ENDS: &str = "sentence_ends";
}

/// One row per paragraph of the corpus.
pub fn corpus_schema() -> Arc<Schema> {
    let offsets = || DataType::List(Arc::new(Field::new("item", DataType::UInt32, false)));
    Arc::new(Schema::new(vec![
        Field::new(corpus::DOC_ID, DataType::Utf8, false),
        Field::new(corpus::TITLE, DataType::Utf8, false),
        Field::new(corpus::PARAGRAPH, DataType::UInt32, false),
        Field::new(corpus::TEXT, DataType::Utf8, false),
        Field::new(corpus::SENTENCE_STARTS, offsets(), false),
        Field::new(corpus::SENTENCE_ENDS, offsets(), false),
    ]))
}

pub mod phrases {
    pub const DOC_ID: &str = "doc_id";
    pub const PARAGRAPH: &str = "paragraph";
    /// Row address of the paragraph in the corpus version the phrases were encoded from.
    pub const CORPUS_ROW: &str = "corpus_row";
    pub const SENTENCE: &str = "sentence";
    pub const TOKEN: &str = "token";
    pub const CHAR_START: &str = "char_start";
    pub const CHAR_END: &str = "char_end";
    pub const VECTOR: &str = "vector";
}

/// One row per kept token of the corpus: its vector is both its start and its end vector, stored as
/// `dtype`.
pub fn phrases_schema(dim: usize, dtype: Precision) -> Arc<Schema> {
    let float = match dtype {
        Precision::F32 => DataType::Float32,
        Precision::F16 => DataType::Float16,
    };
    let item = Arc::new(Field::new("item", float, true));
    Arc::new(Schema::new(vec![
        Field::new(phrases::DOC_ID, DataType::Utf8, false),
        Field::new(phrases::PARAGRAPH, DataType::UInt32, false),
        Field::new(phrases::CORPUS_ROW, DataType::UInt64, false),
        Field::new(phrases::SENTENCE, DataType::UInt32, false),
        Field::new(phrases::TOKEN, DataType::UInt32, false),
        Field::new(phrases::CHAR_START, DataType::UInt32, false),
        Field::new(phrases::CHAR_END, DataType::UInt32, false),
        Field::new(phrases::VECTOR, DataType::FixedSizeList(item, dim as i32), false),
    ]))
}

pub mod results {
    pub const QUESTION_ID: &str = "question_id";
    pub const RANK: &str = "rank";
    pub const UNIT: &str = "unit";
    pub const TEXT: &str = "text";
    pub const SCORE: &str = "score";
    pub const DOC_ID: &str = "doc_id";
    pub const TITLE: &str = "title";
    pub const PARAGRAPH: &str = "paragraph";
    pub const SPAN_START: &str = "span_start";
    pub const SPAN_END: &str = "span_end";
    pub const PHRASE: &str = "phrase";
    pub const ENCODER: &str = "encoder";
}

/// Ranked evidence: one row per (question, rank). A question with no evidence has no rows.
pub fn results_schema() -> Arc<Schema> {
    use results::*;
    Arc::new(Schema::new(vec![
        Field::new(QUESTION_ID, DataType::Utf8, false),
        Field::new(RANK, DataType::UInt32, false),
        Field::new(UNIT, DataType::Utf8, false),
        Field::new(TEXT, DataType::Utf8, false),
        Field::new(SCORE, DataType::Float32, false),
        Field::new(DOC_ID, DataType::Utf8, false),
        Field::new(TITLE, DataType::Utf8, false),
        Field::new(PARAGRAPH, DataType::UInt32, false),
        Field::new(SPAN_START, DataType::UInt32, false),
        Field::new(SPAN_END, DataType::UInt32, false),
        Field::new(PHRASE, DataType::Utf8, false),
        Field::new(ENCODER, DataType::Utf8, false),
    ]))
}

/// The metrics of one retrieval over all its questions: one row, its columns those of
/// [`Metrics`](crate::outcome::Metrics).
pub fn metrics_schema() -> Arc<Schema> {
    let curve = |name: &str| Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Float64, false))), false);
    let mut fields = vec![
        Field::new("retrieval", DataType::Utf8, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("questions", DataType::UInt64, false),
    ];
    fields.extend(crate::outcome::Metrics::FLOAT_COLUMNS.iter().map(|name| Field::new(*name, DataType::Float64, false)));
    fields.extend([curve("curve_seed"), curve("curve_strict")]);
    Arc::new(Schema::new(fields))
}

/// The metrics table of the run ledger (`metrics/<run>.parquet`): [`metrics_schema`] led by the run's id,
/// and the store path of the retrieval's per-question table ([`per_question_schema`]).
pub fn run_metrics_schema() -> Arc<Schema> {
    let mut fields = vec![Field::new("run_id", DataType::Utf8, false)];
    fields.extend(metrics_schema().fields().iter().map(|f| f.as_ref().clone()));
    fields.push(Field::new("per_question", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The run ledger (`runs/<run>.parquet`): one row per run of a config on a store, failed runs included.
pub fn runs_schema() -> Arc<Schema> {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let count = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        text("run_id"),
        text("sweep"),
        text("store"),
        // `done`, or `failed: <why>`.
        text("status"),
        text("config"),
        // sha256 of the config less where it ran (store, broker, workers): one per experiment.
        text("config_sha256"),
        text("version"),
        // The git commit the coordinator was built from, `+dirty` with uncommitted changes.
        text("commit"),
        count("started_unix"),
        count("ended_unix"),
        count("jobs_executed"),
        count("jobs_skipped"),
        // JSON: the workers that ran this run's jobs, and per stage the seconds its jobs took.
        text("workers"),
        text("stage_seconds"),
        // The sweep point (`lr=1e-05 terms=…`; empty outside a sweep), and JSON: each model and each
        // input file the run read, by its sha256. After these, each axis of a sweep has a column of its
        // own, named by its path (`qsft.query.optim.lr`, `seed`).
        Field::new("point", DataType::Utf8, true),
        Field::new("models", DataType::Utf8, true),
        Field::new("data", DataType::Utf8, true),
    ]))
}

/// Per question: whether and where its answer was found.
pub fn per_question_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("question_id", DataType::Utf8, false),
        Field::new("texts", DataType::UInt32, false),
        Field::new("words", DataType::UInt64, false),
        Field::new("mar_seed", DataType::Float64, false),
        Field::new("mar_strict", DataType::Float64, false),
        Field::new("first_hit_rank", DataType::UInt32, true),
        Field::new("em_top_phrase", DataType::Boolean, false),
        Field::new("phrase_correct", DataType::Boolean, false),
        Field::new("sent_correct", DataType::Boolean, false),
    ]))
}

/// A training job's log: one row per (step, metric): `lr`, `loss`, `grad_norm`, `loss.<term>` per step,
/// and `eval.<field>` at the steps its evaluations ran (before the first step, after the last). `output`
/// (the job's model folder on the store, named by what it trained) tells one job's curve from another's.
pub fn training_log_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("output", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("step", DataType::UInt64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// The read stage in the run ledger (`reading/<run>.parquet`): per retrieval and word budget, the
/// reader's exact match and F1 (means over questions), the evidence words and reader tokens it read and
/// the tokens it wrote (means), with the reader's seconds per question.
pub fn run_reading_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("retrieval", DataType::Utf8, false),
        Field::new("budget", DataType::UInt64, false),
        Field::new("em", DataType::Float64, false),
        Field::new("f1", DataType::Float64, false),
        Field::new("words", DataType::Float64, false),
        Field::new("tokens", DataType::Float64, false),
        Field::new("tokens_out", DataType::Float64, false),
        Field::new("seconds_per_question", DataType::Float64, false),
    ]))
}

/// The read stage's answers (`answers/<retrieval>/shard-*.parquet`): one row per question and word
/// budget: the reader's answer, its exact match and F1 against the gold answers, the evidence words it
/// read, and its tokens in and out.
pub fn answers_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("question_id", DataType::Utf8, false),
        Field::new("budget", DataType::UInt64, false),
        Field::new("answer", DataType::Utf8, false),
        Field::new("em", DataType::Float64, false),
        Field::new("f1", DataType::Float64, false),
        Field::new("words", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt64, false),
        Field::new("tokens_out", DataType::UInt64, false),
    ]))
}
