//! `score`: every retrieve output of one retrieval → one metrics row (mAR in both modes, the recall curves,
//! recall at word budgets and at k, exact match) and one row per question, as Parquet.

use super::JobError;
use crate::metrics::{self, MarMode, Walk, exact_match, normalize, recall_at_k, recall_at_words};
use crate::parquet_io::{read_parquet, write_parquet};
use crate::questions::{Question, parse_questions};
use crate::store::{Store, read_input};
use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListBuilder, Float64Builder, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{Float64Type, UInt32Type, UInt64Type};
use arrow_schema::{DataType, Field};
use phrasesweep_schemas::job::{ScoreConfig, ScoreInputs};
use phrasesweep_schemas::tables::{metrics_schema, per_question_schema, results};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

/// One question's evidence, in rank order.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    pub texts: Vec<String>,
    pub phrases: Vec<String>,
}

/// The metrics of one retrieval, as stored in its metrics row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub retrieval: String,
    pub mode: String,
    pub questions: u64,
    pub mar_seed: f64,
    pub mar_strict: f64,
    pub recall_500w: f64,
    pub recall_1000w: f64,
    pub recall_3000w: f64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub em_top_phrase: f64,
    pub phrase_correct: f64,
    pub sent_correct: f64,
    pub mean_words: f64,
    pub curve_seed: Vec<f64>,
    pub curve_strict: Vec<f64>,
}

/// Per question: the two walks and the flags.
pub struct QuestionScore {
    pub id: String,
    pub texts: usize,
    pub words: usize,
    pub seed: Walk,
    pub strict: Walk,
    pub em_top_phrase: bool,
    pub phrase_correct: bool,
    pub sent_correct: bool,
}

pub fn score_question(q: &Question, e: &Evidence) -> QuestionScore {
    let seed = metrics::walk(&e.texts, &q.answers, MarMode::Seed);
    let strict = metrics::walk(&e.texts, &q.answers, MarMode::Strict);
    let answers: Vec<String> = q.answers.iter().map(|a| normalize(a)).collect();
    // `phrase_correct`: a retrieving span is an answer; `sent_correct`: an answer is in the evidence but
    // never as the span that retrieved it.
    let phrase_correct = e.phrases.iter().any(|p| !p.is_empty() && answers.contains(&normalize(p)));
    let in_text = recall_at_k(&e.texts, &q.answers, usize::MAX);
    QuestionScore {
        id: q.id.clone(),
        texts: e.texts.len(),
        words: e.texts.iter().map(|t| t.split_whitespace().count()).sum(),
        em_top_phrase: e.phrases.first().is_some_and(|p| exact_match(p, &q.answers)),
        phrase_correct,
        sent_correct: in_text && !phrase_correct,
        seed,
        strict,
    }
}

pub fn aggregate(retrieval: &str, mode: &str, questions: &[Question], evidence: &HashMap<String, Evidence>) -> (Metrics, Vec<QuestionScore>) {
    let empty = Evidence::default();
    let scores: Vec<QuestionScore> =
        questions.iter().map(|q| score_question(q, evidence.get(&q.id).unwrap_or(&empty))).collect();
    let n = questions.len().max(1) as f64;
    let frac = |f: &dyn Fn(&Question, &Evidence) -> bool| {
        questions.iter().filter(|q| f(q, evidence.get(&q.id).unwrap_or(&empty))).count() as f64 / n
    };
    let seed = metrics::mar(&scores.iter().map(|s| s.seed.clone()).collect::<Vec<_>>(), MarMode::Seed);
    let strict = metrics::mar(&scores.iter().map(|s| s.strict.clone()).collect::<Vec<_>>(), MarMode::Strict);
    let m = Metrics {
        retrieval: retrieval.into(),
        mode: mode.into(),
        questions: questions.len() as u64,
        mar_seed: seed.mar,
        mar_strict: strict.mar,
        recall_500w: frac(&|q, e| recall_at_words(&e.texts, &q.answers, 500)),
        recall_1000w: frac(&|q, e| recall_at_words(&e.texts, &q.answers, 1000)),
        recall_3000w: frac(&|q, e| recall_at_words(&e.texts, &q.answers, 3000)),
        recall_at_1: frac(&|q, e| recall_at_k(&e.texts, &q.answers, 1)),
        recall_at_10: frac(&|q, e| recall_at_k(&e.texts, &q.answers, 10)),
        recall_at_100: frac(&|q, e| recall_at_k(&e.texts, &q.answers, 100)),
        em_top_phrase: scores.iter().filter(|s| s.em_top_phrase).count() as f64 / n,
        phrase_correct: scores.iter().filter(|s| s.phrase_correct).count() as f64 / n,
        sent_correct: scores.iter().filter(|s| s.sent_correct).count() as f64 / n,
        mean_words: scores.iter().map(|s| s.words as f64).sum::<f64>() / n,
        curve_seed: seed.curve,
        curve_strict: strict.curve,
    };
    (m, scores)
}

/// Reads the ranked evidence of retrieve outputs, by question id.
pub async fn read_evidence(store: &Store, files: &[String]) -> Result<HashMap<String, Evidence>> {
    let mut rows: HashMap<String, Vec<(u32, String, String)>> = HashMap::new();
    for f in files {
        let (batches, _) = read_parquet(store, f).await?;
        for b in batches {
            let col = |n: &str| b.column_by_name(n).with_context(|| format!("{f}: column {n} is missing"));
            let ids = col(results::QUESTION_ID)?.as_string::<i32>().clone();
            let ranks = col(results::RANK)?.as_primitive::<UInt32Type>().clone();
            let texts = col(results::TEXT)?.as_string::<i32>().clone();
            let phrases = col(results::PHRASE)?.as_string::<i32>().clone();
            for i in 0..b.num_rows() {
                rows.entry(ids.value(i).to_string()).or_default().push((ranks.value(i), texts.value(i).into(), phrases.value(i).into()));
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, mut r)| {
            r.sort_by_key(|x| x.0);
            let (texts, phrases) = r.into_iter().map(|(_, t, p)| (t, p)).unzip();
            (id, Evidence { texts, phrases })
        })
        .collect())
}

pub async fn run(store: &Store, inputs: &ScoreInputs, config: &ScoreConfig) -> Result<serde_json::Value, JobError> {
    let bytes = read_input(store, &inputs.questions).await?;
    if hex::encode(Sha256::digest(&bytes)) != inputs.questions_sha256 {
        return Err(JobError::Input(format!("{} changed since the run was planned; rerun to plan again", inputs.questions)));
    }
    let questions = parse_questions(&inputs.questions, 1, &bytes).map_err(|e| JobError::Input(e.to_string()))?;
    let evidence = read_evidence(store, &inputs.results).await?;
    let mode = format!("{:?}", config.retrieval.mode).to_lowercase() + if config.retrieval.opt { "+opt" } else { "" };
    let (m, scores) = aggregate(&config.retrieval.name, &mode, &questions, &evidence);
    let provenance = vec![
        ("phrasesweep.retrieval".to_string(), serde_json::to_string(&config.retrieval).unwrap_or_default()),
        ("phrasesweep.questions".to_string(), inputs.questions.clone()),
        ("phrasesweep.questions_sha256".to_string(), inputs.questions_sha256.clone()),
        ("phrasesweep.results".to_string(), inputs.results.join(",")),
    ];
    write_parquet(store, &config.metrics, metrics_schema(), &[metrics_batch(&[m.clone()])?], &provenance).await?;
    write_parquet(store, &config.per_question, per_question_schema(), &[per_question_batch(&scores)?], &provenance).await?;
    info!(retrieval = m.retrieval, mar_seed = m.mar_seed, mar_strict = m.mar_strict, "scored");
    Ok(serde_json::to_value(&m).context("cannot encode the score record")?)
}

/// Generates the Parquet writer and reader of [`Metrics`] from one list of its `f64` fields, in the
/// order of `metrics_schema`: a metric added to the list is written and read back alike.
macro_rules! metrics_columns {
    ($($field:ident),* $(,)?) => {
        pub fn metrics_batch(rows: &[Metrics]) -> Result<RecordBatch> {
            let curve = |g: &dyn Fn(&Metrics) -> &Vec<f64>| -> ArrayRef {
                let mut b = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new("item", DataType::Float64, false)));
                for r in rows {
                    b.values().append_slice(g(r));
                    b.append(true);
                }
                Arc::new(b.finish())
            };
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.retrieval.as_str()))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.mode.as_str()))),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.questions))),
            ];
            $(columns.push(Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.$field))));)*
            columns.push(curve(&|r| &r.curve_seed));
            columns.push(curve(&|r| &r.curve_strict));
            Ok(RecordBatch::try_new(metrics_schema(), columns)?)
        }

        /// The rows of a batch that [`metrics_batch`] wrote.
        pub fn metrics_from_batch(b: &RecordBatch) -> Result<Vec<Metrics>> {
            let col = |n: &str| b.column_by_name(n).with_context(|| format!("column {n} is missing"));
            let floats = |n: &str| -> Result<Float64Array> {
                Ok(col(n)?.as_primitive_opt::<Float64Type>().with_context(|| format!("column {n} is not f64"))?.clone())
            };
            let strings = |n: &str| -> Result<StringArray> {
                Ok(col(n)?.as_string_opt::<i32>().with_context(|| format!("column {n} is not text"))?.clone())
            };
            let curve = |n: &str| -> Result<Vec<Vec<f64>>> {
                let l = col(n)?.as_list_opt::<i32>().with_context(|| format!("column {n} is not a list"))?.clone();
                (0..l.len())
                    .map(|i| Ok(l.value(i).as_primitive_opt::<Float64Type>().with_context(|| format!("column {n} is not a list of f64"))?.values().to_vec()))
                    .collect()
            };
            let (retrieval, mode) = (strings("retrieval")?, strings("mode")?);
            let questions = col("questions")?.as_primitive_opt::<UInt64Type>().context("column questions is not u64")?.clone();
            $(let $field = floats(stringify!($field))?;)*
            let (curve_seed, curve_strict) = (curve("curve_seed")?, curve("curve_strict")?);
            Ok((0..b.num_rows())
                .map(|i| Metrics {
                    retrieval: retrieval.value(i).to_string(),
                    mode: mode.value(i).to_string(),
                    questions: questions.value(i),
                    $($field: $field.value(i),)*
                    curve_seed: curve_seed[i].clone(),
                    curve_strict: curve_strict[i].clone(),
                })
                .collect())
        }
    };
}

metrics_columns!(
    mar_seed,
    mar_strict,
    recall_500w,
    recall_1000w,
    recall_3000w,
    recall_at_1,
    recall_at_10,
    recall_at_100,
    em_top_phrase,
    phrase_correct,
    sent_correct,
    mean_words,
);

fn per_question_batch(scores: &[QuestionScore]) -> Result<RecordBatch> {
    let seed: Vec<f64> = scores.iter().map(|s| metrics::mar(std::slice::from_ref(&s.seed), MarMode::Seed).mar).collect();
    let strict: Vec<f64> = scores.iter().map(|s| metrics::mar(std::slice::from_ref(&s.strict), MarMode::Strict).mar).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(scores.iter().map(|s| s.id.as_str()))),
        Arc::new(UInt32Array::from_iter_values(scores.iter().map(|s| s.texts as u32))),
        Arc::new(UInt64Array::from_iter_values(scores.iter().map(|s| s.words as u64))),
        Arc::new(Float64Array::from(seed)),
        Arc::new(Float64Array::from(strict)),
        Arc::new(UInt32Array::from(scores.iter().map(|s| s.strict.first_hit_rank.map(|r| r as u32)).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(scores.iter().map(|s| s.em_top_phrase).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(scores.iter().map(|s| s.phrase_correct).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(scores.iter().map(|s| s.sent_correct).collect::<Vec<_>>())),
    ];
    Ok(RecordBatch::try_new(per_question_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_back_as_written() {
        let question = |id: &str, answer: &str| -> Question { serde_json::from_value(serde_json::json!({ "id": id, "question": "q", "answers": [answer] })).unwrap() };
        let questions = [question("a", "Paris"), question("b", "Rome")];
        let evidence = HashMap::from([("a".to_string(), Evidence { texts: vec!["the capital is Paris".into()], phrases: vec!["Paris".into()] })]);
        let (m, _) = aggregate("sentence", "single", &questions, &evidence);
        assert_eq!((m.mar_seed, m.recall_at_1, m.em_top_phrase), (0.5, 0.5, 0.5));
        let other = Metrics { retrieval: "bm25".into(), mar_strict: 0.25, curve_seed: vec![], ..m.clone() };
        let batch = metrics_batch(&[m.clone(), other.clone()]).unwrap();
        assert_eq!(metrics_from_batch(&batch).unwrap(), vec![m, other]);
    }
}
