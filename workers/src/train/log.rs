//! A training job's log on the store (`training/<job>.parquet`): per step its learning rate, loss,
//! every loss term and the gradient norm before clipping; and the job's evaluations before and after.
//! One row per (step, metric), so the curves of any run can be drawn or queried afterwards, across
//! every training job of a store with one glob.

use crate::io::parquet::write_parquet;
use crate::io::store::Store;
use anyhow::Result;
use arrow::array::{Float64Array, RecordBatch, StringArray, UInt64Array};
use phrasesweep_schemas::tables::training_log_schema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The folder of every training job's log.
pub const TRAINING_DIR: &str = "training/";

/// One optimiser step, as the log keeps it (saved with each resumable checkpoint, so a resumed job's
/// log is whole).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step's number in its training run (over all epochs).
    pub step: usize,
    pub lr: f64,
    /// Absent for a step with nothing to learn from.
    pub loss: Option<f64>,
    pub grad_norm: Option<f64>,
    #[serde(default)]
    pub terms: BTreeMap<String, f64>,
}

/// An evaluation at `step`: the numeric fields of `result` (an evaluation record), as `eval.<field>`.
pub struct Eval<'a> {
    pub step: usize,
    pub result: &'a serde_json::Value,
}

/// Where the log of the training job writing to `output` goes: `models/qsft/query/epoch-1-<digest>`
/// logs to `training/qsft-query-epoch-1-<digest>.parquet`.
pub fn log_path(output: &str) -> String {
    let name = output.trim_end_matches('/').split_once('/').map_or(output, |(_, rest)| rest);
    format!("{TRAINING_DIR}{}.parquet", name.replace('/', "-"))
}

/// Writes the log of the job labelled `job` (its output folder `output`).
pub async fn write_log(store: &Store, output: &str, job: &str, steps: &[StepLog], evals: &[Eval<'_>]) -> Result<()> {
    let mut rows: Vec<(u64, String, f64)> = Vec::new();
    for s in steps {
        let step = s.step as u64;
        rows.push((step, "lr".into(), s.lr));
        rows.extend(s.loss.map(|v| (step, "loss".into(), v)));
        rows.extend(s.grad_norm.map(|v| (step, "grad_norm".into(), v)));
        rows.extend(s.terms.iter().map(|(t, v)| (step, format!("loss.{t}"), *v)));
    }
    for e in evals {
        if let Some(fields) = e.result.as_object() {
            rows.extend(fields.iter().filter_map(|(k, v)| Some((e.step as u64, format!("eval.{k}"), v.as_f64()?))));
        }
    }
    let batch = RecordBatch::try_new(
        training_log_schema(),
        vec![
            Arc::new(StringArray::from(vec![output; rows.len()])),
            Arc::new(StringArray::from(vec![job; rows.len()])),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )?;
    write_parquet(store, &log_path(output), training_log_schema(), &[batch], &[("phrasesweep.job".to_string(), job.to_string())]).await
}
