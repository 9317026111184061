//! `train-reader`, `train-phrase` and `qsft-epoch`: training runs as jobs. Each handler reads its inputs,
//! builds its models and runs the resumable step loop of [`crate::train::resume`], which saves a
//! checkpoint to the store every `checkpoint_every` steps so a redelivered job resumes where the last
//! one stopped; the finished model goes to the store as a checkpoint that later jobs name by sha256.

use super::{JobError, read_file};
use crate::index::search::PhraseIndex;
use crate::text::truecase::query_texts;
use crate::io::store::Store;
use crate::model::checkpoint;
use crate::model::device::{Job, JobTrain, job_device};
use crate::model::encoders::Reader;
use crate::model::densephrases;
use crate::model::registry::{PHRASE_KIND, QUERY_KIND, READER_KIND, load_phrase_encoder, load_query_encoder, load_reader, local_model, model_dir, model_ref, put_checkpoint};
use crate::text::questions::{Question, parse_questions};
use crate::train::phrase::{self, PhraseModels, PhraseRow, phrase_loss, phrase_row};
use crate::train::qsft::{self, QsftBatch, QsftQuestion, qsft_loss};
use crate::train::rc::{Example, parse_nq_gold, parse_squad};
use crate::train::reader::{self, ReaderRow, reader_loss, reader_row};
use crate::train::log::{Eval, write_log};
use crate::train::resume::{RunSpan, Scratch, StepLoss, Trained, batch_rows, drop_partial, epoch_batches, kept, partial_dir, run_steps, start_evaluation, subset};
use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module};
use phrasesweep_schemas::job::{InputFile, ModelRef, QsftConfig, QsftInputs, SupervisedConfig, SupervisedInputs};
use phrasesweep_schemas::outcome::{QsftOutcome, Role, TrainOutcome};
use phrasesweep_schemas::train::{LossTerm, Negatives, SupervisedSettings};
use std::collections::BTreeMap;
use std::future::ready;
use std::path::PathBuf;
use tracing::info;

pub async fn train_reader(store: &Store, inputs: &SupervisedInputs, config: &SupervisedConfig) -> Result<TrainOutcome, JobError> {
    let s = &config.settings;
    let (train, always, dev, start) = supervised_inputs(store, inputs, s).await?;
    let device = job_device()?;
    let partial = partial_dir(&config.output);
    let (model, text) = load_reader::<JobTrain>(&start, &device)?;
    let before = start_evaluation(store, &partial, async {
        let (em, f1) = reader::evaluate(&model.valid(), &text, &dev, s, &device)?;
        Ok(serde_json::json!({ "em": em, "f1": f1, "questions": dev.len() }))
    })
    .await?;
    info!(em = %before["em"], f1 = %before["f1"], "reader before training on SQuAD dev");
    let trained = run_steps(
        store,
        &partial,
        "train-reader",
        model,
        &s.optim,
        &RunSpan::default(),
        epoch_batches(&train, always, examples_per_epoch(s, &train), s.epochs, &s.optim),
        |batch| ready(batch_rows(&batch, |ex| Ok(reader_row(&text, ex, s)?.map(|r| r.0)))),
        |m, rows: Vec<ReaderRow>| Ok(Some(StepLoss::new(reader_loss(m, &text, &rows, &device)))),
    )
    .await?;
    let model = trained.model.valid();
    let (em, f1) = reader::evaluate(&model, &text, &dev, s, &device)?;
    info!(em, f1, "reader after training on SQuAD dev");
    let after = serde_json::json!({ "em": em, "f1": f1, "questions": dev.len() });
    let evals = [Eval { step: 0, result: &before }, Eval { step: trained.progress.step, result: &after }];
    write_log(store, &config.output, "train the reader", &trained.progress.log, &evals).await?;
    let checkpoint = publish(store, &model, READER_KIND, &start, &config.output, Role::Reader).await?;
    drop_partial(store, &partial).await?;
    Ok(outcome(BTreeMap::from([(Role::Reader, checkpoint)]), s, &train, &trained, before, after))
}

pub async fn train_phrase(store: &Store, inputs: &SupervisedInputs, config: &SupervisedConfig) -> Result<TrainOutcome, JobError> {
    let s = &config.settings;
    let (train, always, dev, start) = supervised_inputs(store, inputs, s).await?;
    let device = job_device()?;
    let partial = partial_dir(&config.output);
    let (phrase, text) = load_phrase_encoder::<JobTrain>(&start, &device)?;
    // The query encoders start from the pretrained folder (that of a phrase checkpoint, if given one), or
    // from a DensePhrases checkpoint's own query encoders.
    let query_start = match densephrases::folder(&start.path) {
        Some(_) => start.clone(),
        None => model_ref(&base_config_dir(&start)?.display().to_string())?,
    };
    let (query, _) = load_query_encoder::<JobTrain>(&query_start, &device)?;
    let teacher = match &inputs.teacher {
        Some(t) => Some(load_reader::<Job>(&local_model(store, t).await?, &device)?.0),
        None => None,
    };
    let distill = s.distill.clone().filter(|_| teacher.is_some());
    let before: phrase::PhraseEval = start_evaluation(store, &partial, async {
        phrase::evaluate(&phrase.valid(), &query.valid(), &text, &dev, s, &device)
    })
    .await?;
    info!(em = before.em, kept = before.kept, "phrase encoder before training on SQuAD dev");
    // DensePhrases' pre-batch queue starts empty each epoch (and after a resume).
    let prebatch = std::sync::Mutex::new(phrase::Prebatch::default());
    let per_epoch = examples_per_epoch(s, &train).div_ceil(s.optim.batch_size.max(1)).max(1);
    let steps = epoch_batches(&train, always, examples_per_epoch(s, &train), s.epochs, &s.optim).into_iter().enumerate().map(|(i, b)| (i % per_epoch == 0, b)).collect();
    let trained = run_steps(
        store,
        &partial,
        "train-phrase",
        PhraseModels { phrase, query },
        &s.optim,
        &RunSpan::default(),
        steps,
        |(epoch_start, batch): (bool, Vec<&Example>)| {
            if epoch_start {
                *prebatch.lock().expect("the queue lock") = phrase::Prebatch::default();
            }
            ready(batch_rows(&batch, |ex| phrase_row(&text, ex, s)))
        },
        |m, mut rows: Vec<PhraseRow>| {
            if let (Some(t), Some(d)) = (&teacher, &distill) {
                phrase::add_teacher(t, &text, &mut rows, d, &device)?;
            }
            let loss = phrase_loss(m, &text, &rows, distill.as_ref(), &s.negatives, &prebatch.lock().expect("the queue lock"), &device)?;
            if let Negatives::InBatch { prebatch: keep, .. } = s.negatives {
                prebatch.lock().expect("the queue lock").push(loss.gold, keep);
            }
            Ok(Some(StepLoss::new(loss.total)))
        },
    )
    .await?;
    let models = trained.model.valid();
    let after = phrase::evaluate(&models.phrase, &models.query, &text, &dev, s, &device)?;
    info!(em = after.em, kept = after.kept, "phrase encoder after training on SQuAD dev");
    let checkpoints = BTreeMap::from([
        (Role::Phrase, publish(store, &models.phrase, PHRASE_KIND, &start, &config.output, Role::Phrase).await?),
        (Role::Query, publish(store, &models.query, QUERY_KIND, &start, &config.output, Role::Query).await?),
    ]);
    let (before, after) = (serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(after).unwrap_or_default());
    let evals = [Eval { step: 0, result: &before }, Eval { step: trained.progress.step, result: &after }];
    write_log(store, &config.output, "train the phrase encoder", &trained.progress.log, &evals).await?;
    drop_partial(store, &partial).await?;
    Ok(outcome(checkpoints, s, &train, &trained, before, after))
}

pub async fn qsft_epoch(store: &Store, inputs: &QsftInputs, config: &QsftConfig) -> Result<QsftOutcome, JobError> {
    let run = &config.run;
    let o = &run.optim;
    let mut train = subset(&questions(store, &inputs.train).await?, run.max_questions, o.seed + config.epoch as u64);
    let mut dev = subset(&questions(store, &inputs.dev).await?, run.eval_questions, o.seed);
    let device = job_device()?;
    let start = local_model(store, &inputs.start).await?;
    let (frozen, text) = load_query_encoder::<Job>(&start, &device)?;
    // The questions as the query encoders read them at retrieval.
    for set in [&mut train, &mut dev] {
        let asked: Vec<String> = set.iter().map(|q| q.question.clone()).collect();
        let texts = query_texts(store, &inputs.corpus, &asked, &config.search.question, text.keeps_case()).await?;
        set.iter_mut().zip(texts).for_each(|(q, t)| q.question = t);
    }
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

    // The frozen encoders retrieve the candidates of a block of steps' questions in one search (one scan
    // for up to `qsft::BLOCK_QUESTIONS`: memory stays bounded, and a resumed epoch searches only the
    // blocks it has left), kept on the store until the epoch ends so that a redelivered job reads them
    // back; each step adds the teacher's view of its questions, then scores the trainable copy against
    // them.
    let per_block = (qsft::BLOCK_QUESTIONS / o.batch_size).max(1) * o.batch_size;
    let blocks: Vec<&[Question]> = train.chunks(per_block).collect();
    let steps: Vec<(usize, std::ops::Range<usize>)> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, block)| (0..block.len()).step_by(o.batch_size).map(move |at| (b, at..(at + o.batch_size).min(block.len()))))
        .collect();
    // One AdamW over all epochs: the schedule spans them, and each epoch continues from the moments the
    // one before left beside its checkpoint.
    let span = RunSpan {
        offset: (config.epoch as usize - 1) * steps.len(),
        total: run.epochs as usize * steps.len(),
        continue_from: inputs.optimiser.clone(),
        leave_at: (config.epoch < run.epochs).then(|| format!("{}/optimiser", config.output)),
    };
    let searched: tokio::sync::Mutex<Option<(usize, Vec<QsftQuestion>)>> = Default::default();
    let prepare = {
        let (index, frozen, text, teacher, device, blocks, searched, partial) = (&index, &frozen, &text, teacher.as_ref(), &device, &blocks, &searched, &partial);
        move |(block, range): (usize, std::ops::Range<usize>)| async move {
            let mut cache = searched.lock().await;
            if cache.as_ref().is_none_or(|(b, _)| *b != block) {
                let started = std::time::Instant::now();
                let search = async {
                    let items = qsft::candidates(index, frozen, text, blocks[block], run.candidates, query_len, device).await?;
                    info!(run = run.name, block, questions = items.len(), seconds = started.elapsed().as_secs_f64(), "qsft candidates retrieved");
                    qsft::encode_block(&items)
                };
                let name = format!("candidates-{block:05}.bin");
                let bytes = kept(store, partial, &name, search).await?;
                *cache = Some((block, qsft::decode_block(&bytes).with_context(|| format!("{partial}/kept/{name}: delete it to search again"))?));
            }
            let mut items = cache.as_ref().map(|(_, items)| items[range].to_vec()).unwrap_or_default();
            if let Some(t) = teacher {
                items.iter_mut().try_for_each(|q| qsft::add_teacher(t, text, q, &run.distill, device))?;
            }
            anyhow::Ok(Some(items))
        }
    };
    let trained = run_steps(
        store,
        &partial,
        &format!("qsft {} epoch {}", run.name, config.epoch),
        model,
        o,
        &span,
        steps,
        prepare,
        |m, items: Vec<QsftQuestion>| {
            let tensors = QsftBatch::<JobTrain>::new(&text, &items, query_len, &device)?;
            Ok(qsft_loss(m, &tensors, run, distill_on).map(|l| StepLoss { total: l.total, terms: l.terms.into_iter().map(|(t, v)| (t.as_str(), v)).collect() }))
        },
    )
    .await?;
    let model = trained.model.valid();
    let dev_after = qsft::evaluate(&index, &model, &text, &dev, query_len, &device).await?;
    info!(run = run.name, epoch = config.epoch, em = dev_after.em, sentence_mar = dev_after.sentence_mar, last_lr = trained.last_lr, "qsft epoch evaluated on dev");
    let checkpoint = publish(store, &model, QUERY_KIND, &start, &config.output, Role::Query).await?;
    let before = dev_before.as_ref().map(|b| serde_json::to_value(b).unwrap_or_default());
    let after = serde_json::to_value(&dev_after).unwrap_or_default();
    let mut evals: Vec<Eval> = before.iter().map(|b| Eval { step: span.offset, result: b }).collect();
    evals.push(Eval { step: span.offset + trained.progress.step, result: &after });
    let job = format!("qsft {} epoch {}", run.name, config.epoch);
    write_log(store, &config.output, &job, &trained.progress.log, &evals).await?;
    drop_partial(store, &partial).await?;
    let (loss_first, loss_last) = trained.loss_ends();
    Ok(QsftOutcome {
        run: run.name.clone(),
        epoch: config.epoch,
        checkpoint,
        steps: trained.progress.step,
        questions: train.len(),
        loss_first,
        loss_last,
        terms: trained.term_means(),
        dev: dev_after,
        dev_before,
        seconds: trained.seconds,
        seconds_per_1000_questions: per_1000(trained.seconds, train.len()),
        resumed_at: trained.resumed_at,
        optimiser: span.leave_at,
        last_lr: trained.last_lr,
    })
}

fn input_error(e: crate::text::corpus::InputError) -> JobError {
    JobError::Input(e.to_string())
}

/// A supervised job's training examples (with how many of the first ones every epoch draws), its dev
/// subset, and its starting model on local disk; seeds the backend so new heads start the same on every
/// delivery.
async fn supervised_inputs(store: &Store, inputs: &SupervisedInputs, s: &SupervisedSettings) -> Result<(Vec<Example>, usize, Vec<Example>, ModelRef), JobError> {
    let squad = parse_squad(&inputs.squad_train.path, &read_file(store, &inputs.squad_train).await?).map_err(input_error)?;
    let nq = match &inputs.nq_train {
        Some(nq) => parse_nq_gold(&nq.path, &read_file(store, nq).await?).map_err(input_error)?,
        None => Vec::new(),
    };
    // NQ drawn first goes first, so that `epoch_batches` can take all of it.
    let always = if s.nq_first { nq.len() } else { 0 };
    let train = if s.nq_first { [nq, squad].concat() } else { [squad, nq].concat() };
    let dev = parse_squad(&inputs.squad_dev.path, &read_file(store, &inputs.squad_dev).await?).map_err(input_error)?;
    let dev = subset(&dev, s.eval_examples, s.optim.seed);
    let start = local_model(store, &inputs.model).await?;
    <JobTrain as burn::tensor::backend::Backend>::seed(&job_device()?, s.optim.seed);
    Ok((train, always, dev, start))
}

async fn questions(store: &Store, f: &InputFile) -> Result<Vec<Question>, JobError> {
    parse_questions(&f.path, 1, &read_file(store, f).await?).map_err(input_error)
}

/// Training questions per epoch.
fn examples_per_epoch(s: &SupervisedSettings, train: &[Example]) -> usize {
    s.max_examples.unwrap_or(train.len()).min(train.len())
}

/// Writes `model`, trained from `start`, as a checkpoint to `output/<role>` on the store.
async fn publish<M: Module<Job> + burn::store::ModuleSnapshot<Job>>(store: &Store, model: &M, kind: &str, start: &ModelRef, output: &str, role: Role) -> Result<ModelRef> {
    let scratch = Scratch::new()?;
    let base = base_config_dir(start)?;
    let config = crate::model::load::read_config(&base)?;
    checkpoint::save::<Job, M>(model, scratch.path(), kind, &config, &base)?;
    put_checkpoint(store, scratch.path(), &format!("{output}/{}", role.as_str())).await
}

/// The pretrained folder a model descends from (a checkpoint records it; a DensePhrases name is its folder).
fn base_config_dir(start: &ModelRef) -> Result<PathBuf> {
    let dir = model_dir(&start.path);
    if dir.join(checkpoint::RECORD).exists() {
        Ok(PathBuf::from(checkpoint::read_record(&dir)?.base_model))
    } else {
        Ok(dir)
    }
}

fn per_1000(seconds: f64, questions: usize) -> f64 {
    1000.0 * seconds / questions.max(1) as f64
}

/// A supervised job's record.
fn outcome<M>(
    checkpoints: BTreeMap<Role, ModelRef>,
    s: &SupervisedSettings,
    train: &[Example],
    trained: &Trained<M>,
    before: serde_json::Value,
    after: serde_json::Value,
) -> TrainOutcome {
    let examples = examples_per_epoch(s, train);
    let (loss_first, loss_last) = trained.loss_ends();
    TrainOutcome {
        checkpoints,
        epochs: s.epochs,
        steps: trained.progress.step,
        examples,
        loss_first,
        loss_last,
        before,
        after,
        seconds_per_epoch: trained.seconds / s.epochs.max(1) as f64,
        seconds_per_1000_questions: per_1000(trained.seconds, examples * s.epochs as usize),
        resumed_at: trained.resumed_at,
    }
}
