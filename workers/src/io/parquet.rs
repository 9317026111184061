//! Parquet results on the store: written whole in memory and put in one request, so a reader sees the
//! complete file or none; provenance goes into the file's key-value metadata.

use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// Encodes batches as one Parquet file with `metadata` (for example the job id and the config).
pub fn to_parquet(schema: arrow_schema::SchemaRef, batches: &[RecordBatch], metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(metadata.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    writer.close()?;
    Ok(buf)
}

pub async fn write_parquet(
    store: &Store,
    rel: &str,
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
    metadata: &[(String, String)],
) -> Result<()> {
    let bytes = to_parquet(schema, batches, metadata)?;
    store.put(rel, bytes).await.with_context(|| format!("cannot write {rel}"))
}

/// Reads a whole Parquet file and its key-value metadata.
pub async fn read_parquet(store: &Store, rel: &str) -> Result<(Vec<RecordBatch>, Vec<(String, String)>)> {
    let bytes = store.get(rel).await?.with_context(|| format!("{} does not exist on {}", rel, store.root_uri()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .with_context(|| format!("{rel} is not a Parquet file"))?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().map(|k| (k.key.clone(), k.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>().with_context(|| format!("cannot read {rel}"))?;
    Ok((batches, metadata))
}
