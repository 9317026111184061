//! What travels on a farm's broadcast exchange besides jobs: coordinators announce their sweeps, so
//! that workers know which sweep queues to serve and in what order, and a roll call asks every live
//! worker to describe itself (`phrasesweep workers`).

use crate::job::JobClass;
use serde::{Deserialize, Serialize};

/// One message on the broadcast exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FarmMessage {
    /// A coordinator's sweep is running and may have jobs in its queues. Sent again every `every_s`
    /// seconds while it runs: a worker that stops hearing of a sweep forgets it.
    /// `published`: sent right after the coordinator published jobs (idle workers look at once).
    Sweep {
        sweep: String,
        priority: i32,
        every_s: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        published: bool,
    },
    /// Every live worker answers with its [`WorkerCard`] on the message's reply-to queue.
    RollCall,
}

/// A worker as it describes itself when the roll is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerCard {
    pub name: String,
    pub host: String,
    pub pid: u32,
    /// What runs its jobs: `cpu (N cores)` or the CUDA device.
    pub device: String,
    pub memory_bytes: u64,
    pub serves: Vec<JobClass>,
    /// The crate version and the commit it was built from (`+dirty` when built with changes).
    pub version: String,
    pub started_unix: u64,
    pub current: Option<CurrentJob>,
    /// Deliveries settled since it started (done, given back or dead-lettered).
    pub jobs_settled: u64,
    /// The sweeps it knows of, highest priority first.
    pub sweeps: Vec<String>,
    /// When it answered: a worker that answers is alive.
    pub at_unix: u64,
}

/// The job a worker has in hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentJob {
    pub id: String,
    pub label: String,
    pub sweep: String,
    pub since_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type() {
        let m = FarmMessage::Sweep { sweep: "a".into(), priority: 2, every_s: 2, published: false };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"type":"sweep","sweep":"a","priority":2,"every_s":2}"#);
        assert_eq!(serde_json::from_str::<FarmMessage>(r#"{"type":"roll_call"}"#).unwrap(), FarmMessage::RollCall);
    }
}
