//! `score`: every retrieve output of one retrieval → one metrics row (mAR in both modes, the recall curves,
//! recall at word budgets and at k, exact match) and one row per question, as Parquet.

use super::{JobError, read_file};
use crate::eval::metrics::{self, MarMode, Walk, exact_match, normalize, recall_at_k, recall_at_words};
use crate::eval::runfile::RunLine;
use crate::io::parquet::{read_parquet, write_parquet};
use crate::text::questions::{Question, parse_questions};
use crate::io::store::Store;
use crate::eval::table::metrics_batch;
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{Float32Type, UInt32Type};
use phrasesweep_schemas::job::{InputFile, ScoreConfig, ScoreInputs};
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::tables::{metrics_schema, per_question_schema, results};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

/// One question's evidence, in rank order.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    pub texts: Vec<String>,
    pub phrases: Vec<String>,
}

/// Per question: the two walks and the flags.
pub struct QuestionScore {
    pub id: String,
    pub texts: usize,
    pub words: usize,
    pub seed: Walk,
    pub strict: Walk,
    pub mentor: Walk,
    pub em_top_phrase: bool,
    pub phrase_correct: bool,
    pub sent_correct: bool,
}

pub fn score_question(q: &Question, e: &Evidence) -> QuestionScore {
    let seed = metrics::walk(&e.texts, &q.answers, MarMode::Seed);
    let strict = metrics::walk(&e.texts, &q.answers, MarMode::Strict);
    let mentor = metrics::walk(&e.texts, &q.answers, MarMode::Mentor);
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
        mentor,
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
    let mentor = metrics::mar(&scores.iter().map(|s| s.mentor.clone()).collect::<Vec<_>>(), MarMode::Mentor);
    let m = Metrics {
        retrieval: retrieval.into(),
        mode: mode.into(),
        questions: questions.len() as u64,
        mar_seed: seed.mar,
        mar_strict: strict.mar,
        mar_mentor: mentor.mar,
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

/// The metrics of a run file's lines (the reference study's format), in every mAR form; a question
/// without a line has no evidence.
pub fn score_run_lines(name: &str, questions: &[Question], lines: Vec<RunLine>) -> Metrics {
    let evidence: HashMap<String, Evidence> = lines.into_iter().map(|l| (l.qid, Evidence { texts: l.texts, phrases: Vec::new() })).collect();
    aggregate(name, "run-file", questions, &evidence).0
}

/// One row of a retrieve output, as read back.
#[derive(Debug, Clone)]
pub struct RankedRow {
    pub rank: u32,
    pub unit: String,
    pub text: String,
    pub score: f32,
    pub phrase: String,
    pub encoder: String,
}

/// The rows of retrieve outputs by question, in rank order, questions in the order they first appear.
pub async fn read_ranked(store: &Store, files: &[String]) -> Result<Vec<(String, Vec<RankedRow>)>> {
    let (mut order, mut by_id): (Vec<String>, HashMap<String, Vec<RankedRow>>) = Default::default();
    for f in files {
        let (batches, _) = read_parquet(store, f).await?;
        for b in batches {
            let col = |n: &str| b.column_by_name(n).with_context(|| format!("{f}: column {n} is missing"));
            let text = |n: &str| -> Result<StringArray> { Ok(col(n)?.as_string::<i32>().clone()) };
            let (ids, units, texts, phrases, encoders) = (text(results::QUESTION_ID)?, text(results::UNIT)?, text(results::TEXT)?, text(results::PHRASE)?, text(results::ENCODER)?);
            let ranks = col(results::RANK)?.as_primitive::<UInt32Type>().clone();
            let scores = col(results::SCORE)?.as_primitive::<Float32Type>().clone();
            for i in 0..b.num_rows() {
                let id = ids.value(i);
                if !by_id.contains_key(id) {
                    order.push(id.to_string());
                }
                by_id.entry(id.to_string()).or_default().push(RankedRow {
                    rank: ranks.value(i),
                    unit: units.value(i).into(),
                    text: texts.value(i).into(),
                    score: scores.value(i),
                    phrase: phrases.value(i).into(),
                    encoder: encoders.value(i).into(),
                });
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|id| {
            let mut rows = by_id.remove(&id).unwrap_or_default();
            rows.sort_by_key(|r| r.rank);
            (id, rows)
        })
        .collect())
}

/// Reads the ranked evidence of retrieve outputs, by question id.
pub async fn read_evidence(store: &Store, files: &[String]) -> Result<HashMap<String, Evidence>> {
    Ok(read_ranked(store, files)
        .await?
        .into_iter()
        .map(|(id, rows)| {
            let (texts, phrases) = rows.into_iter().map(|r| (r.text, r.phrase)).unzip();
            (id, Evidence { texts, phrases })
        })
        .collect())
}

pub async fn run(store: &Store, inputs: &ScoreInputs, config: &ScoreConfig) -> Result<Metrics, JobError> {
    let bytes = read_file(store, &InputFile { path: inputs.questions.clone(), sha256: inputs.questions_sha256.clone() }).await?;
    let questions = parse_questions(&inputs.questions, 1, &bytes).map_err(|e| JobError::Input(e.to_string()))?;
    let evidence = read_evidence(store, &inputs.results).await?;
    let mode = config.retrieval.mode.to_string();
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
    Ok(m)
}

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

    /// The three worked examples of the mAR tests, scored as a score job scores its evidence and as a
    /// run file in the study's format (written, parsed, scored): the same metrics, mAR in every form.
    /// The pipeline test does the same end to end (`results --export-runs`, then `score`).
    #[test]
    fn a_run_file_scores_as_the_score_job_on_the_worked_examples() {
        use crate::eval::metrics::tests::words;
        use crate::eval::runfile;
        let question = |id: &str, answers: &[&str]| -> Question { serde_json::from_value(serde_json::json!({ "id": id, "question": "q", "answers": answers })).unwrap() };
        let mut first = vec![words(50, None), words(80, Some("A"))];
        first.extend((0..40).map(|_| words(80, None)));
        let mut second: Vec<String> = (0..49).map(|_| words(60, None)).collect();
        second.push(words(61, Some("X")));
        let third = vec![words(50, Some("X")), words(151, None), words(100, None)];
        let cases = [(question("1", &["A", "B"]), first, 0.483_333), (question("2", &["X"]), second, 0.0), (question("3", &["X"]), third, 1.0)];
        for (q, texts, seed) in cases {
            let evidence = HashMap::from([(q.id.clone(), Evidence { texts: texts.clone(), phrases: Vec::new() })]);
            let (job, _) = aggregate("r", "run-file", std::slice::from_ref(&q), &evidence);
            assert!((job.mar_seed - seed).abs() < 1e-5, "{}", job.mar_seed);
            let line = runfile::format_line(&q.id, &texts, &[]).unwrap();
            let file = score_run_lines("r", std::slice::from_ref(&q), runfile::parse("run.tsv", &line).unwrap());
            assert_eq!((file.mar_seed, file.mar_strict, file.mar_mentor), (job.mar_seed, job.mar_strict, job.mar_mentor), "question {}", q.id);
        }
    }

    #[test]
    fn metrics_read_back_as_written() {
        let question = |id: &str, answer: &str| -> Question { serde_json::from_value(serde_json::json!({ "id": id, "question": "q", "answers": [answer] })).unwrap() };
        let questions = [question("a", "Paris"), question("b", "Rome")];
        let evidence = HashMap::from([("a".to_string(), Evidence { texts: vec!["the capital is Paris".into()], phrases: vec!["Paris".into()] })]);
        let (m, _) = aggregate("sentence", "single", &questions, &evidence);
        assert_eq!((m.mar_seed, m.recall_at_1, m.em_top_phrase), (0.5, 0.5, 0.5));
        let other = Metrics { retrieval: "bm25".into(), mar_strict: 0.25, curve_seed: vec![], ..m.clone() };
        let batch = metrics_batch(&[m.clone(), other.clone()]).unwrap();
        assert_eq!(crate::eval::table::metrics_from_batch(&batch).unwrap(), vec![m, other]);
    }
}
