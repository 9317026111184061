//! `phrasesweep search`: one question against a run's committed phrase index, from the command line.

use anyhow::{Context, Result};
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::record::{self, StageCommit};
use phrasesweep_schemas::retrieval::Unit;
use phrasesweep_workers::model::device::Cpu;
use phrasesweep_workers::model::encoders::encode_queries;
use phrasesweep_workers::model::registry::{load_query_encoder, model_ref};
use phrasesweep_workers::index::units::Hit;
use phrasesweep_workers::index::search::PhraseIndex;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::text::truecase::query_texts;

use phrasesweep_schemas::record::{CORPUS_DATASET, PHRASES_DATASET, StageKind};

async fn committed(store: &Store, stage: &str) -> Result<u64> {
    let c: StageCommit = store
        .get_json(&record::stage_path(stage))
        .await?
        .with_context(|| format!("{} has no committed {stage} stage: run the sweep first", store.root_uri()))?;
    Ok(c.version)
}

pub async fn search_store(uri: &str, encoder: &str, unit: Unit, k: usize, nprobes: usize, question: &str) -> Result<Vec<Hit>> {
    let store = Store::at(uri)?;
    let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: committed(&store, &StageKind::Corpus.name()).await? };
    let phrases = DatasetVersion { dataset: PHRASES_DATASET.into(), version: committed(&store, &StageKind::Index.name()).await? };
    let settings = SearchSettings { nprobes, ..Default::default() };
    let index = PhraseIndex::open(&store, &phrases, &corpus, &settings).await?;
    let device = Default::default();
    let (model, text) = load_query_encoder::<Cpu>(&model_ref(encoder)?, &device)?;
    let question = query_texts(&store, &corpus, &[question], &settings.question, text.keeps_case()).await?.remove(0);
    let (qs, qe) = encode_queries(&model, &text, &[question.as_str()], settings.query_len, 1, &device)?.remove(0);
    index.search(&qs, &qe, unit, k, encoder).await
}
