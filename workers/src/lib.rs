//! phrasesweep's data plane: job handlers, artifact storage and queue clients. The coordinator (and
//! its embedded mode) drives these; nothing here decides what work to do.
//!
//! The folders are the layers, lowest first: `io` (store, Lance, Parquet, queue), `text` (corpus,
//! questions, sentences), `eval` (metrics), `model` (burn encoders), `index` (search, units, BM25),
//! `train` (losses, optimiser, resumable training), `jobs` (one handler per job kind) and `worker`
//! (the loop that runs them).

pub mod env;
pub mod eval;
pub mod fault;
pub mod index;
pub mod io;
pub mod jobs;
pub mod model;
pub mod progress;
pub mod text;
pub mod train;
pub mod worker;
