//! Fault injection for the crash tests: `PHRASESWEEP_FAULT_PAUSE_MS` makes a worker stop for that long
//! after writing a job's data and before recording it, the window in which a crash must lose nothing;
//! `PHRASESWEEP_FAULT_JOB` limits it to one job kind.

use tracing::warn;

/// Called by the handler of a job of `kind` between writing its output and returning.
pub fn pause_after_write(kind: &str) {
    let env = crate::env::get();
    if let Some(ms) = env.fault_pause_ms
        && env.fault_job.as_deref().is_none_or(|k| k == kind)
    {
        warn!(ms, "fault injection: pausing after writing job output");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
