//! The worker loop: take a job, skip it if its record says it is done, run it, record the output on the
//! store, report, and only then ack. A crash anywhere before the ack gets the job delivered again.
//!
//! What can go wrong, and what the worker does:
//! - bad input: the job is dead-lettered at once with the reason (`failed.json`);
//! - a transient error (the store, the network): retried here with exponential backoff and jitter for
//!   up to `retry_for_s`, then the delivery goes back to the queue;
//! - a panic: caught, recorded, and the delivery goes back to the queue, so it counts towards the
//!   broker's delivery limit and a poison job ends dead-lettered with its message;
//! - a lost broker channel: settling fails, the worker carries on; the broker delivers the job again
//!   and its record on the store decides whether it runs;
//! - told to stop (SIGTERM): it takes no new job, finishes and acks the one in hand, and exits; told
//!   twice, it gives the job back at once.
//!
//! Every settled delivery leaves a line in the job's attempt history, and a running job's record gets a
//! heartbeat, so `status` can tell a job whose worker died from one that is running.

use crate::io::queue::{JobDelivery, JobQueue};
use crate::io::store::{Store, now_unix};
use crate::jobs::{self, JobError};
use anyhow::Result;
use futures::FutureExt;
use phrasesweep_schemas::config::{StoreConfig, WorkerSettings};
use phrasesweep_schemas::record::{self, Attempt, AttemptOutcome, Done, Failed, Started};
use phrasesweep_schemas::{JobEnvelope, JobEvent, JobOutcome};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The first pause before retrying a transient error; each retry doubles it, up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How a worker opens the store a job names.
#[derive(Clone)]
pub enum StoreAccess {
    /// Embedded mode: the run's own store config, credentials included.
    Config(StoreConfig),
    /// Farm mode: the location in the message, credentials from this process's environment.
    FromMessage,
}

#[derive(Clone)]
pub struct Worker {
    pub name: String,
    pub store: StoreAccess,
    pub settings: WorkerSettings,
}

impl Worker {
    pub fn new(name: impl Into<String>, store: StoreAccess, settings: WorkerSettings) -> Self {
        Self { name: name.into(), store, settings }
    }

    /// Serves jobs until the queue closes. Returns an error only when the queue itself is lost for good.
    pub async fn run<Q: JobQueue>(&self, queue: &Q) -> Result<()> {
        self.serve(queue, watch::channel(Stop::No).1, None).await
    }

    /// Serves jobs until the queue closes, `stop` says so, or `max_jobs` deliveries are settled. On
    /// [`Stop::Drain`] the job in hand is finished and acked first; on [`Stop::Now`] it is given back.
    pub async fn serve<Q: JobQueue>(&self, queue: &Q, stop: watch::Receiver<Stop>, max_jobs: Option<u64>) -> Result<()> {
        info!(worker = %self.name, "waiting for jobs");
        let mut settled = 0u64;
        loop {
            if *stop.borrow() != Stop::No || max_jobs.is_some_and(|n| settled >= n) {
                info!(worker = %self.name, settled, "drained: no job in hand, stopping");
                return Ok(());
            }
            let delivery = tokio::select! {
                next = queue.next_job() => match next? {
                    Some(d) => d,
                    None => return Ok(()),
                },
                _ = stop_at(stop.clone(), Stop::Drain) => continue,
            };
            if let Err(e) = self.handle(queue, delivery, &stop).await {
                warn!(worker = %self.name, "cannot settle a delivery: {e:#}; the broker delivers it again and its record decides");
            }
            settled += 1;
        }
    }

    fn open_store(&self, job: &JobEnvelope) -> Result<Store> {
        match &self.store {
            StoreAccess::Config(c) => Store::from_config(c),
            StoreAccess::FromMessage => Store::from_location(&job.store),
        }
    }

    /// Tells the coordinator; events only make it look sooner, so a lost one is no error.
    async fn event<Q: JobQueue>(&self, queue: &Q, job: &JobEnvelope, outcome: JobOutcome) {
        let event = JobEvent { job_id: job.id.clone(), worker: self.name.clone(), outcome };
        if let Err(e) = queue.publish_event(&job.reply_to, &event).await {
            warn!(job = job.id.short(), "cannot send an event: {e:#}");
        }
    }

    /// Adds a line to the job's attempt history; a failure to write it is logged, not fatal.
    async fn log_attempt(&self, store: &Store, job: &JobEnvelope, delivery: u32, outcome: AttemptOutcome) {
        let attempt = Attempt { by: self.name.clone(), delivery, at_unix: now_unix(), outcome };
        if let Err(e) = record_attempt(store, &job.id.0, &attempt).await {
            warn!(job = job.id.short(), "cannot record the attempt: {e:#}");
        }
    }

    /// Runs `op` until it succeeds or fails for a reason other than a transient one, retrying transient
    /// errors with exponential backoff and jitter for up to `retry_for_s`. Returns the error and
    /// how many retries were made.
    async fn retrying<T, F, Fut>(&self, job: &JobEnvelope, what: &str, mut op: F) -> Result<T, (JobError, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(self.settings.retry_for_s);
        let mut cap = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            match op().await {
                Err(JobError::Other(e)) => {
                    let pause = jitter(cap);
                    if Instant::now() + pause > deadline {
                        return Err((JobError::Other(e), retries));
                    }
                    retries += 1;
                    warn!(job = job.id.short(), retries, "{what} failed: {e:#}; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    cap = (cap * 2).min(MAX_BACKOFF);
                }
                other => return other.map_err(|e| (e, retries)),
            }
        }
    }

    async fn handle<Q: JobQueue>(&self, queue: &Q, delivery: Q::Delivery, stop: &watch::Receiver<Stop>) -> Result<()> {
        let job: JobEnvelope = match serde_json::from_slice(delivery.body()) {
            Ok(j) => j,
            Err(e) => {
                error!("dead-lettering an unreadable job message: {e}");
                return delivery.dead_letter().await;
            }
        };
        if let Err(e) = job.validate() {
            error!("dead-lettering job {}: {e}", job.id.short());
            return delivery.dead_letter().await;
        }
        let id = job.id.0.as_str();
        let attempt = delivery.attempt();
        // Opening a store reads no network: what fails here is the location itself.
        let store = match self.open_store(&job) {
            Ok(s) => s,
            Err(e) => {
                error!(job = job.id.short(), "dead-lettering a job whose store cannot be opened: {e:#}");
                return delivery.dead_letter().await;
            }
        };
        let done = self.retrying(&job, "reading the job's record", || async { Ok(store.exists(&record::done_path(id)).await?) }).await;
        match done {
            Ok(true) => {
                info!(job = job.id.short(), attempt, "already done; acknowledging");
                self.log_attempt(&store, &job, attempt, AttemptOutcome::AlreadyDone).await;
                self.event(queue, &job, JobOutcome::Done { summary: "already done".into() }).await;
                return delivery.ack().await;
            }
            Ok(false) => {}
            Err((e, retries)) => return self.give_back(&store, delivery, &job, e, retries).await,
        }
        info!(job = job.id.short(), what = %job.spec.label(), attempt, "started job");
        let started = Started { worker: self.name.clone(), attempt, at_unix: now_unix(), beat_unix: None };
        let put = self.retrying(&job, "recording the start", || async { Ok(store.put_json(&record::started_path(id), &started).await?) }).await;
        if let Err((e, retries)) = put {
            return self.give_back(&store, delivery, &job, e, retries).await;
        }
        self.event(queue, &job, JobOutcome::Started).await;

        let clock = Instant::now();
        let heartbeat = Heartbeat::start(store.clone(), record::started_path(id), started, self.settings.heartbeat_s);
        let run = self.retrying(&job, "the job", || async {
            match AssertUnwindSafe(jobs::execute(&store, &job.spec)).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Err(JobError::Panicked(panic_message(&*panic))),
            }
        });
        let result = tokio::select! {
            r = run => r,
            _ = stop_at(stop.clone(), Stop::Now) => Err((JobError::Other(anyhow::anyhow!("the worker was stopped")), 0)),
        };
        drop(heartbeat);
        match result {
            Ok(output) => {
                let done = Done {
                    id: id.to_string(),
                    kind: job.spec.kind().to_string(),
                    label: job.spec.label(),
                    worker: self.name.clone(),
                    seconds: clock.elapsed().as_secs_f64(),
                    at_unix: now_unix(),
                    output,
                };
                let bytes = serde_json::to_vec_pretty(&done).expect("a done record serialises");
                let first = self
                    .retrying(&job, "recording the output", || async { Ok(store.put_if_absent(&record::done_path(id), bytes.clone()).await?) })
                    .await;
                let outcome = match first {
                    Ok(true) => AttemptOutcome::Done,
                    Ok(false) => {
                        info!(job = job.id.short(), "another delivery recorded this job first");
                        AttemptOutcome::AlreadyDone
                    }
                    Err((e, retries)) => return self.give_back(&store, delivery, &job, e, retries).await,
                };
                info!(job = job.id.short(), seconds = done.seconds, "finished job");
                self.log_attempt(&store, &job, attempt, outcome).await;
                self.event(queue, &job, JobOutcome::Done { summary: done.label }).await;
                delivery.ack().await
            }
            Err((JobError::Input(msg), _)) => {
                error!(job = job.id.short(), "job failed: {msg}");
                let failed = Failed { worker: self.name.clone(), error: msg.clone(), at_unix: now_unix() };
                if let Err(e) = store.put_json(&record::failed_path(id), &failed).await {
                    warn!("cannot record the failure: {e:#}");
                }
                self.log_attempt(&store, &job, attempt, AttemptOutcome::Failed { error: msg.clone() }).await;
                self.event(queue, &job, JobOutcome::Failed { error: msg }).await;
                delivery.dead_letter().await
            }
            Err((e, retries)) => self.give_back(&store, delivery, &job, e, retries).await,
        }
    }

    /// A panic or a transient error that outlasted the retries: the job goes back to the queue (the
    /// broker dead-letters it past the delivery limit).
    async fn give_back<D: JobDelivery>(&self, store: &Store, delivery: D, job: &JobEnvelope, e: JobError, retries: u32) -> Result<()> {
        let attempt = delivery.attempt();
        let outcome = match e {
            JobError::Panicked(msg) => {
                error!(job = job.id.short(), attempt, "job panicked: {msg}");
                AttemptOutcome::Panicked { error: msg }
            }
            e => {
                warn!(job = job.id.short(), attempt, retries, "job failed, giving it back to the queue: {e:#}");
                AttemptOutcome::GaveBack { error: format!("{e:#}"), retries }
            }
        };
        self.log_attempt(store, job, attempt, outcome).await;
        delivery.retry().await
    }
}

/// Adds `attempt` to job `id`'s history.
pub async fn record_attempt(store: &Store, id: &str, attempt: &Attempt) -> Result<()> {
    let at_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
    store.put_json(&record::attempt_path(id, at_ns, &attempt.by, nonce), attempt).await
}

/// What a worker is told while it serves, in increasing order: carry on, finish the job in hand and
/// stop (a first SIGTERM), or give the job back and stop now (a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    No,
    Drain,
    Now,
}

/// Waits until `stop` says `level` or more; forever when nobody can say it any more.
async fn stop_at(mut stop: watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|s| *s >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A uniformly random pause in `[cap/2, cap]`: workers that failed together do not retry together.
fn jitter(cap: Duration) -> Duration {
    let unit = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
    cap.mul_f64(0.5 + 0.5 * unit)
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Rewrites a running job's `started.json` with a fresh `beat_unix` every `every_s` seconds until
/// dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(store: Store, path: String, mut started: Started, every_s: u64) -> Self {
        Self(tokio::spawn(async move {
            let every = Duration::from_secs(every_s.max(1));
            loop {
                tokio::time::sleep(every).await;
                started.beat_unix = Some(now_unix());
                if let Err(e) = store.put_json(&path, &started).await {
                    warn!("cannot write a heartbeat: {e:#}");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
