//! Recall@100 of start hits against exact search, and the time of one search, for several kinds of IVF
//! index over the same vectors: a run's committed phrase vectors, copied with their row addresses to a
//! side dataset so the run's own index stays as it is. Kinds: `flat`, `sq`, `pq` (d/8 sub-vectors), all
//! for inner product, and `l2` (the MIPS→L2 transform x → [x, √(M² − ‖x‖²), 0…] with M the largest norm,
//! and PQ for L2 over it). Questions: the first `N` of a questions file, pretrained query encoder.
//!
//! `index_kinds STORE QUESTIONS N SCRATCH KIND,KIND… NPROBES:REFINE…`, for example
//! `index_kinds out/eval-dev ../shared/data/nq/dev.jsonl 25 /tmp/kinds flat,sq 64:0 256:0 256:3`.

mod support;

use anyhow::{Context, Result};
use arrow::array::{AsArray, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator};
use arrow::datatypes::{Float32Type, UInt64Type};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::{WriteMode, WriteParams};
use lance::index::DatasetIndexExt;
use lance::index::vector::VectorIndexParams;
use lance_index::IndexType;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;
use lance_linalg::distance::MetricType;
use phrasesweep_schemas::record::{StageCommit, stage_path};
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::index::search::recall;
use phrasesweep_workers::io::store::Store;
use std::sync::Arc;
use std::time::Instant;

const KINDS: [&str; 4] = ["flat", "sq", "pq", "l2"];

fn sq_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

/// Row addresses of the `k` nearest rows: exact without `probe`, else through the index.
async fn nearest(ds: &Dataset, metric: MetricType, q: &[f32], k: usize, probe: Option<(usize, u32)>) -> Result<Vec<u64>> {
    let mut scan = ds.scan();
    scan.project(&["addr", "_distance"])?;
    scan.nearest("vector", &Float32Array::from(q.to_vec()), k)?;
    scan.distance_metric(metric);
    match probe {
        None => {
            scan.use_index(false);
        }
        Some((nprobes, refine)) => {
            scan.nprobes(nprobes);
            if refine > 0 {
                scan.refine(refine);
            }
        }
    }
    let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
    Ok(batches.iter().flat_map(|b| b["addr"].as_primitive::<UInt64Type>().values().to_vec()).collect())
}

/// Writes `(addr, vector)` rows to `uri`, each vector mapped by `map` to `dim` values.
async fn side_dataset(batches: &[RecordBatch], uri: &str, dim: usize, map: impl Fn(&[f32], &mut Vec<f32>)) -> Result<Dataset> {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("addr", DataType::UInt64, false),
        Field::new("vector", DataType::FixedSizeList(item.clone(), dim as i32), false),
    ]));
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let v = b["vector"].as_fixed_size_list();
        let mut values = Vec::with_capacity(b.num_rows() * dim);
        for row in v.values().as_primitive::<Float32Type>().values().chunks(v.value_length() as usize) {
            map(row, &mut values);
        }
        let vectors = FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(Float32Array::from(values)), None)?;
        out.push(Ok(RecordBatch::try_new(schema.clone(), vec![b["_rowaddr"].clone(), Arc::new(vectors)])?));
    }
    let params = WriteParams { mode: WriteMode::Overwrite, ..Default::default() };
    Ok(Dataset::write(RecordBatchIterator::new(out, schema), uri, Some(params)).await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, questions, n, scratch, kinds, settings @ ..] = args.as_slice() else {
        anyhow::bail!("usage: index_kinds STORE QUESTIONS N SCRATCH KIND,KIND… NPROBES:REFINE…");
    };
    let store = Store::at(store)?;
    let commit: StageCommit = store.get_json(&stage_path("encode")).await?.context("no committed encode stage")?;
    let phrases = open_dataset(&store, "phrases.lance").await?.checkout_version(commit.version).await?;
    let mut scan = phrases.scan();
    scan.project(&["vector"])?;
    scan.with_row_address();
    let batches: Vec<RecordBatch> = scan.try_into_stream().await?.try_collect().await?;
    let dim = batches.first().context("no phrase vectors")?["vector"].as_fixed_size_list().value_length() as usize;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let partitions = (rows as f64).sqrt().round() as usize;

    if let Some(other) = kinds.split(',').find(|k| !KINDS.contains(k)) {
        anyhow::bail!("unknown index kind {other}: one of {KINDS:?}");
    }
    let queries = support::first_q_starts(questions, n)?;
    anyhow::ensure!(!queries.is_empty(), "no questions in {questions}");
    let probes = support::probes(settings)?;

    for kind in kinds.split(',') {
        let uri = format!("{scratch}/{kind}.lance");
        let (mut ds, metric, queries) = if kind == "l2" {
            let max_sq = batches
                .iter()
                .flat_map(|b| b["vector"].as_fixed_size_list().values().as_primitive::<Float32Type>().values().chunks(dim).map(sq_norm).collect::<Vec<_>>())
                .fold(0f32, f32::max);
            let ds = side_dataset(&batches, &uri, dim + 8, |row, out| {
                out.extend_from_slice(row);
                out.push((max_sq - sq_norm(row)).max(0.0).sqrt());
                out.extend([0.0; 7]);
            })
            .await?;
            let padded = queries.iter().map(|q| q.iter().copied().chain([0.0; 8]).collect()).collect();
            (ds, MetricType::L2, padded)
        } else {
            (side_dataset(&batches, &uri, dim, |row, out| out.extend_from_slice(row)).await?, MetricType::Dot, queries.clone())
        };
        let started = Instant::now();
        let mut exact = Vec::with_capacity(queries.len());
        for q in &queries {
            exact.push(nearest(&ds, metric, q, 100, None).await?);
        }
        let exact_seconds = started.elapsed().as_secs_f64() / queries.len() as f64;
        let ivf = IvfBuildParams::new(partitions);
        let params = match kind {
            "flat" => VectorIndexParams::with_ivf_flat_params(metric, ivf),
            "sq" => VectorIndexParams::with_ivf_sq_params(metric, ivf, SQBuildParams::default()),
            _ => VectorIndexParams::ivf_pq(partitions, 8, queries[0].len() / 8, metric, 50),
        };
        let started = Instant::now();
        ds.create_index(&["vector"], IndexType::Vector, None, &params, true).await?;
        println!("{kind}: IVF{partitions} over {rows} vectors built in {:.0} s; exact search {exact_seconds:.2} s per question", started.elapsed().as_secs_f64());
        for &(nprobes, refine) in &probes {
            let (mut seconds, mut sum) = (0.0, 0.0);
            for (q, exact) in queries.iter().zip(&exact) {
                let started = Instant::now();
                let found = nearest(&ds, metric, q, 100, Some((nprobes, refine))).await?;
                seconds += started.elapsed().as_secs_f64();
                sum += recall(exact, &found);
            }
            let n = queries.len() as f64;
            println!("{kind} nprobes {nprobes:>4} refine {refine:>3}: recall@100 {:.3}, {:.3} s per search", sum / n, seconds / n);
        }
        std::fs::remove_dir_all(&uri).with_context(|| format!("cannot remove {uri}"))?;
    }
    Ok(())
}
