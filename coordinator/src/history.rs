//! A job's attempt history on the store (`jobs/<id>/attempts/`): what each delivery did, read by
//! `status`, by the dead-letter collector for the reason, and by a rerun that clears a failure.

use anyhow::Result;
use phrasesweep_schemas::record::{self, Attempt, AttemptOutcome, Failed};
use phrasesweep_workers::io::store::{Store, now_unix};
use phrasesweep_workers::worker::record_attempt;
use tracing::info;

/// Every attempt recorded for job `id`, oldest first.
pub async fn attempts(store: &Store, id: &str) -> Result<Vec<Attempt>> {
    let mut out = Vec::new();
    for path in store.list(&record::attempts_dir(id)).await? {
        if let Some(a) = store.get_json::<Attempt>(&path).await? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Why the last delivery of job `id` did not finish, if a worker said so.
pub async fn last_error(store: &Store, id: &str) -> Result<Option<String>> {
    Ok(attempts(store, id).await?.into_iter().rev().find_map(|a| match a.outcome {
        AttemptOutcome::Failed { error } | AttemptOutcome::Panicked { error } | AttemptOutcome::GaveBack { error, .. } => Some(error),
        _ => None,
    }))
}

/// A rerun gives a failed or dead-lettered job one more go: its failure moves into the attempt history
/// and the records that would fail the run at once are removed. Returns whether there was one.
pub async fn clear_failure(store: &Store, id: &str) -> Result<bool> {
    let mut previous = None;
    for path in [record::dead_path(id), record::failed_path(id)] {
        if previous.is_none()
            && let Some(f) = store.get_json::<Failed>(&path).await?
        {
            previous = Some(f.error);
        }
    }
    let Some(previous) = previous else { return Ok(false) };
    info!(job = &id[..12.min(id.len())], "retrying a job that failed before: {previous}");
    let rerun = Attempt { by: "coordinator".into(), delivery: 0, at_unix: now_unix(), outcome: AttemptOutcome::Rerun { previous } };
    record_attempt(store, id, &rerun).await?;
    store.delete(&record::dead_path(id)).await?;
    store.delete(&record::failed_path(id)).await?;
    Ok(true)
}
