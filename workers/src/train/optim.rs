//! The optimiser step every training job shares: AdamW with two parameter groups (no weight decay on
//! biases and LayerNorm, which are exactly the rank-1 parameters of a BERT), the word embeddings frozen,
//! and the gradients clipped by their global norm as PyTorch's `clip_grad_norm_` does (burn's own
//! clipping works per parameter).

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{ElementConversion, Tensor};
use burn::tensor::backend::AutodiffBackend;
use phrasesweep_schemas::train::OptimSettings;
use std::path::Path;

/// Which parameters train, and how.
#[derive(Debug, Default, Clone)]
pub struct ParamGroups {
    pub decay: Vec<ParamId>,
    pub no_decay: Vec<ParamId>,
    pub frozen: Vec<ParamId>,
    /// Submodule names from the root to the parameter being visited.
    path: Vec<String>,
}

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for ParamGroups {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.iter().any(|p| p == "word_embeddings") {
            self.frozen.push(param.id);
        } else if D == 1 {
            self.no_decay.push(param.id);
        } else {
            self.decay.push(param.id);
        }
    }
}

pub fn param_groups<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> ParamGroups {
    let mut groups = ParamGroups::default();
    model.visit(&mut groups);
    groups
}

/// Sums the squares of the gradients of the visited parameters, or scales them.
struct GradNorm<'a> {
    grads: &'a mut GradientsParams,
    scale: Option<f32>,
    sum_sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    self.sum_sq += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
                }
            }
            Some(s) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads.register(param.id, g.mul_scalar(s));
                }
            }
        }
    }
}

/// AdamW over a model's trainable parameters.
pub struct Trainer<B: AutodiffBackend, M: AutodiffModule<B>> {
    decay: OptimizerAdaptor<AdamW, M, B>,
    no_decay: OptimizerAdaptor<AdamW, M, B>,
    groups: ParamGroups,
    settings: OptimSettings,
    /// The learning rate of the next step (`settings.lr` until the schedule sets it).
    pub lr: f64,
}

/// What one step did, for the training log.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Trainer<B, M> {
    pub fn new(model: &M, settings: &OptimSettings) -> Self {
        let adamw = |wd: f64| AdamWConfig::new().with_weight_decay(wd as f32).with_epsilon(1e-8).init::<B, M>();
        Self {
            decay: adamw(settings.weight_decay),
            no_decay: adamw(0.0),
            groups: param_groups::<B, M>(model),
            settings: settings.clone(),
            lr: settings.lr,
        }
    }

    pub fn groups(&self) -> &ParamGroups {
        &self.groups
    }

    /// Backpropagates `loss` and updates the trainable parameters of `model`.
    pub fn step(&mut self, model: M, loss: Tensor<B, 1>) -> (M, StepStats) {
        let mut raw = loss.backward();
        let mut decay = GradientsParams::from_params(&mut raw, &model, &self.groups.decay);
        let mut no_decay = GradientsParams::from_params(&mut raw, &model, &self.groups.no_decay);
        let mut sum_sq = 0.0;
        for g in [&mut decay, &mut no_decay] {
            let mut v = GradNorm { grads: g, scale: None, sum_sq: 0.0 };
            model.visit(&mut v);
            sum_sq += v.sum_sq;
        }
        let grad_norm = sum_sq.sqrt();
        let clip = self.settings.clip_norm;
        if clip > 0.0 && grad_norm > clip {
            let s = (clip / (grad_norm + 1e-6)) as f32;
            for g in [&mut decay, &mut no_decay] {
                model.visit(&mut GradNorm { grads: g, scale: Some(s), sum_sq: 0.0 });
            }
        }
        let model = self.decay.step(self.lr, model, decay);
        let model = self.no_decay.step(self.lr, model, no_decay);
        (model, StepStats { grad_norm })
    }

    /// Writes the optimiser's moments beside a resumable checkpoint.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        rec.record(self.decay.to_record(), dir.join("optim-decay"))?;
        rec.record(self.no_decay.to_record(), dir.join("optim-no-decay"))?;
        Ok(())
    }

    /// Restores the moments [`Trainer::save`] wrote for `model`, which must have been restored with its
    /// parameter ids (the moments are keyed by them, and so are the groups, taken again here).
    pub fn load(mut self, dir: &Path, model: &M, device: &B::Device) -> anyhow::Result<Self> {
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        self.decay = self.decay.load_record(rec.load(dir.join("optim-decay"), device)?);
        self.no_decay = self.no_decay.load_record(rec.load(dir.join("optim-no-decay"), device)?);
        self.groups = param_groups::<B, M>(model);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::BertConfig;
    use crate::model::device::CpuTrain;
    use crate::model::encoders::QueryEncoder;

    #[test]
    fn groups_freeze_word_embeddings_and_spare_biases_and_layer_norms_from_decay() {
        let config = BertConfig {
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            pad_token_id: 0,
        };
        let q = QueryEncoder::<CpuTrain>::new(&config, &Default::default());
        let g = param_groups::<CpuTrain, _>(&q);
        assert_eq!(g.frozen, vec![q.start.embeddings.word_embeddings.weight.id, q.end.embeddings.word_embeddings.weight.id]);
        let layer = &q.start.encoder.layer[0];
        assert!(g.decay.contains(&layer.attention.self_attn.query.weight.id));
        assert!(g.no_decay.contains(&layer.attention.self_attn.query.bias.as_ref().unwrap().id));
        assert!(g.no_decay.contains(&layer.output.layer_norm.gamma.id));
        assert!(g.decay.contains(&q.start.embeddings.position_embeddings.weight.id));
    }
}
