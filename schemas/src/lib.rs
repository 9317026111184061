//! The contracts between phrasesweep's coordinator and its workers: job messages and their outcomes,
//! the experiment configuration, and the Arrow schemas of every table written. This crate does no I/O
//! (no files, environment or clock), so both sides (and users' own tools) can depend on it cheaply.
//!
//! Its modules import each other in one direction only: `settings`, `retrieval` and `record` are
//! leaves; `train` builds on `settings`; `job` on those; `config`, `outcome`, `event` and `farm` on `job`; `sweep` on `config`;
//! `tables` on `outcome`.

pub mod config;
pub mod event;
pub mod farm;
pub mod job;
pub mod outcome;
pub mod record;
pub mod retrieval;
pub mod settings;
pub mod sweep;
pub mod tables;
pub mod train;

pub use config::ExperimentConfig;
pub use event::{JobEvent, JobOutcome};
pub use job::{JobEnvelope, JobId, JobSpec, SCHEMA_VERSION};
