//! `phrasesweep results`: the metrics table of a run, read back from `metrics.parquet` on its store.

use phrasesweep_schemas::record::METRICS_FILE;
use anyhow::{Context, Result};
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_workers::eval::table::metrics_from_batch;
use phrasesweep_workers::io::parquet::read_parquet;
use phrasesweep_workers::io::store::Store;
use std::fmt::Write;

pub async fn read_metrics(store: &Store) -> Result<Vec<Metrics>> {
    let (batches, _) = read_parquet(store, METRICS_FILE).await.context("no results yet: run the sweep first")?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(metrics_from_batch(b).with_context(|| store.dataset_uri(METRICS_FILE))?);
    }
    Ok(out)
}

/// The metrics as an aligned text table, one retrieval per line.
pub fn table(rows: &[Metrics]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<24} {:<14} {:>5} {:>8} {:>10} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>7}",
        "retrieval", "mode", "n", "mAR", "mAR-strict", "R@500w", "R@1kw", "R@3kw", "R@1", "R@10", "EM", "words"
    );
    for m in rows {
        let _ = writeln!(
            t,
            "{:<24} {:<14} {:>5} {:>8.4} {:>10.4} {:>7.3} {:>7.3} {:>7.3} {:>6.3} {:>6.3} {:>6.3} {:>7.0}",
            m.retrieval, m.mode, m.questions, m.mar_seed, m.mar_strict, m.recall_500w, m.recall_1000w, m.recall_3000w,
            m.recall_at_1, m.recall_at_10, m.em_top_phrase, m.mean_words
        );
    }
    t
}
