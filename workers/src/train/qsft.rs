//! Query-side fine-tuning: a frozen copy of the query encoders retrieves each training question's
//! candidate spans from the phrase index, and the trainable copy is scored against them with the
//! configured loss terms. Only the query encoders train: the candidates' vectors are the index's.

use super::losses::{Candidate, Gold, bool_tensor, distill, mml_floored, targets};
use super::reader::prob_tensor;
use crate::eval::metrics::{self, MarMode, exact_match};
use crate::model::bert::BertInput;
use crate::model::encoders::{QueryEncoder, Reader, encode_queries};
use crate::model::text::TextEncoder;
use crate::text::questions::Question;
use crate::index::units::{Unit, dedup};
use crate::index::search::{PhraseIndex, Span, hits_for, span_hit};
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use phrasesweep_schemas::outcome::RetrievalEval;
use phrasesweep_schemas::retrieval::DEFAULT_K;
use phrasesweep_schemas::train::{DistillSettings, LossTerm, QsftRun};
use std::collections::BTreeMap;

/// One training question with its retrieved candidates.
#[derive(Debug, Clone)]
pub struct QsftQuestion {
    pub question: String,
    pub gold: Gold,
    pub candidates: Vec<Candidate>,
    /// `candidates × d`, row-major: each candidate's start (end) token vector from the index.
    pub start_vectors: Vec<f32>,
    pub end_vectors: Vec<f32>,
    /// The reader's probability of each candidate's start and end token, and whether the candidate lies
    /// in the gold paragraph (only those are distilled).
    pub teacher: Option<(Vec<f32>, Vec<f32>, Vec<bool>)>,
}

/// Training questions whose candidates one search retrieves at a time (with their vectors, about 0.6 GB at
/// 100 + 100 candidates and d = 384).
pub const BLOCK_QUESTIONS: usize = 1024;

/// Retrieves the candidates of `questions` with the frozen encoders, all in one search (one scan of the
/// index by default): `k` start and `k` end hits, completed into spans (at most `2k`, each once).
pub async fn candidates<B: Backend>(
    index: &PhraseIndex,
    frozen: &QueryEncoder<B>,
    text: &TextEncoder,
    questions: &[Question],
    k: usize,
    query_len: usize,
    device: &B::Device,
) -> Result<Vec<QsftQuestion>> {
    let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let vectors = encode_queries(frozen, text, &texts, query_len, 16, device)?;
    let found = index.batch(&vectors, k, true).await?;
    let spans: Vec<Vec<Span>> = found.iter().map(|c| c.spans(k)).collect();
    let paragraphs = index.paragraphs(&spans.iter().flatten().map(|s| s.corpus_row).collect::<Vec<_>>()).await?;
    let mut out = Vec::with_capacity(questions.len());
    for (q, spans) in questions.iter().zip(spans) {
        let mut item = QsftQuestion { question: q.question.clone(), gold: Gold::from(q), candidates: Vec::new(), start_vectors: Vec::new(), end_vectors: Vec::new(), teacher: None };
        for s in &spans {
            let Some(p) = paragraphs.get(&s.corpus_row) else { continue };
            let hit = span_hit(s, p, "frozen");
            item.candidates.push(Candidate {
                phrase: hit.phrase,
                title: hit.title,
                sentence: hit.sentence,
                paragraph: p.text.clone(),
                start_token: s.start_token,
                end_token: s.end_token,
            });
            item.start_vectors.extend_from_slice(&s.start_vector);
            item.end_vectors.extend_from_slice(&s.end_vector);
        }
        out.push(item);
    }
    Ok(out)
}

/// A block's candidates as a job keeps them on the store (`resume::kept`): the questions and spans as
/// JSON, then each question's start and end vectors as little-endian f32, read back bit for bit.
pub fn encode_block(items: &[QsftQuestion]) -> Result<Vec<u8>> {
    let head: Vec<(&str, &Gold, &[Candidate])> = items.iter().map(|q| (q.question.as_str(), &q.gold, q.candidates.as_slice())).collect();
    let head = serde_json::to_vec(&head)?;
    let mut out = Vec::with_capacity(8 + head.len() + items.iter().map(|q| 4 * (q.start_vectors.len() + q.end_vectors.len())).sum::<usize>());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for q in items {
        anyhow::ensure!(q.start_vectors.len() == q.end_vectors.len(), "a question has {} start and {} end vector values", q.start_vectors.len(), q.end_vectors.len());
        out.extend_from_slice(&(q.start_vectors.len() as u64).to_le_bytes());
        for v in q.start_vectors.iter().chain(&q.end_vectors) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// What [`encode_block`] wrote.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<QsftQuestion>> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8]> {
        let part = bytes.get(at..at + n).ok_or_else(|| anyhow::anyhow!("kept QSFT candidates end early, at byte {at}"))?;
        at += n;
        Ok(part)
    };
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap()) as usize;
    let head_len = u64_at(take(8)?);
    let head: Vec<(String, Gold, Vec<Candidate>)> = serde_json::from_slice(take(head_len)?)?;
    let mut out = Vec::with_capacity(head.len());
    for (question, gold, candidates) in head {
        let n = u64_at(take(8)?);
        let floats = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
        let start_vectors = floats(take(4 * n)?);
        let end_vectors = floats(take(4 * n)?);
        out.push(QsftQuestion { question, gold, candidates, start_vectors, end_vectors, teacher: None });
    }
    anyhow::ensure!(at == bytes.len(), "kept QSFT candidates hold {} bytes after their last question", bytes.len() - at);
    Ok(out)
}

/// Adds the reader's view: its start/end probabilities over the gold paragraph's first window (of
/// `settings.window` tokens, the question's included), looked up at each candidate in that paragraph.
pub fn add_teacher<B: Backend>(reader: &Reader<B>, text: &TextEncoder, q: &mut QsftQuestion, settings: &DistillSettings, device: &B::Device) -> Result<()> {
    let pieces = text.pieces(&q.gold.context)?;
    let qlen = text.pieces(&q.question)?.ids.len().min(settings.question_pieces);
    let window = &pieces.ids[..pieces.ids.len().min(settings.window - 3 - qlen)];
    let (ps, pe) = super::reader::teacher_probs(reader, text, &q.question, settings.question_pieces, window, settings.temperature as f32, device)?;
    let (mut ts, mut te, mut inside) = (Vec::new(), Vec::new(), Vec::new());
    for c in &q.candidates {
        let (s, e) = (c.start_token as usize, c.end_token as usize);
        let ok = super::losses::is_target(LossTerm::Context, c, &q.gold) && e < window.len();
        inside.push(ok);
        ts.push(if ok { ps[s] } else { 0.0 });
        te.push(if ok { pe[e] } else { 0.0 });
    }
    q.teacher = Some((ts, te, inside));
    Ok(())
}

/// A batch as tensors: the questions' inputs and the candidates' (frozen) vectors `[b, c, d]`.
pub struct QsftBatch<B: Backend> {
    pub input: BertInput<B>,
    pub start_vectors: Tensor<B, 3>,
    pub end_vectors: Tensor<B, 3>,
    pub questions: Vec<QsftQuestion>,
    pub width: usize,
}

impl<B: Backend> QsftBatch<B> {
    pub fn new(text: &TextEncoder, questions: &[QsftQuestion], query_len: usize, device: &B::Device) -> Result<Self> {
        let rows = questions.iter().map(|q| text.single(&q.question, query_len)).collect::<Result<Vec<_>>>()?;
        let width = questions.iter().map(|q| q.candidates.len()).max().unwrap_or(0).max(1);
        let d = questions.iter().find(|q| !q.candidates.is_empty()).map(|q| q.start_vectors.len() / q.candidates.len()).unwrap_or(1);
        let stack = |pick: fn(&QsftQuestion) -> &Vec<f32>| {
            let mut flat = vec![0.0f32; questions.len() * width * d];
            for (i, q) in questions.iter().enumerate() {
                let v = pick(q);
                flat[i * width * d..i * width * d + v.len()].copy_from_slice(v);
            }
            Tensor::<B, 3>::from_data(TensorData::new(flat, [questions.len(), width, d]), device)
        };
        Ok(Self {
            input: text.batch::<B>(&rows, 0, device),
            start_vectors: stack(|q| &q.start_vectors),
            end_vectors: stack(|q| &q.end_vectors),
            questions: questions.to_vec(),
            width,
        })
    }
}

/// The weighted loss of a batch and each term's value (terms without targets in the batch are absent).
pub struct QsftLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub terms: BTreeMap<LossTerm, f32>,
}

/// Start and end logits `[b, c]` of the trainable encoders against the candidates. The candidate
/// vectors are detached: the phrase index is frozen, whatever produced them.
pub fn logits<B: Backend>(query: &QueryEncoder<B>, batch: &QsftBatch<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let (qs, qe) = query.forward(batch.input.clone());
    let [b, _] = qs.dims();
    let score = |v: Tensor<B, 3>, q: Tensor<B, 2>| v.detach().matmul(q.unsqueeze_dim::<3>(2)).reshape([b, batch.width]);
    (score(batch.start_vectors.clone(), qs), score(batch.end_vectors.clone(), qe))
}

/// The loss of `run` on a batch; `None` when no term has a target. `distill_on` is false before the
/// run's distillation start epoch.
pub fn qsft_loss<B: Backend>(query: &QueryEncoder<B>, batch: &QsftBatch<B>, run: &QsftRun, distill_on: bool) -> Option<QsftLoss<B>> {
    let device = batch.start_vectors.device();
    let (start, end) = logits(query, batch);
    let sum = start.clone() + end.clone();
    let w = batch.width;
    let valid: Vec<Vec<bool>> = batch.questions.iter().map(|q| (0..w).map(|i| i < q.candidates.len()).collect()).collect();
    let valid_t = bool_tensor::<B>(&valid, w, &device);
    let mut total: Option<Tensor<B, 1>> = None;
    let mut values = BTreeMap::new();
    for (&term, &weight) in &run.terms {
        let value = if term == LossTerm::Distill {
            if !distill_on {
                continue;
            }
            let teachers: Vec<_> = batch.questions.iter().map(|q| q.teacher.clone().unwrap_or_default()).collect();
            let ts: Vec<Vec<f32>> = teachers.iter().map(|t| t.0.clone()).collect();
            let te: Vec<Vec<f32>> = teachers.iter().map(|t| t.1.clone()).collect();
            let inside = bool_tensor::<B>(&teachers.iter().map(|t| t.2.clone()).collect::<Vec<_>>(), w, &device);
            let (kind, temp) = (run.distill.kind, run.distill.temperature as f32);
            let s = distill(start.clone(), prob_tensor::<B>(&ts, w, &device), inside.clone(), valid_t.clone(), kind, temp);
            let e = distill(end.clone(), prob_tensor::<B>(&te, w, &device), inside, valid_t.clone(), kind, temp);
            // The study's term: weight · (start + end) / 2.
            add(s, e).map(|v| v.mul_scalar((run.distill.qsft_weight() / 2.0) as f32))
        } else {
            let (t, soft): (Vec<Vec<bool>>, Vec<Vec<bool>>) = batch.questions.iter().map(|q| targets(term, &q.candidates, &q.gold)).unzip();
            let soft: Vec<Vec<bool>> = soft.iter().zip(&valid).map(|(s, v)| (0..w).map(|i| v[i] && s.get(i).copied().unwrap_or(false)).collect()).collect();
            let (t, soft) = (bool_tensor::<B>(&t, w, &device), bool_tensor::<B>(&soft, w, &device));
            let parts = add(mml_floored(start.clone(), t.clone(), soft.clone()), mml_floored(end.clone(), t.clone(), soft.clone()));
            if term == LossTerm::Query || run.dense { add(parts, mml_floored(sum.clone(), t, soft)) } else { parts }
        };
        if let Some(v) = value {
            values.insert(term, v.clone().into_scalar().elem::<f32>());
            let v = v.mul_scalar(weight as f32);
            total = Some(match total {
                None => v,
                Some(t) => t + v,
            });
        }
    }
    total.map(|total| QsftLoss { total, terms: values })
}

fn add<B: Backend>(a: Option<Tensor<B, 1>>, b: Option<Tensor<B, 1>>) -> Option<Tensor<B, 1>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Evaluates a query encoder against the index on `questions`.
pub async fn evaluate<B: Backend>(index: &PhraseIndex, encoder: &QueryEncoder<B>, text: &TextEncoder, questions: &[Question], query_len: usize, device: &B::Device) -> Result<RetrievalEval> {
    let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
    let vectors = encode_queries(encoder, text, &texts, query_len, 16, device)?;
    let (mut em, mut strict, mut seed) = (0.0, Vec::new(), Vec::new());
    // Sentence retrieval as a retrieve job runs it at the default k.
    let (k, per_side) = (DEFAULT_K, hits_for(Unit::Sentence, DEFAULT_K));
    let found = index.batch(&vectors, per_side, false).await?;
    let spans: Vec<Vec<Span>> = found.iter().map(|c| c.spans(per_side)).collect();
    let paragraphs = index.paragraphs(&spans.iter().flatten().map(|s| s.corpus_row).collect::<Vec<_>>()).await?;
    for (q, spans) in questions.iter().zip(&spans) {
        let hits: Vec<_> = spans.iter().filter_map(|s| paragraphs.get(&s.corpus_row).map(|p| (span_hit(s, p, "eval"), p))).collect();
        if let Some((top, _)) = hits.first() {
            em += exact_match(&top.phrase, &q.answers) as u8 as f64;
        }
        let sentences = dedup(hits.iter().map(|(h, p)| h.as_unit(Unit::Sentence, &p.text)).collect(), k);
        let texts: Vec<&str> = sentences.iter().map(|h| h.text.as_str()).collect();
        strict.push(metrics::walk(&texts, &q.answers, MarMode::Strict));
        seed.push(metrics::walk(&texts, &q.answers, MarMode::Seed));
    }
    let n = questions.len().max(1) as f64;
    Ok(RetrievalEval {
        questions: questions.len(),
        em: em / n,
        sentence_mar: metrics::mar(&strict, MarMode::Strict).mar,
        sentence_mar_seed: metrics::mar(&seed, MarMode::Seed).mar,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept candidates read back as they were computed, vectors bit for bit.
    #[test]
    fn a_block_of_candidates_reads_back_exactly() {
        let q = |n: usize, x: f32| QsftQuestion {
            question: format!("question {n}"),
            gold: Gold { answers: vec!["Cheryl Lynn".into()], titles: vec!["If This World Were Mine".into()], sentences: vec![], context: "ctx".into() },
            candidates: (0..n).map(|i| Candidate { phrase: format!("p{i}"), start_token: i as u32, end_token: i as u32 + 2, ..Default::default() }).collect(),
            start_vectors: (0..n * 3).map(|i| x + i as f32 / 7.0).collect(),
            end_vectors: (0..n * 3).map(|i| -x - i as f32 / 3.0).collect(),
            teacher: None,
        };
        let items = vec![q(2, 0.1), q(0, 0.0), q(3, f32::MIN_POSITIVE)];
        let back = decode_block(&encode_block(&items).unwrap()).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in items.iter().zip(&back) {
            assert_eq!((&a.question, &a.gold, &a.candidates), (&b.question, &b.gold, &b.candidates));
            assert_eq!(a.start_vectors.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.start_vectors.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert_eq!(a.end_vectors.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.end_vectors.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        let bytes = encode_block(&items).unwrap();
        assert!(decode_block(&bytes[..bytes.len() - 1]).is_err(), "a cut file is an error, not fewer vectors");
    }
}
