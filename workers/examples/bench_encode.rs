//! Phrase-encoding throughput of the burn encoder on CPU: the first 1,000 paragraphs of the dev corpus,
//! `[CLS] paragraph [SEP]` cut to 256 tokens and ordered by length, batch sizes 1, 8 and 32. Prints one
//! JSON line per batch size; `scripts/bench.sh` runs PyTorch on the same texts and prints the ratio.

use phrasesweep_workers::model::device::Cpu;
use phrasesweep_workers::model::load::{default_model_dir, load_bert, read_tokenizer};
use phrasesweep_workers::model::text::TextEncoder;
use std::time::Instant;

fn main() {
    let model_dir = default_model_dir();
    let corpus = std::env::var("BENCH_CORPUS").unwrap_or_else(|_| {
        format!("{}/../../shared/data/corpus/dev.docs.jsonl", env!("CARGO_MANIFEST_DIR"))
    });
    let n: usize = std::env::var("BENCH_PARAGRAPHS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut paragraphs = Vec::new();
    for line in std::fs::read_to_string(&corpus).expect("corpus").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for p in v["paragraphs"].as_array().unwrap() {
            if paragraphs.len() < n {
                paragraphs.push(p.as_str().unwrap().to_string());
            }
        }
    }
    let device = Default::default();
    let text = TextEncoder::new(read_tokenizer(&model_dir).unwrap()).unwrap();
    let (config, model) = load_bert::<Cpu>(&model_dir, &device).unwrap();
    // In order of length, as the encode job batches them, so a batch pads little.
    let mut rows: Vec<_> = paragraphs.iter().map(|p| text.single(p, 256).unwrap()).collect();
    rows.sort_by_key(|r| r.ids.len());
    let tokens: usize = rows.iter().map(|r| r.ids.len()).sum();
    for batch in [1usize, 8, 32] {
        // Warm up on one batch, then time the whole set.
        let _ = model.forward(text.batch::<Cpu>(&rows[..batch], 0, &device)).into_data();
        let start = Instant::now();
        for chunk in rows.chunks(batch) {
            let _ = model.forward(text.batch::<Cpu>(chunk, 0, &device)).into_data();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"framework": "burn-flex", "batch": batch, "paragraphs": rows.len(),
                "tokens": tokens, "seconds": secs, "tokens_per_s": tokens as f64 / secs,
                "hidden": config.hidden_size, "layers": config.num_hidden_layers})
        );
    }
}
