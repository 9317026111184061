//! `phrasesweep status`: what each stage's jobs have done, read from the records on the store.

use crate::pipeline::{self, Visitor};
use crate::plan::Stage;
use anyhow::Result;
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::record::{self, StageCommit};
use phrasesweep_workers::io::store::Store;
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
            "{:<14} {:>5} {:>5} {:>8} {:>7} {:>14} {:>8}  {committed}",
            self.stage, self.jobs, self.done, self.running, self.failed, self.dead_lettered, self.waiting
        )
    }
}

pub const HEADER: &str = "stage           jobs  done  running  failed  dead-lettered  waiting  committed";

/// Counts each stage's jobs by their records; the walk goes on past a stage committed for exactly its jobs.
struct Counter<'a> {
    store: &'a Store,
    rows: Vec<StageStatus>,
}

impl Visitor for Counter<'_> {
    async fn visit(&mut self, stage: &Stage) -> Result<Option<StageCommit>> {
        let store = self.store;
        let mut s = StageStatus { stage: stage.name(), jobs: stage.jobs.len(), ..Default::default() };
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
        let commit = store.get_json::<StageCommit>(&record::stage_path(&stage.name())).await?.filter(|c| c.jobs_hash == stage.jobs_hash());
        s.committed = commit.as_ref().map(|c| c.version);
        self.rows.push(s);
        Ok(commit)
    }
}

/// Every stage the config asks for, as far as committed stages let it be planned (a stage is planned from
/// the committed outputs of the ones before it).
pub async fn stage_status(config: &ExperimentConfig) -> Result<Vec<StageStatus>> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let mut counter = Counter { store: &store, rows: Vec::new() };
    pipeline::walk(&store, config, &mut counter).await?;
    Ok(counter.rows)
}
