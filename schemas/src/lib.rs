//! The contracts between phrasesweep's coordinator and its workers: job messages and their outcome events,
//! the experiment configuration, and the Arrow schemas of every table written. This crate does no I/O, so
//! both sides (and users' own tools) can depend on it cheaply.

pub mod config;
pub mod event;
pub mod job;
pub mod record;
pub mod retrieval;
pub mod tables;
pub mod train;

pub use config::{ConfigError, ExperimentConfig};
pub use event::{JobEvent, JobOutcome};
pub use job::{JobEnvelope, JobId, JobSpec, SCHEMA_VERSION};
