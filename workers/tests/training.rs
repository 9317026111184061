//! Training on real weights and real data: every QSFT loss term sends gradient to the query encoders and
//! none to the phrase encoder, one QSFT step lowers the loss on its batch, and the reader and phrase
//! encoder steps lower theirs while the frozen word embeddings stay put.

mod common;

use burn::module::{Module, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use phrasesweep_schemas::train::{DistillSettings, LossTerm, Negatives, OptimSettings, QsftRun, SupervisedSettings};
use phrasesweep_workers::model::bert::BertModel;
use phrasesweep_workers::model::device::CpuTrain;
use phrasesweep_workers::model::encoders::{PhraseEncoder, QueryEncoder, Reader};
use phrasesweep_workers::model::load::read_tokenizer;
use phrasesweep_workers::model::text::TextEncoder;
use phrasesweep_workers::text::questions::{Question, parse_questions};
use phrasesweep_workers::text::sentences::split_sentences;
use phrasesweep_workers::train::losses::{Candidate, Gold};
use phrasesweep_workers::train::optim::Trainer;
use phrasesweep_workers::train::phrase::{PhraseModels, Prebatch, filter_bce, phrase_loss, phrase_row};
use phrasesweep_workers::train::qsft::{QsftBatch, QsftQuestion, qsft_loss};
use phrasesweep_workers::train::rc::{char_span_to_pieces, parse_squad};
use phrasesweep_workers::train::reader::{reader_loss, reader_row};
use phrasesweep_workers::index::search::char_slice;
use std::collections::BTreeMap;
use common::{data, model_dir};

type B = CpuTrain;


fn text() -> TextEncoder {
    TextEncoder::new(read_tokenizer(&model_dir()).unwrap()).unwrap()
}

fn fixture_questions() -> Vec<Question> {
    let path = data("fixture/questions.jsonl");
    parse_questions(&path.display().to_string(), 1, &std::fs::read(&path).unwrap()).unwrap()
}

/// The first fixture question whose answer occurs in its gold paragraph and sentence.
fn fixture_question() -> (Question, Question) {
    let qs = fixture_questions();
    let i = qs.iter().position(|q| !q.sentence.is_empty() && q.answers.iter().any(|a| q.context.contains(a.as_str()))).unwrap();
    let other = qs.iter().find(|o| o.titles != qs[i].titles && !o.context.is_empty()).unwrap().clone();
    (qs[i].clone(), other)
}

/// Candidates of one question built from real paragraphs: the answer span, then two-token spans from the
/// gold paragraph and from a distractor paragraph. Returns them with the (piece) spans and which paragraph
/// each came from.
fn candidates(text: &TextEncoder, q: &Question, other: &Question) -> (Vec<Candidate>, Vec<(usize, usize, usize)>) {
    let mut out = Vec::new();
    let mut where_ = Vec::new();
    for (p, para) in [(0, q), (1, other)] {
        let pieces = text.pieces(&para.context).unwrap();
        let sentences = split_sentences(&para.context);
        let mut spans: Vec<(usize, usize)> = (0..pieces.ids.len().min(24)).map(|i| (i, (i + 1).min(pieces.ids.len() - 1))).collect();
        if p == 0 {
            let a = &q.answers.iter().find(|a| q.context.contains(a.as_str())).unwrap();
            let byte = q.context.find(a.as_str()).unwrap();
            let start = q.context[..byte].chars().count() as u32;
            spans.insert(0, char_span_to_pieces(&pieces.offsets, (start, start + a.chars().count() as u32)).unwrap());
        }
        for (i, j) in spans {
            let (cs, ce) = (pieces.offsets[i].0, pieces.offsets[j].1);
            let sentence = sentences.iter().find(|&&(a, b)| a <= cs && cs < b).map(|&(a, b)| char_slice(&para.context, a, b)).unwrap_or_default();
            out.push(Candidate {
                phrase: char_slice(&para.context, cs, ce),
                title: para.titles.first().cloned().unwrap_or_default(),
                sentence,
                paragraph: para.context.clone(),
                start_token: i as u32,
                end_token: j as u32,
            });
            where_.push((p, i, j));
        }
    }
    (out, where_)
}

fn run(terms: &[(LossTerm, f64)]) -> QsftRun {
    QsftRun {
        name: "t".into(),
        terms: terms.iter().copied().collect::<BTreeMap<_, _>>(),
        dense: false,
        epochs: 1,
        start_from: "base".into(),
        candidates: 100,
        max_questions: None,
        eval_questions: None,
        optim: OptimSettings { lr: 1e-4, ..Default::default() },
        distill: DistillSettings::default(),
        select: Default::default(),
    }
}

/// The candidates' vectors straight from the phrase encoder, in the autodiff graph: if QSFT let gradient
/// through them, the phrase encoder's weights would get some.
fn batch_from_phrase_encoder(phrase: &PhraseEncoder<B>, text: &TextEncoder) -> QsftBatch<B> {
    let device = Default::default();
    let (q, other) = fixture_question();
    let (cands, where_) = candidates(text, &q, &other);
    let rows: Vec<_> = [&q, &other].iter().map(|p| text.pair(&text.pieces(&p.titles[0]).unwrap().ids, &text.pieces(&p.context).unwrap().ids[..])).collect();
    let title_lens: Vec<usize> = [&q, &other].iter().map(|p| text.pieces(&p.titles[0]).unwrap().ids.len()).collect();
    let (h, _) = phrase.forward(text.batch::<B>(&rows, 0, &device));
    let [n, s, d] = h.dims();
    let flat = h.reshape([n * s, d]);
    let pick = |tok: fn(&(usize, usize, usize)) -> usize| {
        let idx: Vec<i64> = where_.iter().map(|w| (w.0 * s + title_lens[w.0] + 2 + tok(w)) as i64).collect();
        let c = idx.len();
        flat.clone().select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [c]), &device)).reshape([1, c, d])
    };
    let c = cands.len();
    // A teacher that prefers the first (answer) candidate, for the distillation term.
    let inside: Vec<bool> = where_.iter().map(|w| w.0 == 0).collect();
    let probs: Vec<f32> = (0..c).map(|i| if i == 0 { 0.6 } else if inside[i] { 0.4 / 24.0 } else { 0.0 }).collect();
    let question = QsftQuestion {
        question: q.question.clone(),
        gold: Gold::from(&q),
        candidates: cands,
        start_vectors: Vec::new(),
        end_vectors: Vec::new(),
        teacher: Some((probs.clone(), probs, inside)),
    };
    let input = text.batch::<B>(&[text.single(&q.question, 64).unwrap()], 0, &device);
    QsftBatch { input, start_vectors: pick(|w| w.1), end_vectors: pick(|w| w.2), questions: vec![question], width: c }
}

fn grad_sum<const D: usize>(p: &Param<Tensor<B, D>>, grads: &<B as AutodiffBackend>::Gradients) -> f32 {
    p.grad(grads).map(|g| g.abs().sum().into_scalar()).unwrap_or(0.0)
}

fn bert_grads(m: &BertModel<B>, grads: &<B as AutodiffBackend>::Gradients) -> f32 {
    let l = &m.encoder.layer[0];
    grad_sum(&l.attention.self_attn.query.weight, grads) + grad_sum(&m.embeddings.layer_norm.gamma, grads)
}

/// The pretrained phrase and query encoders and a batch whose candidates come from the phrase encoder.
fn pretrained_with_batch() -> (PhraseEncoder<B>, QueryEncoder<B>, QsftBatch<B>) {
    let device = Default::default();
    let dir = model_dir();
    let phrase = PhraseEncoder::<B>::from_pretrained(&dir, &device).unwrap();
    let query = QueryEncoder::<B>::from_pretrained(&dir, &device).unwrap();
    let batch = batch_from_phrase_encoder(&phrase, &text());
    (phrase, query, batch)
}

#[test]
fn every_qsft_term_reaches_the_query_encoders_and_never_the_phrase_encoder() {
    let (phrase, query, batch) = pretrained_with_batch();
    for term in LossTerm::ALL {
        for dense in [false, true] {
            if dense && matches!(term, LossTerm::Query | LossTerm::Distill) {
                continue;
            }
            let mut r = run(&[(term, 1.0)]);
            r.dense = dense;
            let loss = qsft_loss(&query, &batch, &r, true).unwrap_or_else(|| panic!("term {term:?} found no target in the batch"));
            let value: f32 = loss.total.clone().into_scalar();
            assert!(value.is_finite() && value > 0.0, "{term:?}: loss {value}");
            let grads = loss.total.backward();
            let (qs, qe) = (bert_grads(&query.start, &grads), bert_grads(&query.end, &grads));
            assert!(qs > 0.0 && qe > 0.0, "{term:?} (dense {dense}): no gradient reaches the query encoders (start {qs}, end {qe})");
            let p = bert_grads(&phrase.bert, &grads);
            assert_eq!(p, 0.0, "{term:?} (dense {dense}): gradient reached the phrase encoder");
        }
    }
}

#[test]
fn one_qsft_step_lowers_the_loss_on_its_batch_and_leaves_word_embeddings_frozen() {
    let (_phrase, query, batch) = pretrained_with_batch();
    let r = run(&[(LossTerm::Query, 1.0), (LossTerm::Context, 1.0)]);
    let before: f32 = qsft_loss(&query, &batch, &r, true).unwrap().total.into_scalar();
    let words: Vec<f32> = query.start.embeddings.word_embeddings.weight.val().into_data().to_vec().unwrap();
    let weight: Vec<f32> = query.start.encoder.layer[3].intermediate.dense.weight.val().into_data().to_vec().unwrap();
    let mut trainer = Trainer::new(&query, &r.optim);
    let loss = qsft_loss(&query, &batch, &r, true).unwrap().total;
    let (query, stats) = trainer.step(query, loss);
    assert!(stats.grad_norm > 0.0);
    let after: f32 = qsft_loss(&query, &batch, &r, true).unwrap().total.into_scalar();
    assert!(after < before, "loss went from {before} to {after}");
    let words_after: Vec<f32> = query.start.embeddings.word_embeddings.weight.val().into_data().to_vec().unwrap();
    assert_eq!(words, words_after, "word embeddings must stay frozen");
    let weight_after: Vec<f32> = query.start.encoder.layer[3].intermediate.dense.weight.val().into_data().to_vec().unwrap();
    assert_ne!(weight, weight_after, "the encoder's weights must change");
}

fn squad_examples(n: usize) -> Vec<phrasesweep_workers::train::rc::Example> {
    let path = data("squad/dev.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let first: Vec<u8> = bytes.split(|&b| b == b'\n').take(n).collect::<Vec<_>>().join(&b'\n');
    let mut ex = parse_squad(&path.display().to_string(), &first).unwrap();
    // One question per paragraph, so in-batch negatives are other paragraphs.
    ex.dedup_by(|a, b| a.context == b.context);
    ex.truncate(n);
    ex
}

#[test]
fn reader_steps_lower_its_loss() {
    let device = Default::default();
    let text = text();
    let reader = Reader::<B>::from_pretrained(&model_dir(), &device).unwrap();
    let rows: Vec<_> = squad_examples(3).iter().filter_map(|e| reader_row(&text, e, &SupervisedSettings { max_len: 128, ..Default::default() }).unwrap().map(|r| r.0)).collect();
    assert_eq!(rows.len(), 3);
    let before: f32 = reader_loss(&reader, &text, &rows, &device).into_scalar();
    let mut trainer = Trainer::new(&reader, &OptimSettings { lr: 1e-4, ..Default::default() });
    let mut reader = reader;
    for _ in 0..3 {
        let loss = reader_loss(&reader, &text, &rows, &device);
        reader = trainer.step(reader, loss).0;
    }
    let after: f32 = reader_loss(&reader, &text, &rows, &device).into_scalar();
    assert!(after < before, "reader loss went from {before} to {after}");
}

#[test]
fn phrase_steps_lower_their_loss_with_distillation() {
    let device = Default::default();
    let text = text();
    let dir = model_dir();
    let models = PhraseModels::<B> {
        phrase: PhraseEncoder::from_pretrained(&dir, &device).unwrap(),
        query: QueryEncoder::from_pretrained(&dir, &device).unwrap(),
    };
    let reader = Reader::<phrasesweep_workers::model::device::Cpu>::from_pretrained(&dir, &device).unwrap();
    let mut rows: Vec<_> = squad_examples(3).iter().filter_map(|e| phrase_row(&text, e, &SupervisedSettings { max_len: 128, ..Default::default() }).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let distill = DistillSettings { temperature: 2.0, ..Default::default() };
    phrasesweep_workers::train::phrase::add_teacher(&reader, &text, &mut rows, &DistillSettings { temperature: 2.0, ..Default::default() }, &device).unwrap();
    let loss = phrase_loss(&models, &text, &rows, Some(&distill), &Negatives::default(), &Prebatch::default(), &device).unwrap();
    let before: f32 = loss.total.into_scalar();
    assert!(loss.distill.is_some_and(|d| d > 0.0) && loss.filter > 0.0);
    let mut trainer = Trainer::new(&models, &OptimSettings { lr: 1e-4, ..Default::default() });
    let mut models = models;
    for _ in 0..3 {
        let loss = phrase_loss(&models, &text, &rows, Some(&distill), &Negatives::default(), &Prebatch::default(), &device).unwrap().total;
        models = trainer.step(models, loss).0;
    }
    let after: f32 = phrase_loss(&models, &text, &rows, Some(&distill), &Negatives::default(), &Prebatch::default(), &device).unwrap().total.into_scalar();
    assert!(after < before, "phrase loss went from {before} to {after}");
}

/// QSFT runs one AdamW over all its epochs: epoch 2's job, starting from a model that knows nothing of
/// epoch 1 (new weights, new parameter ids, as a job that loads the epoch-1 checkpoint), continues from
/// the moments, step counts and weights epoch 1 left on the store, on the run's learning-rate schedule,
/// and ends exactly where one job running every step ends. Without the moments it ends elsewhere.
#[test]
fn two_epoch_jobs_continue_one_adamw_and_one_schedule() {
    use phrasesweep_workers::io::store::Store;
    use phrasesweep_workers::model::device::JobTrain;
    use phrasesweep_workers::train::resume::{RunSpan, StepLoss, run_steps};
    let config = common::tiny_config(20);
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path().to_str().unwrap()).unwrap();
    let optim = OptimSettings { lr: 0.05, weight_decay: 0.0, clip_norm: 0.0, ..Default::default() };
    let weight = |m: &QueryEncoder<JobTrain>| m.start.encoder.layer[0].attention.self_attn.query.weight.val();
    // Pulls the weight toward a target that moves with the step, so every step's gradient differs.
    let loss = |m: &QueryEncoder<JobTrain>, step: usize| -> anyhow::Result<Option<StepLoss>> {
        let w = weight(m);
        Ok(Some(StepLoss::new((w.clone() - (step as f32 * 0.1)).powi_scalar(2).sum() + w.sum() * 0.01)))
    };
    // Initialised once (a new module's parameters are initialised lazily, each clone on its own).
    let fresh = QueryEncoder::<JobTrain>::new(&config, &device);
    let start = fresh.clone().load_record(fresh.into_record());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |dir: &str, model: QueryEncoder<JobTrain>, span: RunSpan, steps: std::ops::Range<usize>| {
        rt.block_on(run_steps(&store, dir, dir, model, &optim, &span, steps.collect(), |s| std::future::ready(Ok(Some(s))), |m, s| loss(m, s)))
            .unwrap()
    };
    let whole = run("whole", start.clone(), RunSpan::default(), 0..6);
    let first = run("epoch-1", start.clone(), RunSpan { total: 6, leave_at: Some("epoch-1/optimiser".into()), ..Default::default() }, 0..3);
    let continued = RunSpan { offset: 3, total: 6, continue_from: Some("epoch-1/optimiser".into()), ..Default::default() };
    let second = run("epoch-2", QueryEncoder::<JobTrain>::new(&config, &device), continued, 3..6);
    assert!((first.last_lr - 0.05 * 4.0 / 6.0).abs() < 1e-12 && (second.last_lr - 0.05 / 6.0).abs() < 1e-12, "linear decay over both epochs");
    assert_eq!(second.last_lr, whole.last_lr);
    let gap = |a: &QueryEncoder<JobTrain>, b: &QueryEncoder<JobTrain>| (weight(a) - weight(b)).abs().max().into_scalar();
    assert!(gap(&second.model, &whole.model) < 1e-6, "two epoch jobs end where one run ends: {}", gap(&second.model, &whole.model));

    // Epoch 2 with a new AdamW from epoch 1's weights (the old behaviour) ends elsewhere.
    let restarted = RunSpan { offset: 3, total: 6, ..Default::default() };
    let fresh = run("epoch-2-restarted", first.model.clone(), restarted, 3..6);
    assert!(gap(&fresh.model, &whole.model) > 1e-3, "{}", gap(&fresh.model, &whole.model));
}

/// DensePhrases' negatives: the pre-batch queue holds the gold vectors of the last `prebatch` batches,
/// and each queued vector is one more negative (the loss can only grow); the old all-tokens softmax is
/// another loss on the same batch.
#[test]
fn prebatch_negatives_queue_the_last_batches_gold_vectors() {
    let device = Default::default();
    let text = text();
    let dir = model_dir();
    let models = PhraseModels::<B> { phrase: PhraseEncoder::from_pretrained(&dir, &device).unwrap(), query: QueryEncoder::from_pretrained(&dir, &device).unwrap() };
    let rows: Vec<_> = squad_examples(6).iter().filter_map(|e| phrase_row(&text, e, &SupervisedSettings { max_len: 96, ..Default::default() }).unwrap()).collect();
    let (first, second) = rows.split_at(3);
    let in_batch = Negatives::InBatch { prebatch: 1, weight: 2.0 };
    let mut queue = Prebatch::default();
    let loss = |rows, queue: &Prebatch, negatives: &Negatives| phrase_loss(&models, &text, rows, None, negatives, queue, &device).unwrap();
    let a = loss(first, &queue, &in_batch);
    assert_eq!(a.gold.0.len(), 3 * 384, "three gold start vectors of 384");
    queue.push(a.gold.clone(), 1);
    assert_eq!(queue.len(384), 3);
    let alone = loss(second, &Prebatch::default(), &in_batch).span;
    let queued = loss(second, &queue, &in_batch);
    assert!(queued.span > alone, "three more negatives: {alone} → {}", queued.span);
    queue.push(queued.gold, 1);
    queue.push(a.gold, 1);
    assert_eq!(queue.len(384), 3, "only the last batch is kept");
    let all_tokens: f32 = loss(second, &Prebatch::default(), &Negatives::AllTokens).span;
    assert!((all_tokens - alone).abs() > 1e-3, "{all_tokens} {alone}");
}

/// The filter's loss as DensePhrases weighs it: at zero logits every own token costs ln 2, the positive
/// one as much as its row is long; rows average their own tokens, then the batch averages its rows.
#[test]
fn filter_loss_weighs_the_answer_token_by_the_row_length() {
    let device = Default::default();
    let logits = Tensor::<B, 2>::zeros([2, 6], &device);
    let own = vec![vec![false, true, true, true, true, false], vec![false, true, true, false, false, false]];
    let v: f32 = filter_bce(logits, &[2, 1], &own, &device).into_scalar();
    let ln2 = std::f32::consts::LN_2;
    let expected = (ln2 * (3.0 + 4.0) / 4.0 + ln2 * (1.0 + 2.0) / 2.0) / 2.0;
    assert!((v - expected).abs() < 1e-5, "{v} vs {expected}");
}
