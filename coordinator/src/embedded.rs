//! The whole pipeline in one process: an in-process queue and a few worker tasks, with the same
//! coordinator loop as the farm.

use crate::drive::{RunReport, drive};
use anyhow::{Context, Result};
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_workers::io::queue::embedded::EmbeddedQueue;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::worker::{StoreAccess, Worker};

/// Deliveries of one job before the embedded queue gives up on it, as RabbitMQ's delivery limit does.
const DELIVERY_LIMIT: u32 = 3;

pub async fn run_embedded(config: &ExperimentConfig) -> Result<RunReport> {
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let queue = EmbeddedQueue::new(DELIVERY_LIMIT);
    let mut workers = Vec::new();
    for i in 0..config.embedded.workers {
        let worker = Worker::new(format!("embedded-{i}"), StoreAccess::Config(config.store.clone()));
        let q = queue.clone();
        workers.push(tokio::spawn(async move { worker.run(&q).await }));
    }
    let result = drive(&queue, &store, config).await;
    queue.close();
    for w in workers {
        w.await.context("a worker task panicked")??;
    }
    result
}
