//! The archive as SQL: the run ledgers of any number of stores (local or S3) as DataFusion tables,
//! for `phrasesweep results STORE… --sql/--where/--sort/--format`.
//!
//! - `runs`: one row per run (`runs/` of each store): sweep, store, status, config and its sha256,
//!   version and commit, start and end, jobs, workers, seconds per stage;
//! - `metrics`: one row per retrieval per run (`metrics/`), with its `run_id`;
//! - `reading`: with `[reader]`, per run, retrieval and word budget: the reader's EM and F1, words and
//!   pieces read, seconds per question;
//! - `training`: every training job's log (`training/`): job, step, metric, value;
//! - `questions`: every run's per-question scores, by run and retrieval;
//! - `results`: `metrics` but the curves, beside its run's sweep, point, axes, store, status, commit and
//!   start, and the reader's EM and F1 at each budget: what `--where` and `--sort` filter and order when
//!   no `--sql` is given.

use crate::ledger::{per_question_tables, read_table};
use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use lance::deps::datafusion::datasource::MemTable;
use lance::deps::datafusion::prelude::SessionContext;
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::record::{RUN_METRICS_DIR, RUN_READING_DIR, RUNS_DIR};
use phrasesweep_schemas::tables::{per_question_schema, run_metrics_schema, run_reading_schema, runs_schema, training_log_schema};
use phrasesweep_workers::io::parquet::read_parquet;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::train::log::TRAINING_DIR;
use std::fmt::Write;
use std::sync::Arc;

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// What to ask: SQL of one's own, or the `results` view filtered and ordered.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub sql: Option<String>,
    pub filter: Option<String>,
    pub sort: Option<String>,
}

impl Query {
    fn text(&self) -> Result<String> {
        if let Some(sql) = &self.sql {
            if self.filter.is_some() || self.sort.is_some() {
                bail!("--sql is a whole query: put its WHERE and ORDER BY in it rather than --where and --sort");
            }
            return Ok(sql.clone());
        }
        let mut q = "SELECT * FROM results".to_string();
        if let Some(w) = &self.filter {
            write!(q, " WHERE {w}")?;
        }
        write!(q, " ORDER BY {}", self.sort.as_deref().unwrap_or("started_unix, run_id, retrieval"))?;
        Ok(q)
    }
}

/// `results`: each run's metrics but their curves (which `metrics` keeps), beside the run's sweep,
/// point and value of each of its `axes`, store, status, commit, config hash, start and jobs executed
/// (a rerun that executed none repeats the numbers of the run before it), and with a read stage the
/// reader's `em_at_<budget>w` and `f1_at_<budget>w` for each of the `budgets` read.
fn results_view(axes: &[String], budgets: &[u64]) -> String {
    let axes: String = axes.iter().map(|a| format!(", r.\"{}\"", a.replace('"', "\"\""))).collect();
    let floats: String = Metrics::FLOAT_COLUMNS.iter().map(|c| format!(", m.{c}")).collect();
    let read: Vec<String> = budgets.iter().flat_map(|b| ["em", "f1"].map(|m| format!("MAX(CASE WHEN budget = {b} THEN {m} END) AS {m}_at_{b}w"))).collect();
    let (columns, join) = if read.is_empty() {
        (String::new(), String::new())
    } else {
        let names: String = budgets.iter().flat_map(|b| ["em", "f1"].map(|m| format!(", g.{m}_at_{b}w"))).collect();
        (names, format!(" LEFT JOIN (SELECT run_id, retrieval, {} FROM reading GROUP BY run_id, retrieval) g ON g.run_id = m.run_id AND g.retrieval = m.retrieval", read.join(", ")))
    };
    format!(
        "CREATE VIEW results AS SELECT r.sweep, r.point{axes}, r.store, r.status, r.commit, r.config_sha256, r.started_unix, \
         r.jobs_executed, m.run_id, m.retrieval, m.mode, m.questions{floats}{columns} FROM metrics m JOIN runs r ON m.run_id = r.run_id{join}"
    )
}

/// `schema` and after it every other column of `files`, nullable, as its first file has it: the
/// `runs` files of sweeps add a column per axis.
fn with_columns_of(schema: &SchemaRef, files: &[RecordBatch]) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for b in files {
        for f in b.schema().fields() {
            if !fields.iter().any(|g| g.name() == f.name()) {
                fields.push(Field::new(f.name(), f.data_type().clone(), true));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// `stores` without repeats (the same root named twice would count each run twice).
pub fn distinct(stores: &[Store]) -> Vec<&Store> {
    let mut seen = std::collections::HashSet::new();
    stores.iter().filter(|s| seen.insert(s.root_uri().to_string())).collect()
}

/// `b` with its `store` column set to `uri`.
fn with_store(b: RecordBatch, uri: &str) -> Result<RecordBatch> {
    let Some(i) = b.schema().index_of("store").ok() else { return Ok(b) };
    let mut columns = b.columns().to_vec();
    columns[i] = Arc::new(StringArray::from(vec![uri; b.num_rows()]));
    Ok(RecordBatch::try_new(b.schema(), columns)?)
}

/// A ledger file's rows as today's `schema` has them, column by column by name: a file written before a
/// nullable column was added gets nulls there, so older ledgers stay readable as the schemas grow.
fn as_table(schema: &SchemaRef, b: &RecordBatch) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match b.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            // An axis holding numbers in one sweep and text in another.
            Some(c) => Ok(arrow::compute::cast(c, f.data_type()).with_context(|| format!("column `{}`", f.name()))?),
            None if f.is_nullable() => Ok(arrow::array::new_null_array(f.data_type(), b.num_rows())),
            None => bail!("no column `{}`", f.name()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Runs `query` over the ledgers of `stores`: the answer's schema and rows.
pub async fn query(stores: &[Store], query: &Query) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let stores = distinct(stores);
    let ctx = SessionContext::new();
    let mut axes = Vec::new();
    let tables = [
        ("runs", RUNS_DIR, runs_schema()),
        ("metrics", RUN_METRICS_DIR, run_metrics_schema()),
        ("reading", RUN_READING_DIR, run_reading_schema()),
        ("training", TRAINING_DIR, training_log_schema()),
    ];
    for (name, dir, schema) in tables {
        let mut files = Vec::new();
        for store in &stores {
            for b in read_table(store, dir).await? {
                // A run's `store` is where it is read from now (an archive moves; the config keeps
                // where it ran).
                let b = if name == "runs" { with_store(b, store.root_uri())? } else { b };
                files.push((store.root_uri(), b));
            }
        }
        let whole = with_columns_of(&schema, &files.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>());
        if name == "runs" {
            axes = whole.fields()[schema.fields().len()..].iter().map(|f| f.name().clone()).collect();
        }
        let schema = whole;
        let batches = files
            .iter()
            .map(|(store, b)| as_table(&schema, b).with_context(|| format!("a `{name}` file of {store}")))
            .collect::<Result<Vec<_>>>()?;
        let table = MemTable::try_new(schema, vec![batches]).with_context(|| format!("the `{name}` tables of the stores disagree"))?;
        ctx.register_table(name, Arc::new(table))?;
    }
    let text = query.text()?;
    // Every run's per-question files are read only for a query that asks for them.
    if text.contains("questions") {
        ctx.register_table("questions", Arc::new(questions_table(&stores).await?))?;
    }
    let budgets: Vec<u64> = ctx
        .sql("SELECT DISTINCT budget FROM reading ORDER BY budget")
        .await?
        .collect()
        .await?
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec())
        .collect();
    ctx.sql(&results_view(&axes, &budgets)).await?.collect().await?;
    let frame = ctx.sql(&text).await.with_context(|| format!("cannot run `{text}`"))?;
    let schema = frame.schema().inner().clone();
    Ok((schema, frame.collect().await?))
}

/// A line for each experiment (config hash, with the sha256s of the models and input files it read) that
/// finished more than one run that computed anything (on this store or another): whether their metrics,
/// every number and curve, are identical to the bit. A rerun that executed no job only read the records
/// of the run before it, and is left out.
pub async fn reproductions(stores: &[Store]) -> Result<Vec<String>> {
    // One experiment: one config, and the same models and input files by content.
    let sql = "SELECT r.config_sha256 || COALESCE(r.models, '') || COALESCE(r.data, '') AS experiment, r.run_id, m.retrieval AS sorted_by, m.* \
               FROM runs r JOIN metrics m ON m.run_id = r.run_id \
               WHERE r.status = 'done' AND r.jobs_executed > 0 ORDER BY experiment, r.started_unix, r.run_id, m.retrieval";
    let (_, batches) = query(stores, &Query { sql: Some(sql.into()), ..Default::default() }).await?;
    // Per config hash, per run (in start order): its metrics rows as text.
    let mut groups: std::collections::BTreeMap<String, Vec<(String, Vec<String>)>> = Default::default();
    let options = FormatOptions::default();
    for b in &batches {
        let (hash, run) = (b.column(0).as_string::<i32>(), b.column(1).as_string::<i32>());
        // Every metrics column but the run id and the per-question file's path (the run's own names).
        let schema = b.schema();
        let shown = (3..b.num_columns())
            .filter(|&c| !matches!(schema.field(c).name().as_str(), "run_id" | "per_question"))
            .map(|c| ArrayFormatter::try_new(b.column(c).as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            let row = shown.iter().map(|c| c.value(i).to_string()).collect::<Vec<_>>().join("\t");
            let runs = groups.entry(hash.value(i).to_string()).or_default();
            match runs.last_mut() {
                Some((r, rows)) if r == run.value(i) => rows.push(row),
                _ => runs.push((run.value(i).to_string(), vec![row])),
            }
        }
    }
    let mut lines = Vec::new();
    for (hash, runs) in groups.into_iter().filter(|(_, runs)| runs.len() > 1) {
        let (first, rows) = &runs[0];
        let (same, other): (Vec<_>, Vec<_>) = runs[1..].iter().partition(|(_, r)| r == rows);
        let ids = |runs: Vec<&(String, Vec<String>)>| runs.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ");
        let mut line = format!("config {}: {} runs computed it;", &hash[..12], runs.len());
        if !same.is_empty() {
            write!(line, " {} reproduce run {first} bit for bit", ids(same))?;
        }
        if !other.is_empty() {
            write!(line, " {} differ from run {first}", ids(other))?;
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Every run's per-question tables, each row led by its run and retrieval.
async fn questions_table(stores: &[&Store]) -> Result<MemTable> {
    let mut fields = vec![Field::new("run_id", DataType::Utf8, false), Field::new("retrieval", DataType::Utf8, false)];
    fields.extend(per_question_schema().fields().iter().map(|f| f.as_ref().clone()));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for store in stores {
        for (run, retrieval, path) in per_question_tables(store).await? {
            for b in read_parquet(store, &path).await.with_context(|| format!("{}/{path}", store.root_uri()))?.0 {
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(vec![run.as_str(); b.num_rows()])),
                    Arc::new(StringArray::from(vec![retrieval.as_str(); b.num_rows()])),
                ];
                columns.extend(b.columns().iter().cloned());
                batches.push(RecordBatch::try_new(schema.clone(), columns)?);
            }
        }
    }
    Ok(MemTable::try_new(schema, vec![batches])?)
}

/// `batches` as `format` (Parquet is bytes; the rest text).
pub fn render(batches: &[RecordBatch], schema: SchemaRef, format: Format) -> Result<Vec<u8>> {
    Ok(match format {
        Format::Table => format!("{}\n", arrow::util::pretty::pretty_format_batches_with_schema(schema, batches)?).into_bytes(),
        Format::Csv => delimited(batches, &schema)?.into_bytes(),
        Format::Json => json_lines(batches)?.into_bytes(),
        Format::Parquet => phrasesweep_workers::io::parquet::to_parquet(schema, batches, &[])?,
    })
}

/// CSV with a header, fields quoted where they hold a comma, quote or line break.
fn delimited(batches: &[RecordBatch], schema: &SchemaRef) -> Result<String> {
    let quote = |s: &str| if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    let mut out = schema.fields().iter().map(|f| quote(f.name())).collect::<Vec<_>>().join(",") + "\n";
    let options = FormatOptions::default();
    for b in batches {
        let columns = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let fields: Vec<String> = columns.iter().map(|c| quote(&c.value(row).to_string())).collect();
            writeln!(out, "{}", fields.join(","))?;
        }
    }
    Ok(out)
}

/// One JSON object per row: numbers and booleans as themselves, lists as arrays, the rest as strings.
fn json_lines(batches: &[RecordBatch]) -> Result<String> {
    let options = FormatOptions::default();
    let mut out = String::new();
    for b in batches {
        let schema = b.schema();
        let columns = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let mut object = serde_json::Map::new();
            for ((field, column), array) in schema.fields().iter().zip(&columns).zip(b.columns()) {
                let shown = column.value(row).to_string();
                let value = if array.is_null(row) {
                    serde_json::Value::Null
                } else {
                    match field.data_type() {
                        DataType::Boolean | DataType::List(_) | DataType::LargeList(_) => serde_json::from_str(&shown).unwrap_or(serde_json::Value::String(shown)),
                        t if t.is_numeric() => serde_json::from_str(&shown).unwrap_or(serde_json::Value::String(shown)),
                        _ => serde_json::Value::String(shown),
                    }
                };
                object.insert(field.name().clone(), value);
            }
            writeln!(out, "{}", serde_json::Value::Object(object))?;
        }
    }
    Ok(out)
}
