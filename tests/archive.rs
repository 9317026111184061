//! Sweeps and the result archive, end to end on the fixture: a grid of QSFT learning rate × loss terms run
//! embedded into one store (the shared stages run once, a rerun executes nothing, a new axis value runs
//! only its points), the ledger queried by axis, the same experiment on a second store reproduced to the
//! bit, the report rendered in headless Chromium, and the tables read back from Python (DuckDB, pyarrow,
//! pylance).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(600);

/// `configs/sweep-demo.toml` with its store at `store`, its data paths made absolute, and its
/// `[sweep]` axes replaced by `axes` when given.
fn sweep_demo(dir: &Path, store: &Path, axes: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut text = std::fs::read_to_string(root.join("configs/sweep-demo.toml")).unwrap();
    text = text.replace("uri = \"../out/sweep-demo\"", &format!("uri = \"{}\"", store.display()));
    text = text.replace("\"../../shared/data/fixture/", &format!("\"{}/", data("fixture").display()));
    if let Some(axes) = axes {
        text = format!("{}[sweep]\n{axes}\n", &text[..text.find("[sweep]").unwrap()]);
    }
    let path = dir.join(format!("sweep-{}.toml", unique("c")));
    std::fs::write(&path, text).unwrap();
    path
}

fn phrasesweep(args: &[&str]) -> String {
    let out = run_bounded(bin().args(args), LIMIT);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "phrasesweep {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// `phrasesweep results --sql` rows as JSON objects.
fn sql(stores: &[&Path], query: &str) -> Vec<serde_json::Map<String, Value>> {
    let mut args = vec!["results".to_string()];
    args.extend(stores.iter().map(|s| s.display().to_string()));
    args.extend(["--sql".into(), query.into(), "--format".into(), "json".into()]);
    let out = phrasesweep(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap().as_object().unwrap().clone()).collect()
}

/// The stages whose jobs a run of the ledger executed (the keys of its `stage_seconds`).
fn stages_run(row: &serde_json::Map<String, Value>) -> Vec<String> {
    let seconds: serde_json::Map<String, Value> = serde_json::from_str(row["stage_seconds"].as_str().unwrap()).unwrap();
    seconds.keys().cloned().collect()
}

/// The demo sweep (4 points), run once into a store that the tests below read and leave as it is. It
/// outlives the tests that share it, so it lives in cargo's folder for test scratch and each run of this
/// file replaces the last one's (760 MB) rather than leaving it behind.
fn swept() -> &'static PathBuf {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("archive-swept");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        phrasesweep(&["run", sweep_demo(&dir, &store, None).to_str().unwrap()]);
        store
    })
}

#[test]
fn a_sweep_runs_shared_stages_once_reruns_nothing_and_grows_by_its_new_points_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let two = "\"qsft.query.optim.lr\" = [1e-5]\n\"qsft.query.terms\" = [{ query = 1.0 }, { query = 1.0, context = 1.0 }]";
    let config = sweep_demo(dir.path(), &store, Some(two));
    let plan = phrasesweep(&["plan", config.to_str().unwrap()]);
    assert!(plan.contains("2 point(s)") && plan.contains("axes: qsft.query.optim.lr, qsft.query.terms"), "{plan}");
    let ingest: Vec<&str> = plan.lines().rev().find(|l| l.trim_start().starts_with("ingest")).unwrap().split_whitespace().collect();
    assert_eq!(ingest, ["ingest", "3", "0", "3"], "the corpus's 3 ingest jobs, shared:\n{plan}");

    phrasesweep(&["run", config.to_str().unwrap()]);
    let runs = sql(&[&store], "SELECT point, stage_seconds, jobs_executed FROM runs ORDER BY started_unix, run_id");
    assert_eq!(runs.len(), 2);
    let (first, second) = (stages_run(&runs[0]), stages_run(&runs[1]));
    for shared in ["ingest", "encode", "index"] {
        assert!(first.contains(&shared.to_string()) && !second.contains(&shared.to_string()), "{shared} runs once: {first:?} then {second:?}");
    }
    assert!(second.contains(&"qsft-epoch-1".to_string()), "each point trains its own run: {second:?}");
    let executed = |r: &serde_json::Map<String, Value>| r["jobs_executed"].as_u64().unwrap();
    assert!(executed(&runs[1]) < executed(&runs[0]), "the second point reuses the first's retrievals with the base encoder and BM25");

    let again = phrasesweep(&["run", config.to_str().unwrap()]);
    assert_eq!(again.matches("nothing to do").count(), 2, "a rerun executes no job:\n{again}");

    // A new learning rate: two new points, and only their own jobs run.
    let four = two.replace("[1e-5]", "[1e-5, 1e-4]");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace(two, &four)).unwrap();
    let grown = phrasesweep(&["run", config.to_str().unwrap()]);
    assert_eq!(grown.matches("nothing to do").count(), 2, "{grown}");
    let own = executed(&runs[1]);
    let runs = sql(&[&store], "SELECT point, stage_seconds, jobs_executed FROM runs WHERE \"qsft.query.optim.lr\" = 0.0001 ORDER BY started_unix");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(executed(r), own, "a new point runs as many jobs as the second point did: its QSFT run and what retrieves with it");
        let stages = stages_run(r);
        assert!(!stages.is_empty() && stages.iter().all(|s| ["qsft-epoch-1", "scan", "retrieve", "score"].contains(&s.as_str())), "a new point runs its own stages only: {stages:?}");
    }

    let status = phrasesweep(&["status", config.to_str().unwrap()]);
    for (i, point) in ["lr=0.00001 terms={query=1.0}", "lr=0.00001 terms={context=1.0,query=1.0}", "lr=0.0001 terms={query=1.0}", "lr=0.0001 terms={context=1.0,query=1.0}"].iter().enumerate() {
        let header = format!("point {}/4: {point}", i + 1);
        let section = status.split(&header).nth(1).unwrap_or_else(|| panic!("no `{header}` in:\n{status}"));
        let score = status_row(section, "score");
        assert_eq!(score[0], score[1], "{point}: every score job done:\n{status}");
    }
    let plan = phrasesweep(&["plan", config.to_str().unwrap()]);
    let all = plan.split("all points").nth(1).unwrap();
    assert!(all.lines().skip(2).all(|l| l.split_whitespace().nth(3) == Some("0")), "nothing left to run:\n{plan}");

    // The axes are columns of the `results` view: filter and sort by them.
    let rows = sql(&[&store], "SELECT \"qsft.query.optim.lr\" AS lr, \"qsft.query.terms\" AS terms, mar_seed FROM results WHERE retrieval = 'sentence-qsft' AND jobs_executed > 0 ORDER BY lr, terms");
    let axes: Vec<(f64, &str)> = rows.iter().map(|r| (r["lr"].as_f64().unwrap(), r["terms"].as_str().unwrap())).collect();
    assert_eq!(axes, [(1e-5, "{context=1.0,query=1.0}"), (1e-5, "{query=1.0}"), (1e-4, "{context=1.0,query=1.0}"), (1e-4, "{query=1.0}")]);
}

/// An axis of the encoder: each point encodes and indexes the corpus its own way, into versions of one
/// `phrases` dataset. Each keeps its own commit of those stages, so a rerun of the sweep finds both and
/// runs nothing (the stage's latest commit alone would make the first point commit and index again);
/// and a new index setting, added later, is built on each point's own vectors (restored as the latest
/// version), not on whichever encoding was committed last.
#[test]
fn an_encoder_axis_keeps_each_points_index_and_a_rerun_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let axes = "\"encode.batch_size\" = [8, 16]\n\"index.flat_below\" = [100]\n\"index.partitions\" = [2]";
    let config = sweep_demo(dir.path(), &store, Some(axes));
    phrasesweep(&["run", config.to_str().unwrap()]);
    let runs = sql(&[&store], "SELECT stage_seconds FROM runs ORDER BY started_unix, run_id");
    assert!(runs.iter().all(|r| stages_run(r).contains(&"encode".to_string()) && stages_run(r).contains(&"index".to_string())), "each point encodes and indexes: {runs:?}");
    let again = phrasesweep(&["run", config.to_str().unwrap()]);
    assert_eq!(again.matches("nothing to do").count(), 2, "{again}");
    assert!(!again.contains("committed:"), "no stage is committed again:\n{again}");

    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("\"index.partitions\" = [2]", "\"index.partitions\" = [2, 3]")).unwrap();
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("restoring the planned version to index it").count(), 2, "both new points index their own encoding:\n{log}");
    let data = on_own_runtime(phrase_files_of_each_index(store.clone()));
    assert_eq!(data.len(), 4, "an index commit per point");
    let mut uses: std::collections::BTreeMap<&Vec<String>, usize> = Default::default();
    for d in &data {
        *uses.entry(d).or_default() += 1;
    }
    assert_eq!(uses.into_values().collect::<Vec<_>>(), [2, 2], "each encoding is indexed by its own two points");
}

/// For each committed index stage (one per point): the data files of the phrase version it indexed,
/// checked against the encode commit it was planned from.
async fn phrase_files_of_each_index(store: PathBuf) -> Vec<Vec<String>> {
    use phrasesweep_schemas::record::StageCommit;
    let s = phrasesweep_workers::io::store::Store::at(store.to_str().unwrap()).unwrap();
    let files = async |version: u64| {
        let ds = phrasesweep_workers::io::lance::open_dataset(&s, phrasesweep_schemas::record::PHRASES_DATASET).await.unwrap().checkout_version(version).await.unwrap();
        let mut f: Vec<String> = ds.get_fragments().iter().flat_map(|f| f.metadata().files.iter().map(|d| d.path.clone())).collect();
        f.sort();
        f
    };
    let mut encoded = Vec::new();
    for path in s.list("stages/encode/").await.unwrap() {
        encoded.push(files(s.get_json::<StageCommit>(&path).await.unwrap().unwrap().version).await);
    }
    let mut out = Vec::new();
    for path in s.list("stages/index/").await.unwrap() {
        let indexed = files(s.get_json::<StageCommit>(&path).await.unwrap().unwrap().version).await;
        assert!(encoded.contains(&indexed), "{path} indexes vectors no encode stage committed");
        out.push(indexed);
    }
    out
}

#[test]
fn the_same_experiment_on_another_store_reproduces_every_table_to_the_bit() {
    let a = swept();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("store");
    let one = "\"qsft.query.optim.lr\" = [1e-5]\n\"qsft.query.terms\" = [{ query = 1.0 }]";
    phrasesweep(&["run", sweep_demo(dir.path(), &b, Some(one)).to_str().unwrap()]);

    // The point's config, less where it ran, has one hash; `results` compares the runs that share it.
    let said = phrasesweep(&["results", a.to_str().unwrap(), b.to_str().unwrap()]);
    let line = said.lines().find(|l| l.contains("reproduce")).unwrap_or_else(|| panic!("no reproduction noted:\n{said}"));
    assert!(line.contains("2 runs computed it") && !said.contains("differ"), "{said}");

    // Every results and per-question table of store B is in store A under the same name, equal to the bit.
    let (a, b) = (a.clone(), b.clone());
    let compared = on_own_runtime(async move {
        let (sa, sb) = (phrasesweep_workers::io::store::Store::at(a.to_str().unwrap()).unwrap(), phrasesweep_workers::io::store::Store::at(b.to_str().unwrap()).unwrap());
        let mut compared = 0;
        for dir in ["results/", "scores/"] {
            for path in sb.list(dir).await.unwrap().into_iter().filter(|p| p.ends_with(".parquet")) {
                let (mine, _) = phrasesweep_workers::io::parquet::read_parquet(&sb, &path).await.unwrap();
                let (theirs, _) = phrasesweep_workers::io::parquet::read_parquet(&sa, &path).await.unwrap_or_else(|e| panic!("{path} is not in store A: {e:#}"));
                assert_eq!(mine, theirs, "{path} differs");
                compared += 1;
            }
        }
        compared
    });
    // 2 question shards × 3 retrievals of results, and 3 retrievals' metrics and per-question tables.
    assert_eq!(compared, 12);
}

#[test]
fn the_report_renders_in_headless_chromium_with_a_curve_per_retrieval() {
    let store = swept();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../out");
    std::fs::create_dir_all(&out).unwrap();
    let page = out.join("report.html");
    phrasesweep(&["report", store.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    let namespaces = html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert!(html.matches("http").count() == namespaces && !html.contains("<link") && !html.contains(" src="), "the page fetches nothing");

    let chromium = |args: &[&str]| {
        let mut cmd = std::process::Command::new("chromium");
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]).args(args);
        let out = run_bounded(&mut cmd, Duration::from_secs(120));
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    if std::process::Command::new("chromium").arg("--version").output().is_err() {
        panic!("this test renders the report in Chromium: install it with `apt-get install chromium` (make setup does)");
    }
    // The check below sees console messages: a page that writes one is caught.
    let probe = out.join("console-probe.html");
    std::fs::write(&probe, "<html><body><script>console.error('probe-7f3a')</script></body></html>").unwrap();
    let probed = chromium(&["--dump-dom", &format!("file://{}", probe.canonicalize().unwrap().display())]);
    assert!(String::from_utf8_lossy(&probed.stderr).lines().any(|l| l.contains(":CONSOLE") && l.contains("probe-7f3a")), "chromium does not show console messages here");
    std::fs::remove_file(&probe).ok();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let loaded = chromium(&["--dump-dom", &url]);
    let console: Vec<String> = String::from_utf8_lossy(&loaded.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect();
    assert!(console.is_empty(), "the page wrote to the console: {console:?}");
    let dom = String::from_utf8_lossy(&loaded.stdout);
    let recall = dom.split("<svg id=\"recall\"").nth(1).unwrap().split("</svg>").next().unwrap();
    // 4 points × 3 retrievals, each the latest run of its point.
    assert_eq!(recall.matches("class=\"curve\"").count(), 12, "one recall curve per retrieval of each point");
    for r in ["sentence-qsft", "sentence-base", "bm25-paragraph"] {
        assert_eq!(recall.matches(&format!("<title>{r} · ")).count(), 4, "{r}");
    }
    assert!(dom.contains("<svg id=\"axis-0\"") && dom.contains("<svg id=\"loss\""), "axis and loss charts");
    let shot = out.join("report.png");
    chromium(&["--window-size=1100,2200", &format!("--screenshot={}", shot.display()), &url]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot of the report in {}", shot.display());
}

/// What Python reads of the sweep's store: the ledger with pyarrow and DuckDB, the results tables, and
/// the phrase dataset with pylance.
const INTEROP: &str = r#"
import glob, json, sys
import duckdb, pyarrow.dataset as ds, pyarrow.parquet as pq, lance
store = sys.argv[1]
runs = [pq.read_table(f) for f in sorted(glob.glob(store + "/runs/*.parquet"))]
metrics = pq.ParquetDataset(store + "/metrics").read()
con = duckdb.connect()
duck_runs = con.execute(f"SELECT count(*), count(DISTINCT config_sha256) FROM read_parquet('{store}/runs/*.parquet', union_by_name=true)").fetchone()
duck_metrics = con.execute(f"SELECT run_id, retrieval, mar_seed FROM read_parquet('{store}/metrics/*.parquet') ORDER BY run_id, retrieval").fetchall()
results = ds.dataset(store + "/results", format="parquet")
duck_results = con.execute(f"SELECT count(*), count(DISTINCT question_id) FROM read_parquet('{store}/results/*/*.parquet')").fetchone()
phrases = lance.dataset(store + "/phrases.lance")
print(json.dumps({
    "runs": sum(t.num_rows for t in runs),
    "run_ids": sorted(r for t in runs for r in t.column("run_id").to_pylist()),
    "lr": sorted(v for t in runs if "qsft.query.optim.lr" in t.column_names for v in t.column("qsft.query.optim.lr").to_pylist()),
    "duck_runs": duck_runs[0],
    "duck_configs": duck_runs[1],
    "metrics": [[r, t, m] for r, t, m in sorted(zip(metrics.column("run_id").to_pylist(), metrics.column("retrieval").to_pylist(), metrics.column("mar_seed").to_pylist()))],
    "duck_metrics": [list(r) for r in duck_metrics],
    "results_rows": results.count_rows(),
    "duck_results_rows": duck_results[0],
    "duck_results_questions": duck_results[1],
    "phrases_rows": phrases.count_rows(),
    "phrases_version": phrases.version,
}))
"#;

#[test]
fn python_reads_the_ledger_results_and_phrases_as_phrasesweep_does() {
    let store = swept().clone();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/python.sh");
    let probe = std::process::Command::new(&python).args(["-c", "import duckdb, pyarrow, lance"]).output().unwrap();
    assert!(probe.status.success(), "this test reads the store from Python: `make setup` installs duckdb, pyarrow and pylance ({})", String::from_utf8_lossy(&probe.stderr));
    let out = run_bounded(std::process::Command::new(&python).args(["-c", INTEROP, store.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();

    let runs = sql(&[&store], "SELECT run_id, \"qsft.query.optim.lr\" AS lr, config_sha256 FROM runs ORDER BY run_id");
    let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!((py["runs"].as_u64().unwrap() as usize, py["duck_runs"].as_u64().unwrap() as usize), (runs.len(), runs.len()));
    assert_eq!(py["run_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(), ids);
    let mut lrs: Vec<f64> = runs.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    lrs.sort_by(f64::total_cmp);
    assert_eq!(py["lr"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>(), lrs, "an axis column, as pyarrow reads it");
    assert_eq!(py["duck_configs"].as_u64().unwrap(), 4, "one config hash per point");

    let metrics = sql(&[&store], "SELECT run_id, retrieval, mar_seed FROM metrics ORDER BY run_id, retrieval");
    let ours: Vec<Value> = metrics.iter().map(|m| serde_json::json!([m["run_id"], m["retrieval"], m["mar_seed"]])).collect();
    assert_eq!(py["metrics"].as_array().unwrap(), &ours, "pyarrow reads every metric as phrasesweep does, to the bit");
    assert_eq!(py["duck_metrics"].as_array().unwrap(), &ours, "and so does DuckDB");

    let (results_rows, phrases_rows, version) = on_own_runtime(async move {
        let s = phrasesweep_workers::io::store::Store::at(store.to_str().unwrap()).unwrap();
        let mut rows = 0;
        for path in s.list("results/").await.unwrap() {
            rows += phrasesweep_workers::io::parquet::read_parquet(&s, &path).await.unwrap().0.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let phrases = phrasesweep_workers::io::lance::open_dataset(&s, phrasesweep_schemas::record::PHRASES_DATASET).await.unwrap();
        (rows, phrases.count_rows(None).await.unwrap(), phrases.version().version)
    });
    assert_eq!((py["results_rows"].as_u64().unwrap() as usize, py["duck_results_rows"].as_u64().unwrap() as usize), (results_rows, results_rows));
    assert_eq!(py["duck_results_questions"].as_u64().unwrap(), 40, "every fixture question has evidence");
    assert_eq!((py["phrases_rows"].as_u64().unwrap() as usize, py["phrases_version"].as_u64().unwrap()), (phrases_rows, version), "pylance reads the phrase index's dataset");
}
