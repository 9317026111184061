//! `phrasesweep status`: what each stage's jobs have done, read from the records on the store, and the
//! attempt history of every job that did not simply run once and finish.

use crate::history;
use crate::records::JobRecords;
use crate::pipeline::{self, Visitor};
use crate::plan::Stage;
use anyhow::Result;
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::sweep::Point;
use phrasesweep_schemas::record::{self, Attempt, AttemptOutcome, Failed, StageCommit, Started};
use phrasesweep_workers::io::store::{Store, now_unix};
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StageStatus {
    pub stage: String,
    pub jobs: usize,
    pub done: usize,
    pub running: usize,
    /// Recorded as running, but its worker's heartbeat stopped (the worker died or lost the store).
    pub stale: usize,
    pub failed: usize,
    pub dead_lettered: usize,
    pub waiting: usize,
    pub committed: Option<u64>,
    /// The stage's jobs, and whether each is done.
    pub ids: Vec<(String, bool)>,
}

impl fmt::Display for StageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let committed = self.committed.map_or("no".to_string(), |v| format!("version {v}"));
        write!(
            f,
            "{:<14} {:>5} {:>5} {:>8} {:>6} {:>7} {:>14} {:>8}  {committed}",
            self.stage, self.jobs, self.done, self.running, self.stale, self.failed, self.dead_lettered, self.waiting
        )
    }
}

pub const HEADER: &str = "stage           jobs  done  running  stale  failed  dead-lettered  waiting  committed";

/// A job worth a look: running (and where), failed, stalled, or done after deliveries that did not finish.
#[derive(Debug, Clone)]
pub struct JobNote {
    pub stage: String,
    pub id: String,
    pub label: String,
    /// `done`, `running`, `stale`, `failed`, `dead-lettered` or `waiting`, with the reason where known.
    pub state: String,
    pub attempts: Vec<Attempt>,
}

impl fmt::Display for JobNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({}): {}", self.stage, &self.id[..12], self.label, self.state)?;
        for a in &self.attempts {
            write!(f, "\n    {a}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct Status {
    pub stages: Vec<StageStatus>,
    pub notes: Vec<JobNote>,
}

/// Counts each stage's jobs by their records; the walk goes on past a stage committed for exactly its jobs.
struct Counter<'a> {
    store: &'a Store,
    records: JobRecords,
    stale_after_s: u64,
    status: Status,
}

impl Visitor for Counter<'_> {
    async fn visit(&mut self, stage: &Stage) -> Result<Option<StageCommit>> {
        let store = self.store;
        let mut s = StageStatus { stage: stage.name(), jobs: stage.jobs.len(), ..Default::default() };
        for job in &stage.jobs {
            let id = &job.id.0;
            let files = self.records.get(id);
            // A job done at its first delivery is all the listing says it is; any other's history is read.
            let attempts = if files.done && files.attempts <= 1 { Vec::new() } else { history::attempts(store, id).await? };
            let read_if = |there: bool, path: String| async move { if there { store.get_json::<Failed>(&path).await } else { Ok(None) } };
            let state = if files.done {
                s.done += 1;
                "done".to_string()
            } else if let Some(f) = read_if(files.dead, record::dead_path(id)).await? {
                s.dead_lettered += 1;
                format!("dead-lettered: {}", f.error)
            } else if let Some(f) = read_if(files.failed, record::failed_path(id)).await? {
                s.failed += 1;
                format!("failed: {}", f.error)
            } else if files.started
                && let Some(started) = store.get_json::<Started>(&record::started_path(id)).await?
                // A delivery settled after the last start gave the job back: it waits for the next.
                && attempts.last().is_none_or(|a| a.at_unix <= started.at_unix)
            {
                let silent = now_unix().saturating_sub(started.last_seen());
                if silent > self.stale_after_s {
                    s.stale += 1;
                    format!("stale: {} last sent a heartbeat {silent} s ago (delivery {})", started.worker, started.attempt)
                } else {
                    s.running += 1;
                    format!("running on {} (delivery {})", started.worker, started.attempt)
                }
            } else {
                s.waiting += 1;
                "waiting".to_string()
            };
            s.ids.push((id.clone(), files.done));
            let eventful = attempts.iter().any(|a| a.outcome != AttemptOutcome::Done);
            if eventful || !matches!(state.as_str(), "done" | "waiting") {
                self.status.notes.push(JobNote { stage: stage.name(), id: id.clone(), label: job.spec.label(), state, attempts });
            }
        }
        let commit = pipeline::committed(store, stage).await?;
        s.committed = commit.as_ref().map(|c| c.version);
        self.status.stages.push(s);
        Ok(commit)
    }
}

/// Every stage the config asks for, as far as committed stages let it be planned (a stage is planned from
/// the committed outputs of the ones before it).
pub async fn stage_status(config: &ExperimentConfig) -> Result<Status> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let records = JobRecords::list(&store).await?;
    let mut counter = Counter { store: &store, records, stale_after_s: config.coordinator.stale_after_s, status: Status::default() };
    pipeline::walk(&store, config, &mut counter).await?;
    Ok(counter.status)
}

/// `phrasesweep plan`: each point's stages as far as they can be planned now (a stage is planned from
/// the committed outputs of the stages before it), then every stage over all points, a job shared by
/// points counted once. Reads the store; runs and writes nothing.
pub async fn sweep_plan(points: &[Point]) -> Result<String> {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write;
    let mut out = String::new();
    let first = &points[0].config;
    let axes: Vec<&str> = points.iter().flat_map(|p| p.values.iter().map(|(a, _)| a.as_str())).collect::<BTreeSet<_>>().into_iter().collect();
    writeln!(out, "sweep `{}`: {} point(s) on {}{}", first.name, points.len(), first.store.uri, if axes.is_empty() { String::new() } else { format!(" (axes: {})", axes.join(", ")) })?;
    let row = |stage: &str, jobs: String, done: String, to_run: String| format!("  {stage:<14} {jobs:>6} {done:>6} {to_run:>7}");
    // Over all points: each stage (in the order stages first appear) with its distinct jobs and which
    // are done, and the points that could not plan it yet.
    let mut all: Vec<(String, usize, BTreeMap<String, bool>)> = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let status = stage_status(&point.config).await?;
        writeln!(out, "\npoint {}/{}: {}", i + 1, points.len(), if point.label.is_empty() { "(no axes)" } else { &point.label })?;
        writeln!(out, "{}", row("stage", "jobs".into(), "done".into(), "to run".into()))?;
        let names = pipeline::stage_names(&point.config);
        for name in &names {
            if !all.iter().any(|(n, ..)| n == name) {
                all.push((name.clone(), 0, BTreeMap::new()));
            }
            let entry = all.iter_mut().find(|(n, ..)| n == name).expect("just added");
            match status.stages.iter().find(|s| &s.stage == name) {
                Some(s) => {
                    writeln!(out, "{}", row(name, s.jobs.to_string(), s.done.to_string(), (s.jobs - s.done).to_string()))?;
                    entry.2.extend(s.ids.iter().cloned());
                }
                None => {
                    writeln!(out, "{}", row(name, "-".into(), "-".into(), "-".into()))?;
                    entry.1 += 1;
                }
            }
        }
        if status.stages.len() < names.len() {
            writeln!(out, "  (a stage shown `-` is planned once the stages before it are committed)")?;
        }
    }
    writeln!(out, "\nall points (a job shared by points counted once):")?;
    writeln!(out, "{}", row("stage", "jobs".into(), "done".into(), "to run".into()))?;
    for (name, unplanned, ids) in &all {
        let done = ids.values().filter(|d| **d).count();
        let (later, shown): (String, fn(usize) -> String) = match unplanned {
            0 => (String::new(), |n: usize| n.to_string()),
            _ if ids.is_empty() => (String::new(), |_| "-".to_string()),
            _ => (format!("  + the jobs of {unplanned} point(s) not planned yet"), |n: usize| n.to_string()),
        };
        writeln!(out, "{}{later}", row(name, shown(ids.len()), shown(done), shown(ids.len() - done)))?;
    }
    Ok(out)
}
