//! phrasesweep's data plane: job handlers, artifact storage and queue clients. The coordinator (and
//! its embedded mode) drives these; nothing here decides what work to do.

pub mod bm25;
pub mod corpus;
pub mod fault;
pub mod jobs;
pub mod lance_io;
pub mod metrics;
pub mod parquet_io;
pub mod model;
pub mod progress;
pub mod queue;
pub mod questions;
pub mod retrieval;
pub mod search;
pub mod sentences;
pub mod store;
pub mod train;
pub mod worker;
