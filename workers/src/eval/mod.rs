//! Scoring evidence against gold answers (mAR, recall at budgets, recall@k, exact match). Pure
//! functions over text: depends on nothing else in the crate.

pub mod metrics;
pub mod table;
