//! The worker loop: take a job, skip it if its record says it is done, run it, record the output on the
//! store, report, and only then ack. A crash anywhere before the ack gets the job delivered again.

use crate::jobs::{self, JobError};
use crate::io::queue::{JobDelivery, JobQueue};
use crate::io::store::Store;
use anyhow::{Context, Result};
use phrasesweep_schemas::config::StoreConfig;
use phrasesweep_schemas::record::{self, Done, Failed, Started};
use crate::io::store::now_unix;
use phrasesweep_schemas::{JobEnvelope, JobEvent, JobOutcome};
use std::time::Instant;
use tracing::{error, info, warn};

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
}

impl Worker {
    pub fn new(name: impl Into<String>, store: StoreAccess) -> Self {
        Self { name: name.into(), store }
    }

    /// Serves jobs until the queue closes. Returns an error only when the queue itself is lost.
    pub async fn run<Q: JobQueue>(&self, queue: &Q) -> Result<()> {
        info!(worker = %self.name, "waiting for jobs");
        while let Some(delivery) = queue.next_job().await? {
            self.handle(queue, delivery).await?;
        }
        Ok(())
    }

    fn open_store(&self, job: &JobEnvelope) -> Result<Store> {
        match &self.store {
            StoreAccess::Config(c) => Store::from_config(c),
            StoreAccess::FromMessage => Store::from_location(&job.store),
        }
    }

    async fn event<Q: JobQueue>(&self, queue: &Q, job: &JobEnvelope, outcome: JobOutcome) -> Result<()> {
        let event = JobEvent { job_id: job.id.clone(), worker: self.name.clone(), outcome };
        queue.publish_event(&job.reply_to, &event).await
    }

    async fn handle<Q: JobQueue>(&self, queue: &Q, delivery: Q::Delivery) -> Result<()> {
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
        let store = match self.open_store(&job) {
            Ok(s) => s,
            Err(e) => return self.give_back(delivery, &job, e).await,
        };
        match store.exists(&record::done_path(id)).await {
            Ok(true) => {
                info!(job = job.id.short(), "already done; acknowledging");
                self.event(queue, &job, JobOutcome::Done { summary: "already done".into() }).await?;
                return delivery.ack().await;
            }
            Ok(false) => {}
            Err(e) => return self.give_back(delivery, &job, e).await,
        }
        let attempt = delivery.attempt();
        info!(job = job.id.short(), what = %job.spec.label(), attempt, "started job");
        let started = Started { worker: self.name.clone(), attempt, at_unix: now_unix() };
        if let Err(e) = store.put_json(&record::started_path(id), &started).await {
            return self.give_back(delivery, &job, e).await;
        }
        self.event(queue, &job, JobOutcome::Started).await?;

        let clock = Instant::now();
        match jobs::execute(&store, &job.spec).await {
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
                let bytes = serde_json::to_vec_pretty(&done)?;
                match store.put_if_absent(&record::done_path(id), bytes).await {
                    Ok(first) => {
                        if !first {
                            info!(job = job.id.short(), "another delivery recorded this job first");
                        }
                    }
                    Err(e) => return self.give_back(delivery, &job, e).await,
                }
                info!(job = job.id.short(), seconds = done.seconds, "finished job");
                self.event(queue, &job, JobOutcome::Done { summary: done.label }).await?;
                delivery.ack().await
            }
            Err(JobError::Input(msg)) => {
                error!(job = job.id.short(), "job failed: {msg}");
                let failed = Failed { worker: self.name.clone(), error: msg.clone(), at_unix: now_unix() };
                if let Err(e) = store.put_json(&record::failed_path(id), &failed).await {
                    warn!("cannot record the failure: {e:#}");
                }
                self.event(queue, &job, JobOutcome::Failed { error: msg }).await?;
                delivery.dead_letter().await
            }
            Err(JobError::Other(e)) => self.give_back(delivery, &job, e).await,
        }
    }

    /// A transient failure: the job goes back to the queue (the broker dead-letters it past the limit).
    async fn give_back<D: JobDelivery>(&self, delivery: D, job: &JobEnvelope, e: anyhow::Error) -> Result<()> {
        warn!(job = job.id.short(), attempt = delivery.attempt(), "job failed, will be retried: {e:#}");
        delivery.retry().await.context("cannot return the job to the queue")
    }
}
