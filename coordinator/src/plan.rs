//! Turning an experiment config into jobs. Ids are content hashes, so planning the same config twice
//! gives the same jobs, and the records on the store say which are already done. Each stage after the
//! first is planned from the committed output (a dataset version) of the stage before it.

use anyhow::{Context, Result};
use phrasesweep_schemas::job::{
    DatasetVersion, EncodeConfig, EncodeInputs, IngestConfig, RetrieveConfig, RetrieveInputs, ScoreConfig, ScoreInputs,
};
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope, JobSpec};
use phrasesweep_workers::corpus::plan_shards;
use phrasesweep_workers::lance_io::open_dataset;
use phrasesweep_workers::model::registry::model_ref;
use phrasesweep_workers::store::{Store, read_input};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const CORPUS_DATASET: &str = "corpus.lance";
pub const PHRASES_DATASET: &str = "phrases.lance";
/// The metrics of every retrieval of the last run, at the store root.
pub const METRICS_FILE: &str = "metrics.parquet";

/// What a stage leaves behind; it names the stage and decides how its outputs are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `corpus.lance`, from ingest jobs' fragments.
    Corpus,
    /// `phrases.lance`, from encode jobs' fragments.
    Phrases,
    /// The phrase index: a version of `phrases.lance` written by the index job itself.
    Index,
    /// Parquet files of ranked evidence.
    Evidence,
    /// Parquet files of metrics.
    Metrics,
}

impl Output {
    pub fn stage_name(self) -> &'static str {
        match self {
            Output::Corpus => "ingest",
            Output::Phrases => "encode",
            Output::Index => "index",
            Output::Evidence => "retrieve",
            Output::Metrics => "score",
        }
    }
}

/// A stage: jobs whose outputs are committed together.
pub struct Stage {
    pub output: Output,
    pub jobs: Vec<JobEnvelope>,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        self.output.stage_name()
    }

    /// sha256 over the sorted job ids: names exactly this set of work.
    pub fn jobs_hash(&self) -> String {
        let mut ids: Vec<&str> = self.jobs.iter().map(|j| j.id.0.as_str()).collect();
        ids.sort_unstable();
        hex::encode(Sha256::digest(ids.join("\n").as_bytes()))
    }
}

pub fn events_queue(config: &ExperimentConfig) -> String {
    format!("phrasesweep.events.{}", config.name)
}

fn stage(store: &Store, config: &ExperimentConfig, output: Output, specs: Vec<JobSpec>) -> Stage {
    let reply_to = events_queue(config);
    let jobs = specs.into_iter().map(|spec| JobEnvelope::new(store.location().clone(), spec, reply_to.clone())).collect();
    Stage { output, jobs }
}

pub async fn ingest_stage(store: &Store, config: &ExperimentConfig) -> Result<Stage> {
    let shards = plan_shards(store, &config.corpus.path, config.corpus.shard_docs).await?;
    let specs = shards
        .into_iter()
        .map(|inputs| JobSpec::Ingest { inputs, config: IngestConfig { dataset: CORPUS_DATASET.into() } })
        .collect();
    Ok(stage(store, config, Output::Corpus, specs))
}

/// One job per fragment of the committed corpus version.
pub async fn encode_stage(store: &Store, config: &ExperimentConfig, corpus_version: u64) -> Result<Stage> {
    let ds = open_dataset(store, CORPUS_DATASET).await?.checkout_version(corpus_version).await?;
    let settings = config.encode_settings();
    let model = model_ref(&settings.model).context("field `encode.model`")?;
    let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version };
    let specs = ds
        .get_fragments()
        .iter()
        .map(|f| JobSpec::Encode {
            inputs: EncodeInputs { corpus: corpus.clone(), fragment: f.id() as u64 },
            config: EncodeConfig { dataset: PHRASES_DATASET.into(), model: model.clone(), settings: settings.clone() },
        })
        .collect();
    Ok(stage(store, config, Output::Phrases, specs))
}

pub fn index_stage(store: &Store, config: &ExperimentConfig, phrases_version: u64) -> Stage {
    let spec = JobSpec::Index {
        inputs: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
        config: config.index.clone(),
    };
    stage(store, config, Output::Index, vec![spec])
}

/// Where a retrieve job writes: named by its retrieval and id, so two configs never share a file.
fn results_path(retrieval: &str, shard: u32) -> String {
    format!("results/{retrieval}/shard-{shard:05}")
}

/// Every retrieval × every question shard.
pub async fn retrieve_stage(store: &Store, config: &ExperimentConfig, corpus_version: u64, phrases_version: u64) -> Result<Stage> {
    let Some(questions) = &config.questions else { return Ok(stage(store, config, Output::Evidence, Vec::new())) };
    let shards = plan_shards(store, &questions.path, questions.shard_questions).await?;
    let mut models = BTreeMap::new();
    for r in &config.retrieval {
        for name in r.encoders() {
            if !models.contains_key(&name) {
                let path = &config.encoders[&name];
                models.insert(name.clone(), model_ref(path).with_context(|| format!("field `encoders.{name}`"))?);
            }
        }
    }
    let mut specs = Vec::new();
    let recall_run = config.retrieval.iter().position(|r| !r.encoders().is_empty());
    for (i, r) in config.retrieval.iter().enumerate() {
        let encoders = r.encoders().into_iter().map(|n| (n.clone(), models[&n].clone())).collect();
        for shard in &shards {
            let config = RetrieveConfig {
                retrieval: r.clone(),
                encoders: BTreeMap::clone(&encoders),
                search: config.search.clone(),
                output: String::new(),
                measure_recall: Some(i) == recall_run,
            };
            let inputs = RetrieveInputs {
                questions: shard.clone(),
                phrases: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
                corpus: DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version },
            };
            // The output path holds a hash of everything else, so a changed config never overwrites
            // the evidence of another.
            let mut spec = JobSpec::Retrieve { inputs, config };
            let digest = hex::encode(Sha256::digest(serde_json::to_vec(&spec)?));
            if let JobSpec::Retrieve { config, inputs } = &mut spec {
                config.output = format!("{}-{}.parquet", results_path(&r.name, inputs.questions.shard), &digest[..12]);
            }
            specs.push(spec);
        }
    }
    Ok(stage(store, config, Output::Evidence, specs))
}

/// One job per retrieval over the outputs of its retrieve jobs.
pub async fn score_stage(store: &Store, config: &ExperimentConfig, retrieve: &Stage) -> Result<Stage> {
    let Some(questions) = &config.questions else { return Ok(stage(store, config, Output::Metrics, Vec::new())) };
    let sha = hex::encode(Sha256::digest(read_input(store, &questions.path).await?));
    let specs = config
        .retrieval
        .iter()
        .map(|r| {
            let results = retrieve
                .jobs
                .iter()
                .filter_map(|j| match &j.spec {
                    JobSpec::Retrieve { config, .. } if config.retrieval.name == r.name => Some(config.output.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>();
            let digest = hex::encode(Sha256::digest(results.join("\n").as_bytes()));
            JobSpec::Score {
                inputs: ScoreInputs { questions: questions.path.clone(), questions_sha256: sha.clone(), results },
                config: ScoreConfig {
                    retrieval: r.clone(),
                    metrics: format!("scores/{}/metrics-{}.parquet", r.name, &digest[..12]),
                    per_question: format!("scores/{}/questions-{}.parquet", r.name, &digest[..12]),
                },
            }
        })
        .collect();
    Ok(stage(store, config, Output::Metrics, specs))
}
