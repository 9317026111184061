//! Training: the reader teacher, the phrase encoder with its query encoders, and query-side fine-tuning
//! against the frozen phrase index. `resume` holds the resumable state and the one step loop every
//! training job runs; the job handlers in `jobs::train` read the inputs, build the models and drive it
//! over the store.

pub mod log;
pub mod losses;
pub mod optim;
pub mod phrase;
pub mod qsft;
pub mod rc;
pub mod reader;
pub mod resume;
