//! `phrasesweep results`: the metrics table of a run, read back from `metrics.parquet` on its store.

use crate::plan::METRICS_FILE;
use anyhow::{Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, UInt64Type};
use phrasesweep_workers::jobs::score::Metrics;
use phrasesweep_workers::parquet_io::read_parquet;
use phrasesweep_workers::store::Store;
use std::fmt::Write;

pub async fn read_metrics(store: &Store) -> Result<Vec<Metrics>> {
    let (batches, _) = read_parquet(store, METRICS_FILE).await.context("no results yet: run the sweep first")?;
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).with_context(|| format!("{METRICS_FILE}: column {n} is missing"));
        let f = |n: &str| -> Result<Vec<f64>> { Ok(col(n)?.as_primitive::<Float64Type>().values().to_vec()) };
        let s = |n: &str| -> Result<Vec<String>> { Ok(col(n)?.as_string::<i32>().iter().map(|v| v.unwrap_or("").to_string()).collect()) };
        let curve = |n: &str| -> Result<Vec<Vec<f64>>> {
            let l = col(n)?.as_list::<i32>().clone();
            Ok((0..l.len()).map(|i| l.value(i).as_primitive::<Float64Type>().values().to_vec()).collect())
        };
        let (names, modes) = (s("retrieval")?, s("mode")?);
        let questions = col("questions")?.as_primitive::<UInt64Type>().values().to_vec();
        let cols: Vec<Vec<f64>> = [
            "mar_seed", "mar_strict", "recall_500w", "recall_1000w", "recall_3000w", "recall_at_1", "recall_at_10",
            "recall_at_100", "em_top_phrase", "phrase_correct", "sent_correct", "mean_words",
        ]
        .iter()
        .map(|n| f(n))
        .collect::<Result<_>>()?;
        let (cs, ct) = (curve("curve_seed")?, curve("curve_strict")?);
        for i in 0..b.num_rows() {
            out.push(Metrics {
                retrieval: names[i].clone(),
                mode: modes[i].clone(),
                questions: questions[i],
                mar_seed: cols[0][i],
                mar_strict: cols[1][i],
                recall_500w: cols[2][i],
                recall_1000w: cols[3][i],
                recall_3000w: cols[4][i],
                recall_at_1: cols[5][i],
                recall_at_10: cols[6][i],
                recall_at_100: cols[7][i],
                em_top_phrase: cols[8][i],
                phrase_correct: cols[9][i],
                sent_correct: cols[10][i],
                mean_words: cols[11][i],
                curve_seed: cs[i].clone(),
                curve_strict: ct[i].clone(),
            });
        }
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
