//! The job queue: one interface, two transports. `embedded` runs in-process for a single machine with
//! no broker; `amqp` talks to RabbitMQ for the farm. Jobs are delivered at least once, so every handler
//! is idempotent (content-addressed job ids and records on the store make redelivery harmless).

pub mod amqp;
pub mod embedded;
pub mod sweeps;

use anyhow::{Context, Result};
use phrasesweep_schemas::{JobEnvelope, JobEvent};
use std::future::Future;

/// Both sides of a job queue: the coordinator publishes jobs and reads events; workers take jobs and
/// publish events.
pub trait JobQueue: Clone + Send + Sync + 'static {
    type Delivery: JobDelivery;

    /// Publishes a job durably (returns once the broker has confirmed it).
    fn publish_job(&self, job: &JobEnvelope) -> impl Future<Output = Result<()>> + Send;

    /// Publishes many jobs durably; returns once the broker has confirmed them all.
    fn publish_jobs(&self, jobs: &[&JobEnvelope]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for job in jobs {
                self.publish_job(job).await.with_context(|| format!("cannot publish job {}", job.id.short()))?;
            }
            Ok(())
        }
    }

    /// Waits for the next job; `None` once the queue is closed for good (embedded mode's shutdown).
    fn next_job(&self) -> impl Future<Output = Result<Option<Self::Delivery>>> + Send;

    /// Sends an outcome event to the event queue `to` named in the job.
    fn publish_event(&self, to: &str, event: &JobEvent) -> impl Future<Output = Result<()>> + Send;

    /// Waits for the next event on the event queue `from`.
    fn next_event(&self, from: &str) -> impl Future<Output = Result<JobEvent>> + Send;

    /// Takes a dead-lettered job, if there is one now.
    fn next_dead_letter(&self) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
}

/// One delivered job, to be settled exactly once.
pub trait JobDelivery: Send + 'static {
    fn body(&self) -> &[u8];
    /// 1 for the first delivery, more after redeliveries.
    fn attempt(&self) -> u32;
    /// The job's output is durable: remove it from the queue.
    fn ack(self) -> impl Future<Output = Result<()>> + Send;
    /// Something transient failed: deliver it again (until the delivery limit dead-letters it).
    fn retry(self) -> impl Future<Output = Result<()>> + Send;
    /// The job can never succeed: move it to the dead-letter queue now.
    fn dead_letter(self) -> impl Future<Output = Result<()>> + Send;
}
