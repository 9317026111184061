//! Turning an experiment config into jobs. Ids are content hashes, so planning the same config twice
//! gives the same jobs, and the records on the store say which are already done. Each stage after the
//! first is planned from the committed output (a dataset version) of the stage before it.

use anyhow::{Context, Result, bail};
use phrasesweep_schemas::job::{
    Bm25IndexConfig, DatasetVersion, EncodeConfig, EncodeInputs, IngestConfig, InputFile, ModelRef, QsftConfig, QsftInputs, ReadConfig, ReadInputs, RetrieveConfig,
    RetrieveInputs, ScanConfig, ScanInputs, ScoreConfig, ScoreInputs, SupervisedConfig, SupervisedInputs,
};
use phrasesweep_schemas::settings::{ReadSettings, SearchMethod, TRAINED_READER};
use phrasesweep_schemas::record::{self, CORPUS_DATASET, PHRASES_DATASET, StageCommit, StageKind};
use phrasesweep_schemas::train::{EpochSelect, LossTerm, QsftRun, SupervisedSettings, TRAINED_ENCODER};
use phrasesweep_schemas::outcome::QsftOutcome;
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope, JobSpec};
use phrasesweep_workers::text::corpus::plan_shards;
use phrasesweep_workers::io::lance::{fragment_origins, open_dataset};
use phrasesweep_workers::model::registry::model_ref;
use phrasesweep_workers::io::store::{Store, read_input};
use sha2::{Digest, Sha256};
use phrasesweep_schemas::retrieval::{Mode, Unit};
use std::collections::{BTreeMap, BTreeSet};

/// A stage: jobs whose outputs are committed together.
pub struct Stage {
    pub output: StageKind,
    pub jobs: Vec<JobEnvelope>,
}

impl Stage {
    pub fn name(&self) -> String {
        self.output.name()
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

fn stage(store: &Store, config: &ExperimentConfig, output: StageKind, specs: Vec<JobSpec>) -> Stage {
    let reply_to = events_queue(config);
    let jobs = specs.into_iter().map(|spec| JobEnvelope::new(store.location().clone(), spec, reply_to.clone())).collect();
    Stage { output, jobs }
}

/// One job per shard of the corpus file. Shards end where an earlier run's ingest ended, so a corpus
/// that grew by appending documents keeps its ingested shards and adds new ones.
pub async fn ingest_stage(store: &Store, config: &ExperimentConfig) -> Result<Stage> {
    let stage_name = StageKind::Corpus.name();
    let breaks = store.get_json::<StageCommit>(&record::stage_path(&stage_name)).await?.map(|c| c.corpus_shard_ends()).unwrap_or_default();
    let shards = plan_shards(store, &config.corpus.path, config.corpus.shard_docs, &breaks).await?;
    if shards.is_empty() {
        bail!("{}: the corpus holds no documents (field `corpus.path`)", config.corpus.path);
    }
    let specs = shards
        .into_iter()
        .map(|inputs| JobSpec::Ingest { inputs, config: IngestConfig { dataset: CORPUS_DATASET.into() } })
        .collect();
    Ok(stage(store, config, StageKind::Corpus, specs))
}

/// The phrase encoder of the run: the one `train-phrase` trained, else the config's `encode.model`.
pub fn phrase_model(config: &ExperimentConfig, trained: Option<&ModelRef>) -> Result<ModelRef> {
    match trained {
        Some(m) => Ok(m.clone()),
        None => model_ref(&config.encode_settings().model).context("field `encode.model`"),
    }
}

/// Encode jobs for every corpus fragment. `calibrated`: the filter threshold `train-phrase` chose for its
/// target keep ratio, used when `[encode] filter_threshold` is not set.
pub async fn encode_stage(store: &Store, config: &ExperimentConfig, corpus_version: u64, model: &ModelRef, calibrated: Option<f32>) -> Result<Stage> {
    let ds = open_dataset(store, CORPUS_DATASET).await?.checkout_version(corpus_version).await?;
    let mut settings = config.encode_settings();
    settings.filter_threshold = settings.filter_threshold.or(calibrated);
    let config_of = EncodeConfig { dataset: PHRASES_DATASET.into(), model: model.clone(), settings: settings.clone() };
    // Each fragment is pinned to the version that added it, so a grown corpus re-encodes nothing old.
    let origins = fragment_origins(&ds).await?;
    let mut specs = Vec::new();
    for f in ds.get_fragments() {
        let fragment = f.id() as u64;
        let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: origins[&fragment] };
        for rows in row_ranges(f.physical_rows().await? as u64, settings.job_paragraphs as u64) {
            specs.push(JobSpec::Encode { inputs: EncodeInputs { corpus: corpus.clone(), fragment, rows }, config: config_of.clone() });
        }
    }
    Ok(stage(store, config, StageKind::Phrases, specs))
}

/// A fragment of `rows` paragraphs as row ranges of at most `most`, in equal parts; one whole-fragment
/// job (no range) when it fits.
fn row_ranges(rows: u64, most: u64) -> Vec<Option<[u64; 2]>> {
    if rows <= most {
        return vec![None];
    }
    let parts = rows.div_ceil(most);
    (0..parts).map(|i| Some([rows * i / parts, rows * (i + 1) / parts])).collect()
}

pub fn index_stage(store: &Store, config: &ExperimentConfig, phrases_version: u64) -> Stage {
    let spec = JobSpec::Index {
        inputs: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
        config: config.index.clone(),
    };
    stage(store, config, StageKind::Index, vec![spec])
}

/// Where a retrieve job writes: named by its retrieval and id, so two configs never share a file.
fn results_path(retrieval: &str, shard: u32) -> String {
    format!("results/{retrieval}/shard-{shard:05}")
}

/// The query encoders of `[encoders]`, pinned, and `trained` (the query encoders `train-phrase` wrote).
pub fn query_encoders(config: &ExperimentConfig, trained: Option<&ModelRef>) -> Result<BTreeMap<String, ModelRef>> {
    let mut encoders = config
        .encoders
        .iter()
        .map(|(name, path)| Ok((name.clone(), model_ref(path).with_context(|| format!("field `encoders.{name}`"))?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    if let Some(query) = trained {
        encoders.insert(TRAINED_ENCODER.into(), query.clone());
    }
    Ok(encoders)
}

/// Where each QSFT run stands between epochs: the checkpoint and optimiser its next epoch continues
/// from, and its best epoch so far by the run's `select` measure on dev (the one retrievals use).
pub struct QsftRuns {
    pub starts: BTreeMap<String, ModelRef>,
    optimisers: BTreeMap<String, String>,
    best: BTreeMap<String, (f64, ModelRef)>,
    select: BTreeMap<String, EpochSelect>,
}

impl QsftRuns {
    pub fn new(config: &ExperimentConfig, encoders: &BTreeMap<String, ModelRef>) -> Result<Self> {
        let starts = config
            .qsft
            .iter()
            .map(|run| {
                let start = encoders.get(&run.start_from).with_context(|| format!("qsft `{}`: no query encoder `{}`", run.name, run.start_from))?;
                Ok((run.name.clone(), start.clone()))
            })
            .collect::<Result<_>>()?;
        let select = config.qsft.iter().map(|run| (run.name.clone(), run.select)).collect();
        Ok(Self { starts, optimisers: BTreeMap::new(), best: BTreeMap::new(), select })
    }

    /// The most epochs any run has.
    pub fn epochs(config: &ExperimentConfig) -> u32 {
        config.qsft.iter().map(|r| r.epochs).max().unwrap_or(0)
    }

    pub fn record(&mut self, out: &QsftOutcome) {
        self.starts.insert(out.run.clone(), out.checkpoint.clone());
        if let Some(o) = &out.optimiser {
            self.optimisers.insert(out.run.clone(), o.clone());
        }
        let measure = out.dev.measure(self.select.get(&out.run).copied().unwrap_or_default());
        // Ties keep the earlier epoch.
        if self.best.get(&out.run).is_none_or(|(m, _)| measure > *m) {
            self.best.insert(out.run.clone(), (measure, out.checkpoint.clone()));
        }
    }

    /// Adds each run's best epoch to `encoders`, under the run's name.
    pub fn into_encoders(self, encoders: &mut BTreeMap<String, ModelRef>) {
        encoders.extend(self.best.into_iter().map(|(run, (_, m))| (run, m)));
    }
}

/// Where a scan job writes: named by its encoder, question shard and a hash of the job.
fn scan_path(encoder: &str, shard: u32, digest: &str) -> String {
    format!("scans/{encoder}/shard-{shard:05}-{}.json", &digest[..12])
}

/// Ranges of consecutive fragments of `(id, rows)` with at most `most` rows each (a larger fragment is a
/// range of its own).
fn fragment_ranges(fragments: &[(u64, u64)], most: u64) -> Vec<Vec<u64>> {
    let mut ranges: Vec<(Vec<u64>, u64)> = Vec::new();
    for &(id, rows) in fragments {
        match ranges.last_mut() {
            Some((ids, sum)) if *sum + rows <= most => {
                ids.push(id);
                *sum += rows;
            }
            _ => ranges.push((vec![id], rows)),
        }
    }
    ranges.into_iter().map(|(ids, _)| ids).collect()
}

/// With `[search] method = "scan"`: every question shard × every query encoder of a dense retrieval ×
/// every range of `scan_rows_per_job` phrase vectors, each keeping the most hits any retrieval of that
/// encoder reads. Workers scan the ranges of one shard in parallel; retrieve jobs merge them.
pub async fn scan_stage(store: &Store, config: &ExperimentConfig, corpus_version: u64, phrases_version: u64, models: &BTreeMap<String, ModelRef>) -> Result<Stage> {
    let mut specs = bm25_index_jobs(config, corpus_version)?;
    specs.extend(dense_scan_jobs(store, config, corpus_version, phrases_version, models).await?);
    Ok(stage(store, config, StageKind::Candidates, specs))
}

/// One BM25 index per unit (paragraph, sentence) that a BM25 retrieval reads, of this corpus version:
/// its path hashes the job, so every run and sweep point over the same corpus version shares it.
fn bm25_index_jobs(config: &ExperimentConfig, corpus_version: u64) -> Result<Vec<JobSpec>> {
    let units: BTreeSet<Unit> = config.retrieval.iter().filter_map(|r| match &r.mode {
        Mode::Bm25 { unit } => Some(*unit),
        _ => None,
    }).collect();
    units
        .into_iter()
        .map(|unit| {
            let inputs = DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version };
            let mut spec = JobSpec::Bm25Index { inputs, config: Bm25IndexConfig { unit, output: String::new() } };
            let digest = hex::encode(Sha256::digest(serde_json::to_vec(&spec)?));
            if let JobSpec::Bm25Index { config, .. } = &mut spec {
                config.output = format!("bm25/{unit}/corpus-v{corpus_version}-{}", &digest[..12]);
            }
            Ok(spec)
        })
        .collect()
}

async fn dense_scan_jobs(store: &Store, config: &ExperimentConfig, corpus_version: u64, phrases_version: u64, models: &BTreeMap<String, ModelRef>) -> Result<Vec<JobSpec>> {
    let (Some(questions), SearchMethod::Scan) = (&config.questions, config.search.method) else {
        return Ok(Vec::new());
    };
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for r in &config.retrieval {
        for name in r.encoders() {
            let h = hits.entry(name).or_default();
            *h = (*h).max(2 * r.k);
        }
    }
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let shards = plan_shards(store, &questions.path, questions.shard_questions, &[]).await?;
    let phrases = open_dataset(store, PHRASES_DATASET).await?.checkout_version(phrases_version).await?;
    let fragments: Vec<(u64, u64)> = phrases.get_fragments().iter().map(|f| (f.id() as u64, f.metadata().physical_rows.unwrap_or(0) as u64)).collect();
    let ranges = fragment_ranges(&fragments, config.search.scan_rows_per_job.max(1));
    let mut specs = Vec::new();
    for shard in &shards {
        for (name, &hits) in &hits {
            let model = models.get(name).with_context(|| format!("query encoder `{name}` is not trained yet"))?;
            for range in &ranges {
                let mut spec = JobSpec::Scan {
                    inputs: ScanInputs {
                        questions: shard.clone(),
                        corpus: DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version },
                        phrases: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
                        fragments: range.clone(),
                    },
                    config: ScanConfig {
                        encoder: name.clone(),
                        model: model.clone(),
                        hits,
                        query_len: config.search.query_len,
                        question: config.search.question,
                        output: String::new(),
                    },
                };
                let digest = hex::encode(Sha256::digest(serde_json::to_vec(&spec)?));
                if let JobSpec::Scan { config, .. } = &mut spec {
                    config.output = scan_path(name, shard.shard, &digest);
                }
                specs.push(spec);
            }
        }
    }
    Ok(specs)
}

/// Every retrieval × every question shard, each reading the scan stage's outputs for its shard and
/// encoders (none when the retrieve jobs search themselves).
pub async fn retrieve_stage(
    store: &Store,
    config: &ExperimentConfig,
    corpus_version: u64,
    phrases_version: u64,
    models: &BTreeMap<String, ModelRef>,
    scan: &Stage,
) -> Result<Stage> {
    let Some(questions) = &config.questions else { return Ok(stage(store, config, StageKind::Evidence, Vec::new())) };
    let shards = plan_shards(store, &questions.path, questions.shard_questions, &[]).await?;
    let mut specs = Vec::new();
    let recall_run = config.retrieval.iter().position(|r| !r.encoders().is_empty());
    for (i, r) in config.retrieval.iter().enumerate() {
        let encoders = r
            .encoders()
            .into_iter()
            .map(|n| models.get(&n).map(|m| (n.clone(), m.clone())).with_context(|| format!("query encoder `{n}` is not trained yet")))
            .collect::<Result<BTreeMap<_, _>>>()?;
        for (j, shard) in shards.iter().enumerate() {
            let config = RetrieveConfig {
                retrieval: r.clone(),
                encoders: BTreeMap::clone(&encoders),
                search: config.search.clone(),
                output: String::new(),
                // Exact search reads every vector: measured on a sample of the first shard only.
                measure_recall: Some(i) == recall_run && j == 0,
            };
            let scans = encoders
                .keys()
                .map(|name| {
                    let outputs = scan.jobs.iter().filter_map(|j| match &j.spec {
                        JobSpec::Scan { inputs, config } if inputs.questions.shard == shard.shard && config.encoder == *name => Some(config.output.clone()),
                        _ => None,
                    });
                    (name.clone(), outputs.collect::<Vec<_>>())
                })
                .filter(|(_, outputs)| !outputs.is_empty())
                .collect();
            let inputs = RetrieveInputs {
                questions: shard.clone(),
                phrases: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
                corpus: DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version },
                scans,
                bm25: match &r.mode {
                    Mode::Bm25 { unit } => Some(bm25_index(scan, *unit)?),
                    _ => None,
                },
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
    Ok(stage(store, config, StageKind::Evidence, specs))
}

/// The folder of the scan stage's BM25 index of `unit`.
fn bm25_index(scan: &Stage, unit: Unit) -> Result<String> {
    scan.jobs
        .iter()
        .find_map(|j| match &j.spec {
            JobSpec::Bm25Index { config, .. } if config.unit == unit => Some(config.output.clone()),
            _ => None,
        })
        .with_context(|| format!("the scan stage has no BM25 index of {unit}s"))
}

/// One job per retrieval over the outputs of its retrieve jobs.
pub async fn score_stage(store: &Store, config: &ExperimentConfig, retrieve: &Stage) -> Result<Stage> {
    let Some(questions) = &config.questions else { return Ok(stage(store, config, StageKind::Metrics, Vec::new())) };
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
    Ok(stage(store, config, StageKind::Metrics, specs))
}

/// With `[reader]`: a read job per retrieve job of each retrieval read, its evidence read at each budget
/// by the reader (`trained` being the one `train-reader` trained).
pub fn read_stage(store: &Store, config: &ExperimentConfig, retrieve: &Stage, trained: Option<&ModelRef>) -> Result<Stage> {
    let Some(settings) = &config.reader else { return Ok(stage(store, config, StageKind::Answers, Vec::new())) };
    let reader = if settings.endpoint.is_some() {
        None
    } else if settings.model == TRAINED_READER {
        Some(trained.cloned().context("field `reader.model`: `trained` names the reader of [train.reader], which has not trained")?)
    } else {
        Some(model_ref(&settings.model).context("field `reader.model`")?)
    };
    // Which retrievals are read is the stage's choice, not part of a job (nor of its id).
    let job_settings = ReadSettings { retrievals: Vec::new(), ..settings.clone() };
    let mut specs = Vec::new();
    for job in &retrieve.jobs {
        let JobSpec::Retrieve { inputs, config: r } = &job.spec else { continue };
        if !settings.retrievals.is_empty() && !settings.retrievals.contains(&r.retrieval.name) {
            continue;
        }
        let mut spec = JobSpec::Read {
            inputs: ReadInputs { questions: inputs.questions.clone(), results: r.output.clone() },
            config: ReadConfig { retrieval: r.retrieval.name.clone(), reader: reader.clone(), settings: job_settings.clone(), output: String::new() },
        };
        let digest = hex::encode(Sha256::digest(serde_json::to_vec(&spec)?));
        if let JobSpec::Read { inputs, config } = &mut spec {
            config.output = format!("answers/{}/shard-{:05}-{}.parquet", config.retrieval, inputs.questions.shard, &digest[..12]);
        }
        specs.push(spec);
    }
    Ok(stage(store, config, StageKind::Answers, specs))
}

async fn input_file(store: &Store, path: &str) -> Result<InputFile> {
    let bytes = read_input(store, path).await.with_context(|| format!("cannot read {path}"))?;
    Ok(InputFile { path: path.to_string(), sha256: hex::encode(Sha256::digest(&bytes)) })
}

/// Names a training job's output folder by a digest of the job, so two configs never share one.
fn with_output(mut spec: JobSpec, prefix: &str) -> Result<JobSpec> {
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&spec)?));
    let output = format!("{prefix}-{}", &digest[..12]);
    match &mut spec {
        JobSpec::TrainReader { config, .. } | JobSpec::TrainPhrase { config, .. } => config.output = output,
        JobSpec::QsftEpoch { config, .. } => config.output = output,
        _ => unreachable!("only training jobs have checkpoint folders"),
    }
    Ok(spec)
}

async fn supervised_inputs(store: &Store, config: &ExperimentConfig, s: &SupervisedSettings, field: &str, teacher: Option<ModelRef>) -> Result<SupervisedInputs> {
    let t = config.train.as_ref().context("[train] is missing")?;
    let nq_train = match &t.nq_train {
        Some(p) => Some(input_file(store, p).await?),
        None => None,
    };
    let squad = |p: &Option<String>, name: &str| p.clone().with_context(|| format!("field `train.{name}` is required by [{field}]"));
    Ok(SupervisedInputs {
        squad_train: input_file(store, &squad(&t.squad_train, "squad_train")?).await?,
        squad_dev: input_file(store, &squad(&t.squad_dev, "squad_dev")?).await?,
        nq_train,
        model: model_ref(&s.model).with_context(|| format!("field `{field}.model`"))?,
        teacher,
    })
}

/// `train-reader`, when the config has `[train.reader]`.
pub async fn reader_stage(store: &Store, config: &ExperimentConfig) -> Result<Option<Stage>> {
    let Some(s) = config.train.as_ref().and_then(|t| t.reader.clone()) else { return Ok(None) };
    let inputs = supervised_inputs(store, config, &s, "train.reader", None).await?;
    let spec = with_output(JobSpec::TrainReader { inputs, config: SupervisedConfig { settings: s, output: String::new() } }, "models/reader")?;
    Ok(Some(stage(store, config, StageKind::Reader, vec![spec])))
}

/// `train-phrase`, when the config has `[train.phrase]`; `teacher` is the trained reader.
pub async fn phrase_stage(store: &Store, config: &ExperimentConfig, teacher: Option<&ModelRef>) -> Result<Option<Stage>> {
    let Some(s) = config.train.as_ref().and_then(|t| t.phrase.clone()) else { return Ok(None) };
    let teacher = if s.distill.is_some() { teacher.cloned() } else { None };
    let inputs = supervised_inputs(store, config, &s, "train.phrase", teacher).await?;
    let spec = with_output(JobSpec::TrainPhrase { inputs, config: SupervisedConfig { settings: s, output: String::new() } }, "models/phrase")?;
    Ok(Some(stage(store, config, StageKind::PhraseModel, vec![spec])))
}

/// Epoch `epoch` of every QSFT run that has one, each from its own starting point (`starts`, by run).
pub async fn qsft_stage(
    store: &Store,
    config: &ExperimentConfig,
    epoch: u32,
    runs: &QsftRuns,
    teacher: Option<&ModelRef>,
    corpus_version: u64,
    phrases_version: u64,
) -> Result<Stage> {
    let t = config.train.as_ref().context("[train] is missing")?;
    let train = input_file(store, t.qsft_train.as_deref().context("field `train.qsft_train` is missing")?).await?;
    let dev = input_file(store, t.qsft_dev.as_deref().context("field `train.qsft_dev` is missing")?).await?;
    let mut specs = Vec::new();
    for run in config.qsft.iter().filter(|r| r.epochs >= epoch) {
        let inputs = QsftInputs {
            train: train.clone(),
            dev: dev.clone(),
            phrases: DatasetVersion { dataset: PHRASES_DATASET.into(), version: phrases_version },
            corpus: DatasetVersion { dataset: CORPUS_DATASET.into(), version: corpus_version },
            start: runs.starts.get(&run.name).cloned().with_context(|| format!("qsft run `{}` has no starting point", run.name))?,
            teacher: if run.terms.contains_key(&LossTerm::Distill) { teacher.cloned() } else { None },
            optimiser: runs.optimisers.get(&run.name).cloned(),
        };
        // `select` is the coordinator's choice among finished epochs: the epoch jobs carry the default, so
        // choosing otherwise retrains nothing.
        let folder = format!("models/qsft/{}/epoch-{epoch}", run.name);
        let run = QsftRun { select: Default::default(), ..run.clone() };
        let config = QsftConfig { run, epoch, search: config.search.clone(), output: String::new() };
        specs.push(with_output(JobSpec::QsftEpoch { inputs, config }, &folder)?);
    }
    Ok(stage(store, config, StageKind::Qsft { epoch }, specs))
}

#[cfg(test)]
mod tests {
    use super::{QsftRuns, fragment_ranges, row_ranges};
    use phrasesweep_schemas::job::ModelRef;
    use phrasesweep_schemas::outcome::{QsftOutcome, RetrievalEval};
    use phrasesweep_schemas::train::EpochSelect;
    use std::collections::BTreeMap;

    /// Epoch 1 has the better EM, epoch 2 the better sentence mAR: the run's `select` decides, EM (the
    /// study's) by default; epoch 2 continues from epoch 1's optimiser.
    #[test]
    fn a_qsft_run_keeps_the_epoch_its_select_measure_prefers() {
        let epoch = |e: u32, em: f64, mar: f64| QsftOutcome {
            run: "q".into(),
            epoch: e,
            checkpoint: ModelRef { path: format!("epoch-{e}"), sha256: String::new() },
            steps: 1,
            questions: 1,
            loss_first: None,
            loss_last: None,
            terms: BTreeMap::new(),
            dev: RetrievalEval { questions: 10, em, sentence_mar: mar, sentence_mar_seed: mar },
            dev_before: None,
            seconds: 0.0,
            seconds_per_1000_questions: 0.0,
            resumed_at: None,
            optimiser: Some(format!("epoch-{e}/optimiser")),
            last_lr: 0.0,
        };
        let chosen = |select: EpochSelect| {
            let mut runs = QsftRuns {
                starts: BTreeMap::new(),
                optimisers: BTreeMap::new(),
                best: BTreeMap::new(),
                select: BTreeMap::from([("q".to_string(), select)]),
            };
            runs.record(&epoch(1, 0.3, 0.5));
            assert_eq!(runs.optimisers["q"], "epoch-1/optimiser");
            runs.record(&epoch(2, 0.2, 0.6));
            let mut encoders = BTreeMap::new();
            runs.into_encoders(&mut encoders);
            encoders["q"].path.clone()
        };
        assert_eq!(chosen(EpochSelect::default()), "epoch-1");
        assert_eq!(chosen(EpochSelect::MarStrict), "epoch-2");
        assert_eq!(chosen(EpochSelect::MarSeed), "epoch-2");
    }

    #[test]
    fn fragments_group_into_consecutive_ranges_of_bounded_rows() {
        let f = [(0, 40), (1, 50), (2, 30), (3, 200), (5, 10)];
        assert_eq!(fragment_ranges(&f, 100), [vec![0, 1], vec![2], vec![3], vec![5]]);
        assert_eq!(fragment_ranges(&f, 1000), [vec![0, 1, 2, 3, 5]]);
        assert!(fragment_ranges(&[], 10).is_empty());
    }

    #[test]
    fn large_fragments_split_into_contiguous_bounded_ranges() {
        assert_eq!(row_ranges(147, 1000), [None]);
        assert_eq!(row_ranges(40, 40), [None]);
        assert_eq!(row_ranges(147, 40), [Some([0, 36]), Some([36, 73]), Some([73, 110]), Some([110, 147])]);
        let ranges: Vec<[u64; 2]> = row_ranges(8798, 1000).into_iter().flatten().collect();
        assert_eq!(ranges.len(), 9);
        assert!(ranges.windows(2).all(|w| w[0][1] == w[1][0]) && ranges[0][0] == 0 && ranges[8][1] == 8798);
        assert!(ranges.iter().all(|[a, b]| b - a <= 1000));
    }
}
