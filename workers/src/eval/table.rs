//! The metrics table (one row per retrieval) as Arrow batches: written by score jobs and the run, read
//! by `results`. Its columns come from [`Metrics::FLOAT_COLUMNS`], as its schema does, so a metric added
//! to `Metrics` is written and read back alike.

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListBuilder, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{Float64Type, UInt64Type};
use arrow_schema::{DataType, Field};
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::tables::metrics_schema;
use std::sync::Arc;

pub fn metrics_batch(rows: &[Metrics]) -> Result<RecordBatch> {
    let curve = |g: &dyn Fn(&Metrics) -> &Vec<f64>| -> ArrayRef {
        let mut b = ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new("item", DataType::Float64, false)));
        for r in rows {
            b.values().append_slice(g(r));
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.retrieval.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.mode.as_str()))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.questions))),
    ];
    let floats: Vec<Vec<f64>> = rows.iter().map(Metrics::floats).collect();
    for c in 0..Metrics::FLOAT_COLUMNS.len() {
        columns.push(Arc::new(Float64Array::from_iter_values(floats.iter().map(|f| f[c]))));
    }
    columns.push(curve(&|r| &r.curve_seed));
    columns.push(curve(&|r| &r.curve_strict));
    Ok(RecordBatch::try_new(metrics_schema(), columns)?)
}

/// The rows of a batch that [`metrics_batch`] wrote.
pub fn metrics_from_batch(b: &RecordBatch) -> Result<Vec<Metrics>> {
    let col = |n: &str| b.column_by_name(n).with_context(|| format!("column {n} is missing"));
    let strings = |n: &str| -> Result<StringArray> { Ok(col(n)?.as_string_opt::<i32>().with_context(|| format!("column {n} is not text"))?.clone()) };
    let curve = |n: &str| -> Result<Vec<Vec<f64>>> {
        let l = col(n)?.as_list_opt::<i32>().with_context(|| format!("column {n} is not a list"))?.clone();
        (0..l.len())
            .map(|i| Ok(l.value(i).as_primitive_opt::<Float64Type>().with_context(|| format!("column {n} is not a list of f64"))?.values().to_vec()))
            .collect()
    };
    let (retrieval, mode) = (strings("retrieval")?, strings("mode")?);
    let questions = col("questions")?.as_primitive_opt::<UInt64Type>().context("column questions is not u64")?.clone();
    // A metric added after a table was written reads as NaN there (the rest of the table still reads).
    let floats = Metrics::FLOAT_COLUMNS
        .iter()
        .map(|n| match b.column_by_name(n) {
            Some(c) => Ok(c.as_primitive_opt::<Float64Type>().with_context(|| format!("column {n} is not f64"))?.clone()),
            None => Ok(Float64Array::from(vec![f64::NAN; b.num_rows()])),
        })
        .collect::<Result<Vec<Float64Array>>>()?;
    let (curve_seed, curve_strict) = (curve("curve_seed")?, curve("curve_strict")?);
    (0..b.num_rows())
        .map(|i| {
            let row: Vec<f64> = floats.iter().map(|f| f.value(i)).collect();
            Metrics::from_columns(retrieval.value(i).to_string(), mode.value(i).to_string(), questions.value(i), &row, curve_seed[i].clone(), curve_strict[i].clone())
                .context("metrics row of the wrong width")
        })
        .collect()
}
