//! `ingest`: one corpus shard → sentence-split paragraphs, written as uncommitted fragments of the Lance
//! `corpus` dataset. The coordinator commits every shard's fragments in one transaction.

use super::{JobError, read_shard};
use crate::text::corpus::{Document, parse_documents};
use crate::io::lance::write_uncommitted;
use crate::text::sentences::split_sentences;
use crate::io::store::Store;
use anyhow::Context;
use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, UInt32Builder};
use arrow_schema::{DataType, Field};
use phrasesweep_schemas::job::{LineShard, IngestConfig};
use phrasesweep_schemas::outcome::IngestOutcome;
use phrasesweep_schemas::tables::corpus_schema;
use std::sync::Arc;
use tracing::info;

/// Paragraph rows per Arrow batch.
const BATCH_ROWS: usize = 4096;

pub async fn run(store: &Store, shard: &LineShard, config: &IngestConfig) -> Result<IngestOutcome, JobError> {
    crate::fault::transient_error()?;
    let bytes = read_shard(store, shard).await?;
    let docs = parse_documents(&shard.path, shard.first_line, &bytes).map_err(|e| JobError::Input(e.to_string()))?;
    crate::fault::panic_on_document(docs.iter().map(|d| d.id.as_str()));
    let batches = paragraph_batches(&docs).context("cannot build paragraph batches")?;
    let paragraphs: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let fragments = if batches.is_empty() {
        Vec::new()
    } else {
        write_uncommitted(store, &config.dataset, batches).await?
    };
    info!(shard = shard.shard, docs = docs.len(), paragraphs, "ingested shard");
    crate::fault::pause_after_write("ingest").await;
    let doc_lines = docs.iter().map(|d| (d.id.clone(), d.line)).collect();
    Ok(IngestOutcome { docs: docs.len() as u64, paragraphs, fragments, doc_lines })
}

/// One row per paragraph, in document order.
pub fn paragraph_batches(docs: &[Document]) -> anyhow::Result<Vec<RecordBatch>> {
    let schema = corpus_schema();
    let item = Arc::new(Field::new("item", DataType::UInt32, false));
    let mut batches = Vec::new();
    let rows = docs.iter().flat_map(|d| d.paragraphs.iter().enumerate().map(move |(i, p)| (d, i, p)));
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let mut doc_id = StringBuilder::new();
        let mut title = StringBuilder::new();
        let mut para = UInt32Builder::new();
        let mut text = StringBuilder::new();
        let mut starts = ListBuilder::new(UInt32Builder::new()).with_field(item.clone());
        let mut ends = ListBuilder::new(UInt32Builder::new()).with_field(item.clone());
        for (d, i, p) in rows.by_ref().take(BATCH_ROWS) {
            doc_id.append_value(&d.id);
            title.append_value(&d.title);
            para.append_value(i as u32);
            text.append_value(p);
            for (s, e) in split_sentences(p) {
                starts.values().append_value(s);
                ends.values().append_value(e);
            }
            starts.append(true);
            ends.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(doc_id.finish()),
            Arc::new(title.finish()),
            Arc::new(para.finish()),
            Arc::new(text.finish()),
            Arc::new(starts.finish()),
            Arc::new(ends.finish()),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(batches)
}
