//! `phrasesweep status`: what each stage's jobs have done, read from the records on the store.

use crate::plan;
use anyhow::Result;
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::record::{self, StageCommit};
use phrasesweep_workers::store::Store;
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StageStatus {
    pub stage: String,
    pub jobs: usize,
    pub done: usize,
    pub running: usize,
    pub failed: usize,
    pub dead_lettered: usize,
    pub waiting: usize,
    pub committed: Option<u64>,
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let committed = self.committed.map_or("no".to_string(), |v| format!("version {v}"));
        write!(
            f,
            "{:<8} {:>5} {:>5} {:>8} {:>7} {:>14} {:>8}  {committed}",
            self.stage, self.jobs, self.done, self.running, self.failed, self.dead_lettered, self.waiting
        )
    }
}

pub const HEADER: &str = "stage     jobs  done  running  failed  dead-lettered  waiting  committed";

/// Every stage the config asks for, as far as committed stages let it be planned (a stage is planned from
/// the committed output of the one before).
pub async fn stage_status(config: &ExperimentConfig) -> Result<Vec<StageStatus>> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let mut out = Vec::new();
    let ingest = plan::ingest_stage(&store, config).await?;
    let corpus = count(&store, &ingest, &mut out).await?;
    let (Some(corpus), true) = (corpus, config.encodes()) else { return Ok(out) };
    let phrases = count(&store, &plan::encode_stage(&store, config, corpus).await?, &mut out).await?;
    let Some(phrases) = phrases else { return Ok(out) };
    let indexed = count(&store, &plan::index_stage(&store, config, phrases), &mut out).await?;
    let (Some(indexed), true) = (indexed, config.questions.is_some() && !config.retrieval.is_empty()) else { return Ok(out) };
    let retrieve = plan::retrieve_stage(&store, config, corpus, indexed).await?;
    if count(&store, &retrieve, &mut out).await?.is_some() {
        count(&store, &plan::score_stage(&store, config, &retrieve).await?, &mut out).await?;
    }
    Ok(out)
}

/// Adds a stage's row; returns its committed version when it is committed for exactly these jobs.
async fn count(store: &Store, stage: &plan::Stage, out: &mut Vec<StageStatus>) -> Result<Option<u64>> {
    let mut s = StageStatus { stage: stage.name().into(), jobs: stage.jobs.len(), ..Default::default() };
    for job in &stage.jobs {
        let id = &job.id.0;
        if store.exists(&record::done_path(id)).await? {
            s.done += 1;
        } else if store.exists(&record::dead_path(id)).await? {
            s.dead_lettered += 1;
        } else if store.exists(&record::failed_path(id)).await? {
            s.failed += 1;
        } else if store.exists(&record::started_path(id)).await? {
            s.running += 1;
        } else {
            s.waiting += 1;
        }
    }
    if let Some(c) = store.get_json::<StageCommit>(&record::stage_path(stage.name())).await? {
        if c.jobs_hash == stage.jobs_hash() {
            s.committed = Some(c.version);
        }
    }
    let committed = s.committed;
    out.push(s);
    Ok(committed)
}
