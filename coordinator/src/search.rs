//! `phrasesweep search`: one question against a run's committed phrase index, from the command line.

use crate::pipeline;
use anyhow::{Context, Result, bail};
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::record::{self, StageCommit};
use phrasesweep_schemas::retrieval::Unit;
use phrasesweep_workers::model::device::Cpu;
use phrasesweep_workers::model::encoders::encode_queries;
use phrasesweep_workers::model::registry::{load_query_encoder, local_model, model_ref};
use phrasesweep_workers::index::units::Hit;
use phrasesweep_workers::index::search::PhraseIndex;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::text::truecase::query_texts;

use phrasesweep_schemas::record::{CORPUS_DATASET, PHRASES_DATASET, StageKind};
use tracing::info;

/// The version of `stage`'s latest commit on the store.
async fn latest_commit(store: &Store, stage: &str) -> Result<u64> {
    let c: StageCommit = store
        .get_json(&record::stage_path(stage))
        .await?
        .with_context(|| format!("{} has no committed {stage} stage: run the sweep first", store.root_uri()))?;
    Ok(c.version)
}

/// Which index `phrasesweep search` reads, and how questions are prepared for it.
pub enum Target<'a> {
    /// A store's latest committed index, with the default search settings.
    Store(&'a str),
    /// The index one run of a config built (a store shared by the points of a sweep holds one per
    /// phrase encoder), with the config's search settings; encoder names of the config (`trained`, a QSFT
    /// run) name its query encoders.
    Config(&'a ExperimentConfig),
}

pub async fn search(target: Target<'_>, encoder: &str, unit: Unit, k: usize, nprobes: Option<usize>, question: &str) -> Result<Vec<Hit>> {
    let (store, (corpus, phrases), settings, weights) = match target {
        Target::Store(uri) => {
            let store = Store::at(uri)?;
            let versions = (latest_commit(&store, &StageKind::Corpus.name()).await?, latest_commit(&store, &StageKind::Index.name()).await?);
            (store, versions, SearchSettings::default(), model_ref(encoder)?)
        }
        Target::Config(config) => {
            let store = Store::from_config(&config.store)?;
            let walked = pipeline::walk(&store, config, &mut pipeline::Committed(&store)).await?;
            let versions = walked.index.with_context(|| format!("config `{}` has no committed index on {}: run it first", config.name, store.root_uri()))?;
            let model = match walked.encoders.get(encoder) {
                Some(m) => local_model(&store, m).await?,
                None if config.qsft.iter().any(|q| q.name == encoder) => bail!("QSFT run `{encoder}` of config `{}` has not finished: run the config first", config.name),
                None => model_ref(encoder)?,
            };
            (store, versions, config.search.clone(), model)
        }
    };
    let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus };
    let phrases = DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases };
    let settings = SearchSettings { nprobes: nprobes.unwrap_or(settings.nprobes), ..settings };
    info!(store = %store.root_uri(), phrases = phrases.version, encoder = %weights.path, "searching the phrase index");
    let index = PhraseIndex::open(&store, &phrases, &corpus, &settings).await?;
    let device = Default::default();
    let (model, text) = load_query_encoder::<Cpu>(&weights, &device)?;
    let question = query_texts(&store, &corpus, &[question], &settings.question, text.keeps_case()).await?.remove(0);
    let (qs, qe) = encode_queries(&model, &text, &[question.as_str()], settings.query_len, 1, &device)?.remove(0);
    index.search(&qs, &qe, unit, k, encoder).await
}
