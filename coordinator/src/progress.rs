//! Progress of long work: a bar on a terminal, and a log line per step everywhere else, both with
//! done/total, rate and ETA.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;
use tracing::info;

pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    /// Done before this run started: counted in done/total, not in the rate.
    skipped: u64,
    started: Instant,
    bar: ProgressBar,
}

impl Progress {
    pub fn new(what: &str, total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        Self { what: what.to_string(), total, done: 0, skipped: 0, started: Instant::now(), bar }
    }

    pub fn already_done(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.done += n;
        self.skipped += n;
        self.bar.inc(n);
        self.bar.suspend(|| info!("{}: {}/{} already done", self.what, self.done, self.total));
    }

    pub fn inc(&mut self, label: &str) {
        self.done += 1;
        self.bar.inc(1);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.done - self.skipped) as f64 / secs;
        let eta = (self.total - self.done.min(self.total)) as f64 / rate;
        self.bar.suspend(|| {
            info!("{}: {}/{} done ({label}); {rate:.2} jobs/s, eta {eta:.0}s", self.what, self.done, self.total)
        });
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
