//! Finding evidence: dense search over the phrase index, the units and multi-unit modes built from its
//! hits, and the BM25 baseline. Depends on `io`, `text` and `model`.

pub mod bm25;
pub mod scan;
pub mod search;
pub mod units;
