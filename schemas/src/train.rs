//! What the training jobs are told: the reading-comprehension data, the optimiser, and the query-side
//! fine-tuning (QSFT) runs a sweep compares. Sizes default to the reference study's; configs for small
//! machines cut `max_examples` and `max_questions` rather than change the method.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the learning rate moves over a run's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// DensePhrases' (and the study's): up over `warmup` of the steps, then linearly down to 0 at the
    /// last step of the run (for QSFT, the last step of its last epoch).
    #[default]
    Linear,
    /// `lr` at every step (phrasesweep before 2026-12-02).
    Constant,
}

impl LrSchedule {
    /// The learning rate of 0-based `step` of `total` steps.
    pub fn lr(self, lr: f64, warmup: f64, step: usize, total: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Linear => {
                let (step, total) = (step as f64, total.max(1) as f64);
                let warm = (warmup * total).floor();
                if step < warm { lr * (step + 1.0) / warm } else { lr * ((total - step) / (total - warm).max(1.0)).max(0.0) }
            }
        }
    }
}

/// AdamW as DensePhrases trains: decoupled weight decay except on biases and LayerNorm, the word
/// embeddings frozen, gradients clipped by their global norm, the learning rate on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSettings {
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Largest global gradient norm; 0 turns clipping off.
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seeds the shuffle of every epoch (epoch `e` uses `seed + e`) and new heads' initialisation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Optimiser steps between checkpoints inside an epoch: a killed worker resumes from the last one.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Written always: the schedule changes what a training job computes, so its job id.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// The fraction of the run's steps that warm the learning rate up (linear schedule).
    #[serde(default)]
    pub warmup: f64,
}

impl Default for OptimSettings {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            weight_decay: default_weight_decay(),
            clip_norm: default_clip(),
            batch_size: default_batch(),
            seed: default_seed(),
            checkpoint_every: default_checkpoint_every(),
            schedule: LrSchedule::default(),
            warmup: 0.0,
        }
    }
}

fn default_lr() -> f64 {
    3e-5
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_clip() -> f64 {
    1.0
}
fn default_batch() -> usize {
    12
}
fn default_seed() -> u64 {
    42
}
fn default_checkpoint_every() -> usize {
    50
}

/// `[train.reader]` and `[train.phrase]`: one supervised run each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedSettings {
    /// The model it starts from: `default`, a HuggingFace BERT folder or a checkpoint.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Training questions used per epoch (the first ones after a seeded shuffle); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_examples: Option<usize>,
    /// Dev questions evaluated; absent: all of `squad_dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples: Option<usize>,
    /// Model window in tokens, special tokens included.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// `train.reader` only: question pieces kept in the reader's inputs.
    #[serde(default = "default_question_pieces", skip_serializing_if = "is_default_question_pieces")]
    pub question_pieces: usize,
    /// `train.reader` only: the longest answer the reader predicts, in pieces.
    #[serde(default = "default_max_answer", skip_serializing_if = "is_default_max_answer")]
    pub max_answer: usize,
    /// `train.phrase` only: title pieces in the phrase encoder's training inputs (set it to the corpus
    /// encoding's `encode.title_tokens`, whose default it shares).
    #[serde(default = "default_title_tokens", skip_serializing_if = "is_default_title_tokens")]
    pub title_tokens: usize,
    /// `train.phrase` only: questions are cut to this many tokens for the query encoders, `[CLS]` and
    /// `[SEP]` included (set it to the retrieval's `search.query_len`, whose default it shares).
    #[serde(default = "default_query_len", skip_serializing_if = "is_default_query_len")]
    pub query_len: usize,
    #[serde(default)]
    pub optim: OptimSettings,
    /// `train.phrase` only: distillation from the trained reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillSettings>,
    /// `train.phrase` only: the filter keeps tokens whose larger logit reaches this (reported after training).
    #[serde(default)]
    pub filter_threshold: f32,
    /// `train.phrase` only: after training, choose the filter threshold that keeps this share of the
    /// held-out paragraphs' tokens (reported with the index size it gives; the encode stage of the same
    /// run uses it unless `[encode] filter_threshold` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_keep: Option<f64>,
    /// `train.phrase` only: what each question's start and end are scored against besides its own
    /// paragraph's tokens.
    #[serde(default, skip_serializing_if = "is_default")]
    pub negatives: Negatives,
    /// Every epoch draws all of `[train] nq_train`'s questions, and SQuAD's fill the rest of
    /// `max_examples`. Off, both are drawn together at random, so NQ (1,790 of 89,389) is 2 % of a draw;
    /// the dev benchmark's questions are NQ's. Left out of the job's JSON when off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nq_first: bool,
}

/// The phrase encoder's negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Negatives {
    /// DensePhrases: a softmax over the question's own paragraph tokens, plus one over the gold start
    /// (end) vectors of the batch's questions and of the last `prebatch` batches (kept in a queue,
    /// detached).
    InBatch {
        #[serde(default = "default_prebatch")]
        prebatch: usize,
        /// The in-batch term's weight (DensePhrases' `lambda_neg`: 2 on SQuAD, 4 on NQ).
        #[serde(default = "default_negatives_weight")]
        weight: f64,
    },
    /// One softmax over every paragraph token of the batch (phrasesweep before 2026-12-02).
    AllTokens,
}

impl Default for Negatives {
    fn default() -> Self {
        Negatives::InBatch { prebatch: default_prebatch(), weight: default_negatives_weight() }
    }
}

fn default_prebatch() -> usize {
    2
}
fn default_negatives_weight() -> f64 {
    2.0
}

impl Default for SupervisedSettings {
    fn default() -> Self {
        Self {
            model: default_model(),
            epochs: default_epochs(),
            max_examples: None,
            eval_examples: None,
            max_len: default_max_len(),
            question_pieces: default_question_pieces(),
            max_answer: default_max_answer(),
            title_tokens: default_title_tokens(),
            query_len: default_query_len(),
            optim: OptimSettings::default(),
            distill: None,
            filter_threshold: 0.0,
            filter_keep: None,
            negatives: Negatives::default(),
            nq_first: false,
        }
    }
}

fn default_model() -> String {
    crate::settings::DEFAULT_MODEL.into()
}
fn default_epochs() -> u32 {
    1
}
fn default_max_len() -> usize {
    256
}

// The settings below came after job ids were in use: each is left out of the job's JSON at its default,
// so a config that does not set it keeps its job ids (they hash that JSON).

fn default_question_pieces() -> usize {
    64
}
fn is_default_question_pieces(v: &usize) -> bool {
    *v == default_question_pieces()
}
fn default_max_answer() -> usize {
    30
}
fn is_default_max_answer(v: &usize) -> bool {
    *v == default_max_answer()
}
fn default_title_tokens() -> usize {
    10
}
fn is_default_title_tokens(v: &usize) -> bool {
    *v == default_title_tokens()
}
fn default_query_len() -> usize {
    64
}
fn is_default_query_len(v: &usize) -> bool {
    *v == default_query_len()
}
fn default_teacher_window() -> usize {
    384
}
fn is_default_teacher_window(v: &usize) -> bool {
    *v == default_teacher_window()
}

/// A QSFT loss term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossTerm {
    /// Candidates whose text is an answer.
    Query,
    /// Candidates from a gold document (by title).
    Doc,
    /// Candidates inside a gold sentence.
    Sentence,
    /// Candidates from the gold paragraph.
    Context,
    /// The reader's start/end probabilities on the gold paragraph.
    Distill,
}

impl LossTerm {
    pub const ALL: [LossTerm; 5] = [LossTerm::Query, LossTerm::Doc, LossTerm::Sentence, LossTerm::Context, LossTerm::Distill];

    pub fn as_str(self) -> &'static str {
        match self {
            LossTerm::Query => "query",
            LossTerm::Doc => "doc",
            LossTerm::Sentence => "sentence",
            LossTerm::Context => "context",
            LossTerm::Distill => "distill",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillKind {
    /// Squared error between probabilities (the reference study).
    Mse,
    /// KL divergence from the teacher to the student, both over the candidates in the gold paragraph.
    Kl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSettings {
    #[serde(default = "default_distill_kind")]
    pub kind: DistillKind,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// QSFT only: the first epoch (1-based) with the distillation term.
    #[serde(default = "default_start_epoch")]
    pub start_epoch: u32,
    /// The term is `weight · (start + end) / 2`; absent, the study's 3 in QSFT (which also multiplies it by
    /// its weight in `terms`) and 1 in `train.phrase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Question pieces in the teacher's inputs: set it to those the teacher was trained with
    /// (`train.reader.question_pieces`, whose default it shares).
    #[serde(default = "default_question_pieces", skip_serializing_if = "is_default_question_pieces")]
    pub question_pieces: usize,
    /// QSFT only: the teacher reads the gold paragraph's first window of this many tokens, question and
    /// special tokens included (`train.phrase` distils on the phrase encoder's own window).
    #[serde(default = "default_teacher_window", skip_serializing_if = "is_default_teacher_window")]
    pub window: usize,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            kind: default_distill_kind(),
            temperature: default_temperature(),
            start_epoch: default_start_epoch(),
            weight: None,
            question_pieces: default_question_pieces(),
            window: default_teacher_window(),
        }
    }
}

fn default_distill_kind() -> DistillKind {
    DistillKind::Mse
}
fn default_temperature() -> f64 {
    1.0
}
impl DistillSettings {
    /// The study's QSFT distillation: weight 3 on the mean of start and end.
    pub fn qsft_weight(&self) -> f64 {
        self.weight.unwrap_or(3.0)
    }

    pub fn phrase_weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
}

// The study's distillation starts at epoch 2.
fn default_start_epoch() -> u32 {
    2
}

/// One `[[qsft]]` run: query-side fine-tuning against the frozen phrase index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsftRun {
    /// Names the run; retrievals use it as a query encoder name.
    pub name: String,
    /// The weighted sum of loss terms, e.g. `{ query = 1.0, context = 1.0 }`.
    pub terms: BTreeMap<LossTerm, f64>,
    /// Adds MML on the summed start+end logits to `doc`, `sentence` and `context`.
    #[serde(default)]
    pub dense: bool,
    #[serde(default = "default_qsft_epochs")]
    pub epochs: u32,
    /// The query encoder it starts from: a name from `[encoders]`, or `trained` (from `train-phrase`).
    #[serde(default = "default_start_from")]
    pub start_from: String,
    /// Start hits and end hits retrieved per question: the softmax set has up to twice this many spans.
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// Training questions per epoch (the first after the seeded shuffle); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_questions: Option<usize>,
    /// Dev questions evaluated after each epoch; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_questions: Option<usize>,
    #[serde(default)]
    pub optim: OptimSettings,
    #[serde(default)]
    pub distill: DistillSettings,
    /// How the epoch that retrievals use is chosen. The coordinator chooses; epoch jobs carry the default
    /// (left out of their JSON), so a run chosen another way retrains nothing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub select: EpochSelect,
}

/// Which epoch of a QSFT run is its result: the best on the dev questions by one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochSelect {
    /// Exact match of the top phrase (the study's choice).
    #[default]
    Em,
    /// Sentence mAR, the study's form.
    MarSeed,
    /// Sentence mAR, strict.
    MarStrict,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_qsft_epochs() -> u32 {
    3
}
fn default_start_from() -> String {
    "base".into()
}
fn default_candidates() -> usize {
    100
}

/// `[train]`: where the training data is, and which supervised runs precede QSFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// SQuAD paragraphs with their questions (`{"title", "context", "qas"}` per line): paths or store URIs.
    /// Needed by `[train.reader]` and `[train.phrase]` only, so a QSFT-only sweep can leave them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squad_train: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squad_dev: Option<String>,
    /// NQ questions with their gold paragraph; these are added to the reader's and phrase encoder's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nq_train: Option<String>,
    /// NQ questions for QSFT (`nq/train.jsonl`) and for choosing the best epoch (`nq/dev.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsft_train: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsft_dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<SupervisedSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrase: Option<SupervisedSettings>,
}

/// The query encoder name that stands for the one `train-phrase` trained.
pub const TRAINED_ENCODER: &str = "trained";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn optim() -> serde_json::Value {
        json!({ "lr": 3e-5, "weight_decay": 0.01, "clip_norm": 1.0, "batch_size": 12, "seed": 42, "checkpoint_every": 50, "schedule": "linear", "warmup": 0.0 })
    }

    /// Job ids hash a job's JSON: settings at their defaults serialise exactly as before they existed, so
    /// an unchanged config keeps its job ids, but for the learning-rate schedule (which changed what
    /// every training job computes).
    #[test]
    fn default_settings_serialise_as_before_their_training_constants_were_settings() {
        let before = json!({ "model": "default", "epochs": 1, "max_len": 256, "optim": optim(), "filter_threshold": 0.0 });
        assert_eq!(serde_json::to_value(SupervisedSettings::default()).unwrap(), before);
        let parsed: SupervisedSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, SupervisedSettings::default());
        assert_eq!(serde_json::to_value(&parsed).unwrap(), before);

        let distill = json!({ "kind": "mse", "temperature": 1.0, "start_epoch": 2 });
        let phrase: SupervisedSettings = serde_json::from_value(json!({ "distill": {} })).unwrap();
        assert_eq!(serde_json::to_value(&phrase).unwrap()["distill"], distill);

        let run: QsftRun = serde_json::from_value(json!({ "name": "q", "terms": { "query": 1.0 } })).unwrap();
        let before_run = json!({
            "name": "q",
            "terms": { "query": 1.0 },
            "dense": false,
            "epochs": 3,
            "start_from": "base",
            "candidates": 100,
            "optim": optim(),
            "distill": distill,
        });
        assert_eq!(serde_json::to_value(&run).unwrap(), before_run);
    }

    #[test]
    fn training_constants_set_in_a_config_are_part_of_the_job() {
        let s = SupervisedSettings { question_pieces: 32, max_answer: 20, title_tokens: 8, query_len: 48, ..Default::default() };
        let v = serde_json::to_value(&s).unwrap();
        for (key, value) in [("question_pieces", 32), ("max_answer", 20), ("title_tokens", 8), ("query_len", 48)] {
            assert_eq!(v[key], value, "{key}");
        }
        assert_eq!(serde_json::from_value::<SupervisedSettings>(v).unwrap(), s);
        let d = DistillSettings { question_pieces: 32, window: 128, ..Default::default() };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!((v["question_pieces"].as_u64(), v["window"].as_u64()), (Some(32), Some(128)));
        assert_eq!(serde_json::from_value::<DistillSettings>(v).unwrap(), d);
        assert!(serde_json::from_str::<SupervisedSettings>(r#"{"title_pieces": 8}"#).is_err(), "unknown fields are still refused");
    }

    #[test]
    fn the_study_defaults_distillation_selection_and_the_schedule() {
        let d = DistillSettings::default();
        assert_eq!((d.kind, d.start_epoch, d.qsft_weight(), d.phrase_weight(), d.window), (DistillKind::Mse, 2, 3.0, 1.0, 384));
        let run: QsftRun = serde_json::from_value(json!({ "name": "q", "terms": { "query": 1.0 } })).unwrap();
        assert_eq!(run.select, EpochSelect::Em);
        let run: QsftRun = serde_json::from_value(json!({ "name": "q", "terms": { "query": 1.0 }, "select": "mar_strict" })).unwrap();
        assert_eq!(serde_json::to_value(&run).unwrap()["select"], "mar_strict");
        // Linear: down to 0 over the run; with warm-up, up first.
        let lr = |step, warmup| LrSchedule::Linear.lr(1.0, warmup, step, 10);
        assert_eq!((lr(0, 0.0), lr(5, 0.0), lr(9, 0.0)), (1.0, 0.5, 0.1));
        assert_eq!((lr(0, 0.2), lr(1, 0.2), lr(2, 0.2), lr(6, 0.2)), (0.5, 1.0, 1.0, 0.5));
        assert_eq!(LrSchedule::Constant.lr(1.0, 0.2, 9, 10), 1.0);
    }
}
