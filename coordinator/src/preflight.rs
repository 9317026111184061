//! The small inputs of a run, read whole before anything runs: a bad line in the questions or a
//! training file fails the run at once, with its file, line and field, rather than hours later in
//! the job that reads it. (The corpus is checked shard by shard by its ingest jobs, and across shards
//! before its commit.)

use anyhow::Result;
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_workers::io::store::{Store, read_input};
use phrasesweep_workers::text::questions::parse_questions;
use phrasesweep_workers::train::rc::{parse_nq_gold, parse_squad};

pub async fn check_inputs(store: &Store, config: &ExperimentConfig) -> Result<()> {
    if let Some(q) = &config.questions {
        parse_questions(&q.path, 1, &read_input(store, &q.path).await?)?;
    }
    let Some(t) = &config.train else { return Ok(()) };
    for path in [&t.squad_train, &t.squad_dev].into_iter().flatten() {
        parse_squad(path, &read_input(store, path).await?)?;
    }
    if let Some(path) = &t.nq_train {
        parse_nq_gold(path, &read_input(store, path).await?)?;
    }
    for path in [&t.qsft_train, &t.qsft_dev].into_iter().flatten() {
        parse_questions(path, 1, &read_input(store, path).await?)?;
    }
    Ok(())
}
