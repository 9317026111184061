//! `train-reader`, `train-phrase` and `qsft-epoch`: training runs as jobs. Each writes a resumable
//! checkpoint (weights with their parameter ids, the optimiser's moments, the position in the epoch) to
//! the store every `checkpoint_every` steps, so a redelivered job resumes where the last one stopped;
//! the finished model goes to the store as a checkpoint that later jobs name by sha256.

use super::JobError;
use crate::model::checkpoint;
use crate::model::device::{Job, JobTrain, job_device};
use crate::model::encoders::Reader;
use crate::model::registry::{PHRASE_KIND, QUERY_KIND, READER_KIND, load_phrase_encoder, load_query_encoder, load_reader, local_model, put_checkpoint};
use crate::progress::RateLog;
use crate::questions::{Question, parse_questions};
use crate::search::PhraseIndex;
use crate::store::{Store, read_input};
use crate::train::optim::Trainer;
use crate::train::phrase::{self, PhraseModels, phrase_loss, phrase_row};
use crate::train::qsft::{self, QsftBatch, qsft_loss};
use crate::train::rc::{Example, parse_nq_gold, parse_squad, shuffle};
use crate::train::reader::{self, reader_loss, reader_row};
use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::Tensor;
use phrasesweep_schemas::job::{InputFile, ModelRef, QsftConfig, QsftInputs, SupervisedConfig, SupervisedInputs};
use phrasesweep_schemas::train::{LossTerm, OptimSettings, SupervisedSettings};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info;

/// What a training job leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutput {
    /// Checkpoints by role: `reader`, or `phrase` and `query`.
    pub checkpoints: BTreeMap<String, ModelRef>,
    pub epochs: u32,
    pub steps: usize,
    /// Training questions per epoch.
    pub examples: usize,
    /// Mean loss of the first and of the last tenth of the steps (absent when no step had a target).
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    /// Dev scores of the starting model and of the trained one.
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub seconds_per_epoch: f64,
    pub seconds_per_1000_questions: f64,
    /// The step the job resumed at, when an earlier delivery left a checkpoint.
    pub resumed_at: Option<usize>,
}

/// What a QSFT epoch leaves in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QsftOutput {
    pub run: String,
    pub epoch: u32,
    pub checkpoint: ModelRef,
    pub steps: usize,
    pub questions: usize,
    /// As in [`TrainOutput`]; absent when no question had a target among its candidates.
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    /// Mean value of each term over the steps where it had targets.
    pub terms: BTreeMap<String, f64>,
    /// Dev scores after the epoch, and (first epoch only) of the encoder it started from.
    pub dev: qsft::RetrievalEval,
    pub dev_before: Option<qsft::RetrievalEval>,
    pub seconds: f64,
    pub seconds_per_1000_questions: f64,
    pub resumed_at: Option<usize>,
}

async fn read_file(store: &Store, f: &InputFile) -> Result<Vec<u8>, JobError> {
    let bytes = read_input(store, &f.path).await?;
    if hex::encode(Sha256::digest(&bytes)) != f.sha256 {
        return Err(JobError::Input(format!("{} changed since the run was planned; rerun to plan again", f.path)));
    }
    Ok(bytes)
}

fn input_error(e: crate::corpus::InputError) -> JobError {
    JobError::Input(e.to_string())
}

/// A supervised job's training examples, its dev subset, and its starting model on local disk; seeds
/// the backend so new heads start the same on every delivery.
async fn prepare(store: &Store, inputs: &SupervisedInputs, s: &SupervisedSettings) -> Result<(Vec<Example>, Vec<Example>, ModelRef), JobError> {
    let mut train = parse_squad(&inputs.squad_train.path, &read_file(store, &inputs.squad_train).await?).map_err(input_error)?;
    if let Some(nq) = &inputs.nq_train {
        train.extend(parse_nq_gold(&nq.path, &read_file(store, nq).await?).map_err(input_error)?);
    }
    let dev = parse_squad(&inputs.squad_dev.path, &read_file(store, &inputs.squad_dev).await?).map_err(input_error)?;
    let dev = subset(&dev, s.eval_examples, s.optim.seed);
    let start = local_model(store, &inputs.model).await?;
    <JobTrain as burn::tensor::backend::Backend>::seed(&job_device()?, s.optim.seed);
    Ok((train, dev, start))
}

/// The first `n` of a seeded shuffle (all when `n` is absent): the same subset every time.
fn subset<T: Clone>(items: &[T], n: Option<usize>, seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    shuffle(&mut v, seed);
    v.truncate(n.unwrap_or(v.len()));
    v
}

/// Where a job keeps its resumable state: named by the job, so no other job ever reads it.
fn partial_dir(output: &str) -> String {
    format!("{output}/partial")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Optimiser steps done (over all epochs).
    step: usize,
    losses: Vec<f64>,
    terms: BTreeMap<String, (f64, usize)>,
}

/// A local scratch folder that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("phrasesweep-train-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Saves model, optimiser and progress to the store; the progress file goes last, so a partial upload
/// is never taken for a checkpoint.
async fn save_partial<M: AutodiffModule<JobTrain>>(store: &Store, rel: &str, model: &M, trainer: &Trainer<JobTrain, M>, progress: &Progress) -> Result<()> {
    let scratch = Scratch::new()?;
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    model.clone().save_file(scratch.0.join("model"), &rec).map_err(|e| anyhow::anyhow!("cannot save the model: {e}"))?;
    trainer.save(&scratch.0)?;
    for entry in std::fs::read_dir(&scratch.0)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).context("checkpoint file name")?.to_string();
        store.put(&format!("{rel}/{name}"), std::fs::read(&path)?).await?;
    }
    store.put_json(&format!("{rel}/progress.json"), progress).await?;
    info!(step = progress.step, "saved a resumable checkpoint");
    Ok(())
}

const PARTIAL_FILES: [&str; 3] = ["model.bin", "optim-decay.bin", "optim-no-decay.bin"];
const START_EVALUATION: &str = "before.json";

/// Drops a finished job's resumable state (the progress file first, so what is left is never taken for
/// a checkpoint): hundreds of megabytes that nothing will read again.
async fn drop_partial(store: &Store, rel: &str) -> Result<()> {
    store.delete(&format!("{rel}/progress.json")).await?;
    for name in PARTIAL_FILES.iter().chain([&START_EVALUATION]) {
        store.delete(&format!("{rel}/{name}")).await?;
    }
    Ok(())
}

/// Evaluates the starting model once per job and keeps the result beside the resumable state: on the
/// dev sets this takes minutes, which a redelivered job would otherwise spend again before it resumes.
async fn start_evaluation<T, F>(store: &Store, rel: &str, evaluate: F) -> Result<T>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: std::future::Future<Output = Result<T>>,
{
    let path = format!("{rel}/{START_EVALUATION}");
    if let Some(found) = store.get_json(&path).await? {
        info!("the starting evaluation is on the store from an earlier delivery");
        return Ok(found);
    }
    let value = evaluate.await?;
    store.put_json(&path, &value).await?;
    Ok(value)
}

/// Restores what [`save_partial`] wrote, if anything.
async fn load_partial<M: AutodiffModule<JobTrain>>(
    store: &Store,
    rel: &str,
    model: M,
    trainer: Trainer<JobTrain, M>,
) -> Result<(M, Trainer<JobTrain, M>, Progress, Option<usize>)> {
    let Some(progress) = store.get_json::<Progress>(&format!("{rel}/progress.json")).await? else {
        return Ok((model, trainer, Progress::default(), None));
    };
    let scratch = Scratch::new()?;
    for name in PARTIAL_FILES {
        let bytes = store.get(&format!("{rel}/{name}")).await?.with_context(|| format!("{rel}/{name} is missing"))?;
        std::fs::write(scratch.0.join(name), bytes)?;
    }
    let device = job_device()?;
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    let model = model.load_file(scratch.0.join("model"), &rec, &device).map_err(|e| anyhow::anyhow!("cannot load the resumable model: {e}"))?;
    let trainer = trainer.load(&scratch.0, &device)?;
    info!(step = progress.step, "resuming from a checkpoint");
    let at = progress.step;
    Ok((model, trainer, progress, Some(at)))
}

/// Mean loss of the first and last tenth of the steps.
fn loss_ends(losses: &[f64]) -> (Option<f64>, Option<f64>) {
    if losses.is_empty() {
        return (None, None);
    }
    let tenth = (losses.len() / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (Some(mean(&losses[..tenth])), Some(mean(&losses[losses.len() - tenth..])))
}

/// The supervised loop both `train-reader` and `train-phrase` run: seeded epochs over batches of rows,
/// resumable.
#[allow(clippy::too_many_arguments)]
async fn supervised<M, R>(
    store: &Store,
    output: &str,
    settings: &SupervisedSettings,
    train: &[Example],
    mut model: M,
    what: &str,
    row: impl Fn(&Example) -> Result<Option<R>>,
    loss: impl Fn(&M, &mut Vec<R>) -> Result<Tensor<JobTrain, 1>>,
) -> Result<(M, Progress, Option<usize>, f64)>
where
    M: AutodiffModule<JobTrain>,
{
    let o: &OptimSettings = &settings.optim;
    let trainer = Trainer::new(&model, o);
    let partial = partial_dir(output);
    let (m, mut trainer, mut progress, resumed) = load_partial(store, &partial, model, trainer).await?;
    model = m;
    let started = Instant::now();
    let per_epoch = settings.max_examples.unwrap_or(train.len()).min(train.len());
    let steps_per_epoch = per_epoch.div_ceil(o.batch_size);
    let total = steps_per_epoch * settings.epochs as usize;
    let mut log = RateLog::new(what.to_string(), total as u64, "steps");
    log.add(progress.step as u64);
    for epoch in 1..=settings.epochs {
        let order = subset(train, Some(per_epoch), o.seed + epoch as u64);
        for (i, batch) in order.chunks(o.batch_size).enumerate() {
            let step = (epoch as usize - 1) * steps_per_epoch + i;
            if step < progress.step {
                continue;
            }
            let mut rows = Vec::with_capacity(batch.len());
            for ex in batch {
                if let Some(r) = row(ex)? {
                    rows.push(r);
                }
            }
            if !rows.is_empty() {
                let l = loss(&model, &mut rows)?;
                let value: f32 = l.clone().into_scalar();
                anyhow::ensure!(value.is_finite(), "{what}: the loss is {value} at step {step}");
                model = trainer.step(model, l).0;
                progress.losses.push(value as f64);
            }
            progress.step = step + 1;
            log.add(1);
            if progress.step % o.checkpoint_every.max(1) == 0 && progress.step < total {
                save_partial(store, &partial, &model, &trainer, &progress).await?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((model, progress, resumed, seconds))
}

/// Writes `model` as a checkpoint to `output/<role>` on the store.
async fn publish<M: Module<Job> + burn::store::ModuleSnapshot<Job>>(store: &Store, model: &M, kind: &str, base: &Path, output: &str, role: &str) -> Result<ModelRef> {
    let scratch = Scratch::new()?;
    let config = crate::model::load::read_config(&base_config_dir(base)?)?;
    checkpoint::save::<Job, M>(model, &scratch.0, kind, &config, &base_config_dir(base)?)?;
    put_checkpoint(store, &scratch.0, &format!("{output}/{role}")).await
}

/// The pretrained folder a model descends from (a checkpoint records it).
fn base_config_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join(checkpoint::RECORD).exists() {
        Ok(PathBuf::from(checkpoint::read_record(dir)?.base_model))
    } else {
        Ok(dir.to_path_buf())
    }
}

fn per_1000(seconds: f64, questions: usize) -> f64 {
    1000.0 * seconds / questions.max(1) as f64
}

pub async fn train_reader(store: &Store, inputs: &SupervisedInputs, config: &SupervisedConfig) -> Result<serde_json::Value, JobError> {
    let s = &config.settings;
    let (train, dev, start) = prepare(store, inputs, s).await?;
    let device = job_device()?;
    let (model, text) = load_reader::<JobTrain>(&start, &device)?;
    let before = start_evaluation(store, &partial_dir(&config.output), async {
        let (em, f1) = reader::evaluate(&model.valid(), &text, &dev, s.max_len, &device)?;
        Ok(serde_json::json!({ "em": em, "f1": f1, "questions": dev.len() }))
    })
    .await?;
    info!(em = %before["em"], f1 = %before["f1"], "reader before training on SQuAD dev");
    let (model, progress, resumed, seconds) = supervised(
        store,
        &config.output,
        s,
        &train,
        model,
        "train-reader",
        |ex| Ok(reader_row(&text, ex, s.max_len)?.map(|r| r.0)),
        |m, rows| Ok(reader_loss(m, &text, rows, &device)),
    )
    .await?;
    let model = model.valid();
    let (em, f1) = reader::evaluate(&model, &text, &dev, s.max_len, &device)?;
    info!(em, f1, "reader after training on SQuAD dev");
    let after = serde_json::json!({ "em": em, "f1": f1, "questions": dev.len() });
    let checkpoint = publish(store, &model, READER_KIND, &PathBuf::from(&start.path), &config.output, "reader").await?;
    drop_partial(store, &partial_dir(&config.output)).await?;
    Ok(serde_json::to_value(finish(BTreeMap::from([("reader".into(), checkpoint)]), s, &train, progress, resumed, seconds, before, after))
        .context("cannot encode the train record")?)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    checkpoints: BTreeMap<String, ModelRef>,
    s: &SupervisedSettings,
    train: &[Example],
    progress: Progress,
    resumed: Option<usize>,
    seconds: f64,
    before: serde_json::Value,
    after: serde_json::Value,
) -> TrainOutput {
    let examples = s.max_examples.unwrap_or(train.len()).min(train.len());
    let (loss_first, loss_last) = loss_ends(&progress.losses);
    TrainOutput {
        checkpoints,
        epochs: s.epochs,
        steps: progress.step,
        examples,
        loss_first,
        loss_last,
        before,
        after,
        seconds_per_epoch: seconds / s.epochs.max(1) as f64,
        seconds_per_1000_questions: per_1000(seconds, examples * s.epochs as usize),
        resumed_at: resumed,
    }
}

pub async fn train_phrase(store: &Store, inputs: &SupervisedInputs, config: &SupervisedConfig) -> Result<serde_json::Value, JobError> {
    let s = &config.settings;
    let (train, dev, start) = prepare(store, inputs, s).await?;
    let device = job_device()?;
    let (phrase, text) = load_phrase_encoder::<JobTrain>(&start, &device)?;
    // The query encoders start from the pretrained folder (that of a phrase checkpoint, if given one).
    let query_start = base_config_dir(Path::new(&start.path))?;
    let query_ref = crate::model::registry::model_ref(&query_start.display().to_string())?;
    let (query, _) = load_query_encoder::<JobTrain>(&query_ref, &device)?;
    let teacher = match &inputs.teacher {
        Some(t) => Some(load_reader::<Job>(&local_model(store, t).await?, &device)?.0),
        None => None,
    };
    let distill = s.distill.clone().filter(|_| teacher.is_some());
    let before: phrase::PhraseEval = start_evaluation(store, &partial_dir(&config.output), async {
        phrase::evaluate(&phrase.valid(), &query.valid(), &text, &dev, s.max_len, s.filter_threshold, &device)
    })
    .await?;
    info!(em = before.em, kept = before.kept, "phrase encoder before training on SQuAD dev");
    let models = PhraseModels { phrase, query };
    let (models, progress, resumed, seconds) = supervised(
        store,
        &config.output,
        s,
        &train,
        models,
        "train-phrase",
        |ex| phrase_row(&text, ex, s.max_len),
        |m, rows| {
            if let (Some(t), Some(d)) = (&teacher, &distill) {
                phrase::add_teacher(t, &text, rows, d.temperature as f32, &device)?;
            }
            Ok(phrase_loss(m, &text, rows, distill.as_ref(), &device)?.total)
        },
    )
    .await?;
    let models = models.valid();
    let after = phrase::evaluate(&models.phrase, &models.query, &text, &dev, s.max_len, s.filter_threshold, &device)?;
    info!(em = after.em, kept = after.kept, "phrase encoder after training on SQuAD dev");
    let base = PathBuf::from(&start.path);
    let checkpoints = BTreeMap::from([
        ("phrase".to_string(), publish(store, &models.phrase, PHRASE_KIND, &base, &config.output, "phrase").await?),
        ("query".to_string(), publish(store, &models.query, QUERY_KIND, &base, &config.output, "query").await?),
    ]);
    drop_partial(store, &partial_dir(&config.output)).await?;
    let out = finish(checkpoints, s, &train, progress, resumed, seconds, serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(after).unwrap_or_default());
    Ok(serde_json::to_value(out).context("cannot encode the train record")?)
}

async fn questions(store: &Store, f: &InputFile) -> Result<Vec<Question>, JobError> {
    parse_questions(&f.path, 1, &read_file(store, f).await?).map_err(input_error)
}

pub async fn qsft_epoch(store: &Store, inputs: &QsftInputs, config: &QsftConfig) -> Result<serde_json::Value, JobError> {
    let run = &config.run;
    let o = &run.optim;
    let train = subset(&questions(store, &inputs.train).await?, run.max_questions, o.seed + config.epoch as u64);
    let dev = subset(&questions(store, &inputs.dev).await?, run.eval_questions, o.seed);
    let device = job_device()?;
    let start = local_model(store, &inputs.start).await?;
    let (frozen, text) = load_query_encoder::<Job>(&start, &device)?;
    let (model, _) = load_query_encoder::<JobTrain>(&start, &device)?;
    let distill_on = run.terms.contains_key(&LossTerm::Distill) && config.epoch >= run.distill.start_epoch;
    let teacher: Option<Reader<Job>> = match (&inputs.teacher, distill_on) {
        (Some(t), true) => Some(load_reader::<Job>(&local_model(store, t).await?, &device)?.0),
        _ => None,
    };
    let index = PhraseIndex::open(store, &inputs.phrases, &inputs.corpus, &config.search).await?;
    let query_len = config.search.query_len;
    let partial = partial_dir(&config.output);
    let dev_before = match config.epoch {
        1 => Some(start_evaluation(store, &partial, qsft::evaluate(&index, &frozen, &text, &dev, query_len, &device)).await?),
        _ => None,
    };
    if let Some(b) = &dev_before {
        info!(run = run.name, em = b.em, sentence_mar = b.sentence_mar, "qsft start evaluated on dev");
    }

    let trainer = Trainer::new(&model, o);
    let (mut model, mut trainer, mut progress, resumed) = load_partial(store, &partial, model, trainer).await?;
    let started = Instant::now();
    let batches: Vec<&[Question]> = train.chunks(o.batch_size).collect();
    let mut log = RateLog::new(format!("qsft {} epoch {}", run.name, config.epoch), batches.len() as u64, "steps");
    log.add(progress.step as u64);
    for (step, batch) in batches.iter().enumerate().skip(progress.step) {
        let mut items = qsft::candidates(&index, &frozen, &text, batch, run.candidates, query_len, &device).await?;
        if let Some(t) = &teacher {
            for q in &mut items {
                qsft::add_teacher(t, &text, q, 256, run.distill.temperature as f32, &device)?;
            }
        }
        let tensors = QsftBatch::<JobTrain>::new(&text, &items, query_len, &device)?;
        if let Some(loss) = qsft_loss(&model, &tensors, run, distill_on) {
            let value: f32 = loss.total.clone().into_scalar();
            if !value.is_finite() {
                return Err(JobError::Other(anyhow::anyhow!("qsft {}: the loss is {value} at step {step}", run.name)));
            }
            for (term, v) in &loss.terms {
                let e = progress.terms.entry(term.as_str().to_string()).or_default();
                e.0 += *v as f64;
                e.1 += 1;
            }
            model = trainer.step(model, loss.total).0;
            progress.losses.push(value as f64);
        }
        progress.step = step + 1;
        log.add(1);
        if progress.step % o.checkpoint_every.max(1) == 0 && progress.step < batches.len() {
            save_partial(store, &partial, &model, &trainer, &progress).await?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let model = model.valid();
    let dev_after = qsft::evaluate(&index, &model, &text, &dev, query_len, &device).await?;
    info!(run = run.name, epoch = config.epoch, em = dev_after.em, sentence_mar = dev_after.sentence_mar, "qsft epoch evaluated on dev");
    let checkpoint = publish(store, &model, QUERY_KIND, &PathBuf::from(&start.path), &config.output, "query").await?;
    drop_partial(store, &partial).await?;
    let (loss_first, loss_last) = loss_ends(&progress.losses);
    let out = QsftOutput {
        run: run.name.clone(),
        epoch: config.epoch,
        checkpoint,
        steps: progress.step,
        questions: train.len(),
        loss_first,
        loss_last,
        terms: progress.terms.iter().map(|(k, (sum, n))| (k.clone(), sum / (*n).max(1) as f64)).collect(),
        dev: dev_after,
        dev_before,
        seconds,
        seconds_per_1000_questions: per_1000(seconds, train.len()),
        resumed_at: resumed,
    };
    Ok(serde_json::to_value(out).context("cannot encode the qsft record")?)
}
