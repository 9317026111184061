//! End-to-end: the embedded pipeline (no broker) ingesting the fixture corpus, bad input, bad config.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_run_reproduces_every_paragraph_and_a_rerun_executes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = data("fixture/docs.jsonl");
    let store = dir.path().join("store");
    let config = write_config(dir.path(), "embedded", store.to_str().unwrap(), &corpus, "");

    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ran 3 jobs"), "{stdout}");
    assert!(stdout.contains("corpus: 60 documents"), "{stdout}");

    let expected = {
        let mut rows = expected_rows(&corpus);
        rows.sort();
        rows
    };
    let got = read_corpus(&store_config(store.to_str().unwrap(), &HashMap::new())).await;
    assert_eq!(got.len(), expected.len(), "one row per paragraph");
    assert_eq!(got, expected, "text, titles and ids come back byte for byte");

    let again = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("nothing to do: all 3 jobs were already done"), "{stdout}");
    assert!(!String::from_utf8_lossy(&again.stderr).contains("started job"), "a rerun must execute no job");

    let status = run_bounded(bin().args(["status", config.to_str().unwrap()]), LIMIT);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.lines().any(|l| l.starts_with("ingest") && l.split_whitespace().nth(2) == Some("3")), "{text}");
    assert!(text.contains("version 1"), "{text}");
}

#[test]
fn malformed_lines_fail_naming_file_line_and_field_and_commit_nothing() {
    let good: Vec<String> = std::fs::read_to_string(data("fixture/docs.jsonl")).unwrap().lines().map(String::from).collect();
    let cases = [
        ("bad-json", "{\"id\": \"x\", \"title\": ", "invalid JSON"),
        ("missing-field", r#"{"id": "x", "title": "T"}"#, "field `paragraphs`: missing"),
        ("empty-title", r#"{"id": "x", "title": "", "paragraphs": ["p"]}"#, "field `title`: is empty"),
        ("not-a-string", r#"{"id": "x", "title": "T", "paragraphs": ["p", {"a": 1}]}"#, "field `paragraphs[1]`: expected a string"),
    ];
    for (name, line, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        // Line 45 lands in the third of three shards, after two shards may already have been written.
        let mut lines = good.clone();
        lines[44] = line.to_string();
        let corpus = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
        let store = dir.path().join("store");
        let config = write_config(dir.path(), name, store.to_str().unwrap(), &corpus, "");
        let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: the run must fail");
        let location = format!("{}:45:", corpus.display());
        assert!(stderr.contains(&location) && stderr.contains(expected), "{name}: error must name {location} and `{expected}`:\n{stderr}");
        assert!(stderr.contains("nothing was committed"), "{stderr}");
        assert!(!store.join("corpus.lance/_versions").exists(), "{name}: nothing may be committed");
        assert!(!store.join("stages").exists(), "{name}: no stage may be recorded");
    }
}

#[test]
fn config_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "name = \"x\"\n[store]\nuri = \"s\"\n[corpus]\npath = \"d\"\nshard_docs = -3\n").unwrap();
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.toml") && stderr.contains("corpus.shard_docs") && stderr.contains("line 6"), "{stderr}");
}

/// Growing a corpus: documents appended to the file are ingested, encoded and merged into the index
/// without touching what is there; other index settings rebuild the index; a change before the end is
/// refused and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_grown_by_appending_documents_adds_only_the_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(data("fixture/docs.jsonl")).unwrap().lines().map(String::from).collect();
    // The article searched for below is among the appended ones.
    let copied = "equipped with ten cameras: one on the host, three on the passengers";
    let at = lines.iter().position(|l| l.contains(copied)).unwrap();
    let cab = lines.remove(at);
    lines.push(cab);
    let corpus = dir.path().join("docs.jsonl");
    std::fs::write(&corpus, lines[..45].join("\n") + "\n").unwrap();
    let store = dir.path().join("store");
    // PQ here, the default quantizer in tests/pipeline.rs: both build and grow.
    let extra = "[encode]\nmodel = \"default\"\n\n[index]\nflat_below = 1000\nquantizer = \"pq\"\n";
    let config = write_config(dir.path(), "grow", store.to_str().unwrap(), &corpus, extra);
    let run = || run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let second = run();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("planned stage stage=ingest jobs=4 to_run=1"), "the three ingested shards are kept:\n{log}");
    assert!(log.contains("planned stage stage=encode jobs=4 to_run=1"), "only the new fragment is encoded:\n{log}");
    assert!(log.contains("merging new phrase fragments into the index"), "the index grows, not rebuilt:\n{log}");
    let mut expected = expected_rows(&corpus);
    expected.sort();
    let local = store_config(store.to_str().unwrap(), &HashMap::new());
    assert_eq!(read_corpus(&local).await, expected, "every paragraph, old and new, once");
    let search = run_bounded(bin().args(["search", "--index", store.to_str().unwrap(), "--unit", "paragraph", "-k", "5", copied]), LIMIT);
    let found = String::from_utf8_lossy(&search.stdout);
    assert!(search.status.success(), "{}", String::from_utf8_lossy(&search.stderr));
    assert!(found.lines().next().unwrap_or_default().contains(copied), "an appended paragraph is found first:\n{found}");

    // A grown store runs again with its shards as they were; other index settings rebuild the index
    // rather than reuse it.
    write_config(dir.path(), "grow", store.to_str().unwrap(), &corpus, &extra.replace("\"pq\"", "\"sq\""));
    let rebuilt = run();
    let log = String::from_utf8_lossy(&rebuilt.stderr);
    assert!(rebuilt.status.success(), "{log}");
    assert!(log.contains("stage already committed stage=ingest") && log.contains("stage already committed stage=encode"), "{log}");
    assert!(log.contains("the index was built with other settings: rebuilding it") && log.contains("quantizer=Sq"), "{log}");
    let search = run_bounded(bin().args(["search", "--index", store.to_str().unwrap(), "--unit", "paragraph", "-k", "5", copied]), LIMIT);
    let found = String::from_utf8_lossy(&search.stdout);
    assert!(found.lines().next().unwrap_or_default().contains(copied), "found first through the rebuilt index:\n{found}");

    lines.swap(0, 1);
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let third = run();
    let log = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success() && log.contains("can only grow by documents appended"), "{log}");
    assert_eq!(read_corpus(&local).await, expected, "a refused change loses nothing");
}
