//! BERT as HuggingFace's `BertModel` computes it: word + position + token-type embeddings and a
//! LayerNorm, then post-LN transformer layers with exact (erf) GELU. Field names follow HuggingFace's
//! state-dict names so loading needs only a few renames (see `load`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use super::kernels;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// The fields of a HuggingFace BERT `config.json` that define the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> BertModel<B> {
        let d = self.hidden_size;
        let ln = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, d).init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, d).init(device),
                layer_norm: ln(),
            },
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: BertAttention {
                            self_attn: SelfAttention {
                                query: lin(d, d),
                                key: lin(d, d),
                                value: lin(d, d),
                                heads: self.num_attention_heads,
                            },
                            output: DenseNorm { dense: lin(d, d), layer_norm: ln() },
                        },
                        intermediate: Dense { dense: lin(d, self.intermediate_size) },
                        output: DenseNorm { dense: lin(self.intermediate_size, d), layer_norm: ln() },
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    pub token_type_embeddings: Embedding<B>,
    pub layer_norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    pub layer: Vec<BertLayer<B>>,
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub attention: BertAttention<B>,
    pub intermediate: Dense<B>,
    pub output: DenseNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    pub self_attn: SelfAttention<B>,
    pub output: DenseNorm<B>,
}

#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub heads: usize,
}

#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    pub dense: Linear<B>,
}

#[derive(Module, Debug)]
pub struct DenseNorm<B: Backend> {
    pub dense: Linear<B>,
    pub layer_norm: LayerNorm<B>,
}

/// A padded batch: token ids, token types and a 1/0 attention mask, all `[batch, seq]`.
#[derive(Debug, Clone)]
pub struct BertInput<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> BertModel<B> {
    /// Last hidden states, `[batch, seq, hidden]`.
    pub fn forward(&self, input: BertInput<B>) -> Tensor<B, 3> {
        let [batch, seq] = input.input_ids.dims();
        let device = input.input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).reshape([1, seq]).expand([batch, seq]);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(input.input_ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(input.token_type_ids);
        let mut x = e.layer_norm.forward(x);
        // Padding gets a large negative score: exp() of it is exactly zero in f32.
        let bias = (input.attention_mask.float().neg() + 1.0).mul_scalar(-1e9).reshape([batch, 1, 1, seq]);
        for layer in &self.encoder.layer {
            x = layer.forward(x, bias.clone());
        }
        x
    }
}

impl<B: Backend> BertLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let context = self.attention.self_attn.forward(x.clone(), bias);
        let a = &self.attention.output;
        let x = a.layer_norm.forward(a.dense.forward(context) + x);
        let h = kernels::gelu(self.intermediate.dense.forward(x.clone()));
        self.output.layer_norm.forward(self.output.dense.forward(h) + x)
    }
}

impl<B: Backend> SelfAttention<B> {
    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let (q, k) = (self.query.forward(x.clone()), self.key.forward(x.clone()));
        kernels::self_attention(q, k, self.value.forward(x), self.heads, bias)
    }
}
