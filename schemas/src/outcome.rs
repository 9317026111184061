//! What each job kind returns: the record a worker writes to `done.json` and the coordinator reads back
//! to plan and commit the next stage. One type per job kind, shared by both sides, so a field added by a
//! handler is a field the coordinator sees (no `serde_json::Value` in between).

use crate::settings::Quantizer;
use crate::job::ModelRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Lance's fragment metadata of uncommitted data files, as the worker that wrote them recorded it. Opaque
/// here (this crate does not depend on Lance); the coordinator hands it back to Lance to commit.
pub type Fragments = Vec<serde_json::Value>;

/// What an ingest job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestOutcome {
    pub docs: u64,
    pub paragraphs: u64,
    pub fragments: Fragments,
    /// Each document's id and line, for the check at commit that no id is used twice in the corpus
    /// (a shard checks its own; the commit checks across shards).
    #[serde(default)]
    pub doc_lines: Vec<(String, u64)>,
}

/// What an encode job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodeOutcome {
    pub paragraphs: u64,
    pub pieces: u64,
    pub kept: u64,
    pub dim: usize,
    pub seconds: f64,
    pub fragments: Fragments,
}

/// What an index job leaves in its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexOutcome {
    /// `flat`, `created` or `optimized`.
    pub action: String,
    /// The dataset version that searches use (with the index, if any).
    pub version: u64,
    pub rows: u64,
    pub partitions: usize,
    /// Absent from records written before there was a choice: those indexes are PQ.
    #[serde(default = "pq")]
    pub quantizer: Quantizer,
    pub sub_vectors: usize,
    pub seconds: f64,
}

fn pq() -> Quantizer {
    Quantizer::Pq
}

/// What a scan job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanOutcome {
    pub questions: u64,
    /// Phrase vectors scanned.
    pub rows: u64,
    pub seconds: f64,
    pub output: String,
}

/// What a bm25-index job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bm25IndexOutcome {
    /// Paragraphs or sentences indexed.
    pub units: u64,
    /// Terms indexed, over all units.
    pub terms: u64,
    /// Size of the index files.
    pub bytes: u64,
    pub seconds: f64,
    pub output: String,
}

/// What a retrieve job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrieveOutcome {
    pub questions: u64,
    /// Mean recall@100 of start hits, index vs exact search, when the job measured it.
    #[serde(default)]
    pub recall_at_100: Option<f64>,
    pub rows: u64,
    pub seconds: f64,
    pub output: String,
}

/// What a read job leaves in its record: per budget, sums over its questions (so shards add up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadOutcome {
    pub retrieval: String,
    pub questions: u64,
    pub budgets: Vec<usize>,
    /// Exact matches and F1 (0 to 1 per question), summed over the questions, per budget.
    pub em: Vec<f64>,
    pub f1: Vec<f64>,
    /// Evidence words and reader tokens (the extractive reader's pieces, over all its windows; the
    /// endpoint's prompt tokens) read, and tokens written (the endpoint's), summed.
    pub words: Vec<u64>,
    pub tokens: Vec<u64>,
    #[serde(default)]
    pub tokens_out: Vec<u64>,
    /// Answers the endpoint's cache on the store gave (no request made).
    #[serde(default)]
    pub cached: u64,
    /// The reader's seconds, over all questions and budgets.
    pub seconds: f64,
    pub output: String,
}

impl ReadOutcome {
    /// The outcomes of one retrieval's shards as one: sums added.
    pub fn merged(parts: &[ReadOutcome]) -> Option<ReadOutcome> {
        let mut all = parts.first()?.clone();
        for p in &parts[1..] {
            all.questions += p.questions;
            all.seconds += p.seconds;
            all.cached += p.cached;
            for b in 0..all.budgets.len() {
                all.em[b] += p.em[b];
                all.f1[b] += p.f1[b];
                all.words[b] += p.words[b];
                all.tokens[b] += p.tokens[b];
                if let (Some(a), Some(x)) = (all.tokens_out.get_mut(b), p.tokens_out.get(b)) {
                    *a += x;
                }
            }
        }
        all.output.clear();
        Some(all)
    }
}

/// The role a trained checkpoint plays; the keys of [`TrainOutcome::checkpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The cross-encoder reader (the distillation teacher).
    Reader,
    /// The phrase encoder that encodes the corpus.
    Phrase,
    /// The query encoders (q_start, q_end).
    Query,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Phrase => "phrase",
            Role::Query => "query",
        }
    }
}

/// What a supervised training job (`train-reader`, `train-phrase`) leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Checkpoints by role: `reader`, or `phrase` and `query`.
    pub checkpoints: BTreeMap<Role, ModelRef>,
    pub epochs: u32,
    pub steps: usize,
    /// Training questions per epoch.
    pub examples: usize,
    /// Mean loss of the first and of the last tenth of the steps (absent when no step had a target).
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    /// Dev scores of the starting model and of the trained one (the reader's EM/F1, the phrase
    /// encoder's span scores), shown as they are.
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub seconds_per_epoch: f64,
    pub seconds_per_1000_questions: f64,
    /// The step the job resumed at, when an earlier delivery left a checkpoint.
    pub resumed_at: Option<usize>,
}

/// What a query encoder retrieves for held-out questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalEval {
    pub questions: usize,
    /// Exact match of the top phrase.
    pub em: f64,
    /// mAR of sentence retrieval (k = 200), strict and in the reference study's form.
    pub sentence_mar: f64,
    pub sentence_mar_seed: f64,
}

impl RetrievalEval {
    /// The measure a QSFT run chooses its epoch by.
    pub fn measure(&self, select: crate::train::EpochSelect) -> f64 {
        use crate::train::EpochSelect;
        match select {
            EpochSelect::Em => self.em,
            EpochSelect::MarSeed => self.sentence_mar_seed,
            EpochSelect::MarStrict => self.sentence_mar,
        }
    }
}

/// What a QSFT epoch leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QsftOutcome {
    pub run: String,
    pub epoch: u32,
    pub checkpoint: ModelRef,
    pub steps: usize,
    pub questions: usize,
    /// As in [`TrainOutcome`]; absent when no question had a target among its candidates.
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    /// Mean value of each term over the steps where it had targets.
    pub terms: BTreeMap<String, f64>,
    /// Dev scores after the epoch, and (first epoch only) of the encoder it started from.
    pub dev: RetrievalEval,
    pub dev_before: Option<RetrievalEval>,
    pub seconds: f64,
    pub seconds_per_1000_questions: f64,
    pub resumed_at: Option<usize>,
    /// The folder holding the optimiser's state after the epoch, which the next epoch continues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimiser: Option<String>,
    /// The learning rate of the epoch's last step.
    #[serde(default)]
    pub last_lr: f64,
}

/// Generates [`Metrics`] and the list of its `f64` columns from one list, in table order, so the Arrow
/// schema ([`crate::tables::metrics_schema`]), the writer and the reader cannot disagree.
macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// The metrics of one retrieval over all its questions: what a score job returns and one row of
        /// the metrics table.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct Metrics {
            pub retrieval: String,
            pub mode: String,
            pub questions: u64,
            $($(#[$doc])* pub $field: f64,)*
            /// Answer recall at each word budget (the curve whose mean is mAR), seed and strict.
            pub curve_seed: Vec<f64>,
            pub curve_strict: Vec<f64>,
        }

        impl Metrics {
            /// The `f64` columns, in table order (after `retrieval`, `mode`, `questions`).
            pub const FLOAT_COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The `f64` columns' values, in [`Self::FLOAT_COLUMNS`] order.
            pub fn floats(&self) -> Vec<f64> {
                vec![$(self.$field),*]
            }

            /// A row from its leading columns, its `f64` columns in [`Self::FLOAT_COLUMNS`] order and its
            /// curves; `None` when `floats` has the wrong length.
            pub fn from_columns(retrieval: String, mode: String, questions: u64, floats: &[f64], curve_seed: Vec<f64>, curve_strict: Vec<f64>) -> Option<Self> {
                let mut it = floats.iter().copied();
                let m = Metrics { retrieval, mode, questions, $($field: it.next()?,)* curve_seed, curve_strict };
                it.next().is_none().then_some(m)
            }
        }
    };
}

metrics! {
    /// Mean answer recall over word budgets 100…3000, in the reference study's form and strictly.
    mar_seed,
    mar_strict,
    /// The earlier evaluation's mAR: the study's matching over budgets 100…25,000 (251 bins).
    mar_mentor,
    recall_500w,
    recall_1000w,
    recall_3000w,
    recall_at_1,
    recall_at_10,
    recall_at_100,
    /// Exact match of the top phrase.
    em_top_phrase,
    phrase_correct,
    sent_correct,
    mean_words,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_columns_round_trip() {
        let floats: Vec<f64> = (0..Metrics::FLOAT_COLUMNS.len()).map(|i| i as f64 / 10.0).collect();
        let m = Metrics::from_columns("r".into(), "single sentence".into(), 3, &floats, vec![0.5], vec![0.25]).unwrap();
        assert_eq!(m.floats(), floats);
        assert_eq!(Metrics::FLOAT_COLUMNS[0], "mar_seed");
        assert!(Metrics::from_columns("r".into(), "m".into(), 3, &floats[1..], vec![], vec![]).is_none());
    }

    #[test]
    fn roles_serialise_as_before() {
        let m: BTreeMap<Role, u8> = BTreeMap::from([(Role::Phrase, 1), (Role::Query, 2)]);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"phrase":1,"query":2}"#);
    }
}
