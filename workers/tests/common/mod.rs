//! What the model tests share: the pretrained weights and the shared data, or a failure that says how to
//! get them.

use phrasesweep_workers::model::load::default_model_dir;
use std::path::{Path, PathBuf};

pub fn model_dir() -> PathBuf {
    let dir = default_model_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is missing at {}: run `make setup` (infra/setup.sh) to fetch it",
        dir.display()
    );
    dir
}

/// A file of the shared data folder, which must sit beside the repository.
#[allow(dead_code)] // not every test binary reads data
pub fn data(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(rel);
    assert!(p.exists(), "{} is missing: the shared data folder ../shared/data must sit beside the repository", p.display());
    p
}

/// A small random BERT's shape, for tests that need a network but not its knowledge.
#[allow(dead_code)] // not every test binary builds one
pub fn tiny_config(vocab: usize) -> phrasesweep_workers::model::bert::BertConfig {
    phrasesweep_workers::model::bert::BertConfig {
        vocab_size: vocab,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
        pad_token_id: 0,
    }
}
