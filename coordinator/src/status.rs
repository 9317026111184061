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

pub async fn stage_status(config: &ExperimentConfig) -> Result<Vec<StageStatus>> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let stage = plan::ingest_stage(&store, config).await?;
    let mut s = StageStatus { stage: stage.name.into(), jobs: stage.jobs.len(), ..Default::default() };
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
    if let Some(c) = store.get_json::<StageCommit>(&record::stage_path(stage.name)).await? {
        if c.jobs_hash == stage.jobs_hash() {
            s.committed = Some(c.version);
        }
    }
    Ok(vec![s])
}
