//! Model folders named in configs: `default` (the pretrained base), a HuggingFace BERT folder, or a
//! phrasesweep checkpoint. Jobs carry a [`ModelRef`] (the folder and its weights' sha256), so a job's id
//! changes with the weights and a worker refuses weights that changed under it.

use super::bert::BertConfig;
use super::checkpoint::{self, RECORD, TOKENIZER, WEIGHTS, sha256_file};
use super::densephrases;
use super::encoders::{PhraseEncoder, QueryEncoder, Reader};
use crate::io::store::{InputChanged, Store};
use anyhow::Context;
use super::load::{check_weights_fit, default_model_dir, read_config, read_tokenizer, weights_file};
use super::text::TextEncoder;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::backend::Backend;
use phrasesweep_schemas::settings::DEFAULT_MODEL;
use phrasesweep_schemas::job::ModelRef;
use std::path::{Path, PathBuf};

pub const PHRASE_KIND: &str = "phrase-encoder";
pub const QUERY_KIND: &str = "query-encoder";
pub const READER_KIND: &str = "reader";

/// The folder a config's model name stands for.
pub fn model_dir(name: &str) -> PathBuf {
    if name == DEFAULT_MODEL {
        default_model_dir()
    } else {
        densephrases::folder(name).unwrap_or_else(|| PathBuf::from(name))
    }
}

fn is_checkpoint(dir: &Path) -> bool {
    dir.join(RECORD).exists()
}

/// The weights file a model name is pinned by.
fn weights_of(name: &str) -> Result<PathBuf> {
    let dir = model_dir(name);
    if densephrases::folder(name).is_some() {
        Ok(densephrases::weights(&dir))
    } else if is_checkpoint(&dir) {
        Ok(dir.join(WEIGHTS))
    } else {
        weights_file(&dir)
    }
}

/// Pins a model folder by the sha256 of its weights.
pub fn model_ref(name: &str) -> Result<ModelRef> {
    let dir = model_dir(name);
    if !dir.is_dir() {
        let hint = if name == DEFAULT_MODEL { " (run `make setup` to fetch all-MiniLM-L6-v2)" } else { "" };
        bail!("model folder {} does not exist{hint}", dir.display());
    }
    let path = match densephrases::folder(name) {
        Some(_) => format!("{}{}", densephrases::PREFIX, dir.display()),
        None => dir.display().to_string(),
    };
    let weights = weights_of(name)?;
    let sha256 = sha256_file(&weights)?;
    if is_checkpoint(&dir) {
        let record = checkpoint::read_record(&dir)?;
        if record.weights_sha256 != sha256 {
            bail!("{}: sha256 {sha256} does not match its checkpoint record ({}): the weights changed after training", weights.display(), record.weights_sha256);
        }
        tokenizer_of(&dir)?;
    } else if densephrases::folder(name).is_none() {
        // What a job would find only when it loads the model, found while planning: a missing or
        // broken config or tokenizer, weights of another size than the config's.
        let config = read_config(&dir)?;
        read_tokenizer(&dir)?;
        check_weights_fit(&weights, &config)?;
    }
    Ok(ModelRef { path, sha256 })
}

fn checked_dir(r: &ModelRef) -> Result<PathBuf> {
    let dir = model_dir(&r.path);
    let actual = sha256_file(&weights_of(&r.path)?)?;
    if actual != r.sha256 {
        return Err(InputChanged { what: format!("the weights of {}", dir.display()), actual, planned: r.sha256.clone() }.into());
    }
    Ok(dir)
}

/// The tokenizer of a model folder; a checkpoint without its own copy uses its base model's.
fn tokenizer_of(dir: &Path) -> Result<TextEncoder> {
    let source = if is_checkpoint(dir) && !dir.join(TOKENIZER).exists() {
        PathBuf::from(checkpoint::read_record(dir)?.base_model)
    } else {
        dir.to_path_buf()
    };
    TextEncoder::new(read_tokenizer(&source)?)
}

/// Model paths of checkpoints that training jobs wrote to the run's store: `store:<path under the root>`.
pub const STORE_PREFIX: &str = "store:";

/// Where fetched checkpoints are kept, by the sha256 of their weights.
fn cache_dir() -> PathBuf {
    crate::env::get().checkpoint_cache.clone()
}

/// A model a job can load from local disk: store checkpoints are fetched (once per machine, checked
/// against their sha256); local folders are returned as they are.
pub async fn local_model(store: &Store, r: &ModelRef) -> Result<ModelRef> {
    let Some(rel) = r.path.strip_prefix(STORE_PREFIX) else { return Ok(r.clone()) };
    let dir = cache_dir().join(&r.sha256);
    crate::io::store::cached_folder(&dir, RECORD, async |tmp: &Path| {
        for name in checkpoint::FILES {
            let bytes = store.get(&format!("{rel}/{name}")).await?.with_context(|| format!("{rel}/{name} is missing from {}", store.root_uri()))?;
            std::fs::write(tmp.join(name), bytes)?;
        }
        Ok(())
    })
    .await?;
    let local = ModelRef { path: dir.display().to_string(), sha256: r.sha256.clone() };
    checked_dir(&local)?;
    Ok(local)
}

/// Uploads a checkpoint folder to `rel` on the store (the record last, so a reader that sees it sees
/// the rest) and returns its store reference.
pub async fn put_checkpoint(store: &Store, dir: &Path, rel: &str) -> Result<ModelRef> {
    for name in checkpoint::FILES {
        let bytes = std::fs::read(dir.join(name)).with_context(|| format!("cannot read {}", dir.join(name).display()))?;
        store.put(&format!("{rel}/{name}"), bytes).await?;
    }
    Ok(ModelRef { path: format!("{STORE_PREFIX}{rel}"), sha256: sha256_file(&dir.join(WEIGHTS))? })
}

pub fn load_reader<B: Backend>(r: &ModelRef, device: &B::Device) -> Result<(Reader<B>, TextEncoder)> {
    load(r, READER_KIND, |c| Reader::new(c, device), |d| Reader::from_pretrained(d, device), |d| {
        bail!("{}: a DensePhrases checkpoint holds no reader", d.display())
    })
}

/// A checkpoint of `kind`, or a pretrained folder given to `pretrained`, or a DensePhrases checkpoint
/// given to `densephrases`, with its tokenizer.
fn load<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    r: &ModelRef,
    kind: &str,
    init: impl FnOnce(&BertConfig) -> M,
    pretrained: impl FnOnce(&Path) -> Result<M>,
    densephrases: impl FnOnce(&Path) -> Result<M>,
) -> Result<(M, TextEncoder)> {
    let dir = checked_dir(r)?;
    let model = if densephrases::folder(&r.path).is_some() {
        densephrases(&dir)?
    } else if is_checkpoint(&dir) {
        checkpoint::load(&dir, kind, init)?.1
    } else {
        pretrained(&dir)?
    };
    Ok((model, tokenizer_of(&dir)?))
}

pub fn load_phrase_encoder<B: Backend>(r: &ModelRef, device: &B::Device) -> Result<(PhraseEncoder<B>, TextEncoder)> {
    load(
        r,
        PHRASE_KIND,
        |c| PhraseEncoder::new(c, device),
        |d| PhraseEncoder::from_pretrained(d, device),
        |d| densephrases::load_phrase_encoder(d, device),
    )
}

pub fn load_query_encoder<B: Backend>(r: &ModelRef, device: &B::Device) -> Result<(QueryEncoder<B>, TextEncoder)> {
    load(
        r,
        QUERY_KIND,
        |c| QueryEncoder::new(c, device),
        |d| QueryEncoder::from_pretrained(d, device),
        |d| densephrases::load_query_encoder(d, device),
    )
}
