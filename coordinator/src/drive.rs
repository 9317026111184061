//! The control loop of a run: plan a stage, publish what is not done, follow events (and the store, the
//! source of truth) until every job is recorded, then commit the stage's output once.

use crate::history;
use crate::ledger;
use crate::lease::LeaseGuard;
use crate::pipeline::{self, Visitor, read_outcomes};
use crate::plan::{self, Stage};
use crate::progress::Progress;
use crate::records::JobRecords;
use anyhow::{Context, Result, bail};
use phrasesweep_schemas::record::{self, CORPUS_DATASET, Done, Failed, METRICS_FILE, PHRASES_DATASET, StageCommit, StageKind};
use phrasesweep_workers::io::store::now_unix;
use phrasesweep_schemas::tables::{corpus_schema, metrics_schema, phrases_schema};
use phrasesweep_schemas::sweep::Point;
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope, JobOutcome, JobSpec};
use phrasesweep_schemas::outcome::{EncodeOutcome, IndexOutcome, IngestOutcome, Metrics, ReadOutcome, RetrieveOutcome, ScanOutcome};
use phrasesweep_workers::eval::table::metrics_batch;
use phrasesweep_workers::text::corpus::{repeated_id, repeated_id_error};
use phrasesweep_workers::io::lance::commit_fragments;
use phrasesweep_workers::io::parquet::write_parquet;
use phrasesweep_workers::io::queue::JobQueue;
use phrasesweep_workers::io::store::Store;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tracing::{info, warn};

/// How often the store is checked for records whose events never arrived.
const POLL_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunReport {
    /// Jobs published and executed by this run.
    pub executed: usize,
    /// Jobs skipped because their records say they are done.
    pub skipped: usize,
    /// Stages committed by this run.
    pub committed: Vec<String>,
    /// The metrics of every retrieval (empty without questions).
    pub metrics: Vec<Metrics>,
    /// Recall@100 of the index's start hits against exact search, over the run's questions.
    pub recall_at_100: Option<f64>,
    /// One line per training job: what it trained and how it scores before and after.
    pub training: Vec<String>,
    /// The workers that ran this run's jobs.
    pub workers: BTreeSet<String>,
    /// Per stage, the seconds this run's jobs of it took.
    pub stage_seconds: BTreeMap<String, f64>,
    /// Per retrieval, its per-question table on the store.
    pub per_question: BTreeMap<String, String>,
    /// The models and inputs of every stage the run walked.
    pub provenance: ledger::Provenance,
    /// Per retrieval (with `[reader]`): the reader's answers at each budget, summed over questions.
    pub reading: Vec<ReadOutcome>,
}

/// Executes stages: publishes a stage's pending jobs, follows them to the end, and commits the stage.
struct Driver<'a, Q> {
    queue: &'a Q,
    store: &'a Store,
    config: &'a ExperimentConfig,
    lease: &'a LeaseGuard,
    report: &'a mut RunReport,
}

impl<Q: JobQueue> Visitor for Driver<'_, Q> {
    async fn visit(&mut self, stage: &Stage) -> Result<Option<StageCommit>> {
        self.report.provenance.add(stage);
        run_stage(self.queue, self.store, self.config, self.lease, stage, self.report).await.map(Some)
    }
}

/// Runs every stage of a sweep point's config over `queue`, holding the store's lease throughout, and
/// adds the run to the store's ledger. Workers are someone else's business (embedded tasks or worker
/// processes).
pub async fn drive<Q: JobQueue>(queue: &Q, store: &Store, point: &Point) -> Result<RunReport> {
    let config = &point.config;
    let lease = LeaseGuard::acquire(store, &config.name, config.coordinator.lease_s).await?;
    let started_unix = now_unix();
    let mut report = RunReport::default();
    // Stopped by Ctrl-C or SIGTERM, the coordinator still frees the store for the next one.
    let result = tokio::select! {
        r = drive_stages(queue, store, config, &lease, &mut report) => r,
        signal = stop_signal() => Err(Stopped(signal).into()),
    };
    // The ledger keeps every run, failed ones too, while the lease still holds.
    let run = ledger::RunRecord {
        run_id: ledger::new_run_id(started_unix),
        point: point.clone(),
        status: match &result {
            Ok(()) => "done".into(),
            Err(e) => format!("failed: {e:#}"),
        },
        started_unix,
        ended_unix: now_unix(),
        executed: report.executed,
        skipped: report.skipped,
        workers: report.workers.clone(),
        stage_seconds: report.stage_seconds.clone(),
        provenance: report.provenance.clone(),
    };
    let recorded = ledger::append(store, &run, &report.metrics, &report.per_question, &report.reading).await;
    match &recorded {
        Ok(()) => info!(run = %run.run_id, "recorded in the run ledger"),
        Err(e) => warn!("cannot add the run to the store's ledger: {e:#}"),
    }
    if let Err(e) = lease.release().await {
        warn!("cannot release the store's lease (it expires by itself): {e:#}");
    }
    // A run that failed says why; one that succeeded fails if its row is not in the ledger.
    result?;
    recorded.context("the run finished, but its row could not be added to the store's run ledger")?;
    Ok(report)
}

async fn drive_stages<Q: JobQueue>(queue: &Q, store: &Store, config: &ExperimentConfig, lease: &LeaseGuard, report: &mut RunReport) -> Result<()> {
    crate::preflight::check_inputs(store, config).await?;
    let walked = pipeline::walk(store, config, &mut Driver { queue, store, config, lease, report }).await?;
    if let Some(out) = &walked.reader {
        report.training.push(format!("reader: SQuAD dev {} before, {} after", out.before, out.after));
    }
    if let Some(out) = &walked.phrase {
        report.training.push(format!("phrase encoder: SQuAD dev {} before, {} after", out.before, out.after));
    }
    for out in &walked.qsft {
        if let Some(b) = &out.dev_before {
            report.training.push(format!("qsft {}: before, dev EM {:.3}, sentence mAR {:.3}", out.run, b.em, b.sentence_mar));
        }
        let loss = match (out.loss_first, out.loss_last) {
            (Some(a), Some(b)) => format!("loss {a:.3} → {b:.3}"),
            _ => "no question had a target".into(),
        };
        report.training.push(format!(
            "qsft {} epoch {}: {loss}, dev EM {:.3}, sentence mAR {:.3} ({:.0} s per 1,000 questions)",
            out.run, out.epoch, out.dev.em, out.dev.sentence_mar, out.seconds_per_1000_questions
        ));
    }
    // The mean of the recall the retrieve jobs measured (each over the same size of sample).
    let recalls: Vec<f64> = walked.retrieve.iter().filter_map(|r| r.recall_at_100).collect();
    report.recall_at_100 = (!recalls.is_empty()).then(|| recalls.iter().sum::<f64>() / recalls.len() as f64);
    if let Some((score, metrics)) = walked.score {
        lease.check().await?;
        report.per_question = score
            .jobs
            .iter()
            .filter_map(|j| match &j.spec {
                JobSpec::Score { config, .. } => Some((config.retrieval.name.clone(), config.per_question.clone())),
                _ => None,
            })
            .collect();
        write_metrics(store, config, &score, &metrics, report.recall_at_100).await?;
        report.metrics = metrics;
    }
    report.reading = config
        .retrieval
        .iter()
        .filter_map(|r| ReadOutcome::merged(&walked.read.iter().filter(|o| o.retrieval == r.name).cloned().collect::<Vec<_>>()))
        .collect();
    if report.executed == 0 && report.committed.is_empty() {
        info!("nothing to do: all {} jobs are already done and committed", report.skipped);
    }
    Ok(())
}

/// A run stopped by a signal (a sweep stops with it, rather than go on to its next point).
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0}; nothing of the stage in progress was committed, and a rerun resumes it")]
pub struct Stopped(&'static str);

/// Waits for SIGINT or SIGTERM and names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The metrics file's key for the retrieve outputs each retrieval was scored on.
pub const RESULT_FILES_KEY: &str = "phrasesweep.result_files";

/// Each retrieval's retrieve outputs, as its score job read them.
fn result_files(score: &Stage) -> BTreeMap<String, Vec<String>> {
    score
        .jobs
        .iter()
        .filter_map(|j| match &j.spec {
            JobSpec::Score { inputs, config } => Some((config.retrieval.name.clone(), inputs.results.clone())),
            _ => None,
        })
        .collect()
}

/// Writes the metrics of every retrieval of this run to `metrics.parquet` at the store root, with the
/// config (secrets are never serialised) as provenance.
async fn write_metrics(store: &Store, config: &ExperimentConfig, score: &Stage, rows: &[Metrics], recall: Option<f64>) -> Result<()> {
    let provenance = vec![
        ("phrasesweep.run".to_string(), config.name.clone()),
        ("phrasesweep.config".to_string(), toml::to_string(config).unwrap_or_default()),
        ("phrasesweep.score_jobs".to_string(), score.jobs.iter().map(|j| j.id.0.clone()).collect::<Vec<_>>().join(",")),
        (RESULT_FILES_KEY.to_string(), serde_json::to_string(&result_files(score)).unwrap_or_default()),
        ("phrasesweep.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("phrasesweep.index_recall_at_100".to_string(), recall.map(|r| format!("{r:.4}")).unwrap_or_default()),
        ("phrasesweep.at_unix".to_string(), now_unix().to_string()),
    ];
    write_parquet(store, METRICS_FILE, metrics_schema(), &[metrics_batch(rows)?], &provenance).await
}

async fn run_stage<Q: JobQueue>(
    queue: &Q,
    store: &Store,
    config: &ExperimentConfig,
    lease: &LeaseGuard,
    stage: &Stage,
    report: &mut RunReport,
) -> Result<StageCommit> {
    let jobs_hash = stage.jobs_hash();
    if let Some(commit) = pipeline::committed(store, stage).await? {
        info!(stage = %stage.name(), version = commit.version, "stage already committed");
        report.skipped += stage.jobs.len();
        return Ok(commit);
    }
    // The jobs of an earlier commit that this plan still holds in full: the stage grows by the rest.
    let mut committed = Vec::new();
    if let Some(commit) = store.get_json::<StageCommit>(&record::stage_path(&stage.name())).await? {
        let planned: std::collections::HashSet<&str> = stage.jobs.iter().map(|j| j.id.0.as_str()).collect();
        let grows = !commit.job_ids.is_empty() && commit.job_ids.iter().all(|id| planned.contains(id.as_str()));
        if grows {
            info!(stage = %stage.name(), committed = commit.job_ids.len(), planned = stage.jobs.len(), "stage grows");
            committed = commit.job_ids;
        } else if stage.output == StageKind::Corpus {
            // Later stages follow their inputs (a new encoder, another retrieval); the corpus of a store
            // only grows.
            bail!(
                "{} holds a {} stage committed from other inputs ({} jobs): the corpus file changed before byte {}. \
                 A store's corpus can only grow by documents appended to the end of the file; use a new store.uri for another corpus",
                store.root_uri(),
                stage.name(),
                commit.jobs,
                commit.corpus_shard_ends().last().copied().unwrap_or(0)
            );
        }
    }

    // Dead letters of an earlier run are recorded first, so that clearing below sees them.
    collect_dead_letters(queue).await?;
    let ids: Vec<&str> = stage.jobs.iter().map(|j| j.id.0.as_str()).collect();
    let records = JobRecords::of(store, &ids).await?;
    let mut pending: BTreeMap<String, &JobEnvelope> = BTreeMap::new();
    let mut done = 0;
    for job in &stage.jobs {
        let files = records.get(&job.id.0);
        if files.done {
            done += 1;
        } else {
            if files.failed || files.dead {
                history::clear_failure(store, &job.id.0).await?;
            }
            pending.insert(job.id.0.clone(), job);
        }
    }
    drop(records);
    info!(stage = %stage.name(), jobs = stage.jobs.len(), to_run = pending.len(), "planned stage");
    queue.publish_jobs(&pending.values().copied().collect::<Vec<_>>()).await.context("cannot publish the stage's jobs")?;
    let mut progress = Progress::new(&stage.name(), stage.jobs.len() as u64);
    report.skipped += done;
    progress.already_done(done as u64);
    let events = plan::events_queue(config);
    let mut next_look = tokio::time::Instant::now() + POLL_EVERY;
    let mut failures = Vec::new();
    // Jobs a Done event took off the list, confirmed on the store before the stage commits.
    let mut by_event: Vec<&JobEnvelope> = Vec::new();
    // Jobs this run saw done, for the ledger.
    let mut executed: Vec<&JobEnvelope> = Vec::new();
    loop {
        while !pending.is_empty() {
            tokio::select! {
                event = queue.next_event(&events) => {
                    let event = event?;
                    match event.outcome {
                        JobOutcome::Started => {}
                        // A worker sends Done once the record is written: believed now, confirmed on the
                        // store for all such jobs at once before the commit.
                        JobOutcome::Done { summary } => {
                            if let Some(job) = pending.remove(&event.job_id.0) {
                                by_event.push(job);
                                report.executed += 1;
                                progress.inc(&summary);
                            }
                        }
                        JobOutcome::Failed { error } => {
                            // The event queue outlives runs: believe a failure its record still shows
                            // (a rerun cleared the records of the failures it retries).
                            if pending.contains_key(&event.job_id.0) && store.exists(&record::failed_path(&event.job_id.0)).await? {
                                pending.remove(&event.job_id.0);
                                failures.push(error);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_look) => {
                    // The store, for records whose events never arrived.
                    let looked = tokio::time::Instant::now();
                    collect_dead_letters(queue).await?;
                    let ids: Vec<String> = pending.keys().cloned().collect();
                    let records = JobRecords::of(store, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await?;
                    for id in ids {
                        let files = records.get(&id);
                        if files.done {
                            executed.extend(pending.remove(&id));
                            report.executed += 1;
                            progress.inc("recorded");
                        } else if files.failed || files.dead {
                            let (path, dead) = if files.failed { (record::failed_path(&id), false) } else { (record::dead_path(&id), true) };
                            if let Some(f) = store.get_json::<Failed>(&path).await? {
                                pending.remove(&id);
                                failures.push(if dead { format!("job {} was dead-lettered: {}", &id[..12], f.error) } else { f.error });
                            }
                        }
                    }
                    // A store so big that a look takes long is looked at less often.
                    next_look = tokio::time::Instant::now() + POLL_EVERY.max(looked.elapsed() * 10);
                }
            }
        }
        // An event left in the queue by an earlier run over a store since emptied names a job with no
        // record: it goes back on the list, and to the queue.
        let ids: Vec<&str> = by_event.iter().map(|j| j.id.0.as_str()).collect();
        let records = JobRecords::of(store, &ids).await?;
        let (confirmed, unrecorded): (Vec<&JobEnvelope>, Vec<&JobEnvelope>) = by_event.drain(..).partition(|j| records.get(&j.id.0).done);
        executed.extend(confirmed);
        if unrecorded.is_empty() {
            break;
        }
        warn!(stage = %stage.name(), jobs = unrecorded.len(), "done events without a record on the store (left from an earlier run); running those jobs again");
        report.executed -= unrecorded.len();
        queue.publish_jobs(&unrecorded).await.context("cannot publish the stage's jobs")?;
        pending.extend(unrecorded.into_iter().map(|j| (j.id.0.clone(), j)));
    }
    progress.finish();
    if let Err(e) = account(store, &stage.name(), &executed, report).await {
        warn!(stage = %stage.name(), "cannot read the stage's job records for the run ledger: {e:#}");
    }
    // The stage's other jobs ran to the end, so a rerun redoes only the failed ones.
    if !failures.is_empty() {
        let failed = failures.len();
        failures.sort();
        failures.dedup();
        bail!("{} failed ({failed} of {} jobs); nothing was committed. {}", stage.name(), stage.jobs.len(), failures.join("; "));
    }
    if stage.output == StageKind::Corpus {
        check_unique_documents(store, config, stage).await?;
    }
    lease.check().await?;
    let commit = commit_stage(store, stage, &jobs_hash, &committed).await?;
    report.committed.push(stage.name());
    drop_spent_optimisers(store, stage).await?;
    Ok(commit)
}

/// Adds the workers and seconds of the stage's jobs this run executed to the report, from their
/// records (read 32 at a time).
async fn account(store: &Store, stage: &str, executed: &[&JobEnvelope], report: &mut RunReport) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let records: Vec<Option<Done>> = futures::stream::iter(executed).map(|j| async move { store.get_json::<Done>(&record::done_path(&j.id.0)).await }).buffered(32).try_collect().await?;
    for done in records.into_iter().flatten() {
        *report.stage_seconds.entry(stage.to_string()).or_default() += done.seconds;
        report.workers.insert(done.worker);
    }
    Ok(())
}

/// Each shard checked its own document ids; across shards it is checked here, before anything is
/// committed (documents of one id would share paragraph rows and lose a title).
async fn check_unique_documents(store: &Store, config: &ExperimentConfig, stage: &Stage) -> Result<()> {
    let outs: Vec<IngestOutcome> = read_outcomes(store, &stage.name(), &stage.jobs).await?;
    let ids = outs.iter().flat_map(|o| o.doc_lines.iter().map(|(id, line)| (id.as_str(), *line)));
    if let Some((id, first, again)) = repeated_id(ids) {
        bail!("{}; nothing was committed", repeated_id_error(&config.corpus.path, id, first, again));
    }
    Ok(())
}

/// Once a QSFT epoch is committed, the optimiser state it continued from (weights and two AdamW
/// moments: three times the model) is read by nothing: its jobs are done, and a later plan that changes
/// them changes the epochs before too.
async fn drop_spent_optimisers(store: &Store, stage: &Stage) -> Result<()> {
    for job in &stage.jobs {
        if let JobSpec::QsftEpoch { inputs, .. } = &job.spec
            && let Some(spent) = &inputs.optimiser
        {
            phrasesweep_workers::train::resume::drop_state(store, spent).await?;
        }
    }
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
        let id = &job.id.0;
        if store.exists(&record::done_path(id)).await? {
            continue;
        }
        let error = match store.get_json::<Failed>(&record::failed_path(id)).await? {
            Some(f) => f.error,
            None => match history::last_error(&store, id).await? {
                Some(e) => format!("delivered too many times; the last delivery: {e}"),
                None => "delivered too many times without finishing (its worker kept dying)".to_string(),
            },
        };
        warn!(job = job.id.short(), "job was dead-lettered: {error}");
        let dead = Failed { worker: "broker".into(), error, at_unix: now_unix() };
        store.put_json(&record::dead_path(&job.id.0), &dead).await?;
    }
    Ok(())
}

/// Makes a finished stage's output visible once: the Lance commit of all its fragments (ingest, encode),
/// or the record of what its jobs wrote (index, retrieve, score). A growing stage (`committed`, sorted,
/// holds the jobs already in its dataset) appends the fragments of its new jobs only.
async fn commit_stage(store: &Store, stage: &Stage, jobs_hash: &str, committed: &[String]) -> Result<StageCommit> {
    let append = !committed.is_empty() && matches!(stage.output, StageKind::Corpus | StageKind::Phrases);
    let new_jobs: Vec<&JobEnvelope> = stage.jobs.iter().filter(|j| !(append && committed.binary_search(&j.id.0).is_ok())).collect();
    let name = stage.name();
    let properties = HashMap::from([
        ("phrasesweep.stage".to_string(), name.clone()),
        ("phrasesweep.jobs_hash".to_string(), jobs_hash.to_string()),
    ]);
    let (dataset, version, rows) = match stage.output {
        StageKind::Corpus | StageKind::Phrases => {
            let (dataset, schema, fragments) = if stage.output == StageKind::Corpus {
                let outs: Vec<IngestOutcome> = read_outcomes(store, &name, new_jobs).await?;
                (CORPUS_DATASET, corpus_schema(), outs.into_iter().flat_map(|o| o.fragments).collect())
            } else {
                let outs: Vec<EncodeOutcome> = read_outcomes(store, &name, new_jobs).await?;
                let dim = outs.last().map_or(0, |o| o.dim);
                let dtype = stage.jobs.iter().find_map(|j| match &j.spec {
                    JobSpec::Encode { config, .. } => Some(config.settings.dtype),
                    _ => None,
                });
                (PHRASES_DATASET, phrases_schema(dim, dtype.unwrap_or_default()), outs.into_iter().flat_map(|o| o.fragments).collect())
            };
            let ds = commit_fragments(store, dataset, &schema, fragments, properties, append).await?;
            phrasesweep_workers::fault::pause_after_write("commit").await;
            (store.dataset_uri(dataset), ds.version().version, ds.count_rows(None).await? as u64)
        }
        StageKind::Index => {
            let out: IndexOutcome = read_outcomes(store, &name, new_jobs).await?.remove(0);
            info!(action = out.action, rows = out.rows, partitions = out.partitions, quantizer = ?out.quantizer, sub_vectors = out.sub_vectors, seconds = out.seconds, "index");
            (store.dataset_uri(PHRASES_DATASET), out.version, out.rows)
        }
        StageKind::Candidates => {
            let scans = new_jobs.into_iter().filter(|j| matches!(j.spec, JobSpec::Scan { .. }));
            (String::new(), 0, read_outcomes::<ScanOutcome>(store, &name, scans).await?.iter().map(|o| o.rows).sum())
        }
        StageKind::Evidence => (String::new(), 0, read_outcomes::<RetrieveOutcome>(store, &name, new_jobs).await?.iter().map(|o| o.rows).sum()),
        StageKind::Metrics | StageKind::Answers | StageKind::Reader | StageKind::PhraseModel | StageKind::Qsft { .. } => (String::new(), 0, 0),
    };
    let mut job_ids: Vec<String> = stage.jobs.iter().map(|j| j.id.0.clone()).collect();
    job_ids.sort_unstable();
    let mut shard_ends: Vec<u64> = stage
        .jobs
        .iter()
        .filter_map(|j| match &j.spec {
            JobSpec::Ingest { inputs, .. } => Some(inputs.byte_end),
            _ => None,
        })
        .collect();
    shard_ends.sort_unstable();
    let commit = StageCommit {
        stage: stage.name(),
        jobs_hash: jobs_hash.into(),
        jobs: stage.jobs.len(),
        dataset,
        version,
        rows,
        at_unix: now_unix(),
        job_ids,
        input_bytes: None,
        shard_ends,
    };
    // The latest first: a crash between the two leaves a commit that `committed` still finds there,
    // and a corpus that grows later grows from this one.
    store.put_json(&record::stage_path(&stage.name()), &commit).await?;
    store.put_json(&record::stage_commit_path(&stage.name(), jobs_hash), &commit).await?;
    info!(stage = %stage.name(), version = commit.version, rows, "committed stage");
    Ok(commit)
}
