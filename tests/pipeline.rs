//! End-to-end: the whole pipeline on the fixture (ingest → encode → index → scan → retrieve → score), embedded
//! and on the farm (RabbitMQ + S3), the exact-match sanity check of the search path, and results.

mod support;

use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(900);

/// The pipeline config: the IVF index forced on (the fixture is small), five retrievals across units and
/// modes; `only` keeps the named ones.
fn pipeline_extra(questions: &std::path::Path, only: Option<&[&str]>) -> String {
    let text = format!(
        r#"
[questions]
path = "{}"
shard_questions = 20

[encode]
model = "default"

[index]
flat_below = 1000

[[retrieval]]
name = "paragraph"
mode = "single"
unit = "paragraph"
encoder = "base"
k = 20

[[retrieval]]
name = "phrase-opt"
mode = "single"
unit = "phrase"
encoder = "base"
opt = true
k = 50

[[retrieval]]
name = "static"
mode = "static"
phrase_encoder = "base"
sentence_encoder = "base"
k = 20

[[retrieval]]
name = "dynamic-opt"
mode = "dynamic"
phrase_encoder = "base"
sentence_encoder = "base"
opt = true
k = 20

[[retrieval]]
name = "bm25-paragraph"
mode = "bm25"
unit = "paragraph"
k = 20
"#,
        questions.display()
    );
    let Some(only) = only else { return text };
    // Retrievals are the `[[retrieval]]` blocks after the first one; keep the wanted ones.
    let mut blocks = text.split("[[retrieval]]");
    let head = blocks.next().unwrap().to_string();
    blocks.filter(|b| only.iter().any(|n| b.contains(&format!("name = \"{n}\"")))).fold(head, |acc, b| acc + "[[retrieval]]" + b)
}

/// `(retrieval, mAR seed, mAR strict)` rows of a printed metrics table.
fn table_rows(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (seed, strict) = (f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?);
            Some((f[0].to_string(), seed, strict))
        })
        .collect()
}

/// One test for both drivers, so the fixture is encoded twice rather than three times: the farm run, then
/// the embedded run that it must agree with.
#[test]
fn pipeline_on_the_farm_and_embedded_scores_every_retrieval_and_finds_a_copied_phrase() {
    let s3 = s3_env();
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let docs = data("fixture/docs.jsonl");
    let extra = pipeline_extra(&data("fixture/questions.jsonl"), None);

    // The farm: a coordinator and two workers over RabbitMQ, storing on S3. Searching over S3 (moto) is
    // request-bound, so the farm runs two of the five retrievals.
    // Its encode jobs are capped at 40 paragraphs: of the fixture's three fragments (147 paragraphs), the
    // two larger are split in two. Its scan jobs take one fragment each: five per question shard, merged
    // by the retrieve jobs. Worker w2 is killed in its first scan job, after writing the job's output and
    // before recording it; w3 comes in its place.
    let farm_extra = pipeline_extra(&data("fixture/questions.jsonl"), Some(&["dynamic-opt", "bm25-paragraph"]))
        .replace("model = \"default\"", "model = \"default\"\njob_paragraphs = 40")
        + "\n[search]\nscan_rows_per_job = 1\n";
    let name = unique("pipeline");
    let queue = format!("{name}.jobs");
    let uri = format!("s3://phrasesweep/{name}");
    let _cleanup = (QueueCleanup::new(&name, &queue), S3Cleanup::new(&uri, &s3));
    let broker = format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n{farm_extra}");
    let farm_config = write_config(dir.path(), &name, &uri, &docs, &broker);
    let w1 = Proc::spawn(&mut worker(&queue, "w1", &s3));
    let mut w2 = Proc::spawn(worker(&queue, "w2", &s3).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000").env("PHRASESWEEP_FAULT_JOB", "scan"));
    let mut coord = Proc::spawn(bin().args(["coordinator", farm_config.to_str().unwrap()]).envs(&s3));
    w2.wait_for_log("fault injection: pausing", LIMIT);
    unsafe { libc::kill(w2.child.id() as i32, libc::SIGKILL) };
    w2.child.wait().unwrap();
    let w3 = Proc::spawn(&mut worker(&queue, "w3", &s3));
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    let farm = table_rows(&coord.log());
    let farm_names: Vec<&str> = farm.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(farm_names, ["dynamic-opt", "bm25-paragraph"], "{}", coord.log());
    assert!(coord.log().contains("planned stage stage=scan jobs=11"), "2 shards × 5 fragments, and the BM25 index:\n{}", coord.log());
    let logs = format!("{}{}", w1.log(), w3.log());
    let retried: Vec<&str> = logs.lines().filter(|l| l.contains("started job") && l.contains("attempt=2")).collect();
    assert!(retried.len() == 1 && retried[0].contains("what=scan"), "the killed scan job, and only it, is redone:\n{logs}");
    assert!(w1.log().contains("finished job") && w2.log().contains("started job"), "the workers share the jobs");
    let res = run_bounded(bin().args(["results", &uri]).envs(&s3), LIMIT);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(table_rows(&String::from_utf8_lossy(&res.stdout)), farm, "results reads the table back from S3");
    let secret = &s3["AWS_SECRET_ACCESS_KEY"];
    for (who, log) in [("coordinator", coord.log()), ("w1", w1.log()), ("w2", w2.log()), ("w3", w3.log())] {
        assert!(!log.contains(secret.as_str()), "{who} logged the S3 secret");
    }

    // Embedded, on local disk.
    let store = dir.path().join("store");
    let config = write_config(dir.path(), "pipeline", store.to_str().unwrap(), &docs, &extra);
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let rows = table_rows(&stdout);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["paragraph", "phrase-opt", "static", "dynamic-opt", "bm25-paragraph"], "{stdout}");
    for (name, seed, strict) in &rows {
        assert!((0.0..=1.0).contains(seed) && (0.0..=1.0).contains(strict), "{name}: {seed} {strict}");
    }
    // Each retrieval exported as the study's run file and scored from it gives the table's mAR.
    let runs = dir.path().join("runs");
    let export = run_bounded(bin().args(["results", store.to_str().unwrap(), "--export-runs", runs.to_str().unwrap()]), LIMIT);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    for (name, seed, strict) in &rows {
        let file = runs.join(format!("{name}.tsv"));
        let scored = run_bounded(bin().args(["score", file.to_str().unwrap(), data("fixture/questions.jsonl").to_str().unwrap()]), LIMIT);
        assert!(scored.status.success(), "{}", String::from_utf8_lossy(&scored.stderr));
        let got = table_rows(&String::from_utf8_lossy(&scored.stdout));
        assert_eq!((got[0].1, got[0].2), (*seed, *strict), "{name}: its run file scores as its score job");
    }
    let row = |rows: &[(String, f64, f64)], name: &str| rows.iter().find(|r| r.0 == name).cloned().unwrap();
    assert!(row(&rows, "bm25-paragraph").2 > 0.3, "BM25 over a corpus holding every gold paragraph finds answers: {stdout}");
    assert_eq!(row(&farm, "bm25-paragraph"), row(&rows, "bm25-paragraph"), "BM25 is deterministic: farm and embedded agree");
    assert_eq!(row(&farm, "dynamic-opt"), row(&rows, "dynamic-opt"), "the farm's ten merged scan jobs equal the embedded run's one scan per shard");
    let encode = |log: &str, what: &str| -> u64 {
        let line = log.lines().find(|l| l.contains(what) && l.contains("stage=encode")).unwrap_or_else(|| panic!("no `{what}` line for encode:\n{log}"));
        let field = if what == "planned stage" { "jobs=" } else { "rows=" };
        line.split_whitespace().find_map(|w| w.strip_prefix(field)).unwrap().parse().unwrap()
    };
    let embedded_log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!((encode(&coord.log(), "planned stage"), encode(&embedded_log, "planned stage")), (5, 3), "encode jobs split at 40 paragraphs");
    assert_eq!(encode(&coord.log(), "committed stage"), encode(&embedded_log, "committed stage"), "split jobs encode every token once");

    scan_equals_exact_search(&store, &data("fixture/questions.jsonl"));

    // The same sweep with f16 vectors (half the bytes stored and scanned): the same spans for at least
    // 99 % of hits, and every retrieval's mAR within 0.005.
    let half = dir.path().join("store-f16");
    let extra_f16 = extra.replace("model = \"default\"", "model = \"default\"\ndtype = \"f16\"");
    let config_f16 = write_config(dir.path(), "pipeline-f16", half.to_str().unwrap(), &docs, &extra_f16);
    let out_f16 = run_bounded(bin().args(["run", config_f16.to_str().unwrap()]), LIMIT);
    assert!(out_f16.status.success(), "f16 run failed:\n{}", String::from_utf8_lossy(&out_f16.stderr));
    let rows_f16 = table_rows(&String::from_utf8_lossy(&out_f16.stdout));
    assert_eq!(rows_f16.len(), rows.len());
    for ((name, seed, strict), (name16, seed16, strict16)) in rows.iter().zip(&rows_f16) {
        assert_eq!(name, name16);
        assert!((seed - seed16).abs() <= 0.005 && (strict - strict16).abs() <= 0.005, "{name}: mAR {seed}/{strict} with f32, {seed16}/{strict16} with f16");
    }
    f16_spans_agree(&store, &half, &data("fixture/questions.jsonl"));

    // A phrase copied verbatim from a paragraph retrieves that paragraph first.
    let copied = "equipped with ten cameras: one on the host, three on the passengers";
    let search = run_bounded(
        bin().args(["search", "--index", store.to_str().unwrap(), "--unit", "paragraph", "-k", "5", copied]),
        LIMIT,
    );
    let found = String::from_utf8_lossy(&search.stdout);
    assert!(search.status.success(), "{}", String::from_utf8_lossy(&search.stderr));
    let first = found.lines().next().unwrap_or_default();
    assert!(first.contains("Cash Cab") && first.contains(copied), "first hit must be the source paragraph:\n{found}");

    let again = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("nothing to do"), "a finished sweep reruns nothing:\n{stdout}");

    // The archive: every run stays in its store's ledger (the rerun hid nothing), and SQL reads the
    // ledgers of the S3 and the local store together.
    let archive = |args: &[&str]| -> Vec<Vec<String>> {
        let out = run_bounded(bin().arg("results").args([store.to_str().unwrap(), uri.as_str()]).args(args).envs(&s3), LIMIT);
        assert!(out.status.success(), "results {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split(',').map(String::from).collect()).collect()
    };
    let runs = archive(&["--sql", "SELECT sweep, status, jobs_executed, commit FROM runs ORDER BY sweep, jobs_executed DESC", "--format", "csv"]);
    assert_eq!(runs[0], ["sweep", "status", "jobs_executed", "commit"]);
    let sweeps: Vec<(&str, &str, bool)> = runs[1..].iter().map(|r| (r[0].as_str(), r[1].as_str(), r[2] != "0")).collect();
    assert_eq!(sweeps, [("pipeline", "done", true), ("pipeline", "done", false), (name.as_str(), "done", true)], "{runs:?}");
    assert!(runs[1..].iter().all(|r| r[3].len() >= 12 && r[3] != "unknown"), "each run names the commit it was built from: {runs:?}");
    let json = run_bounded(
        bin().args(["results", store.to_str().unwrap(), &uri, "--where", "retrieval = 'bm25-paragraph'", "--sort", "sweep, started_unix", "--format", "json"]).envs(&s3),
        LIMIT,
    );
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let bm25: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let found: Vec<(&str, f64)> = bm25.iter().map(|r| (r["sweep"].as_str().unwrap(), r["mar_seed"].as_f64().unwrap())).collect();
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), ["pipeline", "pipeline", name.as_str()], "both embedded runs and the farm's: {bm25:?}");
    let expected = row(&rows, "bm25-paragraph").1;
    assert!(found.iter().all(|(_, m)| (m - expected).abs() < 1e-4), "{found:?} against {expected}");
    assert!(bm25.iter().all(|r| r["run_id"].is_string() && r["mar_strict"].is_f64() && r.get("curve_seed").is_none()), "{bm25:?}");
    let configs = run_bounded(bin().args(["results", &uri, "--sql", "SELECT config FROM runs", "--format", "json"]).envs(&s3), LIMIT);
    let configs = String::from_utf8_lossy(&configs.stdout);
    assert!(configs.contains("amqp://guest:***@") && !configs.contains("guest:guest"), "the ledger keeps the broker URL without its password:\n{configs}");
    let counted = archive(&["--sql", "SELECT count(*) AS n FROM questions WHERE retrieval = 'static'", "--format", "csv"]);
    assert_eq!(counted[1], ["80"], "40 questions in each of the two embedded runs: {counted:?}");
    // Two runs compared: the f16 store's against the first f32 run, question by question.
    let first_run = |s: &std::path::Path| {
        let out = run_bounded(bin().args(["results", s.to_str().unwrap(), "--sql", "SELECT run_id FROM runs ORDER BY run_id", "--format", "csv"]), LIMIT);
        String::from_utf8_lossy(&out.stdout).lines().nth(1).expect("a run").to_string()
    };
    let (f32_run, f16_run) = (first_run(&store), first_run(&half));
    let compared = run_bounded(
        bin().args(["compare", &f16_run, &f32_run[..16], "--store", store.to_str().unwrap(), "--store", half.to_str().unwrap(), "--retrieval", "static"]),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&compared.stdout);
    assert!(compared.status.success(), "{}", String::from_utf8_lossy(&compared.stderr));
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("static: mAR") && first.contains("over 40 paired questions") && text.contains("better in"), "{text}");
    // `…): +0.0012, 95 % interval [-0.0010, +0.0034] over 40 paired questions`
    let tail = first.rsplit_once("): ").map_or("", |t| t.1);
    let numbers: Vec<f64> = tail.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).filter_map(|w| w.parse().ok()).collect();
    let (diff, lo, hi) = (numbers[0], numbers[2], numbers[3]);
    assert!(lo <= diff && diff <= hi && diff.abs() <= 0.005, "{first}: {numbers:?}");
    let parquet = dir.path().join("results.parquet");
    let out = run_bounded(bin().args(["results", store.to_str().unwrap(), "--format", "parquet", "-o", parquet.to_str().unwrap()]), LIMIT);
    assert!(out.status.success() && std::fs::read(&parquet).unwrap().starts_with(b"PAR1"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The fixture's questions by the pretrained query encoder.
fn fixture_queries(questions: &std::path::Path) -> Vec<(Vec<f32>, Vec<f32>)> {
    use phrasesweep_schemas::settings::SearchSettings;
    use phrasesweep_workers::model::device::Cpu;
    use phrasesweep_workers::model::encoders::encode_queries;
    use phrasesweep_workers::model::registry::{load_query_encoder, model_ref};
    use phrasesweep_workers::text::questions::parse_questions;
    let qs = parse_questions("questions", 1, &std::fs::read(questions).unwrap()).unwrap();
    let texts: Vec<&str> = qs.iter().map(|q| q.question.as_str()).collect();
    let (model, text) = load_query_encoder::<Cpu>(&model_ref("default").unwrap(), &Default::default()).unwrap();
    encode_queries(&model, &text, &texts, SearchSettings::default().query_len, 16, &Default::default()).unwrap()
}

/// A run's committed phrase index, and its phrases dataset at that version.
async fn committed_index(store: &std::path::Path) -> (phrasesweep_workers::index::search::PhraseIndex, lance::Dataset) {
    use phrasesweep_schemas::job::DatasetVersion;
    use phrasesweep_schemas::record::{CORPUS_DATASET, PHRASES_DATASET, StageCommit, StageKind, stage_path};
    use phrasesweep_schemas::settings::SearchSettings;
    use phrasesweep_workers::index::search::PhraseIndex;
    use phrasesweep_workers::io::lance::open_dataset;
    use phrasesweep_workers::io::store::Store;
    let store = Store::at(store.to_str().unwrap()).unwrap();
    let version = async |kind: StageKind| store.get_json::<StageCommit>(&stage_path(&kind.name())).await.unwrap().unwrap().version;
    let phrases = DatasetVersion { dataset: PHRASES_DATASET.into(), version: version(StageKind::Index).await };
    let corpus = DatasetVersion { dataset: CORPUS_DATASET.into(), version: version(StageKind::Corpus).await };
    let index = PhraseIndex::open(&store, &phrases, &corpus, &SearchSettings::default()).await.unwrap();
    let ds = open_dataset(&store, PHRASES_DATASET).await.unwrap().checkout_version(phrases.version).await.unwrap();
    (index, ds)
}

/// The spans of `s`, as (paragraph, first token, last token).
fn span_keys(spans: &[phrasesweep_workers::index::search::Span]) -> Vec<(u64, u32, u32)> {
    spans.iter().map(|s| (s.corpus_row, s.start_token, s.end_token)).collect()
}

/// The batch scan (what the run retrieved with) finds what the exact per-question search finds, on the
/// fixture's index and questions: the same start and end hits, the same spans, scores within 1e-4, in
/// batches of the default size and of 7 rows (so paragraphs straddle batches); and a scan of three
/// fragment ranges, merged, equals one scan. The IVF index keeps recall@50 of start hits at 0.95 or more.
fn scan_equals_exact_search(store: &std::path::Path, questions: &std::path::Path) {
    use phrasesweep_workers::index::scan::{BATCH_ROWS, Candidates, Queries, scan};
    use phrasesweep_workers::index::search::recall;
    const K: usize = 50;
    let vectors = fixture_queries(questions);
    let queries = Queries::new(&vectors);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (index, ds) = committed_index(store).await;
        let fragments: Vec<_> = ds.get_fragments().iter().map(|f| f.metadata().clone()).collect();
        assert!(fragments.len() >= 3, "the fixture's index has {} fragments", fragments.len());
        let (whole, _) = scan(&ds, None, &queries, K, true, BATCH_ROWS).await.unwrap();
        let (small, _) = scan(&ds, None, &queries, K, true, 7).await.unwrap();
        assert_eq!(whole, small, "batch boundaries change the scan");
        let mut parts = Vec::new();
        for range in [&fragments[..1], &fragments[1..2], &fragments[2..]] {
            parts.push(scan(&ds, Some(range.to_vec()), &queries, K, true, BATCH_ROWS).await.unwrap().0);
        }
        for (i, found) in whole.iter().enumerate() {
            let merged = Candidates::merge(parts.iter().map(|p| p[i].clone()), K);
            assert_eq!(&merged, found, "question {i}: merged fragment ranges differ from one scan");
        }
        let mut ivf_recall = 0.0;
        for (i, ((qs, qe), found)) in vectors.iter().zip(&whole).enumerate() {
            let exact = index.candidates(qs, qe, K, true, true).await.unwrap();
            // Compared as sets: Lance's exact search and the scan's matrix product round differently, so
            // hits of equal score may swap places.
            let addrs = |c: &Candidates| {
                let sorted = |v: Vec<u64>| v.into_iter().collect::<std::collections::BTreeSet<_>>();
                (sorted(c.starts.iter().map(|a| a.addr).collect()), sorted(c.ends.iter().map(|a| a.addr).collect()))
            };
            assert_eq!(addrs(found), addrs(&exact), "question {i}: the scan's hits differ from exact search");
            let key = |s: &phrasesweep_workers::index::search::Span| (s.corpus_row, s.start_token, s.end_token);
            let (mut a, mut b) = (found.spans(K), exact.spans(K));
            a.sort_by_key(key);
            b.sort_by_key(key);
            assert_eq!(span_keys(&a), span_keys(&b), "question {i}: spans differ");
            for (x, y) in a.iter().zip(&b) {
                assert!((x.score - y.score).abs() < 1e-4, "question {i}: scores {} and {}", x.score, y.score);
                assert_eq!((&x.start_vector, &x.end_vector), (&y.start_vector, &y.end_vector), "question {i}: span vectors");
            }
            let starts = |c: &Candidates| c.starts.iter().map(|a| a.addr).collect::<Vec<_>>();
            ivf_recall += recall(&starts(&exact), &starts(&index.candidates(qs, qe, K, false, false).await.unwrap()));
        }
        let ivf_recall = ivf_recall / vectors.len() as f64;
        assert!(ivf_recall >= 0.95, "IVF recall@{K} of start hits {ivf_recall}");
    });
}

/// The spans the scan finds over f16 vectors are those it finds over f32 ones for at least 99 % of the
/// top 50 spans of every fixture question.
fn f16_spans_agree(f32_store: &std::path::Path, f16_store: &std::path::Path, questions: &std::path::Path) {
    use phrasesweep_workers::index::scan::Queries;
    const K: usize = 50;
    let queries = Queries::new(&fixture_queries(questions));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (full, _) = committed_index(f32_store).await;
        let (half, _) = committed_index(f16_store).await;
        let (a, b) = (full.scan(&queries, K, false).await.unwrap().0, half.scan(&queries, K, false).await.unwrap().0);
        let (mut same, mut all) = (0, 0);
        for (x, y) in a.iter().zip(&b) {
            let y: std::collections::HashSet<_> = span_keys(&y.spans(K)).into_iter().collect();
            let x = span_keys(&x.spans(K));
            same += x.iter().filter(|k| y.contains(k)).count();
            all += x.len();
        }
        assert!(same as f64 >= 0.99 * all as f64, "f16 vectors keep {same} of {all} spans");
    });
}

/// The whole training graph in one embedded run: the reader, the phrase encoder distilled from it, the
/// fixture encoded with the trained phrase encoder, two QSFT runs (one distilled, two epochs) trained in
/// parallel against that index, and retrievals that name the trained encoders.
#[test]
fn training_graph_runs_every_stage_and_retrieves_with_the_trained_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let fixture_questions = data("fixture/questions.jsonl");
    let extra = format!(
        r#"
[questions]
path = "{q}"
shard_questions = 40

[encode]
batch_size = 16

[train]
squad_train = "{squad}"
squad_dev = "{squad}"
qsft_train = "{q}"
qsft_dev = "{q}"

[train.reader]
max_examples = 8
eval_examples = 4
max_len = 96
optim = {{ batch_size = 4 }}

[train.phrase]
max_examples = 8
eval_examples = 4
max_len = 96
optim = {{ batch_size = 4 }}
distill = {{ kind = "kl", temperature = 2.0 }}

[[qsft]]
name = "query"
terms = {{ query = 1.0 }}
start_from = "trained"
epochs = 2
max_questions = 8
eval_questions = 8
candidates = 10
optim = {{ batch_size = 4 }}

[[qsft]]
name = "context+distill"
terms = {{ context = 1.0, distill = 1.0 }}
start_from = "trained"
epochs = 1
max_questions = 8
eval_questions = 8
candidates = 10
optim = {{ batch_size = 4 }}
distill = {{ start_epoch = 1 }}

[[retrieval]]
name = "dynamic-qsft"
mode = "dynamic"
phrase_encoder = "query"
sentence_encoder = "context+distill"
opt = true
k = 20

[reader]
budgets = [20, 200]
max_len = 128
"#,
        q = fixture_questions.display(),
        squad = data("squad/dev.jsonl").display(),
    );
    let store = dir.path().join("store");
    let config = write_config(dir.path(), "training", store.to_str().unwrap(), &data("fixture/docs.jsonl"), &extra);
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for stage in ["train-reader", "train-phrase", "encode", "index", "qsft-epoch-1", "qsft-epoch-2", "retrieve", "score", "read"] {
        assert!(stdout.contains(stage), "stage {stage} was not committed:\n{stdout}");
    }
    for line in ["reader: SQuAD dev", "phrase encoder: SQuAD dev", "qsft query epoch 2", "qsft context+distill epoch 1"] {
        assert!(stdout.contains(line), "missing `{line}`:\n{stdout}");
    }
    assert!(table_rows(&stdout).iter().any(|(r, seed, _)| r == "dynamic-qsft" && *seed > 0.0), "{stdout}");
    // The trained reader read the evidence at 20 and 200 words: one row per question and budget, the
    // answer a span of the evidence, and more words read at the larger budget.
    assert!(stdout.contains("EM/F1@20") && stdout.contains("EM/F1@200"), "{stdout}");
    let answers = on_own_runtime(read_answers(store.clone()));
    assert_eq!(answers.len(), 2 * 40, "40 fixture questions × 2 budgets");
    let words = |budget: u64| answers.iter().filter(|a| a.1 == budget).map(|a| a.3).sum::<u64>();
    assert!(answers.iter().all(|a| a.3 <= a.1) && words(200) > words(20), "the evidence is cut at each budget");
    assert!(answers.iter().any(|a| !a.2.is_empty()), "the reader answered");
    let ledger = run_bounded(bin().args(["results", store.to_str().unwrap(), "--sql", "SELECT budget, em, f1, words FROM reading ORDER BY budget", "--format", "csv"]), LIMIT);
    let rows: Vec<Vec<f64>> = String::from_utf8_lossy(&ledger.stdout).lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), 2, "the run ledger has a row per budget: {rows:?}");
    assert!(rows[0][0] == 20.0 && rows[1][0] == 200.0 && rows.iter().all(|r| (0.0..=1.0).contains(&r[1]) && r[2] >= r[1]) && rows[1][3] > rows[0][3], "{rows:?}");
    // `results` has them as columns, and the report draws them.
    let view = run_bounded(bin().args(["results", store.to_str().unwrap(), "--sql", "SELECT em_at_20w, f1_at_200w FROM results", "--format", "csv"]), LIMIT);
    assert_eq!(String::from_utf8_lossy(&view.stdout).lines().count(), 2, "{}", String::from_utf8_lossy(&view.stderr));
    let page = dir.path().join("report.html");
    assert!(run_bounded(bin().args(["report", store.to_str().unwrap(), "-o", page.to_str().unwrap()]), LIMIT).status.success());
    let html = std::fs::read_to_string(&page).unwrap();
    let f1 = html.split("<svg id=\"reader-f1\"").nth(1).expect("a reader chart").split("</svg>").next().unwrap();
    assert_eq!(f1.matches("class=\"curve\"").count(), 1, "one curve per retrieval");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("continuing from the optimiser of the epoch before").count(), 1, "epoch 2 of `query` continues epoch 1's AdamW:\n{log}");
    let epoch_1: Vec<_> = std::fs::read_dir(store.join("models/qsft/query")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().contains("epoch-1-")).collect();
    assert_eq!(epoch_1.len(), 1);
    assert!(epoch_1[0].join("query").exists() && !epoch_1[0].join("optimiser/model.bin").exists(), "epoch 1's checkpoint stays, its spent optimiser goes");
    // Each epoch kept its candidates on the store while it ran, and dropped them when it ended.
    assert_eq!(log.matches("qsft candidates retrieved").count(), 3, "one block per epoch job, searched once:\n{log}");
    let kept: Vec<_> = files_under(&store.join("models")).into_iter().filter(|p| p.to_string_lossy().contains("/kept/")).collect();
    assert!(kept.is_empty(), "finished epochs leave no kept candidates: {kept:?}");
    // Checkpoints live on the store, named by the job that wrote them.
    for kind in ["reader", "phrase", "qsft/query/epoch-2", "qsft/context+distill/epoch-1"] {
        let found = std::fs::read_dir(store.join("models").join(std::path::Path::new(kind).parent().unwrap_or(std::path::Path::new(""))))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(std::path::Path::new(kind).file_name().unwrap().to_str().unwrap()));
        assert!(found, "no checkpoint folder for {kind} under {}", store.join("models").display());
    }
    // Every training job left its log: a learning rate for each step, a loss and gradient norm for
    // each step that learned, each loss term, and the evaluations before and after.
    let logs = on_own_runtime(training_logs(store.clone()));
    let names: Vec<&str> = logs.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5, "reader, phrase encoder, two epochs of `query`, one of `context+distill`: {names:?}");
    for (name, rows) in &logs {
        let metric = |m: &str| rows.iter().filter(|r| r.1 == m).collect::<Vec<_>>();
        let (lr, loss, norm) = (metric("lr"), metric("loss"), metric("grad_norm"));
        assert!(!lr.is_empty() && loss.len() == norm.len(), "{name}: {} lr, {} loss, {} grad_norm rows", lr.len(), loss.len(), norm.len());
        // The second epoch of `query` may find no target among its questions' candidates.
        assert!(!loss.is_empty() || name.contains("epoch-2"), "{name} logged no loss");
        assert!(loss.iter().chain(&norm).all(|r| r.2.is_finite() && r.2 >= 0.0), "{name}: {rows:?}");
        assert!(rows.iter().any(|r| r.1.starts_with("eval.")), "{name} logged no evaluation");
        if name.contains("context+distill") {
            assert!(!metric("loss.context").is_empty() && !metric("loss.distill").is_empty(), "{name}: each term is logged");
        }
    }
    let steps = |name: &str| logs.iter().find(|(n, _)| n.contains(name)).map(|(_, r)| r.iter().filter(|r| r.1 == "lr").map(|r| r.0).collect::<Vec<_>>()).unwrap();
    let (first, second) = (steps("query-epoch-1"), steps("query-epoch-2"));
    assert!(first.iter().max() < second.iter().min(), "epoch 2 continues epoch 1's step numbers: {first:?} {second:?}");
    // The logs are the archive's `training` table too.
    let lr_rows: usize = logs.values().map(|rows| rows.iter().filter(|r| r.1 == "lr").count()).sum();
    let sql = run_bounded(bin().args(["results", store.to_str().unwrap(), "--sql", "SELECT count(*) AS n FROM training WHERE metric = 'lr'", "--format", "csv"]), LIMIT);
    assert!(sql.status.success(), "{}", String::from_utf8_lossy(&sql.stderr));
    assert_eq!(String::from_utf8_lossy(&sql.stdout).lines().nth(1), Some(lr_rows.to_string().as_str()), "{}", String::from_utf8_lossy(&sql.stdout));
    // `status` walks the same pipeline graph as `run`: it reports exactly the stages the run committed,
    // in the same order, each committed with all its jobs done.
    let committed: Vec<&str> = stdout.lines().find_map(|l| l.split_once("committed: ")).expect("a `committed:` line").1.split(", ").collect();
    let status = run_bounded(bin().args(["status", config.to_str().unwrap()]), LIMIT);
    let status_out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status_out}\n{}", String::from_utf8_lossy(&status.stderr));
    let rows: Vec<Vec<&str>> = status_out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), committed, "{status_out}");
    assert!(rows.iter().all(|r| r[1] == r[2] && r.last() != Some(&"no")), "every stage done and committed:\n{status_out}");
    // A second config on the store encodes the corpus with the pretrained encoder: the store's latest
    // index is now that one, and `search --config` still finds the index its own config built, with the
    // query encoder its QSFT run chose.
    let pretrained = write_config(dir.path(), "pretrained", store.to_str().unwrap(), &data("fixture/docs.jsonl"), "[encode]\nbatch_size = 16\n");
    let encoded = run_bounded(bin().args(["run", pretrained.to_str().unwrap()]), LIMIT);
    assert!(encoded.status.success(), "{}", String::from_utf8_lossy(&encoded.stderr));
    let question = "who won the last season of cash cab";
    let searched = |args: &[&str]| -> u64 {
        let out = run_bounded(bin().arg("search").args(args).args(["--unit", "sentence", "-k", "3", question]), LIMIT);
        let (stdout, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.lines().count() == 3, "search {args:?}:\n{stdout}\n{log}");
        let line = log.lines().find(|l| l.contains("searching the phrase index")).unwrap_or_else(|| panic!("no search line:\n{log}"));
        line.split_whitespace().find_map(|w| w.strip_prefix("phrases=")).unwrap().parse().unwrap()
    };
    let latest = searched(&["--index", store.to_str().unwrap()]);
    let own = searched(&["--config", config.to_str().unwrap(), "--query-encoder", "query"]);
    assert!(own < latest, "the training config's index (version {own}) is searched, not the store's latest ({latest})");
    let beyond = run_bounded(bin().args(["search", "--config", pretrained.to_str().unwrap(), "--point", "2", question]), LIMIT);
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("--point 2, but the config has 1 point(s)"), "{}", String::from_utf8_lossy(&beyond.stderr));
    let again = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"), "{}", String::from_utf8_lossy(&again.stdout));
}

/// The training logs of a store, by file name: (step, metric, value) rows.
/// The read stage's answers: (question, budget, answer, words) of every row.
async fn read_answers(store: std::path::PathBuf) -> Vec<(String, u64, String, u64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::UInt64Type;
    let s = phrasesweep_workers::io::store::Store::at(store.to_str().unwrap()).unwrap();
    let mut out = Vec::new();
    for path in s.list("answers/").await.unwrap() {
        for b in phrasesweep_workers::io::parquet::read_parquet(&s, &path).await.unwrap().0 {
            let (q, budget, answer, words) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<UInt64Type>(), b.column(2).as_string::<i32>(), b.column(5).as_primitive::<UInt64Type>());
            out.extend((0..b.num_rows()).map(|i| (q.value(i).to_string(), budget.value(i), answer.value(i).to_string(), words.value(i))));
        }
    }
    out
}

async fn training_logs(store: std::path::PathBuf) -> std::collections::BTreeMap<String, Vec<(u64, String, f64)>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, UInt64Type};
    let s = phrasesweep_workers::io::store::Store::at(store.to_str().unwrap()).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for path in s.list(phrasesweep_workers::train::log::TRAINING_DIR).await.unwrap() {
        let (batches, _) = phrasesweep_workers::io::parquet::read_parquet(&s, &path).await.unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            let (step, metric, value) = (b.column(2).as_primitive::<UInt64Type>(), b.column(3).as_string::<i32>(), b.column(4).as_primitive::<Float64Type>());
            rows.extend((0..b.num_rows()).map(|i| (step.value(i), metric.value(i).to_string(), value.value(i))));
        }
        out.insert(path, rows);
    }
    out
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

/// Job ids are content hashes of what a job does: a refactor that changes how a job is serialised would
/// silently rerun every finished sweep. `configs/demo.toml` (verbatim, less its reader) must plan exactly the jobs
/// recorded in `tests/fixtures/demo-job-ids.txt` (recorded before the pipeline-graph refactor; the retrieve
/// and score ids again when `[search] method` joined the retrieve jobs; the scan, retrieve and score ids
/// again when k became the study's 200 and questions lost their trailing `?`; the retrieve ids again when
/// they stopped hashing the scan outputs' names; the BM25 retrieve and score ids, and one new job, when
/// BM25 moved to an index the scan stage builds). The store, the data and the
/// default model are reached through links at a fixed place, so
/// that the absolute paths the jobs hold are the same on every machine. `PHRASESWEEP_RECORD_JOB_IDS=1`
/// rewrites the list, for a change that is meant to change ids.
#[test]
fn demo_config_plans_the_recorded_job_ids() {
    let base = std::path::Path::new("/tmp/phrasesweep-job-ids");
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(base.join("main/configs")).unwrap();
    std::os::unix::fs::symlink(data("").parent().unwrap(), base.join("shared")).unwrap();
    let model = phrasesweep_workers::model::load::default_model_dir();
    assert!(model.join("model.safetensors").exists(), "{} is missing: run `make setup`", model.display());
    std::os::unix::fs::symlink(&model, base.join("model")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = base.join("main/configs/demo.toml");
    // Without its reader: a trained model's sha256 (and so the read jobs' ids) depends on float-exact
    // training, which differs between CPUs, and training it takes minutes. No other job depends on it.
    let mut demo: toml::Table = std::fs::read_to_string(root.join("configs/demo.toml")).unwrap().parse().unwrap();
    assert!(demo.remove("train").is_some() && demo.remove("reader").is_some(), "the demo trains a reader and reads");
    std::fs::write(&config, toml::to_string(&demo).unwrap()).unwrap();
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_MODEL_DIR", base.join("model")), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ids: Vec<String> =
        std::fs::read_dir(base.join("main/out/demo/jobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    ids.sort();
    let recorded = root.join("tests/fixtures/demo-job-ids.txt");
    if std::env::var_os("PHRASESWEEP_RECORD_JOB_IDS").is_some() {
        std::fs::write(&recorded, ids.join("\n") + "\n").unwrap();
    }
    let expected: Vec<String> = std::fs::read_to_string(&recorded).unwrap().lines().map(String::from).collect();
    assert_eq!(ids.len(), expected.len(), "the demo plans {} jobs, {} were recorded", ids.len(), expected.len());
    let changed: Vec<&String> = ids.iter().filter(|id| !expected.contains(id)).collect();
    assert!(changed.is_empty(), "job ids changed for an unchanged config (an existing store would rerun): {changed:?}");
    let _ = std::fs::remove_dir_all(base);
}
