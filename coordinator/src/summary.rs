//! What `run` prints at the end: what the corpus dataset holds.

use phrasesweep_schemas::record::CORPUS_DATASET;
use anyhow::Result;
use arrow::array::AsArray;
use arrow::datatypes::UInt32Type;
use futures::TryStreamExt;
use phrasesweep_schemas::tables::corpus;
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::io::store::Store;
use std::collections::HashSet;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CorpusSummary {
    pub uri: String,
    pub version: u64,
    pub documents: u64,
    pub paragraphs: u64,
    pub sentences: u64,
    pub words: u64,
}

impl std::fmt::Display for CorpusSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corpus: {} documents, {} paragraphs, {} sentences, {} words\n  dataset: {} (version {})",
            self.documents, self.paragraphs, self.sentences, self.words, self.uri, self.version
        )
    }
}

pub async fn corpus_summary(store: &Store) -> Result<CorpusSummary> {
    let ds = open_dataset(store, CORPUS_DATASET).await?;
    let mut s = CorpusSummary { uri: store.dataset_uri(CORPUS_DATASET), version: ds.version().version, ..Default::default() };
    let mut docs = HashSet::new();
    let mut scan = ds.scan();
    scan.project(&[corpus::DOC_ID, corpus::TEXT, corpus::SENTENCE_STARTS])?;
    let mut stream = scan.try_into_stream().await?;
    while let Some(batch) = stream.try_next().await? {
        let ids = batch.column_by_name(corpus::DOC_ID).unwrap().as_string::<i32>();
        let text = batch.column_by_name(corpus::TEXT).unwrap().as_string::<i32>();
        let starts = batch.column_by_name(corpus::SENTENCE_STARTS).unwrap().as_list::<i32>();
        for i in 0..batch.num_rows() {
            docs.insert(ids.value(i).to_string());
            s.words += text.value(i).split_whitespace().count() as u64;
            s.sentences += starts.value(i).as_primitive::<UInt32Type>().len() as u64;
        }
        s.paragraphs += batch.num_rows() as u64;
    }
    s.documents = docs.len() as u64;
    Ok(s)
}
