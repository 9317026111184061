//! What the index examples share: their questions and their `NPROBES:REFINE` arguments.
#![allow(dead_code)] // each example uses part of it

use anyhow::{Context, Result};
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_workers::model::device::Cpu;
use phrasesweep_workers::model::encoders::encode_queries;
use phrasesweep_workers::model::registry::{load_query_encoder, model_ref};
use phrasesweep_workers::text::questions::parse_questions;

/// q_start of the first `n` questions of a questions file, by the pretrained query encoder.
pub fn first_q_starts(questions: &str, n: &str) -> Result<Vec<Vec<f32>>> {
    Ok(first_queries(questions, n)?.into_iter().map(|(q_start, _)| q_start).collect())
}

/// (q_start, q_end) of the first `n` questions of a questions file, by the pretrained query encoder.
pub fn first_queries(questions: &str, n: &str) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let mut qs = parse_questions(questions, 1, &std::fs::read(questions).with_context(|| format!("cannot read {questions}"))?)?;
    qs.truncate(n.parse().context("N is a number of questions")?);
    let device = Default::default();
    let (model, text) = load_query_encoder::<Cpu>(&model_ref("default")?, &device)?;
    let texts: Vec<&str> = qs.iter().map(|q| q.question.as_str()).collect();
    encode_queries(&model, &text, &texts, SearchSettings::default().query_len, 16, &device)
}

/// `NPROBES:REFINE` arguments.
pub fn probes(args: &[String]) -> Result<Vec<(usize, u32)>> {
    args.iter()
        .map(|a| {
            let (n, r) = a.split_once(':').with_context(|| format!("{a}: settings are NPROBES:REFINE"))?;
            Ok((n.parse()?, r.parse()?))
        })
        .collect()
}
