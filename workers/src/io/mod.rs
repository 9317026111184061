//! Where bytes go: the artifact store (a folder or an S3 prefix), Lance datasets and Parquet tables on
//! it, and the job queue. No model or text logic here; every other layer reads and writes through this one.

pub mod chat;
pub mod lance;
pub mod parquet;
pub mod queue;
pub mod store;
