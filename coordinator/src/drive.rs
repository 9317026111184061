//! The control loop of a run: plan a stage, publish what is not done, follow events (and the store, the
//! source of truth) until every job is recorded, then commit the stage's output once.

use crate::plan::{self, CORPUS_DATASET, Stage};
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use phrasesweep_schemas::record::{self, Done, Failed, StageCommit, now_unix};
use phrasesweep_schemas::tables::corpus_schema;
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope, JobOutcome};
use phrasesweep_workers::jobs::ingest::IngestOutput;
use phrasesweep_workers::lance_io::commit_fragments;
use phrasesweep_workers::queue::JobQueue;
use phrasesweep_workers::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tracing::{info, warn};

/// How often the store is checked for records whose events never arrived.
const POLL_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Jobs published and executed by this run.
    pub executed: usize,
    /// Jobs skipped because their records say they are done.
    pub skipped: usize,
    /// Stages committed by this run.
    pub committed: Vec<String>,
}

/// Runs every stage of `config` over `queue`. Workers are someone else's business (embedded tasks or
/// worker processes).
pub async fn drive<Q: JobQueue>(queue: &Q, store: &Store, config: &ExperimentConfig) -> Result<RunReport> {
    let mut report = RunReport::default();
    let stage = plan::ingest_stage(store, config).await?;
    run_stage(queue, store, config, &stage, &mut report).await?;
    if report.executed == 0 && report.committed.is_empty() {
        info!("nothing to do: all {} jobs are already done and committed", report.skipped);
    }
    Ok(report)
}

async fn run_stage<Q: JobQueue>(
    queue: &Q,
    store: &Store,
    config: &ExperimentConfig,
    stage: &Stage,
    report: &mut RunReport,
) -> Result<()> {
    let jobs_hash = stage.jobs_hash();
    if let Some(commit) = store.get_json::<StageCommit>(&record::stage_path(stage.name)).await? {
        if commit.jobs_hash == jobs_hash {
            info!(stage = stage.name, version = commit.version, "stage already committed");
            report.skipped += stage.jobs.len();
            return Ok(());
        }
        bail!(
            "{} holds a {} stage committed from other inputs ({} jobs); use a new store.uri for a new corpus",
            store.root_uri(),
            stage.name,
            commit.jobs
        );
    }

    let mut pending: BTreeMap<String, &JobEnvelope> = BTreeMap::new();
    for job in &stage.jobs {
        if store.exists(&record::done_path(&job.id.0)).await? {
            report.skipped += 1;
        } else {
            pending.insert(job.id.0.clone(), job);
        }
    }
    info!(stage = stage.name, jobs = stage.jobs.len(), to_run = pending.len(), "planned stage");
    for job in pending.values() {
        queue.publish_job(job).await.with_context(|| format!("cannot publish job {}", job.id.short()))?;
    }
    let mut progress = Progress::new(stage.name, stage.jobs.len() as u64);
    for _ in 0..report.skipped {
        progress.inc("already done");
    }
    let events = plan::events_queue(config);
    let mut poll = tokio::time::interval(POLL_EVERY);
    while !pending.is_empty() {
        tokio::select! {
            event = queue.next_event(&events) => {
                let event = event?;
                match event.outcome {
                    JobOutcome::Started => {}
                    JobOutcome::Done { summary } => {
                        if pending.contains_key(&event.job_id.0)
                            && store.exists(&record::done_path(&event.job_id.0)).await?
                        {
                            pending.remove(&event.job_id.0);
                            report.executed += 1;
                            progress.inc(&summary);
                        }
                    }
                    JobOutcome::Failed { error } => {
                        if pending.contains_key(&event.job_id.0) {
                            progress.finish();
                            bail!("{} failed; nothing was committed. {error}", stage.name);
                        }
                    }
                }
            }
            _ = poll.tick() => {
                collect_dead_letters(queue).await?;
                let ids: Vec<String> = pending.keys().cloned().collect();
                for id in ids {
                    if store.exists(&record::done_path(&id)).await? {
                        pending.remove(&id);
                        report.executed += 1;
                        progress.inc("recorded");
                    } else if let Some(f) = store.get_json::<Failed>(&record::failed_path(&id)).await? {
                        progress.finish();
                        bail!("{} failed; nothing was committed. {}", stage.name, f.error);
                    } else if let Some(f) = store.get_json::<Failed>(&record::dead_path(&id)).await? {
                        progress.finish();
                        bail!("{} failed; nothing was committed. Job {} was dead-lettered: {}", stage.name, &id[..12], f.error);
                    }
                }
            }
        }
    }
    progress.finish();
    commit_ingest(store, stage, &jobs_hash).await?;
    report.committed.push(stage.name.to_string());
    Ok(())
}

/// Records each dead-lettered job on its store, so `status` and the run that owns it can see it.
pub async fn collect_dead_letters<Q: JobQueue>(queue: &Q) -> Result<()> {
    while let Some(body) = queue.next_dead_letter().await? {
        let Ok(job) = serde_json::from_slice::<JobEnvelope>(&body) else {
            warn!("dropping an unreadable dead letter");
            continue;
        };
        let store = Store::from_location(&job.store)?;
        let path = record::failed_path(&job.id.0);
        let error = match store.get_json::<Failed>(&path).await? {
            Some(f) => f.error,
            None => "delivered too many times without finishing (its worker kept dying)".to_string(),
        };
        warn!(job = job.id.short(), "job was dead-lettered: {error}");
        let dead = Failed { worker: "broker".into(), error, at_unix: now_unix() };
        store.put_json(&record::dead_path(&job.id.0), &dead).await?;
    }
    Ok(())
}

async fn commit_ingest(store: &Store, stage: &Stage, jobs_hash: &str) -> Result<()> {
    let mut fragments = Vec::new();
    for job in &stage.jobs {
        let done: Done = store
            .get_json(&record::done_path(&job.id.0))
            .await?
            .with_context(|| format!("the record of job {} vanished", job.id.short()))?;
        let out: IngestOutput = serde_json::from_value(done.output)
            .with_context(|| format!("job {} left an unreadable ingest record", job.id.short()))?;
        fragments.extend(out.fragments.0);
    }
    let properties = HashMap::from([
        ("phrasesweep.stage".to_string(), stage.name.to_string()),
        ("phrasesweep.jobs_hash".to_string(), jobs_hash.to_string()),
    ]);
    let ds = commit_fragments(store, CORPUS_DATASET, &corpus_schema(), fragments, properties).await?;
    let rows = ds.count_rows(None).await? as u64;
    let commit = StageCommit {
        stage: stage.name.into(),
        jobs_hash: jobs_hash.into(),
        jobs: stage.jobs.len(),
        dataset: store.dataset_uri(CORPUS_DATASET),
        version: ds.version().version,
        rows,
        at_unix: now_unix(),
    };
    store.put_json(&record::stage_path(stage.name), &commit).await?;
    info!(stage = stage.name, version = commit.version, rows, "committed stage");
    Ok(())
}
