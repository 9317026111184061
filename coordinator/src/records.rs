//! What the store's job records say about every job at once, from one listing of `jobs/` (a request per
//! thousand objects on S3) rather than requests per job: at 10^5 jobs, a request or three per job is
//! minutes of a coordinator's time for every look (docs/scale.md).

use anyhow::Result;
use phrasesweep_schemas::record;
use phrasesweep_workers::io::store::Store;
use std::collections::HashMap;

/// The records one job has on the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobFiles {
    pub done: bool,
    pub failed: bool,
    pub dead: bool,
    pub started: bool,
    /// Entries in its attempt history.
    pub attempts: u32,
}

/// Every job's records, by job id.
#[derive(Debug, Default)]
pub struct JobRecords(HashMap<String, JobFiles>);

impl JobRecords {
    /// Lists the store's job records.
    pub async fn read(store: &Store) -> Result<Self> {
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

    /// Job `id`'s records (none at all for a job never taken).
    pub fn get(&self, id: &str) -> JobFiles {
        self.0.get(id).copied().unwrap_or_default()
    }
}
