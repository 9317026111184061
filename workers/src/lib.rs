//! phrasesweep's data plane: job handlers, artifact storage and queue clients. The coordinator (and
//! its embedded mode) drives these; nothing here decides what work to do.

pub mod corpus;
pub mod fault;
pub mod jobs;
pub mod lance_io;
pub mod model;
pub mod queue;
pub mod sentences;
pub mod store;
pub mod worker;
