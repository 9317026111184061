//! Bad input, tried as a new user would: corpus and question lines, training files, configs, model
//! folders, store URIs and broker URLs. Each run must fail with an error that names what is wrong and
//! where (file:line:field, the config key, the URI), show no secret, and leave what the store had
//! committed exactly as it was.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);
/// The broker and store passwords the cases use; no error may show them.
const SECRETS: [&str; 2] = ["hunter2", "s3cret-not-shown"];

/// One bad input: the files it writes into its folder, its config (`{store}`, `{dir}` and `{fixture}`
/// are filled in), and what its error must say.
struct Case {
    name: &'static str,
    /// Run against a store that holds a committed ingest of the fixture (else a new store).
    on_committed: bool,
    files: Vec<(&'static str, Vec<u8>)>,
    config: String,
    env: Vec<(&'static str, String)>,
    expect: Vec<String>,
}

fn case(name: &'static str, config: &str, expect: &[&str]) -> Case {
    Case { name, on_committed: false, files: Vec::new(), config: config.to_string(), env: Vec::new(), expect: expect.iter().map(|s| s.to_string()).collect() }
}

impl Case {
    fn file(mut self, name: &'static str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.push((name, bytes.into()));
        self
    }
    fn committed(mut self) -> Self {
        self.on_committed = true;
        self
    }
    fn env(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.env.push((k, v.into()));
        self
    }
}

/// A config whose corpus is `c.jsonl` in the case's folder.
fn corpus_config(extra: &str) -> String {
    format!("name = \"bad\"\n{extra}\n[store]\nuri = \"{{store}}\"\n[corpus]\npath = \"{{dir}}/c.jsonl\"\nshard_docs = 1\n")
}

/// A config over the committed fixture store, with `extra` sections.
fn fixture_config(extra: &str) -> String {
    format!("name = \"bad\"\n[store]\nuri = \"{{store}}\"\n[corpus]\npath = \"{{fixture}}\"\nshard_docs = 20\n\n{extra}\n")
}

const DOC: &str = r#"{"id": "d1", "title": "T", "paragraphs": ["One sentence."]}"#;
const QUESTION: &str = r#"{"id": "q1", "question": "who?", "answers": ["A"]}"#;
const SQUAD: &str = r#"{"title": "T", "context": "Ada wrote.", "qas": [{"id": "s1", "question": "who wrote?", "answers": [{"text": "Ada", "answer_start": 0}]}]}"#;

/// A model folder: all-MiniLM-L6-v2's files, with `change` applied to the folder.
fn model_folder(dir: &Path, name: &str, change: impl FnOnce(&Path)) -> PathBuf {
    let base = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/phrasesweep/models/all-MiniLM-L6-v2");
    assert!(base.join("model.safetensors").exists(), "the default model is missing: run `make setup`");
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(base.join(f), folder.join(f)).unwrap();
    }
    change(&folder);
    folder
}

fn cases(models: &Path) -> Vec<Case> {
    let m = |name: &str| models.join(name).display().to_string();
    let with_model = |model: String| fixture_config(&format!("[encode]\nmodel = \"{model}\"\n"));
    let retrieval = |r: &str| fixture_config(&format!("[questions]\npath = \"{{dir}}/q.jsonl\"\n\n[[retrieval]]\nname = \"r\"\n{r}\n"));
    let train = |t: &str| fixture_config(&format!("[train]\n{t}\n"));
    vec![
        // The corpus.
        case("duplicate ids across shards", &corpus_config(""), &["c.jsonl:3: field `id`: document id `d1` is already used at line 1", "nothing was committed"])
            .file("c.jsonl", format!("{DOC}\n{}\n{DOC}\n", DOC.replace("d1", "d2"))),
        case("duplicate ids in a shard", &corpus_config("").replace("shard_docs = 1", "shard_docs = 5"), &["c.jsonl:2: field `id`: document id `d1` is already used at line 1"])
            .file("c.jsonl", format!("{DOC}\n{DOC}\n")),
        case("empty paragraphs list", &corpus_config(""), &["c.jsonl:1: field `paragraphs`: is empty"]).file("c.jsonl", DOC.replace(r#"["One sentence."]"#, "[]")),
        case("paragraph not a string", &corpus_config(""), &["c.jsonl:1: field `paragraphs[1]`: expected a string"]).file("c.jsonl", DOC.replace(r#""One sentence.""#, r#""a", 7"#)),
        case("missing id", &corpus_config(""), &["c.jsonl:1: field `id`: missing"]).file("c.jsonl", DOC.replace(r#""id": "d1", "#, "")),
        case("empty title", &corpus_config(""), &["c.jsonl:1: field `title`: is empty"]).file("c.jsonl", DOC.replace(r#""T""#, r#""  ""#)),
        case("line not an object", &corpus_config(""), &["c.jsonl:2", "expected a JSON object"]).file("c.jsonl", format!("{DOC}\n[1, 2]\n")),
        case("truncated line", &corpus_config(""), &["c.jsonl:2"]).file("c.jsonl", format!("{}\n{}\n", DOC.replace("d1", "d0"), &DOC[..30])),
        case("non-UTF-8", &corpus_config(""), &["c.jsonl:2", "not valid UTF-8 at byte"]).file("c.jsonl", [format!("{DOC}\n").into_bytes(), b"{\"id\": \"d\xff\"}\n".to_vec()].concat()),
        case("a 50 MB line", &corpus_config(""), &["c.jsonl:2: the line is longer than 16 MiB"])
            .file("c.jsonl", format!("{DOC}\n{{\"id\": \"big\", \"title\": \"t\", \"paragraphs\": [\"{}\"]}}\n", "ab ".repeat((50 << 20) / 3))),
        case("missing corpus file", &corpus_config(""), &["c.jsonl: no such file"]),
        case("empty corpus file", &corpus_config(""), &["c.jsonl: the corpus holds no documents"]).file("c.jsonl", "\n\n"),
        // Questions, read whole before anything runs.
        case("question without answers", &retrieval("mode = \"bm25\"\nunit = \"paragraph\""), &["q.jsonl:2: field `answers`: needs at least one non-empty answer"])
            .committed()
            .file("q.jsonl", format!("{QUESTION}\n{}\n", QUESTION.replace(r#"["A"]"#, "[]"))),
        case("empty question", &retrieval("mode = \"bm25\"\nunit = \"paragraph\""), &["q.jsonl:1: field `question`: is empty"])
            .committed()
            .file("q.jsonl", QUESTION.replace("who?", " ")),
        case("questions not JSON", &retrieval("mode = \"bm25\"\nunit = \"paragraph\""), &["q.jsonl:1"]).committed().file("q.jsonl", "id,question\n"),
        case("missing questions file", &retrieval("mode = \"bm25\"\nunit = \"paragraph\""), &["q.jsonl: no such file"]).committed(),
        // Training files.
        case("answer past the context", &train("squad_train = \"{dir}/s.jsonl\"\nsquad_dev = \"{dir}/s.jsonl\"\n\n[train.reader]"), &["s.jsonl:1: field `qas[0].answers[0].answer_start`"])
            .committed()
            .file("s.jsonl", SQUAD.replace(r#""answer_start": 0"#, r#""answer_start": 40"#)),
        case("SQuAD line without qas", &train("squad_train = \"{dir}/s.jsonl\"\nsquad_dev = \"{dir}/s.jsonl\"\n\n[train.reader]"), &["s.jsonl:1", "qas"])
            .committed()
            .file("s.jsonl", r#"{"title": "T", "context": "Ada wrote."}"#),
        case("NQ training question without answers", &train("nq_train = \"{dir}/n.jsonl\""), &["n.jsonl:1: field `answers`"])
            .committed()
            .file("n.jsonl", QUESTION.replace(r#"["A"]"#, r#"[""]"#)),
        case("QSFT dev file missing", &train("qsft_dev = \"{dir}/nope.jsonl\""), &["nope.jsonl: no such file"]).committed(),
        // Configs.
        case("wrong type", &fixture_config("").replace("shard_docs = 20", "shard_docs = \"many\""), &["bad.toml", "field `corpus.shard_docs`", "line 6", "invalid type: string"]).committed(),
        case("unknown key", &fixture_config("colour = \"blue\""), &["bad.toml", "unknown field `colour`"]).committed(),
        case("TOML syntax", &fixture_config("[index\n"), &["bad.toml", "TOML parse error at line 8"]).committed(),
        case("unknown retrieval mode", &retrieval("mode = \"fusion\""), &["bad.toml", "field `retrieval[0].mode`", "line 13", "unknown variant `fusion`", "single"]).committed().file("q.jsonl", QUESTION),
        case("k = 0", &retrieval("mode = \"bm25\"\nunit = \"paragraph\"\nk = 0"), &["bad.toml", "field `retrieval[0]`", "field `k`: must be at least 1"]).committed().file("q.jsonl", QUESTION),
        case("unknown query encoder", &retrieval("mode = \"single\"\nunit = \"phrase\"\nencoder = \"nope\""), &["field `retrieval[0].encoder`: no query encoder named `nope`"]).committed().file("q.jsonl", QUESTION),
        case("bad run name", &fixture_config("").replace("name = \"bad\"", "name = \"my run\""), &["field `name`"]).committed(),
        case("no embedded workers", &fixture_config("[embedded]\nworkers = 0"), &["field `embedded.workers`: must be at least 1"]).committed(),
        // Model folders.
        case("model without tokenizer", &with_model(m("no-tokenizer")), &["field `encode.model`", "no-tokenizer/tokenizer.json"]).committed(),
        case("model of another hidden size", &with_model(m("wrong-hidden")), &["field `encode.model`", "word embeddings are [30522, 384]", "hidden_size 768"]).committed(),
        case("model without weights", &with_model(m("no-weights")), &["field `encode.model`", "holds neither model.safetensors nor pytorch_model.bin"]).committed(),
        case("model config not JSON", &with_model(m("bad-config")), &["field `encode.model`", "bad-config/config.json: not a BERT config"]).committed(),
        case("model folder missing", &with_model(m("absent")), &["field `encode.model`", "absent does not exist"]).committed(),
        case("checkpoint whose weights changed", &with_model(m("changed-checkpoint")), &["field `encode.model`", "does not match its checkpoint record"]).committed(),
        // Store URIs.
        case("unsupported scheme", &corpus_config("").replace("{store}", "ftp://x/y"), &["store URI ftp://x/y: the scheme `ftp://` is not supported"]).file("c.jsonl", DOC),
        case("s3 URI without a bucket", &corpus_config("").replace("{store}", "s3://"), &["field `store.uri`", "needs a bucket"]).file("c.jsonl", DOC),
        case("bucket that does not exist", &corpus_config("").replace("{store}", "s3://no-such-bucket-phrasesweep/x"), &["the store s3://no-such-bucket-phrasesweep/x cannot be used: the bucket `no-such-bucket-phrasesweep` does not exist"]).file("c.jsonl", DOC),
        case("wrong S3 secret", &corpus_config("").replace("{store}", "s3://phrasesweep/bad-input"), &["s3://phrasesweep/bad-input", "credentials"])
            .file("c.jsonl", DOC)
            .env("AWS_SECRET_ACCESS_KEY", SECRETS[1]),
        // Broker URLs.
        case("wrong broker password", &corpus_config("[broker]\nurl = \"amqp://guest:hunter2@127.0.0.1:5672/%2f\""), &["cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:5672/%2f"]).file("c.jsonl", DOC),
        case("wrong vhost", &corpus_config("[broker]\nurl = \"amqp://guest:guest@127.0.0.1:5672/nope\""), &["cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:5672/nope", "vhost"]).file("c.jsonl", DOC),
        case("broker URL of another scheme", &corpus_config("[broker]\nurl = \"http://127.0.0.1:5672\""), &["field `broker.url`: must start with amqp://"]).file("c.jsonl", DOC),
        case("delivery limit 0", &corpus_config("[broker]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\ndelivery_limit = 0"), &["field `broker.delivery_limit`: must be at least 1"]).file("c.jsonl", DOC),
    ]
}

/// What a store has committed, and nothing else: every file outside the job records (`jobs/`), the
/// leases (`leases/`), the run ledger (`runs/`, which records failed runs too) and Lance's data files
/// (`*.lance/data/`, which only a committed version makes visible), with its bytes' sha256.
fn committed_state(store: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(store).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("jobs") || rel.starts_with("leases") || rel.starts_with("runs") || rel.contains(".lance/data") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(rel, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
            }
        }
    }
    out
}

/// Every object under an S3 store URI (or why it cannot be listed).
fn s3_objects(uri: &str, env: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    let config = store_config(uri, env);
    on_own_runtime(async move {
        let listed = match phrasesweep_workers::io::store::Store::from_config(&config) {
            Ok(store) => store.list("").await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(paths) => paths.into_iter().map(|p| (p, String::new())).collect(),
            Err(e) => BTreeMap::from([("(cannot list)".to_string(), e.lines().next().unwrap_or_default().to_string())]),
        }
    })
}

#[test]
fn bad_inputs_fail_clearly_show_no_secret_and_change_no_commit() {
    let s3 = s3_env();
    rabbitmq_url();
    let root = tempfile::tempdir().unwrap();
    let fixture = data("fixture/docs.jsonl");

    // The committed store the `committed` cases start from.
    let base = root.path().join("base-store");
    let base_config = write_config(root.path(), "base", base.to_str().unwrap(), &fixture, "");
    let out = run_bounded(bin().args(["run", base_config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(committed_state(&base).keys().any(|k| k.starts_with("stages/")), "the base store has a commit");

    let models = root.path().join("models");
    model_folder(&models, "no-tokenizer", |f| std::fs::remove_file(f.join("tokenizer.json")).unwrap());
    model_folder(&models, "wrong-hidden", |f| {
        let text = std::fs::read_to_string(f.join("config.json")).unwrap().replace("\"hidden_size\": 384", "\"hidden_size\": 768");
        assert!(text.contains("768"));
        std::fs::write(f.join("config.json"), text).unwrap();
    });
    model_folder(&models, "no-weights", |f| std::fs::remove_file(f.join("model.safetensors")).unwrap());
    model_folder(&models, "bad-config", |f| std::fs::write(f.join("config.json"), "hidden_size: 384").unwrap());
    model_folder(&models, "changed-checkpoint", |f| {
        let config = std::fs::read_to_string(f.join("config.json")).unwrap();
        std::fs::rename(f.join("model.safetensors"), f.join("weights.safetensors")).unwrap();
        let record = format!(
            "{{\"kind\": \"phrase-encoder\", \"config\": {config}, \"base_model\": \"{}\", \"base_sha256\": \"\", \"weights_sha256\": \"{}\"}}",
            f.display(),
            "0".repeat(64)
        );
        std::fs::write(f.join("checkpoint.json"), record).unwrap();
    });

    let mut failures = Vec::new();
    let all = cases(&models);
    assert!(all.len() >= 30, "{} cases", all.len());
    for (i, case) in all.into_iter().enumerate() {
        let dir = root.path().join(format!("case-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Job ids hold the store's location: the committed cases share the base store itself (and so
        // also show that none of them changes it).
        let store = if case.on_committed { base.clone() } else { dir.join("store") };
        for (name, bytes) in &case.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let config = case
            .config
            .replace("{store}", store.to_str().unwrap())
            .replace("{dir}", dir.to_str().unwrap())
            .replace("{fixture}", fixture.to_str().unwrap());
        let config_path = dir.join("bad.toml");
        // An S3 store is listed whole (with the right credentials): its cases fail before any write.
        let s3_uri = config.lines().find_map(|l| l.strip_prefix("uri = \"s3://")).map(|u| format!("s3://{}", u.trim_end_matches('"')));
        let state = || match &s3_uri {
            Some(uri) => s3_objects(uri, &s3),
            None => committed_state(&store),
        };
        std::fs::write(&config_path, config).unwrap();
        let before = state();

        let mut cmd = bin();
        cmd.args(["run", config_path.to_str().unwrap()]).envs(&s3);
        for (k, v) in &case.env {
            cmd.env(k, v);
        }
        let out = run_bounded(&mut cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut problems = Vec::new();
        if out.status.success() {
            problems.push("the run succeeded".to_string());
        }
        for e in &case.expect {
            if !stderr.contains(e.as_str()) {
                problems.push(format!("the error does not say `{e}`"));
            }
        }
        if stderr.matches("os error").count() > 1 {
            problems.push("an OS error is shown twice".into());
        }
        for secret in SECRETS.iter().chain([&s3["AWS_SECRET_ACCESS_KEY"].as_str()]) {
            if stderr.contains(secret) {
                problems.push("a secret is shown".into());
            }
        }
        if state() != before {
            problems.push("the store's committed state changed".into());
        }
        if !problems.is_empty() {
            let last: Vec<&str> = stderr.lines().rev().take(3).collect();
            failures.push(format!("{}: {}\n    {}", case.name, problems.join("; "), last.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{} of the bad inputs went wrong:\n{}", failures.len(), failures.join("\n"));
}
