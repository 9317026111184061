//! Reading-comprehension examples (SQuAD v1.1 paragraphs, and NQ questions with their gold paragraph)
//! and their model inputs: the paragraph cut to a window that holds the answer, with the answer as a
//! piece span. Errors name the file, the line and the field.

use crate::text::corpus::{InputError, json_lines};
use crate::eval::metrics::{exact_match, normalize};
use crate::model::text::{Pieces, TextEncoder, windows};
use crate::text::questions::parse_questions;
use anyhow::Result;
use serde::Deserialize;

/// One question on one paragraph, with its first answer located.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub title: String,
    pub context: String,
    pub question: String,
    /// Every gold answer text (SQuAD dev has several).
    pub answers: Vec<String>,
    /// `[start, end)` of the first answer, in Unicode characters of `context`.
    pub answer_chars: (u32, u32),
}

#[derive(Deserialize)]
struct SquadParagraph {
    title: String,
    context: String,
    qas: Vec<SquadQa>,
}

#[derive(Deserialize)]
struct SquadQa {
    id: String,
    question: String,
    answers: Vec<SquadAnswer>,
}

#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
    answer_start: u32,
}

/// SQuAD JSON Lines, one paragraph with its questions per line (`answer_start` in characters).
pub fn parse_squad(file: &str, bytes: &[u8]) -> Result<Vec<Example>, InputError> {
    let mut out = Vec::new();
    for (line, p) in json_lines::<SquadParagraph>(file, 1, bytes)? {
        let err = |field: String, problem: String| InputError { file: file.to_string(), line, field: Some(field), problem };
        let chars = p.context.chars().count() as u32;
        for (k, qa) in p.qas.into_iter().enumerate() {
            let Some(first) = qa.answers.first() else {
                return Err(err(format!("qas[{k}].answers"), "needs at least one answer".into()));
            };
            let end = first.answer_start + first.text.chars().count() as u32;
            if end > chars {
                return Err(err(format!("qas[{k}].answers[0].answer_start"), format!("{end} is past the end of the context ({chars} characters)")));
            }
            out.push(Example {
                id: qa.id,
                title: p.title.clone(),
                context: p.context.clone(),
                question: qa.question,
                answer_chars: (first.answer_start, end),
                answers: qa.answers.into_iter().map(|a| a.text).collect(),
            });
        }
    }
    Ok(out)
}

/// NQ questions with their gold paragraph; those whose answers do not occur in it are left out.
pub fn parse_nq_gold(file: &str, bytes: &[u8]) -> Result<Vec<Example>, InputError> {
    let mut out = Vec::new();
    for q in parse_questions(file, 1, bytes)? {
        let found = q.answers.iter().find_map(|a| q.context.find(a.as_str()).map(|byte| (byte, a)));
        let Some((byte, answer)) = found else { continue };
        let start = q.context[..byte].chars().count() as u32;
        out.push(Example {
            id: q.id,
            title: q.titles.first().cloned().unwrap_or_default(),
            answer_chars: (start, start + answer.chars().count() as u32),
            context: q.context,
            question: q.question,
            answers: q.answers,
        });
    }
    Ok(out)
}

/// The pieces covering `[start, end)` characters: the first piece ending after `start` and the last
/// piece starting before `end`.
pub fn char_span_to_pieces(offsets: &[(u32, u32)], (start, end): (u32, u32)) -> Option<(usize, usize)> {
    let s = offsets.iter().position(|&(_, e)| e > start)?;
    let e = offsets.iter().rposition(|&(b, _)| b < end)?;
    (s <= e).then_some((s, e))
}

/// A paragraph window of an example, tokenised: the piece range it covers and the answer inside it.
#[derive(Debug, Clone)]
pub struct Featured {
    pub pieces: Pieces,
    /// Pieces `[start, end)` of the paragraph in the window.
    pub window: (usize, usize),
    /// The answer's first and last piece, relative to the window.
    pub answer: (usize, usize),
}

impl Featured {
    /// The window's piece ids.
    pub fn ids(&self) -> &[u32] {
        &self.pieces.ids[self.window.0..self.window.1]
    }
}

/// Cuts `context` to at most `capacity` pieces around the answer; `None` when the answer cannot be placed.
pub fn feature(text: &TextEncoder, ex: &Example, capacity: usize) -> Result<Option<Featured>> {
    let pieces = text.pieces(&ex.context)?;
    let Some((a, b)) = char_span_to_pieces(&pieces.offsets, ex.answer_chars) else { return Ok(None) };
    if b - a + 1 > capacity {
        return Ok(None);
    }
    let n = pieces.ids.len();
    // The answer a quarter into the window, so it has context on both sides.
    let start = a.saturating_sub(capacity / 4).min(n.saturating_sub(capacity));
    let end = (start + capacity).min(n);
    Ok(Some(Featured { window: (start, end), answer: (a - start, b - start), pieces }))
}

/// Question piece ids, cut to `max` pieces.
pub fn question_ids(text: &TextEncoder, question: &str, max: usize) -> Result<Vec<u32>> {
    let mut ids = text.pieces(question)?.ids;
    ids.truncate(max);
    Ok(ids)
}

/// Every window of a paragraph for prediction (no answer known): `(start, end)` piece ranges.
pub fn prediction_windows(n: usize, capacity: usize) -> Vec<(usize, usize)> {
    windows(n, capacity, (capacity / 4).min(capacity.saturating_sub(1)))
}

/// SQuAD's token F1 between a prediction and one answer, after normalisation.
pub fn f1(prediction: &str, answer: &str) -> f64 {
    let p: Vec<String> = normalize(prediction).split_whitespace().map(str::to_string).collect();
    let a: Vec<String> = normalize(answer).split_whitespace().map(str::to_string).collect();
    if p.is_empty() || a.is_empty() {
        return (p == a) as u8 as f64;
    }
    let mut counts = std::collections::HashMap::new();
    for w in &a {
        *counts.entry(w.as_str()).or_insert(0i32) += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / a.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// EM and F1 of one prediction: the best over the gold answers.
pub fn em_f1(prediction: &str, answers: &[String]) -> (f64, f64) {
    let em = exact_match(prediction, answers) as u8 as f64;
    let f = answers.iter().map(|a| f1(prediction, a)).fold(0.0, f64::max);
    (em, f)
}

/// SplitMix64 from `seed`: a small deterministic generator, so what it drives depends only on the seed.
pub fn splitmix64(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A deterministic shuffle (SplitMix64-driven Fisher–Yates), so an epoch's order depends only on its seed.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut next = splitmix64(seed);
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_lines_become_examples_and_bad_ones_name_the_field() {
        let line = r#"{"title": "T", "context": "Denver won in 2016.", "qas": [{"id": "a", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 0}, {"text": "Denver Broncos", "answer_start": 0}]}]}"#;
        let ex = parse_squad("s.jsonl", line.as_bytes()).unwrap();
        assert_eq!(ex[0].answer_chars, (0, 6));
        assert_eq!(ex[0].answers.len(), 2);
        let bad = line.replace("\"answer_start\": 0}, {", "\"answer_start\": 30}, {");
        let e = parse_squad("s.jsonl", format!("\n{bad}").as_bytes()).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("qas[0].answers[0].answer_start")));
        let e = parse_squad("s.jsonl", br#"{"title": "T", "context": 3, "qas": []}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("context"));
    }

    #[test]
    fn answers_map_to_pieces() {
        let offsets = [(0, 6), (7, 10), (11, 13), (13, 17), (17, 18)];
        assert_eq!(char_span_to_pieces(&offsets, (0, 6)), Some((0, 0)));
        assert_eq!(char_span_to_pieces(&offsets, (11, 17)), Some((2, 3)));
        assert_eq!(char_span_to_pieces(&offsets, (12, 14)), Some((2, 3)), "a partial piece is taken whole");
        assert_eq!(char_span_to_pieces(&offsets, (30, 31)), None);
    }

    #[test]
    fn squad_f1_and_em() {
        let answers = vec!["the Denver Broncos".to_string()];
        assert_eq!(em_f1("Denver Broncos", &answers), (1.0, 1.0));
        let (em, f) = em_f1("Broncos won", &answers);
        assert_eq!(em, 0.0);
        assert!((f - 0.5).abs() < 1e-9, "{f}");
    }

    #[test]
    fn shuffles_are_seeded_permutations() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        let mut c: Vec<u32> = (0..50).collect();
        shuffle(&mut c, 8);
        assert_ne!(a, c);
        a.sort();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }
}
