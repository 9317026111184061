//! Progress of long work inside a job, as `tracing` lines: done/total, rate and ETA, at most every few
//! seconds (workers run headless; the coordinator draws the bars).

use std::time::{Duration, Instant};
use tracing::info;

const EVERY: Duration = Duration::from_secs(10);

pub struct RateLog {
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl RateLog {
    pub fn new(what: impl Into<String>, total: u64, unit: &'static str) -> Self {
        let now = Instant::now();
        Self { what: what.into(), unit, total, done: 0, started: now, last: now }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= EVERY || self.done == self.total {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            let rate = self.done as f64 / secs;
            let eta = if rate > 0.0 { (self.total.saturating_sub(self.done)) as f64 / rate } else { f64::NAN };
            info!("{}: {}/{} {} ({rate:.1}/s, ETA {eta:.0} s)", self.what, self.done, self.total, self.unit);
        }
    }
}
