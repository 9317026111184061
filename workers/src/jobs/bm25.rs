//! `bm25-index`: the paragraphs or sentences of a committed corpus version → a BM25 index on the store,
//! read by every BM25 retrieve job over that corpus version.

use super::JobError;
use crate::index::bm25;
use crate::io::store::Store;
use phrasesweep_schemas::job::{Bm25IndexConfig, DatasetVersion};
use phrasesweep_schemas::outcome::Bm25IndexOutcome;
use tracing::info;

pub async fn run(store: &Store, corpus: &DatasetVersion, config: &Bm25IndexConfig) -> Result<Bm25IndexOutcome, JobError> {
    let started = std::time::Instant::now();
    let built = bm25::build(store, corpus, config.unit, &config.output).await?;
    let seconds = started.elapsed().as_secs_f64();
    info!(unit = %config.unit, units = built.units, terms = built.terms, bytes = built.bytes, seconds, "bm25 index written");
    Ok(Bm25IndexOutcome { units: built.units, terms: built.terms, bytes: built.bytes, seconds, output: config.output.clone() })
}
