//! Loading a HuggingFace BERT directory: `config.json`, `tokenizer.json`, and `model.safetensors` or
//! `pytorch_model.bin`, with or without the `bert.` prefix of task models.

use super::bert::{BertConfig, BertModel};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn_store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// HuggingFace names → this crate's field names. The adapter then renames LayerNorm weight/bias to
/// gamma/beta and transposes Linear weights.
pub(crate) fn remapper() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(r"^bert\.", "")
        .and_then(|r| r.add_pattern(r"\.LayerNorm\.gamma$", ".LayerNorm.weight"))
        .and_then(|r| r.add_pattern(r"\.LayerNorm\.beta$", ".LayerNorm.bias"))
        .and_then(|r| r.add_pattern(r"LayerNorm", "layer_norm"))
        .and_then(|r| r.add_pattern(r"\.attention\.self\.", ".attention.self_attn."))
        .expect("valid patterns")
}

/// Loads the `qa_outputs` head of a HuggingFace `BertForQuestionAnswering` folder into `head`; whether
/// the folder had one (a plain BERT folder has none, and the head stays as it was).
pub fn load_qa_head<B: Backend>(dir: &Path, head: &mut burn::nn::Linear<B>) -> Result<bool> {
    let weights = weights_file(dir)?;
    let remap = KeyRemapper::new().add_pattern(r"^qa_outputs\.", "").expect("a valid pattern");
    let result = load_weights(&weights, head, remap)?;
    match result.applied.len() {
        0 => Ok(false),
        2 => Ok(true),
        _ => bail!("{}: a question-answering head needs qa_outputs.weight and qa_outputs.bias; applied {:?}, errors {:?}", weights.display(), result.applied, result.errors),
    }
}

/// The default encoder: `$PHRASESWEEP_MODEL_DIR`, else where `make setup` puts all-MiniLM-L6-v2.
pub fn default_model_dir() -> PathBuf {
    crate::env::get().model_dir.clone()
}

pub fn read_config(dir: &Path) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: BertConfig =
        serde_json::from_str(&text).with_context(|| format!("{}: not a BERT config", path.display()))?;
    if config.hidden_act != "gelu" {
        bail!("{}: field `hidden_act`: {:?} is not supported (only exact \"gelu\")", path.display(), config.hidden_act);
    }
    if config.hidden_size % config.num_attention_heads != 0 {
        bail!("{}: hidden_size is not a multiple of num_attention_heads", path.display());
    }
    Ok(config)
}

/// `tokenizer.json`, or a BERT WordPiece tokenizer built from `vocab.txt` (as older checkpoints, the
/// published DensePhrases ones among them, ship it), lowercasing as `tokenizer_config.json` says (or,
/// without one, when the vocabulary has no capitals).
pub fn read_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if path.exists() || !dir.join("vocab.txt").exists() {
        return Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()));
    }
    wordpiece_tokenizer(dir)
}

fn wordpiece_tokenizer(dir: &Path) -> Result<Tokenizer> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    use tokenizers::Model as _;
    let vocab = dir.join("vocab.txt");
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot build a tokenizer from {}: {e}", vocab.display());
    // Without a word in `tokenizer_config.json`, a vocabulary with capital letters (A–Z) is a cased one.
    let lowercase = match std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["do_lower_case"].as_bool())
    {
        Some(said) => said,
        None => {
            let words = std::fs::read_to_string(&vocab).with_context(|| format!("cannot read {}", vocab.display()))?;
            !words.lines().any(|w| !w.starts_with('[') && w.chars().any(|c| c.is_ascii_uppercase()))
        }
    };
    let model = WordPiece::from_file(&vocab.display().to_string()).unk_token("[UNK]".into()).build().map_err(|e| fail(&e))?;
    let id = |t: &str| model.get_vocab().get(t).copied().with_context(|| format!("{}: no {t} token", vocab.display()));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase))).map_err(|e| fail(&e))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tokenizer)
}

/// The weights file of a model directory.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{} holds neither model.safetensors nor pytorch_model.bin", dir.display())
}

/// Checks, from a safetensors file's header alone, that its word embeddings have the config's
/// `hidden_size` and `vocab_size` (other weight formats are checked when loaded).
pub fn check_weights_fit(weights: &Path, config: &BertConfig) -> Result<()> {
    if weights.extension().is_none_or(|e| e != "safetensors") {
        return Ok(());
    }
    use std::io::Read;
    let mut file = std::fs::File::open(weights).with_context(|| format!("cannot read {}", weights.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(|| format!("{}: not a safetensors file", weights.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("{}: not a safetensors file (header of {len} bytes)", weights.display());
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(|| format!("{}: not a safetensors file", weights.display()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).with_context(|| format!("{}: not a safetensors file", weights.display()))?;
    let shape = header
        .iter()
        .find(|(k, _)| k.ends_with("word_embeddings.weight"))
        .and_then(|(_, v)| serde_json::from_value::<Vec<usize>>(v["shape"].clone()).ok());
    if let Some(shape) = shape
        && shape != [config.vocab_size, config.hidden_size]
    {
        bail!(
            "{}: the word embeddings are {shape:?}, but config.json says vocab_size {} and hidden_size {}: the weights and the config are of different models",
            weights.display(),
            config.vocab_size,
            config.hidden_size
        );
    }
    Ok(())
}

/// Loads what `module` has of a HuggingFace weights file (safetensors or PyTorch), names mapped by `remap`.
fn load_weights<B: Backend, M: ModuleSnapshot<B>>(weights: &Path, module: &mut M, remap: KeyRemapper) -> Result<burn_store::ApplyResult> {
    let cannot = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", weights.display());
    if weights.extension().is_some_and(|e| e == "safetensors") {
        let mut store = SafetensorsStore::from_file(weights).with_from_adapter(PyTorchToBurnAdapter).remap(remap).allow_partial(true);
        module.load_from(&mut store).map_err(|e| cannot(&e))
    } else {
        let mut store = PytorchStore::from_file(weights).remap(remap).allow_partial(true);
        module.load_from(&mut store).map_err(|e| cannot(&e))
    }
}

/// Builds the network of `dir/config.json` and loads its pretrained weights.
pub fn load_bert<B: Backend>(dir: &Path, device: &B::Device) -> Result<(BertConfig, BertModel<B>)> {
    let config = read_config(dir)?;
    let mut model = config.init::<B>(device);
    let weights = weights_file(dir)?;
    let result = load_weights(&weights, &mut model, remapper())?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        bail!(
            "{}: cannot load the encoder: missing tensors {missing:?}; errors {:?}",
            weights.display(),
            result.errors
        );
    }
    Ok((config, model))
}
