//! Training the phrase encoder and its query encoders together, DensePhrases-style: per question, start
//! and end distributions over the tokens of its paragraph and of the other paragraphs in the batch
//! (in-batch negatives), cross-entropy to the gold span, distillation from the reader's distributions,
//! and the filter head trained to spot answer starts and ends.

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
use phrasesweep_schemas::train::{DistillSettings, SupervisedSettings};

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
}

/// Fills each row's teacher distributions from the reader, which reads the questions and softens its
/// distributions as `settings` say.
pub fn add_teacher<B: Backend>(reader: &Reader<B>, text: &TextEncoder, rows: &mut [PhraseRow], settings: &DistillSettings, device: &B::Device) -> Result<()> {
    for r in rows {
        r.teacher = Some(teacher_probs(reader, text, &r.question_text, settings.question_pieces, &r.window, settings.temperature as f32, device)?);
    }
    Ok(())
}

/// Loss of a batch. With `distill_settings`, rows carry the reader's distributions and the loss pulls toward them.
pub fn phrase_loss<B: Backend>(
    models: &PhraseModels<B>,
    text: &TextEncoder,
    rows: &[PhraseRow],
    distill_settings: Option<&DistillSettings>,
    device: &B::Device,
) -> Result<PhraseLoss<B>> {
    let b = rows.len();
    let p_in = text.batch::<B>(&rows.iter().map(|r| r.paragraph.clone()).collect::<Vec<_>>(), 0, device);
    let q_in = text.batch::<B>(&rows.iter().map(|r| r.question.clone()).collect::<Vec<_>>(), 0, device);
    let (h, filter) = models.phrase.forward(p_in);
    let (qs, qe) = models.query.forward(q_in);
    let [_, s, d] = h.dims();
    let flat = h.clone().reshape([b * s, d]);
    // Every question against every paragraph token of the batch.
    let start = qs.clone().matmul(flat.clone().transpose());
    let end = qe.clone().matmul(flat.transpose());
    let own = |p: usize, r: &PhraseRow| p >= r.offset && p < r.offset + r.len;
    let valid_row: Vec<bool> = (0..b * s).map(|k| own(k % s, &rows[k / s])).collect();
    let valid = bool_tensor::<B>(&vec![valid_row; b], b * s, device);
    let one_hot = |pick: fn(&PhraseRow) -> usize| -> Vec<Vec<bool>> {
        rows.iter().enumerate().map(|(i, r)| (0..b * s).map(|k| k == i * s + pick(r)).collect()).collect()
    };
    let ls = mml(start, bool_tensor::<B>(&one_hot(|r| r.answer.0), b * s, device), valid.clone()).expect("answers");
    let le = mml(end, bool_tensor::<B>(&one_hot(|r| r.answer.1), b * s, device), valid).expect("answers");
    let span = (ls + le).div_scalar(2.0);
    let span_value: f32 = span.clone().into_scalar().elem();
    let mut total = span;

    // The filter head: is this paragraph token an answer start (end)?
    let own_mask: Vec<Vec<bool>> = rows.iter().map(|r| (0..s).map(|p| own(p, r)).collect()).collect();
    let own_t = bool_tensor::<B>(&own_mask, s, device);
    let own_count = own_mask.iter().flatten().filter(|&&o| o).count() as f32;
    let bce = |k: usize, pick: fn(&PhraseRow) -> usize| {
        let logits = filter.clone().slice([0..b, 0..s, k..k + 1]).reshape([b, s]);
        let y: Vec<f32> = rows.iter().flat_map(|r| (0..s).map(move |p| (p == pick(r)) as u8 as f32)).collect();
        let y = Tensor::<B, 2>::from_data(TensorData::new(y, [b, s]), device);
        let bce = (y.clone() * log_sigmoid(logits.clone()) + (y.neg() + 1.0) * log_sigmoid(logits.neg())).neg();
        bce.mask_fill(own_t.clone().bool_not(), 0.0).sum().div_scalar(own_count)
    };
    let filter_loss = bce(0, |r| r.answer.0) + bce(1, |r| r.answer.1);
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
        total = total + kl.mul_scalar(settings.weight as f32);
    }
    Ok(PhraseLoss { total, span: span_value, distill: distill_value, filter: filter_value })
}

/// What the trained phrase model does on SQuAD dev, one paragraph per question.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct PhraseEval {
    /// Exact match (percent) of the best span of the question's own paragraph.
    pub em: f64,
    /// Share of tokens the filter keeps at the configured threshold.
    pub kept: f64,
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
    let (mut em, mut kept, mut tokens) = (0.0, 0usize, 0usize);
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
        }
    }
    Ok(PhraseEval { em: 100.0 * em / examples.len().max(1) as f64, kept: kept as f64 / tokens.max(1) as f64 })
}
