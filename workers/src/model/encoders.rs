//! The three models of DensePhrases' design, all on one BERT base: the phrase encoder (one vector per
//! paragraph token, both its start and its end vector, plus a filter head), the query encoder (two BERT
//! copies giving q_start and q_end from `[CLS]`), and the cross-encoder reader (start/end logits over
//! the paragraph, the distillation teacher).

use super::bert::{BertConfig, BertInput, BertModel};
use super::load::load_bert;
use super::text::{Row, TextEncoder, best_window, windows};
use anyhow::Result;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phrasesweep_schemas::settings::EncodeSettings;
use std::path::Path;

/// Longest phrase, in tokens (end − start < this).
pub const MAX_SPAN: usize = 10;

#[derive(Module, Debug)]
pub struct PhraseEncoder<B: Backend> {
    pub bert: BertModel<B>,
    /// Start and end logits of each token being a phrase boundary; low ones are not indexed.
    pub filter: Linear<B>,
}

#[derive(Module, Debug)]
pub struct QueryEncoder<B: Backend> {
    pub start: BertModel<B>,
    pub end: BertModel<B>,
}

#[derive(Module, Debug)]
pub struct Reader<B: Backend> {
    pub bert: BertModel<B>,
    pub qa: Linear<B>,
}

impl<B: Backend> PhraseEncoder<B> {
    pub fn new(config: &BertConfig, device: &B::Device) -> Self {
        Self { bert: config.init(device), filter: LinearConfig::new(config.hidden_size, 2).init(device) }
    }
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self> {
        let (config, bert) = load_bert(dir, device)?;
        Ok(Self { bert, filter: LinearConfig::new(config.hidden_size, 2).init(device) })
    }
    /// Hidden states `[b, s, d]` and filter logits `[b, s, 2]`.
    pub fn forward(&self, input: BertInput<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let h = self.bert.forward(input);
        let f = self.filter.forward(h.clone());
        (h, f)
    }
}

impl<B: Backend> QueryEncoder<B> {
    pub fn new(config: &BertConfig, device: &B::Device) -> Self {
        Self { start: config.init(device), end: config.init(device) }
    }
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self> {
        Ok(Self { start: load_bert(dir, device)?.1, end: load_bert(dir, device)?.1 })
    }
    /// q_start and q_end, `[b, d]` each: the `[CLS]` outputs of the two copies.
    pub fn forward(&self, input: BertInput<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (cls(self.start.forward(input.clone())), cls(self.end.forward(input)))
    }
}

impl<B: Backend> Reader<B> {
    pub fn new(config: &BertConfig, device: &B::Device) -> Self {
        Self { bert: config.init(device), qa: LinearConfig::new(config.hidden_size, 2).init(device) }
    }
    /// A pretrained BERT folder with a new head, or a HuggingFace `BertForQuestionAnswering` folder
    /// with its trained one.
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self> {
        let (config, bert) = load_bert(dir, device)?;
        let mut qa = LinearConfig::new(config.hidden_size, 2).init(device);
        super::load::load_qa_head(dir, &mut qa)?;
        Ok(Self { bert, qa })
    }
    /// Start and end logits `[b, s]` over every position of `[CLS] question [SEP] paragraph [SEP]`.
    pub fn forward(&self, input: BertInput<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let logits = self.qa.forward(self.bert.forward(input));
        let [b, s, _] = logits.dims();
        let start = logits.clone().slice([0..b, 0..s, 0..1]).reshape([b, s]);
        let end = logits.slice([0..b, 0..s, 1..2]).reshape([b, s]);
        (start, end)
    }
}

fn cls<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, _, d] = h.dims();
    h.slice([0..b, 0..1, 0..d]).reshape([b, d])
}

/// A paragraph to encode; `sentences` are its character spans (from the corpus table).
pub struct ParagraphInput<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub sentences: &'a [(u32, u32)],
}

/// One indexed token of a paragraph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeptToken {
    /// Index of the piece among the paragraph's pieces.
    pub token: u32,
    /// `[start, end)` in Unicode characters of the paragraph.
    pub start: u32,
    pub end: u32,
    pub sentence: u32,
    pub start_logit: f32,
    pub end_logit: f32,
}

#[derive(Debug, Clone, Default)]
pub struct EncodedParagraph {
    pub tokens: Vec<KeptToken>,
    /// `tokens.len() × d`, row-major.
    pub vectors: Vec<f32>,
    /// Pieces of the paragraph, kept or not.
    pub pieces: usize,
}

fn sentence_of(sentences: &[(u32, u32)], at: u32) -> u32 {
    // The last sentence starting at or before `at`.
    sentences.partition_point(|&(s, _)| s <= at).saturating_sub(1) as u32
}

/// Encodes paragraphs into kept-token vectors, batching windows across paragraphs.
pub fn encode_paragraphs<B: Backend>(
    model: &PhraseEncoder<B>,
    text: &TextEncoder,
    paragraphs: &[ParagraphInput<'_>],
    settings: &EncodeSettings,
    device: &B::Device,
) -> Result<Vec<EncodedParagraph>> {
    struct Plan {
        pieces: super::text::Pieces,
        title_len: usize,
        windows: Vec<(usize, usize)>,
        first_row: usize,
    }
    let mut plans = Vec::with_capacity(paragraphs.len());
    let mut rows: Vec<Row> = Vec::new();
    for p in paragraphs {
        let mut title = text.pieces(p.title)?.ids;
        title.truncate(settings.title_tokens);
        let pieces = text.pieces(p.text)?;
        let capacity = settings.max_len - 3 - title.len();
        let ws = windows(pieces.ids.len(), capacity, settings.overlap.min(capacity - 1));
        let first_row = rows.len();
        for &(s, e) in &ws {
            rows.push(text.pair(&title, &pieces.ids[s..e]));
        }
        plans.push(Plan { title_len: title.len(), windows: ws, first_row, pieces });
    }

    // Run the model over the rows, keeping each row's hidden states and filter logits. Rows go in order
    // of length, so a batch pads to nearly its own length: on CPU a padded position costs as much as a
    // real one, and a batch of mixed lengths computed about twice the positions it needed.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].ids.len());
    let mut hidden: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
    let mut filter: Vec<Vec<f32>> = vec![Vec::new(); rows.len()];
    let mut d = 0;
    for batch in order.chunks(settings.batch_size.max(1)) {
        let chunk: Vec<Row> = batch.iter().map(|&i| rows[i].clone()).collect();
        let (h, f) = model.forward(text.batch::<B>(&chunk, 0, device));
        let [_, s, dim] = h.dims();
        d = dim;
        let h: Vec<f32> = h.into_data().convert::<f32>().to_vec().expect("f32 hidden states");
        let f: Vec<f32> = f.into_data().convert::<f32>().to_vec().expect("f32 logits");
        for (r, &i) in batch.iter().enumerate() {
            hidden[i] = h[r * s * dim..(r + 1) * s * dim].to_vec();
            filter[i] = f[r * s * 2..(r + 1) * s * 2].to_vec();
        }
    }

    let mut out = Vec::with_capacity(paragraphs.len());
    for (p, plan) in paragraphs.iter().zip(&plans) {
        let n = plan.pieces.ids.len();
        let best = best_window(n, &plan.windows);
        let mut enc = EncodedParagraph { pieces: n, ..Default::default() };
        for i in 0..n {
            let w = best[i];
            let row = plan.first_row + w;
            let pos = 2 + plan.title_len + (i - plan.windows[w].0);
            let (start_logit, end_logit) = (filter[row][pos * 2], filter[row][pos * 2 + 1]);
            if let Some(t) = settings.filter_threshold {
                if start_logit.max(end_logit) < t {
                    continue;
                }
            }
            let (start, end) = plan.pieces.offsets[i];
            enc.tokens.push(KeptToken {
                token: i as u32,
                start,
                end,
                sentence: sentence_of(p.sentences, start),
                start_logit,
                end_logit,
            });
            enc.vectors.extend_from_slice(&hidden[row][pos * d..(pos + 1) * d]);
        }
        out.push(enc);
    }
    Ok(out)
}

/// q_start and q_end of each query, `[CLS] query [SEP]` cut to `query_len` tokens. Rows are padded to the
/// longest in the batch rather than to `query_len`: padding is masked, so the vectors are the same.
pub fn encode_queries<B: Backend>(
    model: &QueryEncoder<B>,
    text: &TextEncoder,
    queries: &[&str],
    query_len: usize,
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let mut out = Vec::with_capacity(queries.len());
    for chunk in queries.chunks(batch_size.max(1)) {
        let rows = chunk.iter().map(|q| text.single(q, query_len)).collect::<Result<Vec<_>>>()?;
        let (qs, qe) = model.forward(text.batch::<B>(&rows, 0, device));
        let [b, d] = qs.dims();
        let qs: Vec<f32> = qs.into_data().convert::<f32>().to_vec().expect("f32 query vectors");
        let qe: Vec<f32> = qe.into_data().convert::<f32>().to_vec().expect("f32 query vectors");
        for r in 0..b {
            out.push((qs[r * d..(r + 1) * d].to_vec(), qe[r * d..(r + 1) * d].to_vec()));
        }
    }
    Ok(out)
}

/// Best spans of at most `MAX_SPAN` tokens by `start[i] + end[j]`, `i <= j`, highest first.
pub fn best_spans(start: &[f32], end: &[f32], top: usize) -> Vec<(usize, usize, f32)> {
    let mut spans = Vec::new();
    for i in 0..start.len() {
        for j in i..(i + MAX_SPAN).min(end.len()) {
            spans.push((i, j, start[i] + end[j]));
        }
    }
    spans.sort_by(|a, b| b.2.total_cmp(&a.2));
    spans.truncate(top);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_bounded_and_ranked() {
        let start = [0.0, 5.0, 0.0, 0.0];
        let end = [0.0, 0.0, 0.0, 3.0];
        let top = best_spans(&start, &end, 2);
        assert_eq!(top[0], (1, 3, 8.0));
        let long: Vec<f32> = (0..30).map(|i| if i == 0 { 10.0 } else { 0.0 }).collect();
        let end: Vec<f32> = (0..30).map(|i| if i == 25 { 10.0 } else { 0.0 }).collect();
        assert!(best_spans(&long, &end, 1000).iter().all(|&(i, j, _)| j - i < MAX_SPAN));
    }

    #[test]
    fn tokens_find_their_sentence() {
        let s = [(0, 10), (11, 20), (22, 30)];
        assert_eq!(sentence_of(&s, 0), 0);
        assert_eq!(sentence_of(&s, 10), 0);
        assert_eq!(sentence_of(&s, 11), 1);
        assert_eq!(sentence_of(&s, 29), 2);
        assert_eq!(sentence_of(&[], 3), 0);
    }
}
