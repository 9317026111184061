//! Turning an experiment config into jobs. Ids are content hashes, so planning the same config twice
//! gives the same jobs, and the records on the store say which are already done.

use anyhow::Result;
use phrasesweep_schemas::job::IngestConfig;
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope, JobSpec};
use phrasesweep_workers::corpus::plan_shards;
use phrasesweep_workers::store::Store;
use sha2::{Digest, Sha256};

pub const CORPUS_DATASET: &str = "corpus.lance";

/// A stage: jobs whose outputs are committed together.
pub struct Stage {
    pub name: &'static str,
    pub jobs: Vec<JobEnvelope>,
}

impl Stage {
    /// sha256 over the sorted job ids: names exactly this set of work.
    pub fn jobs_hash(&self) -> String {
        let mut ids: Vec<&str> = self.jobs.iter().map(|j| j.id.0.as_str()).collect();
        ids.sort_unstable();
        hex::encode(Sha256::digest(ids.join("\n").as_bytes()))
    }
}

pub fn events_queue(config: &ExperimentConfig) -> String {
    format!("phrasesweep.events.{}", config.name)
}

pub async fn ingest_stage(store: &Store, config: &ExperimentConfig) -> Result<Stage> {
    let shards = plan_shards(store, &config.corpus.path, config.corpus.shard_docs).await?;
    let reply_to = events_queue(config);
    let jobs = shards
        .into_iter()
        .map(|inputs| {
            let spec = JobSpec::Ingest { inputs, config: IngestConfig { dataset: CORPUS_DATASET.into() } };
            JobEnvelope::new(store.location().clone(), spec, reply_to.clone())
        })
        .collect();
    Ok(Stage { name: "ingest", jobs })
}
