//! `read`: one retrieval's evidence for a shard of questions, cut at each word budget as mAR cuts it,
//! read by the extractive reader or an OpenAI-compatible chat endpoint; per question and budget its
//! answer, EM and F1 against the gold answers, the words read and the reader's tokens in and out.

use super::score::read_evidence;
use super::{JobError, read_shard};
use crate::eval::metrics::cut_at_words;
use crate::io::chat::ChatReader;
use crate::io::parquet::write_parquet;
use crate::io::store::Store;
use crate::model::device::{Job, job_device};
use crate::model::registry::{load_reader, local_model};
use crate::text::questions::{Question, parse_questions};
use crate::train::rc::em_f1;
use crate::train::reader::{Limits, WindowCache, answer};
use anyhow::Result;
use futures::future::BoxFuture;
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use phrasesweep_schemas::job::{ReadConfig, ReadInputs};
use phrasesweep_schemas::outcome::ReadOutcome;
use phrasesweep_schemas::tables::answers_schema;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

/// One question read at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub question_id: String,
    pub budget: usize,
    pub answer: String,
    pub em: f64,
    pub f1: f64,
    /// Evidence words read (at most the budget); the reader's tokens in (the extractive reader's pieces
    /// over all its windows, the endpoint's prompt tokens) and out.
    pub words: usize,
    pub tokens: usize,
    pub tokens_out: usize,
}

/// What a reader returns for one question and evidence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answered {
    pub answer: String,
    pub tokens: usize,
    pub tokens_out: usize,
}

/// A reader: the answer to a question from its evidence.
pub trait Reads: Send {
    fn read<'a>(&'a mut self, question: &'a str, evidence: &'a str) -> BoxFuture<'a, Result<Answered>>;
}

/// The extractive reader (a BERT question-answering model).
struct Extractive {
    model: crate::model::encoders::Reader<Job>,
    text: crate::model::text::TextEncoder,
    limits: Limits,
    device: burn::tensor::Device<Job>,
    /// The windows of the question in hand (the next question's share none).
    cache: WindowCache,
    question: String,
}

impl Reads for Extractive {
    fn read<'a>(&'a mut self, question: &'a str, evidence: &'a str) -> BoxFuture<'a, Result<Answered>> {
        if self.question != question {
            self.cache.clear();
            self.question = question.to_string();
        }
        let read = answer(&self.model, &self.text, question, evidence, self.limits, &self.device, &mut self.cache);
        Box::pin(async move {
            let (answer, tokens) = read?;
            Ok(Answered { answer, tokens, tokens_out: 0 })
        })
    }
}

/// An OpenAI-compatible chat endpoint, asked `template` filled in.
struct Chat<'s> {
    chat: ChatReader,
    store: &'s Store,
    template: String,
    cached: u64,
}

impl Reads for Chat<'_> {
    fn read<'a>(&'a mut self, question: &'a str, evidence: &'a str) -> BoxFuture<'a, Result<Answered>> {
        Box::pin(async move {
            let (a, hit) = self.chat.ask(self.store, &prompt(&self.template, question, evidence)).await?;
            self.cached += u64::from(hit);
            Ok(Answered { answer: a.text, tokens: a.tokens_in as usize, tokens_out: a.tokens_out as usize })
        })
    }
}

/// Reads each question's evidence (`texts` by question id, in rank order) at each budget with `reader`.
/// Evidence no longer at a larger budget is not read again.
pub async fn read_at_budgets(questions: &[Question], evidence: &HashMap<String, Vec<String>>, budgets: &[usize], reader: &mut dyn Reads) -> Result<Vec<Reading>> {
    let mut log = crate::progress::RateLog::new("read", (questions.len() * budgets.len()) as u64, "readings");
    let mut out = Vec::with_capacity(questions.len() * budgets.len());
    for q in questions {
        let texts = evidence.get(&q.id).map(Vec::as_slice).unwrap_or_default();
        let mut last: Option<(String, Answered)> = None;
        for &budget in budgets {
            let cut = cut_at_words(texts, budget);
            let words = cut.iter().map(|t| t.split_whitespace().count()).sum();
            let context = cut.join("\n");
            let a = match last {
                Some((c, a)) if c == context => a,
                _ => reader.read(&q.question, &context).await?,
            };
            log.add(1);
            let (em, f1) = em_f1(&a.answer, &q.answers);
            out.push(Reading { question_id: q.id.clone(), budget, answer: a.answer.clone(), em, f1, words, tokens: a.tokens, tokens_out: a.tokens_out });
            last = Some((context, a));
        }
    }
    Ok(out)
}

/// `template` with the question and the evidence filled in.
pub fn prompt(template: &str, question: &str, evidence: &str) -> String {
    template.replace("{question}", question).replace("{evidence}", evidence)
}


pub async fn run(store: &Store, inputs: &ReadInputs, config: &ReadConfig) -> Result<ReadOutcome, JobError> {
    let bytes = read_shard(store, &inputs.questions).await?;
    let questions = parse_questions(&inputs.questions.path, inputs.questions.first_line, &bytes).map_err(|e| JobError::Input(e.to_string()))?;
    let evidence: HashMap<String, Vec<String>> = read_evidence(store, std::slice::from_ref(&inputs.results)).await?.into_iter().map(|(id, e)| (id, e.texts)).collect();
    let s = &config.settings;
    let started = std::time::Instant::now();
    let (readings, cached) = match (&s.endpoint, &config.reader) {
        (Some(endpoint), _) => {
            let chat = ChatReader::new(endpoint, &s.model, &s.api_key_env, s.max_tokens, s.requests_per_minute)?;
            let mut reader = Chat { chat, store, template: s.prompt.clone(), cached: 0 };
            (read_at_budgets(&questions, &evidence, &s.budgets, &mut reader).await?, reader.cached)
        }
        (None, Some(model)) => {
            let device = job_device()?;
            let (model, text) = load_reader::<Job>(&local_model(store, model).await?, &device)?;
            let limits = Limits { max_len: s.max_len, question_pieces: s.question_pieces, max_answer: s.max_answer };
            (read_at_budgets(&questions, &evidence, &s.budgets, &mut Extractive { model, text, limits, device, cache: WindowCache::new(), question: String::new() }).await?, 0)
        }
        (None, None) => return Err(JobError::Input("a read job names neither a reader nor an endpoint".into())),
    };
    let seconds = started.elapsed().as_secs_f64();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(readings.iter().map(|r| r.question_id.as_str()))),
        Arc::new(UInt64Array::from_iter_values(readings.iter().map(|r| r.budget as u64))),
        Arc::new(StringArray::from_iter_values(readings.iter().map(|r| r.answer.as_str()))),
        Arc::new(Float64Array::from_iter_values(readings.iter().map(|r| r.em))),
        Arc::new(Float64Array::from_iter_values(readings.iter().map(|r| r.f1))),
        Arc::new(UInt64Array::from_iter_values(readings.iter().map(|r| r.words as u64))),
        Arc::new(UInt64Array::from_iter_values(readings.iter().map(|r| r.tokens as u64))),
        Arc::new(UInt64Array::from_iter_values(readings.iter().map(|r| r.tokens_out as u64))),
    ];
    let provenance = vec![
        ("phrasesweep.retrieval".to_string(), config.retrieval.clone()),
        ("phrasesweep.reader".to_string(), match &s.endpoint {
            Some(e) => format!("{e} {}", s.model),
            None => serde_json::to_string(&config.reader).unwrap_or_default(),
        }),
        ("phrasesweep.results".to_string(), inputs.results.clone()),
    ];
    write_parquet(store, &config.output, answers_schema(), &[RecordBatch::try_new(answers_schema(), columns).map_err(anyhow::Error::from)?], &provenance).await?;
    let sum = |b: usize, f: &dyn Fn(&Reading) -> f64| readings.iter().filter(|r| r.budget == b).map(f).sum::<f64>();
    let outcome = ReadOutcome {
        retrieval: config.retrieval.clone(),
        questions: questions.len() as u64,
        budgets: s.budgets.clone(),
        em: s.budgets.iter().map(|&b| sum(b, &|r| r.em)).collect(),
        f1: s.budgets.iter().map(|&b| sum(b, &|r| r.f1)).collect(),
        words: s.budgets.iter().map(|&b| sum(b, &|r| r.words as f64) as u64).collect(),
        tokens: s.budgets.iter().map(|&b| sum(b, &|r| r.tokens as f64) as u64).collect(),
        tokens_out: s.budgets.iter().map(|&b| sum(b, &|r| r.tokens_out as f64) as u64).collect(),
        cached,
        seconds,
        output: config.output.clone(),
    };
    info!(retrieval = %config.retrieval, questions = outcome.questions, seconds, "read");
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// Answers with the last capitalised word of the evidence.
    struct LastCapital {
        calls: usize,
    }

    impl Reads for LastCapital {
        fn read<'a>(&'a mut self, _: &'a str, evidence: &'a str) -> BoxFuture<'a, Result<Answered>> {
            self.calls += 1;
            let last = evidence.split_whitespace().filter(|w| w.starts_with(char::is_uppercase)).last().unwrap_or("");
            let answered = Answered { answer: last.to_string(), tokens: evidence.split_whitespace().count() + 3, tokens_out: 0 };
            Box::pin(async move { Ok(answered) })
        }
    }

    fn question(id: &str, answers: &[&str]) -> Question {
        serde_json::from_value(serde_json::json!({"id": id, "question": format!("who is {id}?"), "answers": answers})).unwrap()
    }

    /// A reader that answers with the last capitalised word it was given: at 5 words it sees only the
    /// first text, at 10 the second too. EM and F1 per budget follow, and evidence that does not grow
    /// past a budget is not read again.
    #[test]
    fn answers_are_scored_at_each_budget_on_the_evidence_cut_there() {
        let questions = [question("a", &["Paris"]), question("b", &["Marie Curie", "Curie"])];
        let evidence = HashMap::from([
            ("a".to_string(), vec!["it was in Lyon then".to_string(), "later on in Paris".to_string()]),
            ("b".to_string(), vec!["the chemist Curie".to_string()]),
        ]);
        let mut reader = LastCapital { calls: 0 };
        let readings = block_on(read_at_budgets(&questions, &evidence, &[5, 10, 100], &mut reader)).unwrap();
        let rows: Vec<(&str, usize, &str, f64, usize)> = readings.iter().map(|r| (r.question_id.as_str(), r.budget, r.answer.as_str(), r.em, r.words)).collect();
        assert_eq!(
            rows,
            [("a", 5, "Lyon", 0.0, 5), ("a", 10, "Paris", 1.0, 9), ("a", 100, "Paris", 1.0, 9), ("b", 5, "Curie", 1.0, 3), ("b", 10, "Curie", 1.0, 3), ("b", 100, "Curie", 1.0, 3)]
        );
        assert_eq!(reader.calls, 3, "a: 5 and 10 words differ, 100 is the same text; b: one text under every budget");
        // F1 against the best gold answer: "Curie" is one of b's.
        assert_eq!(readings[3].f1, 1.0);
        let evidence = HashMap::from([("c".to_string(), vec!["Curie".to_string()])]);
        let partial = block_on(read_at_budgets(&[question("c", &["Marie Curie"])], &evidence, &[5], &mut LastCapital { calls: 0 })).unwrap();
        assert!((partial[0].f1 - 2.0 / 3.0).abs() < 1e-9 && partial[0].em == 0.0, "{partial:?}");
    }
}
