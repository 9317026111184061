//! QSFT's losses: which candidate spans each term rewards, and the marginal likelihood (MML) over them.
//! Every term is computed from the trainable query vectors by tensor operations only, so its gradient
//! reaches the query encoders; the candidates' phrase vectors are data (detached), so nothing reaches the
//! phrase encoder. The tests in `train::qsft` check both for every term.

use crate::eval::metrics::normalize;
use crate::text::questions::Question;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use phrasesweep_schemas::train::{DistillKind, LossTerm};

/// Logits this low count as "not in the softmax".
const MASKED: f32 = -1e9;

/// A retrieved span as the losses see it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub phrase: String,
    pub title: String,
    /// The sentence(s) holding the span.
    pub sentence: String,
    pub paragraph: String,
    /// Piece indices of the span's first and last token in its paragraph.
    pub start_token: u32,
    pub end_token: u32,
}

/// What a training question says is right.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gold {
    pub answers: Vec<String>,
    pub titles: Vec<String>,
    pub sentences: Vec<String>,
    pub context: String,
}

impl From<&Question> for Gold {
    fn from(q: &Question) -> Self {
        Self { answers: q.answers.clone(), titles: q.titles.clone(), sentences: q.sentence.clone(), context: q.context.clone() }
    }
}

/// Collapses whitespace, so texts cut from differently spaced copies of a paragraph compare equal.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `c` is a target of `term` (distillation has no targets: it uses the reader).
pub fn is_target(term: LossTerm, c: &Candidate, gold: &Gold) -> bool {
    match term {
        LossTerm::Query => {
            let p = normalize(&c.phrase);
            !p.is_empty() && gold.answers.iter().any(|a| normalize(a) == p)
        }
        LossTerm::Doc => {
            let title = c.title.trim().to_lowercase();
            gold.titles.iter().any(|t| t.trim().to_lowercase() == title)
        }
        // Case-blind, as the study compares sentences.
        LossTerm::Sentence => {
            let s = squash(&c.sentence).to_lowercase();
            !s.is_empty() && gold.sentences.iter().any(|g| squash(g).to_lowercase().contains(&s))
        }
        LossTerm::Context => {
            let g = squash(&gold.context);
            !g.is_empty() && squash(&c.paragraph).contains(&g)
        }
        LossTerm::Distill => false,
    }
}

/// Targets of `term` over one question's candidates. For every term but `query`, the `query` targets
/// leave the softmax (so the coarser term does not pull toward or against exact answers): `in_softmax`
/// says which candidates stay.
pub fn targets(term: LossTerm, candidates: &[Candidate], gold: &Gold) -> (Vec<bool>, Vec<bool>) {
    let target: Vec<bool> = candidates.iter().map(|c| is_target(term, c, gold)).collect();
    let in_softmax = if term == LossTerm::Query {
        vec![true; candidates.len()]
    } else {
        candidates.iter().map(|c| !is_target(LossTerm::Query, c, gold)).collect()
    };
    let target = target.iter().zip(&in_softmax).map(|(&t, &s)| t && s).collect();
    (target, in_softmax)
}

pub fn bool_tensor<B: Backend>(rows: &[Vec<bool>], width: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let mut flat = Vec::with_capacity(rows.len() * width);
    for r in rows {
        flat.extend((0..width).map(|i| r.get(i).copied().unwrap_or(false)));
    }
    Tensor::from_data(TensorData::new(flat, [rows.len(), width]), device)
}

/// The smallest target probability QSFT's MML takes the log of, as DensePhrases clamps it in
/// `train_query`: a question whose targets are all but impossible adds at most −log 1e-7 and no gradient.
pub const MML_FLOOR: f32 = 1e-7;

/// Mean over questions with at least one target of −log Σ_{targets} softmax(logits over `in_softmax`).
/// `None` when no question has a target (the term is skipped for this batch).
pub fn mml<B: Backend>(logits: Tensor<B, 2>, target: Tensor<B, 2, Bool>, in_softmax: Tensor<B, 2, Bool>) -> Option<Tensor<B, 1>> {
    mml_with(logits, target, in_softmax, None)
}

/// [`mml`] with the target mass clamped to [`MML_FLOOR`] (QSFT's terms).
pub fn mml_floored<B: Backend>(logits: Tensor<B, 2>, target: Tensor<B, 2, Bool>, in_softmax: Tensor<B, 2, Bool>) -> Option<Tensor<B, 1>> {
    mml_with(logits, target, in_softmax, Some(MML_FLOOR))
}

fn mml_with<B: Backend>(logits: Tensor<B, 2>, target: Tensor<B, 2, Bool>, in_softmax: Tensor<B, 2, Bool>, floor: Option<f32>) -> Option<Tensor<B, 1>> {
    let has: Vec<bool> = target.clone().any_dim(1).into_data().convert::<bool>().to_vec().expect("bool mask");
    let n = has.iter().filter(|&&h| h).count();
    if n == 0 {
        return None;
    }
    let device = logits.device();
    let log_p = log_softmax(logits.mask_fill(in_softmax.bool_not(), MASKED), 1);
    let picked = log_p.mask_fill(target.bool_not(), MASKED);
    let log_mass = log_sum_exp(picked);
    let log_mass = match floor {
        Some(f) => log_mass.clamp_min(f.ln()),
        None => log_mass,
    };
    let weights = Tensor::<B, 1>::from_data(TensorData::new(has.iter().map(|&h| h as u8 as f32).collect::<Vec<_>>(), [has.len()]), &device);
    Some((log_mass.neg() * weights).sum().div_scalar(n as f32))
}

/// log Σ exp along dim 1, stable: `[b, c]` → `[b]`.
fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let max = x.clone().max_dim(1).detach();
    let [b, _] = x.dims();
    (x - max.clone()).exp().sum_dim(1).log().add(max).reshape([b])
}

/// Distillation: pulls the student's candidate distribution toward the teacher's probabilities of the
/// same tokens. `teacher` holds, per question and candidate, the reader's probability of the candidate's
/// token (start or end) in the gold paragraph; `inside` marks the candidates in that paragraph.
pub fn distill<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    inside: Tensor<B, 2, Bool>,
    valid: Tensor<B, 2, Bool>,
    kind: DistillKind,
    temperature: f32,
) -> Option<Tensor<B, 1>> {
    let count = inside.clone().int().sum().into_scalar();
    let count: i64 = burn::tensor::ElementConversion::elem(count);
    if count == 0 {
        return None;
    }
    let out = match kind {
        DistillKind::Mse => {
            let p = burn::tensor::activation::softmax(student.mask_fill(valid.bool_not(), MASKED).div_scalar(temperature), 1);
            let diff = (p - teacher).mask_fill(inside.bool_not(), 0.0);
            diff.powi_scalar(2).sum().div_scalar(count as f32)
        }
        DistillKind::Kl => {
            // Both distributions over the candidates inside the gold paragraph.
            let rows: Vec<bool> = inside.clone().any_dim(1).into_data().convert::<bool>().to_vec().expect("bool mask");
            let n = rows.iter().filter(|&&r| r).count() as f32;
            let t = teacher.mask_fill(inside.clone().bool_not(), 0.0);
            let t = t.clone() / t.sum_dim(1).clamp_min(1e-12);
            let log_s = log_softmax(student.mask_fill(inside.clone().bool_not(), MASKED).div_scalar(temperature), 1);
            let log_t = t.clone().clamp_min(1e-12).log();
            (t * (log_t - log_s)).mask_fill(inside.bool_not(), 0.0).sum().mul_scalar(temperature * temperature / n)
        }
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::Cpu;

    fn cand(phrase: &str, title: &str, sentence: &str, paragraph: &str) -> Candidate {
        Candidate { phrase: phrase.into(), title: title.into(), sentence: sentence.into(), paragraph: paragraph.into(), ..Default::default() }
    }

    fn gold() -> Gold {
        Gold {
            answers: vec!["Tammi Terrell".into()],
            titles: vec!["If This World Were Mine".into()],
            sentences: vec!["It was sung by Marvin Gaye and Tammi Terrell in 1967.".into()],
            context: "If This World Were Mine is a song. It was sung by Marvin Gaye and Tammi Terrell in 1967.".into(),
        }
    }

    #[test]
    fn targets_follow_each_term() {
        let para = "If This World Were Mine is a song. It was sung by Marvin Gaye and  Tammi Terrell in 1967.";
        let c = [
            cand("tammi terrell.", "If This World Were Mine", "It was sung by Marvin Gaye and  Tammi Terrell in 1967.", para),
            cand("Marvin Gaye", "if this world were mine", "It was sung by Marvin Gaye and Tammi Terrell in 1967.", para),
            cand("a song", "If This World Were Mine", "If This World Were Mine is a song.", para),
            cand("Tammi", "Tammi Terrell", "Tammi was a singer.", "Tammi was a singer."),
            cand("Terrell", "Other", "was sung by Marvin", "was sung by Marvin"),
        ];
        let g = gold();
        let (q, qs) = targets(LossTerm::Query, &c, &g);
        assert_eq!(q, [true, false, false, false, false], "normalised equality with an answer");
        assert!(qs.iter().all(|&s| s));
        let (d, ds) = targets(LossTerm::Doc, &c, &g);
        assert_eq!(ds, [false, true, true, true, true], "query targets leave the softmax");
        assert_eq!(d, [false, true, true, false, false], "titles compare case-insensitively");
        let (s, _) = targets(LossTerm::Sentence, &c, &g);
        assert_eq!(s, [false, true, false, false, true], "a sentence inside a gold sentence counts");
        let (x, _) = targets(LossTerm::Context, &c, &g);
        assert_eq!(x, [false, true, true, false, false], "the gold paragraph, whitespace aside");
        let (none, _) = targets(LossTerm::Distill, &c, &g);
        assert!(none.iter().all(|&t| !t));
    }

    #[test]
    fn mml_is_minus_log_of_the_target_mass_and_skips_questions_without_targets() {
        let dev = Default::default();
        let logits = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 0.0, 5.0, 1.0, 1.0, 1.0], [2, 4]), &dev);
        let target = bool_tensor::<Cpu>(&[vec![true, true, false, false], vec![false; 4]], 4, &dev);
        let all = bool_tensor::<Cpu>(&[vec![true; 4], vec![true; 4]], 4, &dev);
        let loss: f32 = mml(logits.clone(), target.clone(), all.clone()).unwrap().into_scalar();
        assert!((loss - 0.5f32.ln().abs()).abs() < 1e-5, "{loss}");
        // Out of the softmax, a candidate no longer takes mass.
        let some = bool_tensor::<Cpu>(&[vec![true, true, true, false], vec![true; 4]], 4, &dev);
        let loss: f32 = mml(logits.clone(), target, some).unwrap().into_scalar();
        assert!((loss - (3.0f32 / 2.0).ln()).abs() < 1e-5, "{loss}");
        let none = bool_tensor::<Cpu>(&[vec![false; 4], vec![false; 4]], 4, &dev);
        assert!(mml(logits, none, all.clone()).is_none());
        // QSFT's floor: a target with probability e^-100 costs −log 1e-7, not 100.
        let far = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![-100.0f32, 0.0, 0.0, 0.0], [1, 4]), &dev);
        let first = bool_tensor::<Cpu>(&[vec![true, false, false, false]], 4, &dev);
        let every = bool_tensor::<Cpu>(&[vec![true; 4]], 4, &dev);
        let loss: f32 = mml_floored(far.clone(), first.clone(), every.clone()).unwrap().into_scalar();
        assert!((loss + MML_FLOOR.ln()).abs() < 1e-3, "{loss}");
        let plain: f32 = mml(far, first, every).unwrap().into_scalar();
        assert!(plain > 100.0, "the supervised losses are plain cross-entropy: {plain}");
    }

    #[test]
    fn sentence_targets_compare_without_case() {
        let g = Gold { sentences: vec!["It was sung by Marvin Gaye.".into()], ..Default::default() };
        assert!(is_target(LossTerm::Sentence, &cand("x", "t", "it was SUNG by marvin gaye.", "p"), &g));
    }

    #[test]
    fn distillation_vanishes_when_the_student_matches_the_teacher() {
        let dev = Default::default();
        let student = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 0.0], [1, 4]), &dev);
        let teacher = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.25f32, 0.25, 0.25, 0.25], [1, 4]), &dev);
        let inside = bool_tensor::<Cpu>(&[vec![true, true, false, false]], 4, &dev);
        let valid = bool_tensor::<Cpu>(&[vec![true; 4]], 4, &dev);
        let mse: f32 = distill(student.clone(), teacher.clone(), inside.clone(), valid.clone(), DistillKind::Mse, 1.0).unwrap().into_scalar();
        assert!(mse.abs() < 1e-9, "{mse}");
        let kl: f32 = distill(student.clone(), teacher.clone(), inside.clone(), valid.clone(), DistillKind::Kl, 1.0).unwrap().into_scalar();
        assert!(kl.abs() < 1e-6, "{kl}");
        let skewed = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.9f32, 0.01, 0.05, 0.04], [1, 4]), &dev);
        let kl: f32 = distill(student, skewed, inside, valid, DistillKind::Kl, 1.0).unwrap().into_scalar();
        assert!(kl > 0.1, "{kl}");
    }
}
