//! What the model tests share: the pretrained weights, or a failure that says how to get them.

use phrasesweep_workers::model::load::default_model_dir;
use std::path::PathBuf;

pub fn model_dir() -> PathBuf {
    let dir = default_model_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is missing at {}: run `make setup` (infra/setup.sh) to fetch it",
        dir.display()
    );
    dir
}
