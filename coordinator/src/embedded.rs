//! The whole pipeline in one process: an in-process queue and a few worker tasks, with the same
//! coordinator loop as the farm.

use crate::drive::{RunReport, drive};
use anyhow::{Result, anyhow};
use phrasesweep_schemas::sweep::Point;
use phrasesweep_workers::io::queue::embedded::EmbeddedQueue;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::worker::{StoreAccess, Worker};
use tokio::task::JoinSet;

/// Deliveries of one job before the embedded queue gives up on it, as RabbitMQ's delivery limit does.
const DELIVERY_LIMIT: u32 = 3;

pub async fn run_embedded(point: &Point) -> Result<RunReport> {
    let config = &point.config;
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let queue = EmbeddedQueue::new(DELIVERY_LIMIT);
    let mut workers = JoinSet::new();
    for i in 0..config.embedded.workers {
        let worker = Worker::new(format!("embedded-{i}"), StoreAccess::Config(config.store.clone()), config.embedded.worker);
        let q = queue.clone();
        workers.spawn(async move { worker.run(&q).await });
    }
    // A worker catches its jobs' panics; should a task end anyway, the run stops with its reason
    // rather than wait for a job nobody will finish.
    let result = tokio::select! {
        r = drive(&queue, &store, point) => r,
        Some(ended) = workers.join_next() => Err(match ended {
            Ok(Ok(())) => anyhow!("an embedded worker stopped before the run finished"),
            Ok(Err(e)) => e.context("an embedded worker stopped"),
            Err(e) => anyhow!("an embedded worker task died: {e}"),
        }),
    };
    // After a failure or a stop, jobs not yet taken are dropped and running ones are not waited for:
    // the process ends with the run, and the records let a rerun resume.
    if result.is_err() {
        queue.abandon();
        return result;
    }
    queue.close();
    while let Some(ended) = workers.join_next().await {
        if let Err(e) = ended.map_err(anyhow::Error::from).and_then(|r| r) {
            tracing::warn!("{e:#}");
        }
    }
    result
}
