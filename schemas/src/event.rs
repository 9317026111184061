//! Outcome events that workers send back to the coordinator.

use crate::job::JobId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum JobOutcome {
    Started,
    /// The job's output is durable on the store.
    Done { summary: String },
    /// The job cannot succeed as given (bad input): it is dead-lettered, never retried.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: JobId,
    pub worker: String,
    #[serde(flatten)]
    pub outcome: JobOutcome,
}
