//! The in-process queue used when no broker is configured: same delivery semantics as the AMQP one
//! (redelivery on retry, a delivery limit, a dead-letter list), no durability beyond the process. The
//! records on the store still make a rerun resume where it stopped.

use super::{JobDelivery, JobQueue};
use anyhow::{Result, bail};
use phrasesweep_schemas::{JobEnvelope, JobEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

#[derive(Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<Jobs>,
    job_ready: Notify,
    events_tx: mpsc::UnboundedSender<JobEvent>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<JobEvent>>,
    delivery_limit: u32,
}

#[derive(Default)]
struct Jobs {
    ready: VecDeque<(Vec<u8>, u32)>,
    dead: VecDeque<Vec<u8>>,
    closed: bool,
}

impl EmbeddedQueue {
    pub fn new(delivery_limit: u32) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Jobs::default()),
                job_ready: Notify::new(),
                events_tx,
                events_rx: tokio::sync::Mutex::new(events_rx),
                delivery_limit,
            }),
        }
    }

    /// Lets idle workers return: `next_job` yields `None` once nothing is left.
    pub fn close(&self) {
        self.inner.jobs.lock().unwrap().closed = true;
        self.inner.job_ready.notify_waiters();
    }

    /// Closes the queue and drops the jobs not yet taken (a run that failed or was stopped: their
    /// records let a rerun resume).
    pub fn abandon(&self) {
        let mut jobs = self.inner.jobs.lock().unwrap();
        jobs.closed = true;
        jobs.ready.clear();
        drop(jobs);
        self.inner.job_ready.notify_waiters();
    }

    fn push(&self, body: Vec<u8>, attempt: u32) {
        let mut jobs = self.inner.jobs.lock().unwrap();
        if attempt > self.inner.delivery_limit {
            jobs.dead.push_back(body);
        } else {
            jobs.ready.push_back((body, attempt));
        }
        drop(jobs);
        self.inner.job_ready.notify_one();
    }
}

pub struct EmbeddedDelivery {
    queue: EmbeddedQueue,
    body: Vec<u8>,
    attempt: u32,
}

impl JobDelivery for EmbeddedDelivery {
    fn body(&self) -> &[u8] {
        &self.body
    }
    fn attempt(&self) -> u32 {
        self.attempt
    }
    async fn ack(self) -> Result<()> {
        Ok(())
    }
    async fn retry(self) -> Result<()> {
        self.queue.push(self.body, self.attempt + 1);
        Ok(())
    }
    async fn dead_letter(self) -> Result<()> {
        self.queue.inner.jobs.lock().unwrap().dead.push_back(self.body);
        Ok(())
    }
}

impl JobQueue for EmbeddedQueue {
    type Delivery = EmbeddedDelivery;

    async fn publish_job(&self, job: &JobEnvelope) -> Result<()> {
        self.push(serde_json::to_vec(job)?, 1);
        Ok(())
    }

    async fn next_job(&self) -> Result<Option<EmbeddedDelivery>> {
        loop {
            let notified = self.inner.job_ready.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut jobs = self.inner.jobs.lock().unwrap();
                if let Some((body, attempt)) = jobs.ready.pop_front() {
                    return Ok(Some(EmbeddedDelivery { queue: self.clone(), body, attempt }));
                }
                if jobs.closed {
                    return Ok(None);
                }
            }
            notified.await;
        }
    }

    async fn publish_event(&self, _to: &str, event: &JobEvent) -> Result<()> {
        if self.inner.events_tx.send(event.clone()).is_err() {
            bail!("the coordinator stopped listening for events");
        }
        Ok(())
    }

    async fn next_event(&self, _from: &str) -> Result<JobEvent> {
        match self.inner.events_rx.lock().await.recv().await {
            Some(e) => Ok(e),
            None => bail!("the event channel closed"),
        }
    }

    async fn next_dead_letter(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.jobs.lock().unwrap().dead.pop_front())
    }
}
