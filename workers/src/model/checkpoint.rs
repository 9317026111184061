//! Checkpoints: the weights as safetensors with burn's own names, and beside them a record of what
//! they are (model kind, the BERT config, the base model they started from) with sha256 hashes, so a
//! checkpoint that does not match its record is refused.

use super::bert::BertConfig;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const WEIGHTS: &str = "weights.safetensors";
pub const RECORD: &str = "checkpoint.json";
/// The base model's tokenizer, copied so a checkpoint is self-contained on any machine.
pub const TOKENIZER: &str = "tokenizer.json";
/// Every file of a checkpoint.
pub const FILES: [&str; 3] = [WEIGHTS, TOKENIZER, RECORD];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// `phrase-encoder`, `query-encoder` or `reader`.
    pub kind: String,
    pub config: BertConfig,
    /// The pretrained directory it started from, and the sha256 of that directory's weights.
    pub base_model: String,
    pub base_sha256: String,
    pub weights_sha256: String,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes `dir/weights.safetensors` and `dir/checkpoint.json`; each appears whole or not at all.
pub fn save<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    model: &M,
    dir: &Path,
    kind: &str,
    config: &BertConfig,
    base_model: &Path,
) -> Result<CheckpointRecord> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{WEIGHTS}.partial"));
    let mut store = SafetensorsStore::from_file(&tmp).metadata("phrasesweep.kind", kind);
    model.save_into(&mut store).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    let weights = dir.join(WEIGHTS);
    std::fs::rename(&tmp, &weights)?;
    let tokenizer = base_model.join(TOKENIZER);
    if tokenizer.exists() && tokenizer != dir.join(TOKENIZER) {
        std::fs::copy(&tokenizer, dir.join(TOKENIZER)).with_context(|| format!("cannot copy {}", tokenizer.display()))?;
    } else if !tokenizer.exists() {
        // A base with only `vocab.txt` (DensePhrases'): the tokenizer built from it, written whole.
        let built = super::load::read_tokenizer(base_model)?;
        built.save(dir.join(TOKENIZER), false).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join(TOKENIZER).display()))?;
    }
    let record = CheckpointRecord {
        kind: kind.into(),
        config: config.clone(),
        base_model: base_model.display().to_string(),
        base_sha256: super::load::weights_file(base_model).and_then(|p| sha256_file(&p)).unwrap_or_default(),
        weights_sha256: sha256_file(&weights)?,
    };
    let tmp = dir.join(format!(".{RECORD}.partial"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record)?)?;
    std::fs::rename(&tmp, dir.join(RECORD))?;
    Ok(record)
}

pub fn read_record(dir: &Path) -> Result<CheckpointRecord> {
    let path = dir.join(RECORD);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a checkpoint record", path.display()))
}

/// Loads a checkpoint of `kind` into the model `init` builds from the recorded config.
pub fn load<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    dir: &Path,
    kind: &str,
    init: impl FnOnce(&BertConfig) -> M,
) -> Result<(CheckpointRecord, M)> {
    let record = read_record(dir)?;
    if record.kind != kind {
        bail!("{}: a {} checkpoint, not a {kind}", dir.display(), record.kind);
    }
    let weights = dir.join(WEIGHTS);
    let actual = sha256_file(&weights)?;
    if actual != record.weights_sha256 {
        bail!("{}: sha256 {actual} does not match its record ({})", weights.display(), record.weights_sha256);
    }
    let mut model = init(&record.config);
    let mut store = SafetensorsStore::from_file(&weights);
    let result = model.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: {e}", weights.display()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        bail!("{}: incomplete checkpoint: missing {:?}, errors {:?}", weights.display(), result.missing, result.errors);
    }
    Ok((record, model))
}
