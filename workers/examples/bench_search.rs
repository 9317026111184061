//! `make bench-search`: one batch of questions against a run's committed phrase index, three ways, in one
//! run: the per-question IVF search at today's defaults, the batch scan, and (by scripts/bench_faiss.py,
//! from the files this writes) faiss on the same vectors in memory. Not a test; numbers go to
//! docs/benchmarks.md.
//!
//! `bench_search STORE QUESTIONS N IVF_QUESTIONS OUT`: the first `N` questions scanned at once, the first
//! `IVF_QUESTIONS` of them searched one by one (the per-question time is extrapolated to `N`), and into
//! `OUT` the queries, the vectors and their row addresses in scan order, the scan's top start hits, and
//! `rust.json` with the timings.

mod support;

use anyhow::{Context, Result};
use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use futures::TryStreamExt;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::record::{CORPUS_DATASET, PHRASES_DATASET, StageCommit, stage_path};
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_schemas::tables::phrases;
use phrasesweep_workers::index::scan::{Queries, f32_values};
use phrasesweep_workers::index::search::{PhraseIndex, recall};
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::io::store::Store;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Hits per side, as a retrieve job of k = 100 asks for (2k for sentence and coarser units).
const HITS: usize = 200;
/// Recall is measured at this depth against the scan, which reads every vector.
const DEPTH: usize = 100;

fn write_f32(path: &Path, values: impl IntoIterator<Item = f32>) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    values.into_iter().try_for_each(|v| f.write_all(&v.to_le_bytes()))?;
    Ok(f.flush()?)
}

fn write_u64(path: &Path, values: impl IntoIterator<Item = u64>) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    values.into_iter().try_for_each(|v| f.write_all(&v.to_le_bytes()))?;
    Ok(f.flush()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    phrasesweep_workers::env::give_lance_every_core();
    tracing_subscriber_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, questions, n, ivf_n, out] = args.as_slice() else {
        anyhow::bail!("usage: bench_search STORE QUESTIONS N IVF_QUESTIONS OUT");
    };
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    let store = Store::at(store)?;
    let version = async |stage: &str| -> Result<u64> {
        let c: StageCommit = store.get_json(&stage_path(stage)).await?.with_context(|| format!("no committed {stage} stage"))?;
        Ok(c.version)
    };
    // The indexed version (the IVF path needs it); the encoded one serves the scan alone.
    let phrases = match version("index").await {
        Ok(v) => v,
        Err(_) if ivf_n == "0" => version("encode").await?,
        Err(e) => return Err(e.context("the IVF path needs the index stage (or pass IVF_QUESTIONS = 0)")),
    };
    let phrases = DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases };
    let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: version("ingest").await? };
    let queries = support::first_queries(questions, n)?;
    let ivf_n: usize = ivf_n.parse().context("IVF_QUESTIONS is a number")?;
    let index = PhraseIndex::open(&store, &phrases, &corpus, &SearchSettings::default()).await?;
    let rows = index.rows();

    // The vectors alone, read once: the floor's reading half.
    let ds = open_dataset(&store, PHRASES_DATASET).await?.checkout_version(phrases.version).await?;
    let started = Instant::now();
    let mut scanner = ds.scan();
    scanner.project(&[phrases::VECTOR])?.batch_size(phrasesweep_workers::index::scan::BATCH_ROWS);
    let read_only: usize = scanner.try_into_stream().await?.map_ok(|b| b.num_rows()).try_fold(0, |a, n| async move { Ok(a + n) }).await?;
    let read_seconds = started.elapsed().as_secs_f64();
    println!("read the vectors alone: {read_only} rows in {read_seconds:.2} s");

    let started = Instant::now();
    let (found, stats) = index.scan(&Queries::new(&queries), HITS, false).await?;
    let scan_seconds = started.elapsed().as_secs_f64();
    let gflop = 2.0 * rows as f64 * queries[0].0.len() as f64 * 2.0 * queries.len() as f64 / 1e9;
    println!(
        "scan: {} questions in {scan_seconds:.2} s (read {:.2} s, score {:.2} s = {:.1} GFLOP/s, select {:.2} s)",
        queries.len(),
        stats.read.as_secs_f64(),
        stats.score.as_secs_f64(),
        gflop / stats.score.as_secs_f64(),
        stats.select.as_secs_f64()
    );
    let exact_starts: Vec<Vec<u64>> = found.iter().map(|c| c.starts.iter().take(DEPTH).map(|a| a.addr).collect()).collect();

    // Lance's own flat search on two questions: the scan's top hits are the exact ones.
    let mut flat_recall = Vec::new();
    for (q, exact) in queries.iter().zip(&exact_starts).take(2) {
        flat_recall.push(recall(&index.nearest(&q.0, DEPTH, true).await?, exact));
    }
    println!("Lance flat search vs scan, recall@{DEPTH} of start hits: {flat_recall:?}");

    // The per-question IVF path at the defaults.
    let (mut ivf_seconds, mut ivf_recall) = (0.0, 0.0);
    for (q, exact) in queries.iter().zip(&exact_starts).take(ivf_n) {
        let started = Instant::now();
        let c = index.candidates(&q.0, &q.1, HITS, false, false).await?;
        ivf_seconds += started.elapsed().as_secs_f64();
        ivf_recall += recall(exact, &c.starts.iter().take(DEPTH).map(|a| a.addr).collect::<Vec<_>>());
    }
    let ivf_per_question = ivf_seconds / ivf_n.max(1) as f64;
    ivf_recall /= ivf_n.max(1) as f64;
    println!("IVF per question: {ivf_per_question:.2} s ({ivf_n} questions), recall@{DEPTH} {ivf_recall:.3}");

    // For faiss: queries (start vectors, then end vectors), all vectors and their addresses in scan order,
    // and the scan's top start hits.
    write_f32(&out.join("queries.f32"), queries.iter().flat_map(|q| q.0.clone()).chain(queries.iter().flat_map(|q| q.1.clone())))?;
    write_u64(&out.join("scan_top.u64"), exact_starts.iter().flat_map(|v| v.iter().copied().chain(std::iter::repeat(u64::MAX)).take(DEPTH)))?;
    let mut scanner = ds.scan();
    scanner.project(&[phrases::VECTOR])?.with_row_address();
    let mut stream = scanner.try_into_stream().await?;
    let mut vectors = std::io::BufWriter::new(std::fs::File::create(out.join("vectors.f32"))?);
    let mut addrs = Vec::with_capacity(rows as usize);
    while let Some(b) = stream.try_next().await? {
        // f16 vectors (`[encode] dtype = "f16"`) go to faiss as the f32 values the scan computes with.
        let mut converted = Vec::new();
        let v = f32_values(b.column_by_name(phrases::VECTOR).context("no vectors")?.as_fixed_size_list().values(), &mut converted)?;
        v.iter().try_for_each(|x| vectors.write_all(&x.to_le_bytes()))?;
        addrs.extend_from_slice(b.column_by_name("_rowaddr").context("no addresses")?.as_primitive::<UInt64Type>().values());
    }
    vectors.flush()?;
    write_u64(&out.join("addrs.u64"), addrs)?;
    let report = serde_json::json!({
        "rows": rows, "dim": queries[0].0.len(), "questions": queries.len(), "hits": HITS, "depth": DEPTH,
        "read_seconds": read_seconds,
        "scan_seconds": scan_seconds, "scan_read": stats.read.as_secs_f64(), "scan_score": stats.score.as_secs_f64(), "scan_select": stats.select.as_secs_f64(),
        "scan_gflop": gflop, "flat_recall": flat_recall,
        "ivf_questions": ivf_n, "ivf_seconds_per_question": ivf_per_question, "ivf_recall": ivf_recall,
        "ivf_nprobes": SearchSettings::default().nprobes, "ivf_refine": SearchSettings::default().refine,
    });
    std::fs::write(out.join("rust.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("info,lance=warn,lance_core=warn,lance_io=warn,lance_file=warn").try_init();
}
