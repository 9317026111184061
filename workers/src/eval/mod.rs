//! Scoring evidence against gold answers (mAR, recall at budgets, recall@k, exact match: pure functions
//! over text), and the metrics table as Arrow. Depends on nothing else in the crate.

pub mod metrics;
pub mod table;
