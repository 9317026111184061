//! Resumable training: what a training job keeps on the store while it runs (the weights with their
//! parameter ids, the optimiser's moments, its position in the run, and the starting model's
//! evaluation) and the one step loop every training job runs over it. The state lives under the job's
//! own output folder, so only a redelivery of the same job ever reads it: that delivery skips the steps
//! the last one saved and does not evaluate the starting model again.

use super::optim::Trainer;
use super::rc::shuffle;
use crate::io::store::Store;
use crate::model::device::{JobTrain, job_device};
use crate::progress::RateLog;
use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::Tensor;
use phrasesweep_schemas::train::OptimSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;
use crate::train::log::StepLog;
use tracing::info;

/// Where a job keeps its resumable state: named by the job, so no other job ever reads it.
pub fn partial_dir(output: &str) -> String {
    format!("{output}/partial")
}

/// The position in a run, saved with each resumable checkpoint (`progress.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done (over all epochs).
    pub step: usize,
    /// The loss of every step that had a target.
    pub losses: Vec<f64>,
    /// Per loss term, the sum of its values and the number of steps it had targets in.
    pub terms: BTreeMap<String, (f64, usize)>,
    /// Every step done, for the training log.
    #[serde(default)]
    pub log: Vec<StepLog>,
}

/// A local scratch folder that is removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Result<Self> {
        let dir = crate::env::get().temp_dir.join(format!("phrasesweep-train-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

const PROGRESS: &str = "progress.json";
const STATE_FILES: [&str; 3] = ["model.bin", "optim-decay.bin", "optim-no-decay.bin"];
const START_EVALUATION: &str = "before.json";

/// Saves the weights (with their parameter ids) and the optimiser's moments under `rel`.
async fn save_state<M: AutodiffModule<JobTrain>>(store: &Store, rel: &str, model: &M, trainer: &Trainer<JobTrain, M>) -> Result<()> {
    let scratch = Scratch::new()?;
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    model.clone().save_file(scratch.path().join("model"), &rec).map_err(|e| anyhow::anyhow!("cannot save the model: {e}"))?;
    trainer.save(scratch.path())?;
    for entry in std::fs::read_dir(scratch.path())? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).context("checkpoint file name")?.to_string();
        store.put(&format!("{rel}/{name}"), std::fs::read(&path)?).await?;
    }
    Ok(())
}

/// Restores what [`save_state`] wrote under `rel`.
async fn load_state<M: AutodiffModule<JobTrain>>(store: &Store, rel: &str, model: M, trainer: Trainer<JobTrain, M>) -> Result<(M, Trainer<JobTrain, M>)> {
    let scratch = Scratch::new()?;
    for name in STATE_FILES {
        let bytes = store.get(&format!("{rel}/{name}")).await?.with_context(|| format!("{rel}/{name} is missing"))?;
        std::fs::write(scratch.path().join(name), bytes)?;
    }
    let device = job_device()?;
    let rec = BinFileRecorder::<FullPrecisionSettings>::new();
    let model = model.load_file(scratch.path().join("model"), &rec, &device).map_err(|e| anyhow::anyhow!("cannot load the model of {rel}: {e}"))?;
    let trainer = trainer.load(scratch.path(), &model, &device)?;
    Ok((model, trainer))
}

/// Saves model, optimiser and progress to the store; the progress file goes last, so a partial upload
/// is never taken for a checkpoint.
async fn save_partial<M: AutodiffModule<JobTrain>>(store: &Store, rel: &str, model: &M, trainer: &Trainer<JobTrain, M>, progress: &Progress) -> Result<()> {
    save_state(store, rel, model, trainer).await?;
    store.put_json(&format!("{rel}/{PROGRESS}"), progress).await?;
    info!(step = progress.step, "saved a resumable checkpoint");
    Ok(())
}

/// Restores what [`save_partial`] wrote, if anything; with it, the step it resumes at.
async fn load_partial<M: AutodiffModule<JobTrain>>(
    store: &Store,
    rel: &str,
    model: M,
    trainer: Trainer<JobTrain, M>,
) -> Result<(M, Trainer<JobTrain, M>, Progress, Option<usize>)> {
    let Some(progress) = store.get_json::<Progress>(&format!("{rel}/{PROGRESS}")).await? else {
        return Ok((model, trainer, Progress::default(), None));
    };
    let (model, trainer) = load_state(store, rel, model, trainer).await?;
    info!(step = progress.step, "resuming from a checkpoint");
    let at = progress.step;
    Ok((model, trainer, progress, Some(at)))
}

/// Deletes what [`save_state`] wrote under `rel`.
pub async fn drop_state(store: &Store, rel: &str) -> Result<()> {
    for name in STATE_FILES {
        store.delete(&format!("{rel}/{name}")).await?;
    }
    Ok(())
}

/// Drops a finished job's resumable state (the progress file first, so what is left is never taken for
/// a checkpoint): hundreds of megabytes that nothing will read again.
pub async fn drop_partial(store: &Store, rel: &str) -> Result<()> {
    store.delete(&format!("{rel}/{PROGRESS}")).await?;
    drop_state(store, rel).await?;
    for kept in store.list(&format!("{rel}/{KEPT_DIR}")).await? {
        store.delete(&kept).await?;
    }
    store.delete(&format!("{rel}/{START_EVALUATION}")).await
}

/// Where [`kept`] keeps what it computed, under a job's partial folder.
const KEPT_DIR: &str = "kept/";

/// What `compute` returns (as bytes), computed once per job and kept beside the resumable state until the
/// job finishes: a redelivered job reads it back instead of computing it again (QSFT's candidates, one
/// scan of the index per block of questions).
pub async fn kept<F>(store: &Store, rel: &str, name: &str, compute: F) -> Result<Vec<u8>>
where
    F: Future<Output = Result<Vec<u8>>>,
{
    let path = format!("{rel}/{KEPT_DIR}{name}");
    if let Some(found) = store.get(&path).await? {
        info!(name, bytes = found.len(), "read from the store, as an earlier delivery left it");
        return Ok(found);
    }
    let value = compute.await?;
    store.put(&path, value.clone()).await?;
    Ok(value)
}

/// Evaluates the starting model once per job and keeps the result beside the resumable state: on the
/// dev sets this takes minutes, which a redelivered job would otherwise spend again before it resumes.
pub async fn start_evaluation<T, F>(store: &Store, rel: &str, evaluate: F) -> Result<T>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: Future<Output = Result<T>>,
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

/// The first `n` of a seeded shuffle (all when `n` is absent): the same subset every time.
pub fn subset<T: Clone>(items: &[T], n: Option<usize>, seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    shuffle(&mut v, seed);
    v.truncate(n.unwrap_or(v.len()));
    v
}

/// The steps of a supervised run, epoch after epoch: in epoch `e`, the first `per_epoch` items of a
/// shuffle seeded `optim.seed + e`, in batches of `optim.batch_size`. The first `always` items are in
/// every epoch's draw (the rest of it drawn from the others), shuffled in with them. Every epoch has the
/// same number of steps, so a step's index says where in the run it is.
pub fn epoch_batches<'a, T>(items: &'a [T], always: usize, per_epoch: usize, epochs: u32, optim: &OptimSettings) -> Vec<Vec<&'a T>> {
    let all: Vec<usize> = (0..items.len()).collect();
    let always = always.min(per_epoch);
    let mut steps = Vec::new();
    for epoch in 1..=epochs {
        let seed = optim.seed + epoch as u64;
        let order = if always == 0 {
            subset(&all, Some(per_epoch), seed)
        } else {
            let mut drawn = all[..always].to_vec();
            drawn.extend(subset(&all[always..], Some(per_epoch - always), seed));
            subset(&drawn, None, seed)
        };
        steps.extend(order.chunks(optim.batch_size).map(|batch| batch.iter().map(|&i| &items[i]).collect::<Vec<&T>>()));
    }
    steps
}

/// The rows of a batch, leaving out the items `row` turns down; `None` when it turns them all down.
pub fn batch_rows<T, R>(batch: &[&T], row: impl Fn(&T) -> Result<Option<R>>) -> Result<Option<Vec<R>>> {
    let mut rows = Vec::with_capacity(batch.len());
    for item in batch {
        if let Some(r) = row(item)? {
            rows.push(r);
        }
    }
    Ok((!rows.is_empty()).then_some(rows))
}

/// The loss of one step, and the values of its named terms (averaged into the job's record).
pub struct StepLoss {
    pub total: Tensor<JobTrain, 1>,
    pub terms: Vec<(&'static str, f32)>,
}

impl StepLoss {
    /// A loss without named terms.
    pub fn new(total: Tensor<JobTrain, 1>) -> Self {
        Self { total, terms: Vec::new() }
    }
}

/// What [`run_steps`] hands back.
pub struct Trained<M> {
    pub model: M,
    pub progress: Progress,
    /// The step this delivery resumed at, when an earlier one left a checkpoint.
    pub resumed_at: Option<usize>,
    /// Seconds this delivery spent in the loop.
    pub seconds: f64,
    /// The learning rate of the last step.
    pub last_lr: f64,
}

impl<M> Trained<M> {
    /// Mean loss of the first and last tenth of the steps that had a target (absent when none had).
    pub fn loss_ends(&self) -> (Option<f64>, Option<f64>) {
        let losses = &self.progress.losses;
        if losses.is_empty() {
            return (None, None);
        }
        let tenth = (losses.len() / 10).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        (Some(mean(&losses[..tenth])), Some(mean(&losses[losses.len() - tenth..])))
    }

    /// Mean value of each term over the steps where it had targets.
    pub fn term_means(&self) -> BTreeMap<String, f64> {
        self.progress.terms.iter().map(|(k, (sum, n))| (k.clone(), sum / (*n).max(1) as f64)).collect()
    }
}

/// Where a job's steps lie in its training run. The learning-rate schedule spans the run, which for
/// QSFT is every epoch: epoch e's job holds steps `offset..offset + steps` of `total`, continues from
/// the optimiser epoch e − 1 left (`continue_from`) and leaves its own for epoch e + 1 (`leave_at`).
#[derive(Debug, Clone, Default)]
pub struct RunSpan {
    pub offset: usize,
    /// Steps in the run; 0: this job's steps are the whole run.
    pub total: usize,
    pub continue_from: Option<String>,
    pub leave_at: Option<String>,
}

/// The step loop of every training job, resumable. It first restores the state an earlier delivery of
/// the job saved under `dir`, if any, and skips the steps that state covers; a first delivery starts
/// from `span.continue_from`'s weights and moments when given. Then, per step, `prepare` builds the
/// step's inputs from its entry in `steps` (`None`: nothing to learn from, the step only counts),
/// `loss` scores them with the model as it is, and the optimiser steps at the schedule's learning
/// rate. Every `optim.checkpoint_every` steps, short of the last, the state goes to the store, and at
/// the end to `span.leave_at`. Progress is logged as `what: done/total steps`.
#[allow(clippy::too_many_arguments)]
pub async fn run_steps<M, S, I, P, Fut, L>(
    store: &Store,
    dir: &str,
    what: &str,
    model: M,
    optim: &OptimSettings,
    span: &RunSpan,
    steps: Vec<S>,
    mut prepare: P,
    loss: L,
) -> Result<Trained<M>>
where
    M: AutodiffModule<JobTrain>,
    P: FnMut(S) -> Fut,
    Fut: Future<Output = Result<Option<I>>>,
    L: Fn(&M, I) -> Result<Option<StepLoss>>,
{
    let trainer = Trainer::new(&model, optim);
    let (mut model, mut trainer, mut progress, resumed_at) = load_partial(store, dir, model, trainer).await?;
    if let (None, Some(from)) = (resumed_at, &span.continue_from) {
        (model, trainer) = load_state(store, from, model, trainer).await?;
        info!(from, "continuing from the optimiser of the epoch before");
    }
    let started = Instant::now();
    let total = steps.len();
    let run_total = if span.total == 0 { total } else { span.total };
    let mut log = RateLog::new(what.to_string(), total as u64, "steps");
    log.add(progress.step as u64);
    for (step, entry) in steps.into_iter().enumerate().skip(progress.step) {
        trainer.lr = optim.schedule.lr(optim.lr, optim.warmup, span.offset + step, run_total);
        let mut logged = StepLog { step: span.offset + step, lr: trainer.lr, ..Default::default() };
        if let Some(input) = prepare(entry).await?
            && let Some(l) = loss(&model, input)?
        {
            let value: f32 = l.total.clone().into_scalar();
            anyhow::ensure!(value.is_finite(), "{what}: the loss is {value} at step {step}");
            for (term, v) in l.terms {
                let e = progress.terms.entry(term.to_string()).or_default();
                e.0 += v as f64;
                e.1 += 1;
                logged.terms.insert(term.to_string(), v as f64);
            }
            let (stepped, stats) = trainer.step(model, l.total);
            model = stepped;
            progress.losses.push(value as f64);
            (logged.loss, logged.grad_norm) = (Some(value as f64), Some(stats.grad_norm));
        }
        progress.log.push(logged);
        progress.step = step + 1;
        log.add(1);
        if progress.step % optim.checkpoint_every.max(1) == 0 && progress.step < total {
            save_partial(store, dir, &model, &trainer, &progress).await?;
        }
    }
    if let Some(at) = &span.leave_at {
        save_state(store, at, &model, &trainer).await?;
    }
    Ok(Trained { model, progress, resumed_at, seconds: started.elapsed().as_secs_f64(), last_lr: trainer.lr })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a job kept is read back by its next delivery, which does not compute it again, and is gone
    /// once the job drops its partial state.
    #[tokio::test]
    async fn kept_values_survive_a_redelivery_until_the_job_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().to_str().unwrap()).unwrap();
        let rel = partial_dir("models/qsft/query/epoch-1");
        let first = kept(&store, &rel, "candidates-00000.bin", async { Ok(vec![1u8, 2, 3]) }).await.unwrap();
        let again = kept(&store, &rel, "candidates-00000.bin", async { anyhow::bail!("computed a second time") }).await.unwrap();
        assert_eq!((first, again), (vec![1, 2, 3], vec![1, 2, 3]));
        drop_partial(&store, &rel).await.unwrap();
        assert!(store.list(&format!("{rel}/")).await.unwrap().is_empty());
        let fresh = kept(&store, &rel, "candidates-00000.bin", async { Ok(vec![4u8]) }).await.unwrap();
        assert_eq!(fresh, vec![4]);
    }

    #[test]
    fn epoch_batches_follow_each_epochs_seeded_shuffle() {
        let items: Vec<u32> = (0..10).collect();
        let optim = OptimSettings { batch_size: 3, seed: 7, ..Default::default() };
        let steps = epoch_batches(&items, 0, 8, 2, &optim);
        // 8 items per epoch in batches of 3: 3 steps an epoch.
        assert_eq!(steps.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2, 3, 3, 2]);
        for (epoch, chunk) in [(1u64, &steps[..3]), (2, &steps[3..])] {
            let got: Vec<u32> = chunk.iter().flatten().map(|&&x| x).collect();
            assert_eq!(got, subset(&items, Some(8), 7 + epoch), "epoch {epoch} is the shuffle of items seeded seed + epoch");
        }
    }

    #[test]
    fn items_drawn_always_are_in_every_epoch_with_the_rest_at_random() {
        let items: Vec<u32> = (0..100).collect();
        let optim = OptimSettings { batch_size: 4, seed: 7, ..Default::default() };
        let steps = epoch_batches(&items, 5, 12, 2, &optim);
        let epochs: Vec<Vec<u32>> = [&steps[..3], &steps[3..]].iter().map(|c| c.iter().flatten().map(|&&x| x).collect()).collect();
        for got in &epochs {
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 12, "12 distinct items an epoch: {got:?}");
            assert!((0..5).all(|x| got.contains(&x)), "the first 5 in every epoch: {got:?}");
            assert_ne!(&got[..5], &[0, 1, 2, 3, 4], "shuffled in with the others: {got:?}");
        }
        assert_ne!(epochs[0], epochs[1], "each epoch draws the rest anew");
    }

    #[test]
    fn a_batch_whose_items_are_all_turned_down_has_no_rows() {
        let (a, b, c) = (1u32, 2u32, 3u32);
        let odd = |x: &u32| -> Result<Option<u32>> { Ok((*x % 2 == 1).then_some(*x * 10)) };
        assert_eq!(batch_rows(&[&a, &b, &c], odd).unwrap(), Some(vec![10, 30]));
        assert_eq!(batch_rows(&[&b], odd).unwrap(), None);
        assert!(batch_rows(&[&a], |_: &u32| -> Result<Option<u32>> { anyhow::bail!("bad row") }).is_err());
    }

    #[test]
    fn loss_ends_average_the_first_and_last_tenth() {
        let trained = |losses: Vec<f64>| Trained { model: (), progress: Progress { losses, ..Default::default() }, resumed_at: None, seconds: 0.0, last_lr: 0.0 };
        assert_eq!(trained(vec![]).loss_ends(), (None, None));
        assert_eq!(trained(vec![4.0, 2.0]).loss_ends(), (Some(4.0), Some(2.0)));
        let twenty: Vec<f64> = (0..20).map(|i| i as f64).collect();
        assert_eq!(trained(twenty).loss_ends(), (Some(0.5), Some(18.5)));
    }
}
