//! `scan`: one shard of questions × one query encoder × a range of phrase fragments → every question's
//! top start and end hits in that range, completed into spans, as JSON for the retrieve jobs to merge.
//! A range is a job of its own so that the workers of a farm scan one shard's ranges in parallel, and a
//! killed scan job is redone alone.

use super::JobError;
use super::retrieve::{read_questions, shard_queries};
use crate::index::scan::{BATCH_ROWS, Candidates, Queries, scan};
use crate::io::lance::open_dataset;
use crate::io::store::Store;
use anyhow::Context;
use phrasesweep_schemas::job::{ScanConfig, ScanInputs};
use phrasesweep_schemas::outcome::ScanOutcome;
use tracing::info;

pub async fn run(store: &Store, inputs: &ScanInputs, config: &ScanConfig) -> Result<ScanOutcome, JobError> {
    let started = std::time::Instant::now();
    let questions = read_questions(store, &inputs.questions).await?;
    let asked: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let vectors = shard_queries(store, &inputs.questions, &asked, &inputs.corpus, &config.model, config.query_len, &config.question).await?;
    let queries = Queries::new(&vectors);
    let v = &inputs.phrases;
    let ds = open_dataset(store, &v.dataset).await?;
    let ds = ds.checkout_version(v.version).await.with_context(|| format!("{} has no version {}", v.dataset, v.version))?;
    let fragments = inputs
        .fragments
        .iter()
        .map(|&id| ds.get_fragment(id as usize).map(|f| f.metadata().clone()).with_context(|| format!("{}@{} has no fragment {id}", v.dataset, v.version)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (found, stats): (Vec<Candidates>, _) = scan(&ds, Some(fragments), &queries, config.hits, false, BATCH_ROWS).await?;
    store.put_json(&config.output, &found).await?;
    crate::fault::pause_after_write("scan").await;
    let seconds = started.elapsed().as_secs_f64();
    info!(encoder = config.encoder, shard = inputs.questions.shard, part = inputs.part(), rows = stats.rows, seconds, "scanned");
    Ok(ScanOutcome { questions: questions.len() as u64, rows: stats.rows, seconds, output: config.output.clone() })
}
