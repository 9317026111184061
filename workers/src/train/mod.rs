//! Training: the reader teacher, the phrase encoder with its query encoders, and query-side fine-tuning
//! against the frozen phrase index. The job handlers in `jobs::train` drive these over the store.

pub mod losses;
pub mod optim;
pub mod phrase;
pub mod qsft;
pub mod rc;
pub mod reader;
