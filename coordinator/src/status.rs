//! `phrasesweep status`: what each stage's jobs have done, read from the records on the store.

use crate::plan;
use anyhow::{Context, Result};
use phrasesweep_workers::jobs::train::{QsftOutput, TrainOutput};
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
            "{:<14} {:>5} {:>5} {:>8} {:>7} {:>14} {:>8}  {committed}",
            self.stage, self.jobs, self.done, self.running, self.failed, self.dead_lettered, self.waiting
        )
    }
}

pub const HEADER: &str = "stage           jobs  done  running  failed  dead-lettered  waiting  committed";

/// Every stage the config asks for, as far as committed stages let it be planned (a stage is planned from
/// the committed output of the one before).
pub async fn stage_status(config: &ExperimentConfig) -> Result<Vec<StageStatus>> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let mut out = Vec::new();
    let ingest = plan::ingest_stage(&store, config).await?;
    let Some(corpus) = count(&store, &ingest, &mut out).await? else { return Ok(out) };
    let mut teacher = None;
    if let Some(stage) = plan::reader_stage(&store, config).await? {
        if count(&store, &stage, &mut out).await?.is_none() {
            return Ok(out);
        }
        teacher = output::<TrainOutput>(&store, &stage).await?.remove(0).checkpoints.remove("reader");
    }
    let mut trained = None;
    if let Some(stage) = plan::phrase_stage(&store, config, teacher.as_ref()).await? {
        if count(&store, &stage, &mut out).await?.is_none() {
            return Ok(out);
        }
        trained = Some(output::<TrainOutput>(&store, &stage).await?.remove(0).checkpoints);
    }
    if !config.encodes() {
        return Ok(out);
    }
    let model = plan::phrase_model(config, trained.as_ref().and_then(|t| t.get("phrase")))?;
    let phrases = count(&store, &plan::encode_stage(&store, config, corpus, &model).await?, &mut out).await?;
    let Some(phrases) = phrases else { return Ok(out) };
    let Some(indexed) = count(&store, &plan::index_stage(&store, config, phrases), &mut out).await? else { return Ok(out) };
    let mut encoders = plan::query_encoders(config, trained.as_ref().and_then(|t| t.get("query")))?;
    let mut runs = plan::QsftRuns::new(config, &encoders)?;
    for epoch in 1..=plan::QsftRuns::epochs(config) {
        let stage = plan::qsft_stage(&store, config, epoch, &runs.starts, teacher.as_ref(), corpus, indexed).await?;
        if count(&store, &stage, &mut out).await?.is_none() {
            return Ok(out);
        }
        for o in output::<QsftOutput>(&store, &stage).await? {
            runs.record(&o);
        }
    }
    runs.into_encoders(&mut encoders);
    if config.questions.is_none() || config.retrieval.is_empty() {
        return Ok(out);
    }
    let retrieve = plan::retrieve_stage(&store, config, corpus, indexed, &encoders).await?;
    if count(&store, &retrieve, &mut out).await?.is_some() {
        count(&store, &plan::score_stage(&store, config, &retrieve).await?, &mut out).await?;
    }
    Ok(out)
}

/// The recorded outputs of a committed stage's jobs.
async fn output<T: serde::de::DeserializeOwned>(store: &Store, stage: &plan::Stage) -> Result<Vec<T>> {
    let mut v = Vec::new();
    for job in &stage.jobs {
        let done: record::Done = store.get_json(&record::done_path(&job.id.0)).await?.context("a done record vanished")?;
        v.push(serde_json::from_value(done.output)?);
    }
    Ok(v)
}

/// Adds a stage's row; returns its committed version when it is committed for exactly these jobs.
async fn count(store: &Store, stage: &plan::Stage, out: &mut Vec<StageStatus>) -> Result<Option<u64>> {
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
    if let Some(c) = store.get_json::<StageCommit>(&record::stage_path(&stage.name())).await? {
        if c.jobs_hash == stage.jobs_hash() {
            s.committed = Some(c.version);
        }
    }
    let committed = s.committed;
    out.push(s);
    Ok(committed)
}
