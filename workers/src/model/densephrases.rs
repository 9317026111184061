//! DensePhrases' published checkpoints (`densephrases-multi` and its kind), named `densephrases:PATH`:
//! a folder with `config.json`, the tokenizer, and one `pytorch_model.bin` holding three BERTs
//! (`phrase_encoder.*`, `query_start_encoder.*`, `query_end_encoder.*`) and the filter head
//! (`filter_linear.*`, start and end logits). The phrase encoder and filter become a [`PhraseEncoder`],
//! the two query BERTs a [`QueryEncoder`], so a run starts from the study's exact point.

use super::encoders::{PhraseEncoder, QueryEncoder};
use super::load::{read_config, remapper};
use anyhow::{Result, bail};
use burn::store::ModuleSnapshot;
use burn::tensor::backend::Backend;
use burn_store::PytorchStore;
use std::path::{Path, PathBuf};

pub use phrasesweep_schemas::settings::DENSEPHRASES_PREFIX as PREFIX;

/// The folder of a `densephrases:PATH` model name, if it is one.
pub fn folder(name: &str) -> Option<PathBuf> {
    name.strip_prefix(PREFIX).map(PathBuf::from)
}

/// The checkpoint's weights file.
pub fn weights(dir: &Path) -> PathBuf {
    dir.join("pytorch_model.bin")
}

/// Loads the parts of the checkpoint whose keys start with the `(prefix, field)` pairs into `model`
/// (renamed to its fields); every tensor of those parts must be found.
fn load_parts<B: Backend, M: ModuleSnapshot<B>>(dir: &Path, mut model: M, parts: &[(&str, &str)]) -> Result<M> {
    let file = weights(dir);
    let mut remap = remapper();
    for (prefix, field) in parts {
        remap = remap.add_pattern(format!("^{}\\.", regex_escape(prefix)), format!("{field}.")).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut store = PytorchStore::from_file(&file).remap(remap).allow_partial(true);
    let result = model.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        let wanted: Vec<String> = parts.iter().map(|(p, _)| format!("{p}.*")).collect();
        bail!("{}: not a DensePhrases checkpoint ({} expected): missing {missing:?}; errors {:?}", file.display(), wanted.join(", "), result.errors);
    }
    Ok(model)
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] }).collect()
}

pub fn load_phrase_encoder<B: Backend>(dir: &Path, device: &B::Device) -> Result<PhraseEncoder<B>> {
    let config = read_config(dir)?;
    load_parts(dir, PhraseEncoder::new(&config, device), &[("phrase_encoder", "bert"), ("filter_linear", "filter")])
}

pub fn load_query_encoder<B: Backend>(dir: &Path, device: &B::Device) -> Result<QueryEncoder<B>> {
    let config = read_config(dir)?;
    let model = QueryEncoder::new(&config, device);
    load_parts(dir, model, &[("query_start_encoder", "start"), ("query_end_encoder", "end")])
}
