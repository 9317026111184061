//! `phrasesweep results`: the metrics table of a run, read back from `metrics.parquet` on its store, and
//! its retrievals exported as the reference study's run files; `phrasesweep score`: a run file scored.

use crate::drive::RESULT_FILES_KEY;
use anyhow::{Context, Result};
use phrasesweep_schemas::outcome::Metrics;
use phrasesweep_schemas::record::METRICS_FILE;
use phrasesweep_workers::eval::runfile::{self, MetaValue};
use phrasesweep_workers::eval::table::metrics_from_batch;
use phrasesweep_workers::io::parquet::read_parquet;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::jobs::score::{read_ranked, score_run_lines};
use phrasesweep_workers::text::questions::parse_questions;
use std::collections::{BTreeMap, HashSet};
use tracing::info;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub async fn read_metrics(store: &Store) -> Result<Vec<Metrics>> {
    let (batches, _) = read_parquet(store, METRICS_FILE).await.context("no results yet: run the sweep first")?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(metrics_from_batch(b).with_context(|| store.dataset_uri(METRICS_FILE))?);
    }
    Ok(out)
}

/// The reader's exact match and F1 at each word budget, beside mAR, one retrieval per line.
pub fn reading_table(metrics: &[Metrics], reading: &[phrasesweep_schemas::outcome::ReadOutcome]) -> String {
    let mut t = String::new();
    let Some(first) = reading.first() else { return t };
    let mut head = format!("{:<24} {:>8}", "retrieval", "mAR");
    for b in &first.budgets {
        head += &format!(" {:>11}", format!("EM/F1@{b}"));
    }
    let _ = writeln!(t, "{head} {:>9} {:>12}", "s/question", "pieces@max");
    for r in reading {
        let n = r.questions.max(1) as f64;
        let mar = metrics.iter().find(|m| m.retrieval == r.retrieval).map_or(f64::NAN, |m| m.mar_seed);
        let mut line = format!("{:<24} {mar:>8.4}", r.retrieval);
        for b in 0..r.budgets.len() {
            line += &format!(" {:>11}", format!("{:.3}/{:.3}", r.em[b] / n, r.f1[b] / n));
        }
        let _ = writeln!(t, "{line} {:>9.2} {:>12.0}", r.seconds / n, r.tokens.last().copied().unwrap_or(0) as f64 / n);
    }
    t
}

/// The metrics as an aligned text table, one retrieval per line.
pub fn table(rows: &[Metrics]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<24} {:<14} {:>5} {:>8} {:>10} {:>10} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>7}",
        "retrieval", "mode", "n", "mAR", "mAR-strict", "mAR-mentor", "R@500w", "R@1kw", "R@3kw", "R@1", "R@10", "EM", "words"
    );
    for m in rows {
        let _ = writeln!(
            t,
            "{:<24} {:<14} {:>5} {:>8.4} {:>10.4} {:>10.4} {:>7.3} {:>7.3} {:>7.3} {:>6.3} {:>6.3} {:>6.3} {:>7.0}",
            m.retrieval, m.mode, m.questions, m.mar_seed, m.mar_strict, m.mar_mentor, m.recall_500w, m.recall_1000w, m.recall_3000w,
            m.recall_at_1, m.recall_at_10, m.em_top_phrase, m.mean_words
        );
    }
    t
}

/// Writes one run file per retrieval of the store's last run into `dir` (`<retrieval>.tsv`): a line per
/// question with evidence, `qid \t [texts] \t {meta}`, the meta holding the retrieval, each text's unit,
/// score and query encoder. Returns the files written.
pub async fn export_runs(store: &Store, dir: &Path) -> Result<Vec<PathBuf>> {
    let (_, metadata) = read_parquet(store, METRICS_FILE).await.context("no results yet: run the sweep first")?;
    let files = metadata.iter().find(|(k, _)| k == RESULT_FILES_KEY).map(|(_, v)| v.as_str()).with_context(|| {
        format!("{} predates run-file export (no `{RESULT_FILES_KEY}`): run the sweep again", store.dataset_uri(METRICS_FILE))
    })?;
    let files: BTreeMap<String, Vec<String>> = serde_json::from_str(files).with_context(|| format!("`{RESULT_FILES_KEY}` of {METRICS_FILE}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (retrieval, parts) in &files {
        let mut out = String::new();
        for (qid, rows) in read_ranked(store, parts).await? {
            let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
            let meta = [
                ("retrieval", MetaValue::Text(retrieval.clone())),
                ("units", MetaValue::Texts(rows.iter().map(|r| r.unit.clone()).collect())),
                ("scores", MetaValue::Numbers(rows.iter().map(|r| r.score as f64).collect())),
                ("encoders", MetaValue::Texts(rows.iter().map(|r| r.encoder.clone()).collect())),
            ];
            out.push_str(&runfile::format_line(&qid, &texts, &meta)?);
            out.push('\n');
        }
        let path = dir.join(format!("{retrieval}.tsv"));
        // Written whole, then renamed: a reader never sees half a file.
        let part = path.with_extension("tsv.part");
        std::fs::write(&part, out).with_context(|| format!("cannot write {}", part.display()))?;
        std::fs::rename(&part, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Scores the run file `run` against the questions file `questions` (one JSON question per line, with
/// its answers) in every mAR form; a question without a line has no evidence.
pub fn score_run_file(run: &Path, questions_path: &Path) -> Result<Metrics> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let questions = parse_questions(&questions_path.display().to_string(), 1, &read(questions_path)?)?;
    let text = String::from_utf8(read(run)?).with_context(|| format!("{} is not UTF-8", run.display()))?;
    let name = run.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let lines = runfile::parse(&run.display().to_string(), &text)?;
    // Ids written another way than the questions file's would score 0 without a word: count them.
    let known: HashSet<&str> = questions.iter().map(|q| q.id.as_str()).collect();
    let mut seen = HashSet::new();
    let (mut unknown, mut repeated) = (Vec::new(), 0);
    for l in &lines {
        if !known.contains(l.qid.as_str()) {
            unknown.push(l.qid.as_str());
        } else if !seen.insert(l.qid.as_str()) {
            repeated += 1;
        }
    }
    anyhow::ensure!(
        !seen.is_empty(),
        "{}: none of its {} question ids is in {} (its first: {:?})",
        run.display(),
        lines.len(),
        questions_path.display(),
        unknown.first()
    );
    if !unknown.is_empty() || repeated > 0 {
        tracing::warn!(run = %run.display(), matched = seen.len(), unknown = unknown.len(), repeated, first_unknown = ?unknown.first(), "run file lines that are not scored (a repeated id: its last line counts)");
    }
    info!(run = %run.display(), matched = seen.len(), questions = questions.len(), "scored a run file");
    Ok(score_run_lines(&name, &questions, lines))
}
