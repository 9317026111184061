//! Training the phrase encoder and its query encoders together, DensePhrases-style: per question, start
//! and end distributions over the tokens of its paragraph and over the gold start and end vectors of the
//! batch and of the batches before it (in-batch and pre-batch negatives), cross-entropy to the gold span,
//! distillation from the reader's distributions, and the filter head trained to spot answer starts and
//! ends.

use super::losses::{bool_tensor, distill, mml};
use super::rc::{Example, feature};
use super::reader::{prob_tensor, teacher_probs};
use crate::model::encoders::{EncodedParagraph, ParagraphInput, PhraseEncoder, QueryEncoder, Reader, best_spans, encode_paragraphs, encode_queries};
use burn::tensor::ElementConversion as _;
use crate::model::text::{Row, TextEncoder};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use phrasesweep_schemas::train::{DistillSettings, Negatives, SupervisedSettings};
use std::collections::VecDeque;

/// Both sides of the phrase model, so one optimiser trains them together.
#[derive(Module, Debug)]
pub struct PhraseModels<B: Backend> {
    pub phrase: PhraseEncoder<B>,
    pub query: QueryEncoder<B>,
}

/// One training question: its paragraph row, its question row, and the answer's row positions.
pub struct PhraseRow {
    pub paragraph: Row,
    pub question: Row,
    pub offset: usize,
    pub len: usize,
    pub answer: (usize, usize),
    /// The paragraph window's piece ids (the teacher reads the same window).
    pub window: Vec<u32>,
    pub question_text: String,
    /// The reader's start and end probabilities over `window`, when distilling.
    pub teacher: Option<(Vec<f32>, Vec<f32>)>,
}

/// One training row of `ex` in the window of `s.max_len` (title cut to `s.title_tokens`, question to
/// `s.query_len`), or `None` when no window of its paragraph holds its answer.
pub fn phrase_row(text: &TextEncoder, ex: &Example, s: &SupervisedSettings) -> Result<Option<PhraseRow>> {
    let mut title = text.pieces(&ex.title)?.ids;
    title.truncate(s.title_tokens);
    let Some(f) = feature(text, ex, s.max_len - 3 - title.len())? else { return Ok(None) };
    let offset = title.len() + 2;
    Ok(Some(PhraseRow {
        paragraph: text.pair(&title, f.ids()),
        question: text.single(&ex.question, s.query_len)?,
        offset,
        len: f.ids().len(),
        answer: (offset + f.answer.0, offset + f.answer.1),
        window: f.ids().to_vec(),
        question_text: ex.question.clone(),
        teacher: None,
    }))
}

/// The loss of one batch and its parts, for the log.
pub struct PhraseLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub span: f32,
    pub distill: Option<f32>,
    pub filter: f32,
    /// The batch's gold start and end vectors (row-major `[rows, dim]`), for the pre-batch queue.
    pub gold: (Vec<f32>, Vec<f32>),
}

/// DensePhrases' pre-batch negatives: the gold start and end vectors of the last batches, as data (no
/// gradient reaches the batches they came from). Rebuilt from empty when a job resumes.
#[derive(Debug, Default, Clone)]
pub struct Prebatch {
    batches: VecDeque<(Vec<f32>, Vec<f32>)>,
}

impl Prebatch {
    /// Adds a batch's gold vectors, keeping the last `keep` batches.
    pub fn push(&mut self, gold: (Vec<f32>, Vec<f32>), keep: usize) {
        self.batches.push_back(gold);
        while self.batches.len() > keep {
            self.batches.pop_front();
        }
    }

    /// The queued start (or end) vectors, `[n, dim]`.
    fn vectors<B: Backend>(&self, end: bool, dim: usize, device: &B::Device) -> Option<Tensor<B, 2>> {
        let flat: Vec<f32> = self.batches.iter().flat_map(|(s, e)| if end { e } else { s }).copied().collect();
        let rows = flat.len() / dim;
        (rows > 0).then(|| Tensor::from_data(TensorData::new(flat, [rows, dim]), device))
    }

    /// Vectors queued (starts; as many ends).
    pub fn len(&self, dim: usize) -> usize {
        self.batches.iter().map(|(s, _)| s.len() / dim.max(1)).sum()
    }
}

/// Fills each row's teacher distributions from the reader, which reads the questions and softens its
/// distributions as `settings` say.
pub fn add_teacher<B: Backend>(reader: &Reader<B>, text: &TextEncoder, rows: &mut [PhraseRow], settings: &DistillSettings, device: &B::Device) -> Result<()> {
    for r in rows {
        r.teacher = Some(teacher_probs(reader, text, &r.question_text, settings.question_pieces, &r.window, settings.temperature as f32, device)?);
    }
    Ok(())
}

/// The filter head's loss on one side (start or end), as DensePhrases weighs it: per row, binary
/// cross-entropy over its own tokens (`own`) with the `positive` token weighted by the row's length (so
/// its one answer boundary weighs as much as all its other tokens together), averaged over the row's
/// tokens; then averaged over rows. `logits`: `[b, s]`.
pub fn filter_bce<B: Backend>(logits: Tensor<B, 2>, positive: &[usize], own: &[Vec<bool>], device: &B::Device) -> Tensor<B, 1> {
    let [b, s] = logits.dims();
    let lengths: Vec<f32> = own.iter().map(|r| r.iter().filter(|&&o| o).count().max(1) as f32).collect();
    let y: Vec<f32> = positive.iter().flat_map(|&at| (0..s).map(move |p| (p == at) as u8 as f32)).collect();
    let y = Tensor::<B, 2>::from_data(TensorData::new(y, [b, s]), device);
    let length = Tensor::<B, 1>::from_data(TensorData::new(lengths, [b]), device).reshape([b, 1]);
    let bce = (y.clone() * length.clone() * log_sigmoid(logits.clone()) + (y.neg() + 1.0) * log_sigmoid(logits.neg())).neg();
    let per_row = bce.mask_fill(bool_tensor::<B>(own, s, device).bool_not(), 0.0).sum_dim(1) / length;
    per_row.mean().reshape([1])
}

/// Loss of a batch. With `distill_settings`, rows carry the reader's distributions and the loss pulls
/// toward them. `negatives` says what else each question's start and end are scored against; with
/// `InBatch`, `prebatch` holds the gold vectors of the batches before.
pub fn phrase_loss<B: Backend>(
    models: &PhraseModels<B>,
    text: &TextEncoder,
    rows: &[PhraseRow],
    distill_settings: Option<&DistillSettings>,
    negatives: &Negatives,
    prebatch: &Prebatch,
    device: &B::Device,
) -> Result<PhraseLoss<B>> {
    let b = rows.len();
    let p_in = text.batch::<B>(&rows.iter().map(|r| r.paragraph.clone()).collect::<Vec<_>>(), 0, device);
    let q_in = text.batch::<B>(&rows.iter().map(|r| r.question.clone()).collect::<Vec<_>>(), 0, device);
    let (h, filter) = models.phrase.forward(p_in);
    let (qs, qe) = models.query.forward(q_in);
    let [_, s, d] = h.dims();
    let flat = h.clone().reshape([b * s, d]);
    let own = |p: usize, r: &PhraseRow| p >= r.offset && p < r.offset + r.len;
    let own_mask: Vec<Vec<bool>> = rows.iter().map(|r| (0..s).map(|p| own(p, r)).collect()).collect();
    let own_t = bool_tensor::<B>(&own_mask, s, device);
    let gold_index = |pick: fn(&PhraseRow) -> usize| -> Tensor<B, 1, burn::tensor::Int> {
        let idx: Vec<i64> = rows.iter().enumerate().map(|(i, r)| (i * s + pick(r)) as i64).collect();
        Tensor::from_data(TensorData::new(idx, [b]), device)
    };
    let (gold_start, gold_end) = (flat.clone().select(0, gold_index(|r| r.answer.0)), flat.clone().select(0, gold_index(|r| r.answer.1)));
    let span = match negatives {
        Negatives::AllTokens => {
            // Every question against every paragraph token of the batch.
            let start = qs.clone().matmul(flat.clone().transpose());
            let end = qe.clone().matmul(flat.transpose());
            let valid_row: Vec<bool> = (0..b * s).map(|k| own(k % s, &rows[k / s])).collect();
            let valid = bool_tensor::<B>(&vec![valid_row; b], b * s, device);
            let one_hot = |pick: fn(&PhraseRow) -> usize| -> Vec<Vec<bool>> {
                rows.iter().enumerate().map(|(i, r)| (0..b * s).map(|k| k == i * s + pick(r)).collect()).collect()
            };
            let ls = mml(start, bool_tensor::<B>(&one_hot(|r| r.answer.0), b * s, device), valid.clone()).expect("answers");
            let le = mml(end, bool_tensor::<B>(&one_hot(|r| r.answer.1), b * s, device), valid).expect("answers");
            (ls + le).div_scalar(2.0)
        }
        Negatives::InBatch { weight, .. } => {
            // Its own paragraph's tokens…
            let own_scores = |q: Tensor<B, 2>| (h.clone() * q.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([b, s]);
            let at = |pick: fn(&PhraseRow) -> usize| -> Vec<Vec<bool>> { rows.iter().map(|r| (0..s).map(|p| p == pick(r)).collect()).collect() };
            let ls = mml(own_scores(qs.clone()), bool_tensor::<B>(&at(|r| r.answer.0), s, device), own_t.clone()).expect("answers");
            let le = mml(own_scores(qe.clone()), bool_tensor::<B>(&at(|r| r.answer.1), s, device), own_t.clone()).expect("answers");
            // …then the gold vectors of the batch (its own is the target) and of the batches before.
            let in_batch = |q: Tensor<B, 2>, gold: Tensor<B, 2>, end: bool| {
                let keys = match prebatch.vectors::<B>(end, d, device) {
                    Some(queued) => Tensor::cat(vec![gold, queued], 0),
                    None => gold,
                };
                let n = keys.dims()[0];
                let logits = q.matmul(keys.transpose());
                let diagonal: Vec<Vec<bool>> = (0..b).map(|i| (0..n).map(|j| j == i).collect()).collect();
                mml(logits, bool_tensor::<B>(&diagonal, n, device), bool_tensor::<B>(&vec![vec![true; n]; b], n, device)).expect("a target per row")
            };
            let ib = in_batch(qs.clone(), gold_start.clone(), false) + in_batch(qe.clone(), gold_end.clone(), true);
            (ls + le).div_scalar(2.0) + ib.mul_scalar(*weight as f32 / 2.0)
        }
    };
    let span_value: f32 = span.clone().into_scalar().elem();
    let mut total = span;

    // The filter head: is this paragraph token an answer start (end)? As DensePhrases trains it
    // ([`filter_bce`]), start and end weighted 0.5 each.
    let bce = |k: usize, pick: fn(&PhraseRow) -> usize| {
        let logits = filter.clone().slice([0..b, 0..s, k..k + 1]).reshape([b, s]);
        filter_bce(logits, &rows.iter().map(pick).collect::<Vec<_>>(), &own_mask, device)
    };
    let filter_loss = bce(0, |r| r.answer.0).mul_scalar(0.5) + bce(1, |r| r.answer.1).mul_scalar(0.5);
    let filter_value: f32 = filter_loss.clone().into_scalar().elem();
    total = total + filter_loss;

    let mut distill_value = None;
    if let Some(settings) = distill_settings {
        let t = settings.temperature as f32;
        let (mut ts, mut te) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for r in rows {
            let Some((a, e)) = r.teacher.clone() else { anyhow::bail!("distillation needs the reader's distributions (add_teacher)") };
            let pad = |v: Vec<f32>| -> Vec<f32> { (0..s).map(|p| if own(p, r) { v[p - r.offset] } else { 0.0 }).collect() };
            ts.push(pad(a));
            te.push(pad(e));
        }
        // The student over its own paragraph only, as the teacher.
        let own_scores = |q: Tensor<B, 2>| (h.clone() * q.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([b, s]);
        let term = |q: Tensor<B, 2>, target: &[Vec<f32>]| {
            let teacher = prob_tensor::<B>(target, s, device);
            distill(own_scores(q), teacher, own_t.clone(), own_t.clone(), settings.kind, t).expect("every row has paragraph tokens")
        };
        let kl = (term(qs, &ts) + term(qe, &te)).div_scalar(2.0);
        distill_value = Some(kl.clone().into_scalar().elem());
        total = total + kl.mul_scalar(settings.phrase_weight() as f32);
    }
    let data = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
    let gold = (data(gold_start.detach()), data(gold_end.detach()));
    Ok(PhraseLoss { total, span: span_value, distill: distill_value, filter: filter_value, gold })
}

/// What the trained phrase model does on SQuAD dev, one paragraph per question.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct PhraseEval {
    /// Exact match (percent) of the best span of the question's own paragraph.
    pub em: f64,
    /// Share of tokens the filter keeps at the configured threshold.
    pub kept: f64,
    /// With `filter_keep`: the threshold that keeps that share of these paragraphs' tokens, the share
    /// it keeps, and the index it gives, in bytes of f32 vectors per 1,000 paragraph tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<Calibration>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub threshold: f32,
    pub kept: f64,
    pub bytes_per_1000_tokens: f64,
}

/// The threshold on a token's larger filter logit that keeps `keep` of `scores` (ties at the threshold
/// are kept, so the share kept is at least `keep`), with the share it keeps.
pub fn calibrate(scores: &mut [f32], keep: f64) -> Option<(f32, f64)> {
    if scores.is_empty() {
        return None;
    }
    scores.sort_by(|a, b| b.total_cmp(a));
    let n = ((keep.clamp(0.0, 1.0) * scores.len() as f64).ceil() as usize).clamp(1, scores.len());
    let threshold = scores[n - 1];
    let kept = scores.iter().filter(|&&x| x >= threshold).count() as f64 / scores.len() as f64;
    Some((threshold, kept))
}

/// Single-paragraph exact match and the filter's kept share over `examples`.
pub fn evaluate<B: Backend>(
    phrase: &PhraseEncoder<B>,
    query: &QueryEncoder<B>,
    text: &TextEncoder,
    examples: &[Example],
    s: &SupervisedSettings,
    device: &B::Device,
) -> Result<PhraseEval> {
    let settings = phrasesweep_schemas::settings::EncodeSettings {
        max_len: s.max_len,
        title_tokens: s.title_tokens,
        filter_threshold: None,
        batch_size: 8,
        ..Default::default()
    };
    let (mut em, mut kept, mut tokens, mut scores, mut dim) = (0.0, 0usize, 0usize, Vec::new(), 0usize);
    let mut log = crate::progress::RateLog::new("evaluate the phrase encoder", examples.len() as u64, "questions");
    for chunk in examples.chunks(16) {
        log.add(chunk.len() as u64);
        let inputs: Vec<ParagraphInput> = chunk.iter().map(|e| ParagraphInput { title: &e.title, text: &e.context, sentences: &[] }).collect();
        let encoded: Vec<EncodedParagraph> = encode_paragraphs(phrase, text, &inputs, &settings, device)?;
        let questions: Vec<&str> = chunk.iter().map(|e| e.question.as_str()).collect();
        let queries = encode_queries(query, text, &questions, s.query_len, 16, device)?;
        for ((ex, enc), (qs, qe)) in chunk.iter().zip(&encoded).zip(&queries) {
            let d = qs.len();
            let dot = |q: &[f32], i: usize| -> f32 { q.iter().zip(&enc.vectors[i * d..(i + 1) * d]).map(|(a, b)| a * b).sum() };
            let start: Vec<f32> = (0..enc.tokens.len()).map(|i| dot(qs, i)).collect();
            let end: Vec<f32> = (0..enc.tokens.len()).map(|i| dot(qe, i)).collect();
            if let Some(&(i, j, _)) = best_spans(&start, &end, 1).first() {
                let pred = crate::index::search::char_slice(&ex.context, enc.tokens[i].start, enc.tokens[j].end);
                em += super::rc::em_f1(&pred, &ex.answers).0;
            }
            tokens += enc.tokens.len();
            kept += enc.tokens.iter().filter(|t| t.start_logit.max(t.end_logit) >= s.filter_threshold).count();
            scores.extend(enc.tokens.iter().map(|t| t.start_logit.max(t.end_logit)));
            dim = d;
        }
    }
    let calibrated = s.filter_keep.and_then(|keep| calibrate(&mut scores, keep)).map(|(threshold, kept)| Calibration {
        threshold,
        kept,
        bytes_per_1000_tokens: 1000.0 * kept * (dim * 4) as f64,
    });
    Ok(PhraseEval { em: 100.0 * em / examples.len().max(1) as f64, kept: kept as f64 / tokens.max(1) as f64, calibrated })
}

#[cfg(test)]
mod tests {
    use super::calibrate;

    #[test]
    fn calibration_keeps_the_target_share_ties_included() {
        let mut scores = vec![0.5, -1.0, 2.0, 0.1, -3.0, 1.0, 0.1, -0.2];
        assert_eq!(calibrate(&mut scores.clone(), 0.25), Some((1.0, 0.25)));
        // The 4th best (0.1) ties with the 5th: both kept.
        assert_eq!(calibrate(&mut scores.clone(), 0.5), Some((0.1, 0.625)));
        assert_eq!(calibrate(&mut scores, 1.0), Some((-3.0, 1.0)));
        assert_eq!(calibrate(&mut [], 0.5), None);
    }
}
