//! `index`: the IVF index (scalar- or product-quantized) over `phrases.vector` for inner product. Small
//! datasets stay flat (exact search). A dataset that grew since its index was built gets the new rows
//! merged into the index (`optimize_indices`), so growing a corpus never means rebuilding from scratch;
//! other `[index]` settings than those it was built with rebuild it.

use super::JobError;
use crate::io::lance::open_dataset;
use crate::io::store::Store;
use anyhow::Context;
use lance::index::{DatasetIndexExt, DatasetIndexInternalExt};
use lance::index::vector::VectorIndexParams;
use lance_index::IndexType;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::pq::PQBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;
use lance_index::optimize::OptimizeOptions;
use lance_linalg::distance::MetricType;
use phrasesweep_schemas::settings::{IndexSettings, Quantizer};
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::outcome::IndexOutcome;
use phrasesweep_schemas::tables::phrases;
use std::time::Instant;
use tracing::info;

pub const INDEX_NAME: &str = "vector_idx";
/// The dataset config key that holds the `[index]` settings the index was built with: an index job
/// whose settings differ rebuilds it instead of reusing it.
const SETTINGS_KEY: &str = "phrasesweep.index";

/// IVF partitions and PQ sub-vectors for `rows` vectors of dimension `dim`: √N partitions and d/8
/// sub-vectors unless configured.
pub fn index_shape(settings: &IndexSettings, rows: usize, dim: usize) -> (usize, usize) {
    let partitions = if settings.partitions > 0 { settings.partitions } else { ((rows as f64).sqrt().round() as usize).max(1) };
    let sub_vectors = if settings.sub_vectors > 0 { settings.sub_vectors } else { (dim / 8).max(1) };
    (partitions, sub_vectors)
}

/// The data files of a version, sorted: versions that only add or rebuild an index share them.
fn data_files(ds: &lance::Dataset) -> Vec<String> {
    let mut files: Vec<String> = ds.get_fragments().iter().flat_map(|f| f.metadata().files.iter().map(|d| d.path.clone())).collect();
    files.sort();
    files
}

async fn has_index(ds: &lance::Dataset) -> anyhow::Result<bool> {
    Ok(ds.load_indices().await.context("cannot read the index list")?.iter().any(|i| i.name == INDEX_NAME))
}

pub async fn run(store: &Store, inputs: &DatasetVersion, settings: &IndexSettings) -> Result<IndexOutcome, JobError> {
    let started = Instant::now();
    let latest = open_dataset(store, &inputs.dataset).await?;
    let mut ds = latest.checkout_version(inputs.version).await.with_context(|| {
        format!("{} has no version {}", inputs.dataset, inputs.version)
    })?;
    if latest.version().version != inputs.version {
        if data_files(&latest) != data_files(&ds) {
            // Another encoding was committed since (a sweep point with another encoder, on the same
            // store): the planned vectors become the latest version again, and the index is built on them.
            info!(dataset = %inputs.dataset, planned = inputs.version, latest = latest.version().version, "restoring the planned version to index it");
            ds.restore().await.context("cannot restore the planned version")?;
        } else if has_index(&latest).await? {
            // The same vectors with an index: built by this job's first delivery, or by an earlier index
            // job (then its settings decide, below, whether it stays).
            ds = latest;
        } else {
            return Err(JobError::Input(format!(
                "{} moved on to version {} since version {} was planned; rerun to plan again",
                inputs.dataset,
                latest.version().version,
                inputs.version
            )));
        }
    }
    let rows = ds.count_rows(None).await.context("cannot count phrases")?;
    let dim = match ds.schema().field(phrases::VECTOR).map(|f| f.data_type()) {
        Some(arrow_schema::DataType::FixedSizeList(_, d)) => d as usize,
        _ => return Err(JobError::Input(format!("{}: no vector column", inputs.dataset))),
    };
    let (partitions, sub_vectors) = index_shape(settings, rows, dim);
    let has_index = has_index(&ds).await?;
    let wanted = serde_json::to_string(settings).context("cannot encode the index settings")?;
    let built_with = ds.config().get(SETTINGS_KEY).cloned();
    let action = if rows < settings.flat_below && !has_index {
        "flat"
    } else if has_index && built_with.as_deref() == Some(wanted.as_str()) {
        let unindexed = ds.unindexed_fragments(INDEX_NAME).await.context("cannot list unindexed fragments")?;
        if !unindexed.is_empty() {
            info!(fragments = unindexed.len(), "merging new phrase fragments into the index");
            ds.optimize_indices(&OptimizeOptions::default()).await.context("cannot optimise the index")?;
        }
        "optimized"
    } else {
        if has_index {
            info!(built_with = built_with.as_deref().unwrap_or("unrecorded settings"), "the index was built with other settings: rebuilding it");
        }
        info!(rows, partitions, quantizer = ?settings.quantizer, sub_vectors, "building the IVF index");
        let ivf = IvfBuildParams { max_iters: settings.max_iters, ..IvfBuildParams::new(partitions) };
        let params = match settings.quantizer {
            Quantizer::Pq => {
                let pq = PQBuildParams { num_bits: 8, num_sub_vectors: sub_vectors, max_iters: settings.max_iters, ..Default::default() };
                VectorIndexParams::with_ivf_pq_params(MetricType::Dot, ivf, pq)
            }
            Quantizer::Sq => VectorIndexParams::with_ivf_sq_params(MetricType::Dot, ivf, SQBuildParams::default()),
            Quantizer::Flat => VectorIndexParams::with_ivf_flat_params(MetricType::Dot, ivf),
        };
        ds.create_index(&[phrases::VECTOR], IndexType::Vector, Some(INDEX_NAME.into()), &params, true)
            .await
            .context("cannot build the IVF index")?;
        ds.update_config([(SETTINGS_KEY, wanted.as_str())]).await.context("cannot record the index settings")?;
        "created"
    };
    let out = IndexOutcome {
        action: action.into(),
        version: ds.version().version,
        rows: rows as u64,
        partitions,
        quantizer: settings.quantizer,
        sub_vectors,
        seconds: started.elapsed().as_secs_f64(),
    };
    info!(action, version = out.version, rows, seconds = out.seconds, "phrase index ready");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape_is_sqrt_n_and_d_over_8() {
        assert_eq!(index_shape(&IndexSettings::default(), 1_000_000, 384), (1000, 48));
        let s = IndexSettings { partitions: 7, sub_vectors: 16, ..Default::default() };
        assert_eq!(index_shape(&s, 10, 384), (7, 16));
    }
}
