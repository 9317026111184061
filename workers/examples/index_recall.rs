//! Recall@100 of the IVF index's start hits against exact search, and the time of one search, for several
//! `nprobes`/`refine` settings over a run's committed index. Questions: the first `N` of a questions file,
//! encoded by the pretrained query encoder.
//!
//! `index_recall STORE QUESTIONS N NPROBES:REFINE...`, for example
//! `index_recall out/eval-dev ../shared/data/nq/dev.jsonl 8 64:10 64:0 256:30`.

use anyhow::{Context, Result};
use phrasesweep_schemas::config::{SearchSettings, StoreConfig};
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::record::{StageCommit, stage_path};
use phrasesweep_workers::model::device::Cpu;
use phrasesweep_workers::model::encoders::encode_queries;
use phrasesweep_workers::model::registry::{load_query_encoder, model_ref};
use phrasesweep_workers::questions::parse_questions;
use phrasesweep_workers::search::PhraseIndex;
use phrasesweep_workers::store::Store;
use std::collections::HashSet;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, questions, n, settings @ ..] = args.as_slice() else {
        anyhow::bail!("usage: index_recall STORE QUESTIONS N NPROBES:REFINE...");
    };
    let uri = std::path::absolute(store)?.display().to_string();
    let store = Store::from_config(&StoreConfig { uri, endpoint: None, region: None, allow_http: None, access_key_id: None, secret_access_key: None })?;
    let version = async |stage: &str| -> Result<u64> {
        let c: StageCommit = store.get_json(&stage_path(stage)).await?.with_context(|| format!("no committed {stage} stage"))?;
        Ok(c.version)
    };
    let phrases = DatasetVersion { dataset: "phrases.lance".into(), version: version("index").await? };
    let corpus = DatasetVersion { dataset: "corpus.lance".into(), version: version("ingest").await? };
    let mut qs = parse_questions(questions, 1, &std::fs::read(questions)?)?;
    qs.truncate(n.parse()?);
    let device = Default::default();
    let (model, text) = load_query_encoder::<Cpu>(&model_ref("default")?, &device)?;
    let texts: Vec<&str> = qs.iter().map(|q| q.question.as_str()).collect();
    let vectors = encode_queries(&model, &text, &texts, SearchSettings::default().query_len, 16, &device)?;

    let index = PhraseIndex::open(&store, &phrases, &corpus, &SearchSettings::default()).await?;
    let started = Instant::now();
    let mut exact = Vec::new();
    for (q, _) in &vectors {
        exact.push(index.nearest(q, 100, true).await?);
    }
    println!("exact search: {:.2} s per question over {} vectors", started.elapsed().as_secs_f64() / vectors.len() as f64, index.rows());
    for setting in settings {
        let (nprobes, refine) = setting.split_once(':').context("settings are NPROBES:REFINE")?;
        let search = SearchSettings { nprobes: nprobes.parse()?, refine: refine.parse()?, ..Default::default() };
        let index = PhraseIndex::open(&store, &phrases, &corpus, &search).await?;
        let (mut seconds, mut recall) = (0.0, 0.0);
        for ((q, _), exact) in vectors.iter().zip(&exact) {
            let started = Instant::now();
            let found: HashSet<u64> = index.nearest(q, 100, false).await?.into_iter().collect();
            seconds += started.elapsed().as_secs_f64();
            recall += exact.iter().filter(|a| found.contains(a)).count() as f64 / exact.len().max(1) as f64;
        }
        let n = vectors.len() as f64;
        println!("nprobes {nprobes:>4} refine {refine:>3}: recall@100 {:.3}, {:.3} s per search", recall / n, seconds / n);
    }
    Ok(())
}
