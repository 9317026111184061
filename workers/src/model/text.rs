//! Turning text into padded BERT inputs: `[CLS] a [SEP] (b [SEP])`, and paragraphs longer than the
//! model's window into overlapping windows. Offsets are Unicode character offsets into the input.

use super::bert::BertInput;
use anyhow::{Result, anyhow};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::Tokenizer;

/// A tokenizer with truncation and padding switched off (this module does both) and the ids of the
/// special tokens.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

/// Subword pieces of one text without special tokens.
#[derive(Debug, Clone, Default)]
pub struct Pieces {
    pub ids: Vec<u32>,
    /// `[start, end)` in Unicode characters of the text.
    pub offsets: Vec<(u32, u32)>,
}

/// One model input row before padding.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
}

impl TextEncoder {
    pub fn new(mut tokenizer: Tokenizer) -> Result<Self> {
        tokenizer.with_truncation(None).map_err(|e| anyhow!("{e}"))?;
        tokenizer.with_padding(None);
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| anyhow!("the tokenizer has no {t} token"));
        Ok(Self { cls: id("[CLS]")?, sep: id("[SEP]")?, pad: id("[PAD]")?, tokenizer })
    }

    /// Whether the tokenizer keeps case (a cased model): "A" and "a" become different pieces.
    pub fn keeps_case(&self) -> bool {
        self.pieces("A").map(|p| p.ids).ok() != self.pieces("a").map(|p| p.ids).ok()
    }

    pub fn pieces(&self, text: &str) -> Result<Pieces> {
        let enc = self.tokenizer.encode_char_offsets(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?;
        Ok(Pieces {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().iter().map(|&(s, e)| (s as u32, e as u32)).collect(),
        })
    }

    /// `[CLS] text [SEP]`, cut to `max_len`.
    pub fn single(&self, text: &str, max_len: usize) -> Result<Row> {
        let mut ids = vec![self.cls];
        ids.extend(self.pieces(text)?.ids.into_iter().take(max_len.saturating_sub(2)));
        ids.push(self.sep);
        Ok(Row { types: vec![0; ids.len()], ids })
    }

    /// `[CLS] a [SEP] b [SEP]` with token types 0 then 1; `b` is given as piece ids already windowed.
    pub fn pair(&self, a: &[u32], b: &[u32]) -> Row {
        let mut ids = Vec::with_capacity(a.len() + b.len() + 3);
        ids.push(self.cls);
        ids.extend_from_slice(a);
        ids.push(self.sep);
        let first = ids.len();
        ids.extend_from_slice(b);
        ids.push(self.sep);
        let mut types = vec![0; first];
        types.resize(ids.len(), 1);
        Row { ids, types }
    }

    /// Pads rows to the longest (or to `min_len`) and builds tensors.
    pub fn batch<B: Backend>(&self, rows: &[Row], min_len: usize, device: &B::Device) -> BertInput<B> {
        let len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0).max(min_len);
        let n = rows.len();
        let (mut ids, mut types, mut mask) = (Vec::with_capacity(n * len), Vec::with_capacity(n * len), Vec::with_capacity(n * len));
        for r in rows {
            for k in 0..len {
                let real = k < r.ids.len();
                ids.push(if real { r.ids[k] as i64 } else { self.pad as i64 });
                types.push(if real { r.types[k] as i64 } else { 0 });
                mask.push(real as i64);
            }
        }
        let t = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, len]), device);
        BertInput { input_ids: t(ids), token_type_ids: t(types), attention_mask: t(mask) }
    }
}

/// Windows `[start, end)` over `n` pieces, each at most `capacity` long, overlapping by `overlap`.
pub fn windows(n: usize, capacity: usize, overlap: usize) -> Vec<(usize, usize)> {
    assert!(capacity > overlap, "window capacity must exceed the overlap");
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + capacity).min(n);
        out.push((start, end));
        if end == n {
            return out;
        }
        start += capacity - overlap;
    }
}

/// For each piece, the window in which it has the most context on both sides (BERT's SQuAD rule).
pub fn best_window(n: usize, windows: &[(usize, usize)]) -> Vec<usize> {
    (0..n)
        .map(|i| {
            windows
                .iter()
                .enumerate()
                .filter(|&(_, &(s, e))| s <= i && i < e)
                .max_by_key(|&(_, &(s, e))| (i - s).min(e - 1 - i))
                .map(|(w, _)| w)
                .expect("windows cover every piece")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_and_overlap() {
        assert_eq!(windows(5, 10, 3), vec![(0, 5)]);
        assert_eq!(windows(0, 10, 3), vec![(0, 0)]);
        assert_eq!(windows(20, 10, 4), vec![(0, 10), (6, 16), (12, 20)]);
        let w = windows(20, 10, 4);
        let best = best_window(20, &w);
        assert_eq!(best[0], 0);
        assert_eq!(best[8], 1, "piece 8 has more context in the second window");
        assert_eq!(best[19], 2);
    }
}
