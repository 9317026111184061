//! The cross-encoder reader (the distillation teacher): trained with start/end cross-entropy over the
//! paragraph tokens of `[CLS] question [SEP] paragraph [SEP]`, evaluated by SQuAD exact match and F1.

use super::losses::{bool_tensor, mml};
use super::rc::{Example, Featured, em_f1, feature, prediction_windows, question_ids};
use crate::model::encoders::Reader;
use crate::model::text::{Row, TextEncoder};
use anyhow::Result;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use phrasesweep_schemas::train::SupervisedSettings;

/// One training row: the input, where the paragraph starts and how long it is, and the answer's row
/// positions.
pub struct ReaderRow {
    pub row: Row,
    pub offset: usize,
    pub len: usize,
    pub answer: (usize, usize),
}

/// One training row of `ex` (with the window it cut), in the reader's window of `s.max_len` with the
/// question cut to `s.question_pieces`; `None` when no window holds its answer.
pub fn reader_row(text: &TextEncoder, ex: &Example, s: &SupervisedSettings) -> Result<Option<(ReaderRow, Featured)>> {
    let q = question_ids(text, &ex.question, s.question_pieces)?;
    let capacity = s.max_len - 3 - q.len();
    let Some(f) = feature(text, ex, capacity)? else { return Ok(None) };
    let offset = q.len() + 2;
    let row = text.pair(&q, f.ids());
    let len = f.ids().len();
    let answer = (offset + f.answer.0, offset + f.answer.1);
    Ok(Some((ReaderRow { row, offset, len, answer }, f)))
}

/// Cross-entropy of the start and of the end position over each row's paragraph tokens, averaged.
pub fn reader_loss<B: Backend>(model: &Reader<B>, text: &TextEncoder, rows: &[ReaderRow], device: &B::Device) -> Tensor<B, 1> {
    let input = text.batch::<B>(&rows.iter().map(|r| r.row.clone()).collect::<Vec<_>>(), 0, device);
    let (start, end) = model.forward(input);
    let [_, s] = start.dims();
    let valid: Vec<Vec<bool>> = rows.iter().map(|r| (0..s).map(|p| p >= r.offset && p < r.offset + r.len).collect()).collect();
    let one_hot = |pick: fn(&ReaderRow) -> usize| -> Vec<Vec<bool>> { rows.iter().map(|r| (0..s).map(|p| p == pick(r)).collect()).collect() };
    let valid = bool_tensor::<B>(&valid, s, device);
    let ls = mml(start, bool_tensor::<B>(&one_hot(|r| r.answer.0), s, device), valid.clone()).expect("every row has an answer");
    let le = mml(end, bool_tensor::<B>(&one_hot(|r| r.answer.1), s, device), valid).expect("every row has an answer");
    (ls + le).div_scalar(2.0)
}

/// The reader's answer: the best span of at most `settings.max_answer` pieces over every window of the
/// paragraph.
pub fn predict<B: Backend>(model: &Reader<B>, text: &TextEncoder, ex: &Example, settings: &SupervisedSettings, device: &B::Device) -> Result<String> {
    let q = question_ids(text, &ex.question, settings.question_pieces)?;
    let pieces = text.pieces(&ex.context)?;
    let ws = prediction_windows(pieces.ids.len(), settings.max_len - 3 - q.len());
    let rows: Vec<Row> = ws.iter().map(|&(a, b)| text.pair(&q, &pieces.ids[a..b])).collect();
    let (start, end) = model.forward(text.batch::<B>(&rows, 0, device));
    let [_, s] = start.dims();
    let start: Vec<f32> = start.into_data().convert::<f32>().to_vec().expect("f32 logits");
    let end: Vec<f32> = end.into_data().convert::<f32>().to_vec().expect("f32 logits");
    let offset = q.len() + 2;
    let mut best: Option<(f32, usize, usize)> = None;
    for (w, &(a, b)) in ws.iter().enumerate() {
        for i in 0..b - a {
            for j in i..(i + settings.max_answer).min(b - a) {
                let score = start[w * s + offset + i] + end[w * s + offset + j];
                if best.is_none_or(|(x, _, _)| score > x) {
                    best = Some((score, a + i, a + j));
                }
            }
        }
    }
    Ok(best.map(|(_, i, j)| crate::index::search::char_slice(&ex.context, pieces.offsets[i].0, pieces.offsets[j].1)).unwrap_or_default())
}

/// SQuAD exact match and F1 (percent) over `examples`.
pub fn evaluate<B: Backend>(model: &Reader<B>, text: &TextEncoder, examples: &[Example], s: &SupervisedSettings, device: &B::Device) -> Result<(f64, f64)> {
    let (mut em, mut f1) = (0.0, 0.0);
    let mut log = crate::progress::RateLog::new("evaluate the reader", examples.len() as u64, "questions");
    for ex in examples {
        log.add(1);
        let (e, f) = em_f1(&predict(model, text, ex, s, device)?, &ex.answers);
        em += e;
        f1 += f;
    }
    let n = examples.len().max(1) as f64;
    Ok((100.0 * em / n, 100.0 * f1 / n))
}

/// The teacher's start and end probabilities (at `temperature`) over the pieces of `window` of a
/// paragraph, for one question cut to `question_pieces` (those the reader was trained with).
pub fn teacher_probs<B: Backend>(
    model: &Reader<B>,
    text: &TextEncoder,
    question: &str,
    question_pieces: usize,
    window: &[u32],
    temperature: f32,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let q = question_ids(text, question, question_pieces)?;
    let (start, end) = model.forward(text.batch::<B>(&[text.pair(&q, window)], 0, device));
    let offset = q.len() + 2;
    let probs = |t: Tensor<B, 2>| -> Vec<f32> {
        let t = t.slice([0..1, offset..offset + window.len()]).div_scalar(temperature);
        softmax(t, 1).into_data().convert::<f32>().to_vec().expect("f32 probabilities")
    };
    Ok((probs(start), probs(end)))
}

/// Probabilities as a `[rows, width]` tensor, zero-padded.
pub fn prob_tensor<B: Backend>(rows: &[Vec<f32>], width: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut flat = Vec::with_capacity(rows.len() * width);
    for r in rows {
        flat.extend((0..width).map(|i| r.get(i).copied().unwrap_or(0.0)));
    }
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}
