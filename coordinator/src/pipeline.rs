//! The pipeline graph: every stage of a run, in order, each planned (`plan`) from the config and the
//! typed outcomes of the stages before it. `run` and `coordinator` (which execute stages) and `status`
//! (which counts their jobs) walk this one graph with different [`Visitor`]s, so a stage added here is
//! run and reported alike. A new stage is a step below, its planning in `plan`, its kind
//! (name and commit rule) in `schemas::record::StageKind`, its outcome type in `schemas::outcome` and
//! its handler in the workers.

use crate::plan::{self, QsftRuns, Stage};
use anyhow::{Context, Result};
use phrasesweep_schemas::{ExperimentConfig, JobEnvelope};
use phrasesweep_schemas::job::ModelRef;
use phrasesweep_schemas::outcome::{Metrics, QsftOutcome, ReadOutcome, RetrieveOutcome, Role, TrainOutcome};
use phrasesweep_schemas::record::{self, Done, StageCommit, StageKind};
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::train::phrase::PhraseEval;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::collections::BTreeMap;

/// What a walk does at each stage.
pub trait Visitor {
    /// Runs or inspects `stage`; returns its commit when its outputs are committed for exactly these
    /// jobs (the walk goes on to the stages planned from it), `None` to stop the walk there.
    fn visit(&mut self, stage: &Stage) -> impl Future<Output = Result<Option<StageCommit>>>;
}

/// What a walk read from the committed stages it passed.
#[derive(Default)]
pub struct Walked {
    pub reader: Option<TrainOutcome>,
    pub phrase: Option<TrainOutcome>,
    /// Every QSFT run's epochs, epoch by epoch.
    pub qsft: Vec<QsftOutcome>,
    pub retrieve: Vec<RetrieveOutcome>,
    /// The score stage (its job ids are the metrics' provenance) and one metrics row per retrieval.
    pub score: Option<(Stage, Vec<Metrics>)>,
    /// Every read job's sums (with `[reader]`).
    pub read: Vec<ReadOutcome>,
    /// The corpus version and the phrase-index version searches read, once the index is committed.
    pub index: Option<(u64, u64)>,
    /// The query encoders retrievals name (`base`, `trained`, each QSFT run at its selected epoch), once
    /// QSFT is committed.
    pub encoders: BTreeMap<String, ModelRef>,
}

/// A walk that runs nothing: it follows the stages committed already, and stops at the first that is not.
pub struct Committed<'a>(pub &'a Store);

impl Visitor for Committed<'_> {
    async fn visit(&mut self, stage: &Stage) -> Result<Option<StageCommit>> {
        committed(self.0, stage).await
    }
}

/// The commit of exactly `stage`'s jobs, if it was committed: its own record, or the stage's latest
/// commit when that is for these jobs (stores committed before commits were kept per set of jobs).
pub async fn committed(store: &Store, stage: &Stage) -> Result<Option<StageCommit>> {
    let hash = stage.jobs_hash();
    if let Some(c) = store.get_json::<StageCommit>(&record::stage_commit_path(&stage.name(), &hash)).await? {
        return Ok(Some(c));
    }
    Ok(store.get_json::<StageCommit>(&record::stage_path(&stage.name())).await?.filter(|c| c.jobs_hash == hash))
}

/// The typed outcomes of a committed stage's jobs, from their records on the store.
pub async fn outcomes<T: DeserializeOwned>(store: &Store, stage: &Stage) -> Result<Vec<T>> {
    read_outcomes(store, &stage.name(), &stage.jobs).await
}

/// The typed outcomes of `jobs`, done jobs of the stage named `stage`, in their order; read
/// `READ_AHEAD` at a time, as a stage of thousands of jobs would wait on one round trip after another.
pub async fn read_outcomes<'a, T: DeserializeOwned>(store: &Store, stage: &str, jobs: impl IntoIterator<Item = &'a JobEnvelope>) -> Result<Vec<T>> {
    use futures::{StreamExt, TryStreamExt};
    const READ_AHEAD: usize = 32;
    futures::stream::iter(jobs)
        .map(|job| async move {
            let done: Done = store.get_json(&record::done_path(&job.id.0)).await?.with_context(|| format!("the record of job {} vanished", job.id.short()))?;
            serde_json::from_value(done.output).with_context(|| format!("job {} left an unreadable {stage} record", job.id.short()))
        })
        .buffered(READ_AHEAD)
        .try_collect()
        .await
}

/// The name of every stage [`walk`] visits for `config`, in its order, whether or not it can be planned
/// yet (`plan` lists what a sweep has ahead of it).
pub fn stage_names(config: &ExperimentConfig) -> Vec<String> {
    let train = |s: fn(&phrasesweep_schemas::train::TrainConfig) -> bool| config.train.as_ref().is_some_and(s);
    let mut kinds = vec![StageKind::Corpus];
    kinds.extend(train(|t| t.reader.is_some()).then_some(StageKind::Reader));
    kinds.extend(train(|t| t.phrase.is_some()).then_some(StageKind::PhraseModel));
    if config.encodes() {
        kinds.extend([StageKind::Phrases, StageKind::Index]);
        kinds.extend((1..=QsftRuns::epochs(config)).map(|epoch| StageKind::Qsft { epoch }));
        if config.questions.is_some() && !config.retrieval.is_empty() {
            kinds.extend([StageKind::Candidates, StageKind::Evidence, StageKind::Metrics]);
            kinds.extend(config.reader.is_some().then_some(StageKind::Answers));
        }
    }
    kinds.into_iter().map(StageKind::name).collect()
}

/// Walks the stages of `config` in order, as far as `visitor` lets it.
pub async fn walk<V: Visitor>(store: &Store, config: &ExperimentConfig, visitor: &mut V) -> Result<Walked> {
    let mut w = Walked::default();
    let Some(corpus) = visitor.visit(&plan::ingest_stage(store, config).await?).await? else { return Ok(w) };
    let mut teacher = None;
    if let Some(stage) = plan::reader_stage(store, config).await? {
        if visitor.visit(&stage).await?.is_none() {
            return Ok(w);
        }
        let out: TrainOutcome = outcomes(store, &stage).await?.remove(0);
        teacher = out.checkpoints.get(&Role::Reader).cloned();
        w.reader = Some(out);
    }
    if let Some(stage) = plan::phrase_stage(store, config, teacher.as_ref()).await? {
        if visitor.visit(&stage).await?.is_none() {
            return Ok(w);
        }
        w.phrase = Some(outcomes::<TrainOutcome>(store, &stage).await?.remove(0));
    }
    if !config.encodes() {
        return Ok(w);
    }
    let trained = |role| w.phrase.as_ref().and_then(|p| p.checkpoints.get(&role).cloned());
    let (phrase_model, query) = (trained(Role::Phrase), trained(Role::Query));
    let model = plan::phrase_model(config, phrase_model.as_ref())?;
    let evaluated = w.phrase.as_ref().and_then(|p| serde_json::from_value::<PhraseEval>(p.after.clone()).ok());
    let calibrated = evaluated.and_then(|e| e.calibrated).map(|c| c.threshold);
    let Some(phrases) = visitor.visit(&plan::encode_stage(store, config, corpus.version, &model, calibrated).await?).await? else { return Ok(w) };
    let Some(indexed) = visitor.visit(&plan::index_stage(store, config, phrases.version)).await? else { return Ok(w) };
    w.index = Some((corpus.version, indexed.version));

    // QSFT: all runs' epoch e as one stage (parallel across workers), each from its run's epoch e - 1.
    let mut encoders = plan::query_encoders(config, query.as_ref())?;
    let mut runs = QsftRuns::new(config, &encoders)?;
    for epoch in 1..=QsftRuns::epochs(config) {
        let stage = plan::qsft_stage(store, config, epoch, &runs, teacher.as_ref(), corpus.version, indexed.version).await?;
        if visitor.visit(&stage).await?.is_none() {
            return Ok(w);
        }
        for out in outcomes::<QsftOutcome>(store, &stage).await? {
            runs.record(&out);
            w.qsft.push(out);
        }
    }
    runs.into_encoders(&mut encoders);
    w.encoders = encoders;
    let encoders = &w.encoders;

    if config.questions.is_none() || config.retrieval.is_empty() {
        return Ok(w);
    }
    let scan = plan::scan_stage(store, config, corpus.version, indexed.version, encoders).await?;
    if visitor.visit(&scan).await?.is_none() {
        return Ok(w);
    }
    let retrieve = plan::retrieve_stage(store, config, corpus.version, indexed.version, encoders, &scan).await?;
    if visitor.visit(&retrieve).await?.is_none() {
        return Ok(w);
    }
    w.retrieve = outcomes(store, &retrieve).await?;
    let score = plan::score_stage(store, config, &retrieve).await?;
    if visitor.visit(&score).await?.is_none() {
        return Ok(w);
    }
    let metrics = outcomes(store, &score).await?;
    w.score = Some((score, metrics));
    let read = plan::read_stage(store, config, &retrieve, teacher.as_ref())?;
    if !read.jobs.is_empty() && visitor.visit(&read).await?.is_some() {
        w.read = outcomes(store, &read).await?;
    }
    Ok(w)
}
