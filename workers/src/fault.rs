//! Fault injection for the crash tests: `PHRASESWEEP_FAULT_PAUSE_MS` makes a worker stop for that long
//! after writing a job's data and before recording it, the window in which a crash must lose nothing.

use tracing::warn;

pub fn pause_after_write() {
    if let Some(ms) = crate::env::get().fault_pause_ms {
        warn!(ms, "fault injection: pausing after writing job output");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
