//! What the store's job records say about many jobs at once. A stage of a few jobs asks about each
//! (a few requests per job, 32 at a time); a stage of thousands lists `jobs/` once (a request per
//! thousand objects on S3), since at 10^5 jobs even concurrent requests per job take minutes for every
//! look (docs/scale.md).

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use phrasesweep_schemas::record;
use phrasesweep_workers::io::store::Store;
use std::collections::HashMap;

/// Up to this many jobs, asking about each costs less than listing a store that may hold many more.
pub const PROBE_AT_MOST: usize = 1_000;

/// Requests in flight when asking about each job.
const PROBES_IN_FLIGHT: usize = 32;

/// The records one job has on the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobFiles {
    pub done: bool,
    pub failed: bool,
    pub dead: bool,
    /// Known from a listing only (false after a probe).
    pub started: bool,
    /// Entries in its attempt history; known from a listing only (0 after a probe).
    pub attempts: u32,
}

/// Jobs' records, by job id.
#[derive(Debug, Default)]
pub struct JobRecords(HashMap<String, JobFiles>);

impl JobRecords {
    /// The records of `ids`: probed one by one when they are few, else from a listing.
    pub async fn of(store: &Store, ids: &[&str]) -> Result<Self> {
        if ids.len() > PROBE_AT_MOST { Self::list(store).await } else { Self::probe(store, ids).await }
    }

    /// Every job's records, from one listing of the store's `jobs/`.
    pub async fn list(store: &Store) -> Result<Self> {
        let mut jobs: HashMap<String, JobFiles> = HashMap::new();
        for path in store.list(record::JOBS_DIR).await? {
            let Some((id, file)) = path.strip_prefix(record::JOBS_DIR).and_then(|p| p.split_once('/')) else { continue };
            let files = jobs.entry(id.to_string()).or_default();
            match file {
                "done.json" => files.done = true,
                "failed.json" => files.failed = true,
                "dead.json" => files.dead = true,
                "started.json" => files.started = true,
                f if f.starts_with("attempts/") => files.attempts += 1,
                _ => {}
            }
        }
        Ok(Self(jobs))
    }

    /// Whether each of `ids` is done, failed or dead-lettered, asking about each.
    pub async fn probe(store: &Store, ids: &[&str]) -> Result<Self> {
        let jobs = futures::stream::iter(ids)
            .map(|&id| async move {
                let done = store.exists(&record::done_path(id)).await?;
                let (failed, dead) = if done {
                    (false, false)
                } else {
                    (store.exists(&record::failed_path(id)).await?, store.exists(&record::dead_path(id)).await?)
                };
                anyhow::Ok((id.to_string(), JobFiles { done, failed, dead, ..Default::default() }))
            })
            .buffer_unordered(PROBES_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Self(jobs))
    }

    /// Job `id`'s records (none at all for a job never taken).
    pub fn get(&self, id: &str) -> JobFiles {
        self.0.get(id).copied().unwrap_or_default()
    }
}
