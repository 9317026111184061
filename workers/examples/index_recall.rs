//! Recall@100 of the IVF index's start hits against exact search, and the time of one search, for several
//! `nprobes`/`refine` settings over a run's committed index. Questions: the first `N` of a questions file,
//! encoded by the pretrained query encoder.
//!
//! `index_recall STORE QUESTIONS N NPROBES:REFINE...`, for example
//! `index_recall out/eval-dev ../shared/data/nq/dev.jsonl 8 64:10 64:0 256:30`.

mod support;

use anyhow::{Context, Result};
use phrasesweep_schemas::settings::SearchSettings;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::record::{StageCommit, stage_path};
use phrasesweep_workers::index::search::{PhraseIndex, recall};
use phrasesweep_workers::io::store::Store;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, questions, n, settings @ ..] = args.as_slice() else {
        anyhow::bail!("usage: index_recall STORE QUESTIONS N NPROBES:REFINE...");
    };
    let store = Store::at(store)?;
    let version = async |stage: &str| -> Result<u64> {
        let c: StageCommit = store.get_json(&stage_path(stage)).await?.with_context(|| format!("no committed {stage} stage"))?;
        Ok(c.version)
    };
    let phrases = DatasetVersion { dataset: "phrases.lance".into(), version: version("index").await? };
    let corpus = DatasetVersion { dataset: "corpus.lance".into(), version: version("ingest").await? };
    let queries = support::first_q_starts(questions, n)?;

    let index = PhraseIndex::open(&store, &phrases, &corpus, &SearchSettings::default()).await?;
    let started = Instant::now();
    let mut exact = Vec::new();
    for q in &queries {
        exact.push(index.nearest(q, 100, true).await?);
    }
    println!("exact search: {:.2} s per question over {} vectors", started.elapsed().as_secs_f64() / queries.len() as f64, index.rows());
    for (nprobes, refine) in support::probes(settings)? {
        let search = SearchSettings { nprobes, refine, ..Default::default() };
        let index = PhraseIndex::open(&store, &phrases, &corpus, &search).await?;
        let (mut seconds, mut sum) = (0.0, 0.0);
        for (q, exact) in queries.iter().zip(&exact) {
            let started = Instant::now();
            let found = index.nearest(q, 100, false).await?;
            seconds += started.elapsed().as_secs_f64();
            sum += recall(exact, &found);
        }
        let n = queries.len() as f64;
        println!("nprobes {nprobes:>4} refine {refine:>3}: recall@100 {:.3}, {:.3} s per search", sum / n, seconds / n);
    }
    Ok(())
}
