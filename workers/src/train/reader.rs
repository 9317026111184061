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
    let limits = Limits { max_len: settings.max_len, question_pieces: settings.question_pieces, max_answer: settings.max_answer };
    Ok(answer(model, text, &ex.question, &ex.context, limits, device, &mut WindowCache::new())?.0)
}

/// Start and end logits of reader rows already computed, by the row's piece ids: a question's evidence
/// cut at a larger word budget holds every window of the smaller cut but its last, so reading one
/// question at several budgets computes each window once.
pub type WindowCache = std::collections::HashMap<Vec<u32>, (Vec<f32>, Vec<f32>)>;

/// The shape of a reader's input and answer, in pieces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_len: usize,
    pub question_pieces: usize,
    pub max_answer: usize,
}

/// The reader's answer to `question` from `context` (any length: read in overlapping windows, those not
/// in `cache` in one batch), and the pieces it read (question and context, in every window).
pub fn answer<B: Backend>(model: &Reader<B>, text: &TextEncoder, question: &str, context: &str, limits: Limits, device: &B::Device, cache: &mut WindowCache) -> Result<(String, usize)> {
    let q = question_ids(text, question, limits.question_pieces)?;
    let pieces = text.pieces(context)?;
    if pieces.ids.is_empty() {
        return Ok((String::new(), 0));
    }
    let ws = prediction_windows(pieces.ids.len(), limits.max_len - 3 - q.len());
    let rows: Vec<Row> = ws.iter().map(|&(a, b)| text.pair(&q, &pieces.ids[a..b])).collect();
    let read = rows.iter().map(|r| r.ids.len()).sum();
    let missing: Vec<&Row> = rows.iter().filter(|r| !cache.contains_key(&r.ids)).collect();
    if !missing.is_empty() {
        let batch: Vec<Row> = missing.into_iter().cloned().collect();
        let (start, end) = model.forward(text.batch::<B>(&batch, 0, device));
        let [_, width] = start.dims();
        let start: Vec<f32> = start.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let end: Vec<f32> = end.into_data().convert::<f32>().to_vec().expect("f32 logits");
        for (k, r) in batch.into_iter().enumerate() {
            let at = k * width..k * width + r.ids.len();
            cache.insert(r.ids, (start[at.clone()].to_vec(), end[at].to_vec()));
        }
    }
    // Every window's logits, in rows of the longest window's width.
    let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let (mut start, mut end) = (vec![0.0f32; rows.len() * width], vec![0.0f32; rows.len() * width]);
    for (w, r) in rows.iter().enumerate() {
        let (s, e) = &cache[&r.ids];
        start[w * width..w * width + s.len()].copy_from_slice(s);
        end[w * width..w * width + e.len()].copy_from_slice(e);
    }
    let span = best_span(&start, &end, width, q.len() + 2, &ws, limits.max_answer);
    Ok((span.map(|(i, j)| crate::index::search::char_slice(context, pieces.offsets[i].0, pieces.offsets[j].1)).unwrap_or_default(), read))
}

/// The best span of at most `max_answer` pieces over every window: `start` and `end` are the logits of
/// each window's row (`width` each), whose context pieces begin at `offset`; window `w` holds context
/// pieces `windows[w]`. Returns the span's first and last context piece. A span seen by two windows
/// scores by each; the higher wins.
pub fn best_span(start: &[f32], end: &[f32], width: usize, offset: usize, windows: &[(usize, usize)], max_answer: usize) -> Option<(usize, usize)> {
    let mut best: Option<(f32, usize, usize)> = None;
    for (w, &(a, b)) in windows.iter().enumerate() {
        for i in 0..b - a {
            for j in i..(i + max_answer).min(b - a) {
                let score = start[w * width + offset + i] + end[w * width + offset + j];
                if best.is_none_or(|(x, _, _)| score > x) {
                    best = Some((score, a + i, a + j));
                }
            }
        }
    }
    best.map(|(_, i, j)| (i, j))
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

#[cfg(test)]
mod tests {
    use super::best_span;

    /// Two overlapping windows over 6 context pieces (0..4 and 2..6), rows of width 8 with the context
    /// from position 2: the answer the second window scores highest wins, in context positions.
    #[test]
    fn the_best_span_is_taken_across_windows() {
        let (width, offset) = (8, 2);
        let mut start = vec![0.0f32; 2 * width];
        let mut end = vec![0.0f32; 2 * width];
        // Window 0 likes pieces 1..=2 (score 3); window 1 likes pieces 4..=5 (score 5).
        start[offset + 1] = 1.5;
        end[offset + 2] = 1.5;
        start[width + offset + 2] = 2.5;
        end[width + offset + 3] = 2.5;
        assert_eq!(best_span(&start, &end, width, offset, &[(0, 4), (2, 6)], 4), Some((4, 5)));
        // An answer longer than `max_answer` is not taken.
        assert_eq!(best_span(&start, &end, width, offset, &[(0, 4), (2, 6)], 1).map(|(i, j)| j - i), Some(0));
        assert_eq!(best_span(&[], &[], width, offset, &[], 4), None);
    }
}
