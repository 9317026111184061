//! Lance datasets written by many workers and committed once: workers write data files without a
//! commit and record the fragments; the coordinator commits all of them as one version. A redelivered
//! job writes new files and its earlier ones are never referenced, so rows are never duplicated.

use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::{RecordBatch, RecordBatchIterator};
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::transaction::{Operation, TransactionBuilder};
use lance::dataset::{CommitBuilder, InsertBuilder, WriteMode, WriteParams};
use lance::io::{ObjectStoreParams, StorageOptionsAccessor};
use lance::table::format::Fragment;
use phrasesweep_schemas::outcome::Fragments;
use std::collections::HashMap;
use lance::session::Session;
use std::sync::{Arc, LazyLock};

/// Lance's fragments as a job outcome records them (opaque JSON to the contracts crate).
fn recorded(fragments: Vec<Fragment>) -> Result<Fragments> {
    fragments.iter().map(|f| serde_json::to_value(f).context("cannot record a Lance fragment")).collect()
}

fn store_params(store: &Store) -> ObjectStoreParams {
    ObjectStoreParams {
        storage_options_accessor: Some(Arc::new(StorageOptionsAccessor::with_static_options(store.lance_options()))),
        ..Default::default()
    }
}

/// Writes batches as data files of `dataset` (relative to the store root) without committing them.
pub async fn write_uncommitted(store: &Store, dataset: &str, batches: Vec<RecordBatch>) -> Result<Fragments> {
    let schema = batches.first().context("nothing to write")?.schema();
    write_uncommitted_stream(store, dataset, RecordBatchIterator::new(batches.into_iter().map(Ok), schema)).await
}

/// Writes the batches `reader` produces (lazily, on a background thread) as uncommitted data files.
pub async fn write_uncommitted_stream<I>(store: &Store, dataset: &str, reader: RecordBatchIterator<I>) -> Result<Fragments>
where
    I: Iterator<Item = std::result::Result<RecordBatch, arrow_schema::ArrowError>> + Send + 'static,
{
    let uri = store.dataset_uri(dataset);
    let params = WriteParams { mode: WriteMode::Overwrite, store_params: Some(store_params(store)), ..Default::default() };
    let txn = InsertBuilder::new(uri.as_str())
        .with_params(&params)
        .execute_uncommitted_stream(reader)
        .await
        .with_context(|| format!("cannot write data files to {uri}"))?;
    match txn.operation {
        Operation::Overwrite { fragments, .. } | Operation::Append { fragments } => recorded(fragments),
        other => anyhow::bail!("unexpected Lance operation {other} for an uncommitted write"),
    }
}

/// Commits fragments written by many jobs as one new version: the dataset's whole content, or, with
/// `append`, added after the fragments it holds (a growing stage). `properties` go into the Lance
/// transaction and make the commit idempotent: the same commit twice gives the same table.
pub async fn commit_fragments(
    store: &Store,
    dataset: &str,
    schema: &arrow_schema::Schema,
    fragments: Fragments,
    properties: HashMap<String, String>,
    append: bool,
) -> Result<Dataset> {
    let fragments = fragments
        .into_iter()
        .map(|f| serde_json::from_value::<Fragment>(f).context("a job recorded an unreadable Lance fragment"))
        .collect::<Result<Vec<_>>>()?;
    let uri = store.dataset_uri(dataset);
    let schema = lance::datatypes::Schema::try_from(schema).context("schema not supported by Lance")?;
    let read_version = match open_dataset(store, dataset).await {
        Ok(ds) => {
            // The commit landed but its stage record did not (the coordinator died between the two):
            // committing again would append the same rows twice.
            let last = ds.read_transaction().await.ok().flatten().and_then(|t| t.transaction_properties);
            if last.is_some_and(|p| *p == properties) {
                return Ok(ds);
            }
            ds.version().version
        }
        Err(_) => 0,
    };
    let op = if append { Operation::Append { fragments } } else { Operation::Overwrite { fragments, schema, config_upsert_values: None, initial_bases: None } };
    let txn = TransactionBuilder::new(read_version, op).transaction_properties(Some(Arc::new(properties))).build();
    CommitBuilder::new(uri.as_str())
        .with_store_params(store_params(store))
        .execute(txn)
        .await
        .with_context(|| format!("cannot commit {uri}"))
}

/// For each fragment of `ds`, the first version that holds it unchanged (same id and data file): a
/// dataset that only grows by appending keeps each fragment's origin, whatever its latest version.
pub async fn fragment_origins(ds: &Dataset) -> Result<HashMap<u64, u64>> {
    let file = |f: &lance::dataset::fragment::FileFragment| f.metadata().files.first().map(|d| d.path.clone());
    let mut origins: HashMap<u64, u64> = ds.get_fragments().iter().map(|f| (f.id() as u64, ds.version().version)).collect();
    let mut alive: HashMap<u64, Option<String>> = ds.get_fragments().iter().map(|f| (f.id() as u64, file(f))).collect();
    let mut version = ds.version().version;
    while !alive.is_empty() && version > 1 {
        version -= 1;
        let Ok(older) = ds.checkout_version(version).await else { break };
        let there: HashMap<u64, Option<String>> = older.get_fragments().iter().map(|f| (f.id() as u64, file(f))).collect();
        alive.retain(|id, path| there.get(id) == Some(path));
        for id in alive.keys() {
            origins.insert(*id, version);
        }
    }
    Ok(origins)
}

/// One Lance session per process: its caches (index partitions, file metadata) outlive a job, so the
/// jobs a worker runs one after another over the same index do not read them again.
static SESSION: LazyLock<Arc<Session>> = LazyLock::new(|| Arc::new(Session::default()));

pub async fn open_dataset(store: &Store, dataset: &str) -> Result<Dataset> {
    let uri = store.dataset_uri(dataset);
    DatasetBuilder::from_uri(&uri)
        .with_session(SESSION.clone())
        .with_storage_options(store.lance_options())
        .load()
        .await
        .with_context(|| format!("cannot open Lance dataset {uri}"))
}
