//! Fault injection for the crash tests: `PHRASESWEEP_FAULT_PAUSE_MS` makes a worker stop for that long
//! after writing a job's data and before recording it, the window in which a crash must lose nothing;
//! `PHRASESWEEP_FAULT_JOB` limits it to one job kind. `PHRASESWEEP_FAULT_PANIC_DOC` makes a poison job:
//! ingest panics on the shard that holds that document. `PHRASESWEEP_FAULT_TRANSIENT=N` fails the first
//! N ingest attempts of the process with a transient error, as a store outage would.

use tracing::warn;

/// Called by the handler of a job of `kind` between writing its output and returning.
pub async fn pause_after_write(kind: &str) {
    let env = crate::env::get();
    if let Some(ms) = env.fault_pause_ms
        && env.fault_job.as_deref().is_none_or(|k| k == kind)
    {
        warn!(ms, "fault injection: pausing after writing job output");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Called by ingest with each shard's document ids.
pub fn panic_on_document<'a>(ids: impl IntoIterator<Item = &'a str>) {
    if let Some(poison) = crate::env::get().fault_panic_doc.as_deref()
        && ids.into_iter().any(|id| id == poison)
    {
        panic!("fault injection: a poison document ({poison})");
    }
}

/// Called by ingest before it reads its shard: fails while the process's budget of transient faults
/// lasts.
pub fn transient_error() -> anyhow::Result<()> {
    static SPENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if let Some(n) = crate::env::get().fault_transient
        && SPENT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n
    {
        anyhow::bail!("fault injection: a transient store error");
    }
    Ok(())
}
