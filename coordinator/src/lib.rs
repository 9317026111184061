//! phrasesweep's control plane: planning jobs from an experiment config, driving them over a queue
//! (RabbitMQ or in-process), committing each stage's output once, and reporting.

pub mod archive;
pub mod compare;
pub mod config_file;
pub mod drive;
pub mod embedded;
pub mod history;
pub mod lease;
pub mod ledger;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod records;
pub mod report;
pub mod results;
pub mod search;
pub mod status;
pub mod summary;
pub mod workers;

pub use drive::{RunReport, drive};
pub use embedded::run_embedded;
