//! Scoring evidence against gold answers (mAR, recall at budgets, recall@k, exact match: pure functions
//! over text), the metrics table as Arrow, and the reference study's run files. Depends on nothing else
//! in the crate but its input error type.

pub mod metrics;
pub mod runfile;
pub mod table;
