//! `encode`: one corpus fragment, or a row range of one, → phrase vectors (every kept token of every
//! paragraph), written as uncommitted fragments of the `phrases` dataset. Paragraphs are encoded in
//! chunks that stream into the Lance writer, so memory holds one chunk of vectors, not the shard's.

use super::JobError;
use crate::text::corpus::{CORPUS_COLUMNS, CorpusRow, corpus_rows};
use crate::io::lance::{open_dataset, write_uncommitted_stream};
use crate::model::device::{Job, job_device};
use burn::tensor::backend::Backend;
use crate::model::encoders::{EncodedParagraph, ParagraphInput, encode_paragraphs};
use crate::model::registry::{load_phrase_encoder, local_model};
use crate::progress::RateLog;
use crate::io::store::Store;
use anyhow::{Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, RecordBatchIterator, StringArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{ArrowPrimitiveType, Float16Type, UInt64Type};
use arrow_schema::ArrowError;
use futures::TryStreamExt;
use phrasesweep_schemas::job::{EncodeConfig, EncodeInputs};
use phrasesweep_schemas::outcome::EncodeOutcome;
use phrasesweep_schemas::settings::Precision;
use phrasesweep_schemas::tables::{phrases, phrases_schema};
use std::sync::Arc;
use tracing::info;

/// Paragraphs per encoding chunk (one Arrow batch of phrases each); windows are batched by length within
/// a chunk, so a larger chunk pads less.
const CHUNK: usize = 256;

/// A corpus row and its row address (which phrases keep, to find their paragraph again).
struct Paragraph {
    row: u64,
    p: CorpusRow,
}

pub async fn run(store: &Store, inputs: &EncodeInputs, config: &EncodeConfig) -> Result<EncodeOutcome, JobError> {
    match config.settings.precision {
        Precision::F32 => encode_on::<Job>(store, inputs, config, job_device()?).await,
        #[cfg(feature = "cuda")]
        Precision::F16 => encode_on::<crate::model::device::GpuHalf>(store, inputs, config, job_device()?).await,
        #[cfg(not(feature = "cuda"))]
        Precision::F16 => Err(JobError::Input(
            "encode.precision = \"f16\" runs on CUDA workers (built with --features cuda); this worker is a CPU build".into(),
        )),
    }
}

/// The encode job on backend `B`.
async fn encode_on<B: Backend>(store: &Store, inputs: &EncodeInputs, config: &EncodeConfig, device: B::Device) -> Result<EncodeOutcome, JobError> {
    let paragraphs = read_fragment(store, inputs).await?;
    let (model, text) = load_phrase_encoder::<B>(&local_model(store, &config.model).await?, &device)?;
    let dim = model.bert.embeddings.word_embeddings.weight.dims()[1];
    let settings = config.settings.clone();
    let schema = phrases_schema(dim, settings.dtype);
    let total = paragraphs.len() as u64;
    let counts = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let started = std::time::Instant::now();
    let part = inputs.part();
    let chunks: Vec<Vec<Paragraph>> = {
        let mut it = paragraphs.into_iter().peekable();
        let mut v = Vec::new();
        while it.peek().is_some() {
            v.push(it.by_ref().take(CHUNK).collect());
        }
        v
    };
    let counts_in = counts.clone();
    let schema_in = schema.clone();
    let mut log = RateLog::new(format!("encode {part}"), total, "paragraphs");
    let batches = chunks.into_iter().map(move |chunk| -> Result<RecordBatch, ArrowError> {
        let inputs: Vec<ParagraphInput<'_>> = chunk
            .iter()
            .map(|x| ParagraphInput { title: &x.p.title, text: &x.p.text, sentences: &x.p.sentences })
            .collect();
        let encoded = encode_paragraphs(&model, &text, &inputs, &settings, &device)
            .map_err(|e| ArrowError::ExternalError(e.into()))?;
        {
            let mut c = counts_in.lock().unwrap();
            c.0 += encoded.iter().map(|e| e.pieces as u64).sum::<u64>();
            c.1 += encoded.iter().map(|e| e.tokens.len() as u64).sum::<u64>();
        }
        log.add(chunk.len() as u64);
        phrase_batch(&schema_in, dim, &chunk, &encoded)
    });
    let reader = RecordBatchIterator::new(batches, schema.clone());
    let fragments = write_uncommitted_stream(store, &config.dataset, reader).await?;
    let (pieces, kept) = *counts.lock().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    info!(part, paragraphs = total, pieces, kept, seconds, "encoded corpus");
    crate::fault::pause_after_write("encode").await;
    Ok(EncodeOutcome { paragraphs: total, pieces, kept, dim, seconds, fragments })
}

async fn read_fragment(store: &Store, inputs: &EncodeInputs) -> Result<Vec<Paragraph>> {
    let ds = open_dataset(store, &inputs.corpus.dataset).await?;
    let ds = ds.checkout_version(inputs.corpus.version).await.with_context(|| {
        format!("{} has no version {}", inputs.corpus.dataset, inputs.corpus.version)
    })?;
    let fragment = ds
        .get_fragment(inputs.fragment as usize)
        .with_context(|| format!("{} version {} has no fragment {}", inputs.corpus.dataset, inputs.corpus.version, inputs.fragment))?;
    let mut scan = fragment.scan();
    scan.project(&CORPUS_COLUMNS)?;
    scan.with_row_address();
    if let Some([start, end]) = inputs.rows {
        scan.limit(Some((end - start) as i64), Some(start as i64))?;
    }
    let mut stream = scan.try_into_stream().await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.try_next().await? {
        let rows = batch.column_by_name("_rowaddr").context("the scan returned no row addresses")?;
        let rows = rows.as_primitive::<UInt64Type>().values().to_vec();
        out.extend(rows.into_iter().zip(corpus_rows(&batch)?).map(|(row, p)| Paragraph { row, p }));
    }
    Ok(out)
}

fn phrase_batch(
    schema: &arrow_schema::SchemaRef,
    dim: usize,
    chunk: &[Paragraph],
    encoded: &[EncodedParagraph],
) -> Result<RecordBatch, ArrowError> {
    let n: usize = encoded.iter().map(|e| e.tokens.len()).sum();
    let mut doc = Vec::with_capacity(n);
    let (mut para, mut row, mut sent, mut tok, mut cs, mut ce) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut values = Vec::with_capacity(n * dim);
    for (x, e) in chunk.iter().zip(encoded) {
        for t in &e.tokens {
            doc.push(x.p.doc_id.as_str());
            para.push(x.p.paragraph);
            row.push(x.row);
            sent.push(t.sentence);
            tok.push(t.token);
            cs.push(t.start);
            ce.push(t.end);
        }
        values.extend_from_slice(&e.vectors);
    }
    let vectors = match schema.field_with_name(phrases::VECTOR)?.data_type() {
        arrow_schema::DataType::FixedSizeList(item, _) if *item.data_type() == arrow_schema::DataType::Float16 => {
            let half = Float16Array::from_iter_values(values.into_iter().map(<Float16Type as ArrowPrimitiveType>::Native::from_f32));
            FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(half), None)?
        }
        arrow_schema::DataType::FixedSizeList(item, _) => FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(Float32Array::from(values)), None)?,
        other => return Err(ArrowError::SchemaError(format!("phrase vectors of type {other}"))),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(doc)),
        Arc::new(UInt32Array::from(para)),
        Arc::new(UInt64Array::from(row)),
        Arc::new(UInt32Array::from(sent)),
        Arc::new(UInt32Array::from(tok)),
        Arc::new(UInt32Array::from(cs)),
        Arc::new(UInt32Array::from(ce)),
        Arc::new(vectors),
    ];
    debug_assert!(columns.iter().all(|c| c.len() == n));
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f16 is a CUDA path: a CPU worker refuses it as an input error (with the reason), at once.
    #[cfg(not(feature = "cuda"))]
    #[tokio::test]
    async fn half_precision_is_refused_by_a_cpu_worker() {
        use phrasesweep_schemas::job::{DatasetVersion, ModelRef};
        use phrasesweep_schemas::settings::EncodeSettings;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().to_str().unwrap()).unwrap();
        let inputs = EncodeInputs { corpus: DatasetVersion { dataset: "corpus.lance".into(), version: 1 }, fragment: 0, rows: None };
        let settings = EncodeSettings { precision: Precision::F16, ..Default::default() };
        let config = EncodeConfig { dataset: "phrases.lance".into(), model: ModelRef { path: "default".into(), sha256: "0".into() }, settings };
        match run(&store, &inputs, &config).await {
            Err(JobError::Input(e)) => assert!(e.contains("CUDA") && e.contains("f16"), "{e}"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
}
