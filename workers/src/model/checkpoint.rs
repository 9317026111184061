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

/// Rewrites a safetensors file's header with its metadata in key order. The writer takes the metadata
/// as a `HashMap`, so the same weights would otherwise get a different header, and sha256, on every
/// save: the sha256 names the model in the ids of every job that reads it, and a run repeated must
/// give the same ids.
fn sort_metadata(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = u64::from_le_bytes(bytes.get(..8).context("not a safetensors file")?.try_into()?) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes.get(8..8 + n).context("a cut safetensors header")?)?;
    if let Some(serde_json::Value::Object(meta)) = header.get("__metadata__") {
        let sorted: std::collections::BTreeMap<String, serde_json::Value> = meta.clone().into_iter().collect();
        header.insert("__metadata__".into(), serde_json::to_value(sorted)?);
    }
    let mut text = serde_json::to_vec(&header)?;
    // The data after the header stays 8-byte aligned, as the writer left it.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
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
    sort_metadata(&tmp)?;
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

#[cfg(test)]
mod tests {
    use super::sort_metadata;

    /// The same weights with their metadata in two orders: one file, to the byte, after sorting.
    #[test]
    fn a_saved_model_file_does_not_depend_on_its_metadata_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, meta: &str| {
            let header = format!(r#"{{"__metadata__":{{{meta}}},"w":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#);
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend([1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()));
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            sort_metadata(&path).unwrap();
            std::fs::read(path).unwrap()
        };
        let (a, b) = (file("a", r#""producer":"burn","kind":"q""#), file("b", r#""kind":"q","producer":"burn""#));
        assert_eq!(a, b);
        let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "the data stays aligned");
        assert_eq!(&a[8 + n..], [1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<_>>(), "the tensors are untouched");
    }
}
