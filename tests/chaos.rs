//! The chaos suite: a fixture sweep through the dense path (ingest, encode, index, a QSFT epoch, scan,
//! retrieve, score) on RabbitMQ + S3 with three workers, while a driver on a seeded schedule SIGKILLs a
//! random worker again and again (restarting it each time), restarts the RabbitMQ node once and takes
//! the S3 server off the network once (its port refuses connections, open ones are cut). At the end every metrics and results table equals an undisturbed embedded run of
//! the same config row for row, and the phrase dataset holds each token vector exactly once.
//!
//! `make test` runs a short schedule; `make chaos` the full one, with three seeds. The schedule is set by
//! `PHRASESWEEP_CHAOS_SEED` (1), `PHRASESWEEP_CHAOS_KILLS` (4) and `PHRASESWEEP_CHAOS_S3_STOP_S` (5);
//! with `PHRASESWEEP_CHAOS_REPORT=FILE` the summary line is appended to FILE.

mod support;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, UInt32Type, UInt64Type};
use futures::TryStreamExt;
use phrasesweep_coordinator::drive::RESULT_FILES_KEY;
use phrasesweep_coordinator::results::read_metrics;
use phrasesweep_schemas::record::METRICS_FILE;
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::io::parquet::read_parquet;
use phrasesweep_workers::io::store::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const LIMIT: Duration = Duration::from_secs(900);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number"))).unwrap_or(default)
}

/// xorshift64*: the schedule is a function of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The sweep: the fixture, MiniLM, one QSFT epoch, a dense phrase and sentence retrieval and BM25.
fn sweep(questions: &Path, broker: &str) -> String {
    format!(
        r#"{broker}
[questions]
path = "{q}"
shard_questions = 20

[encode]
model = "default"
job_paragraphs = 40

[train]
qsft_train = "{q}"
qsft_dev = "{q}"

[[qsft]]
name = "query"
terms = {{ query = 1.0 }}
start_from = "base"
epochs = 1
max_questions = 24
candidates = 20
optim = {{ batch_size = 12, checkpoint_every = 1 }}

[[retrieval]]
name = "sentence"
mode = "single"
unit = "sentence"
encoder = "base"

[[retrieval]]
name = "phrase-qsft"
mode = "single"
unit = "phrase"
encoder = "query"
opt = true

[[retrieval]]
name = "bm25-paragraph"
mode = "bm25"
unit = "paragraph"
"#,
        q = questions.display()
    )
}

fn infra(script: &str) {
    let path = infra_script(script);
    let out = Command::new(&path).output().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Each retrieval's ranked evidence, every results file it was scored from in order, as one batch.
async fn results(store: &Store) -> BTreeMap<String, RecordBatch> {
    let (_, metadata) = read_parquet(store, METRICS_FILE).await.unwrap();
    let files = &metadata.iter().find(|(k, _)| k == RESULT_FILES_KEY).unwrap().1;
    let files: BTreeMap<String, Vec<String>> = serde_json::from_str(files).unwrap();
    let mut out = BTreeMap::new();
    for (retrieval, parts) in files {
        let mut batches = Vec::new();
        for part in &parts {
            batches.extend(read_parquet(store, part).await.unwrap().0);
        }
        let schema = batches[0].schema();
        out.insert(retrieval, arrow::compute::concat_batches(&schema, &batches).unwrap());
    }
    out
}

/// Every phrase row as (corpus row, token, hash of its vector), sorted.
async fn phrases(store: &Store) -> Vec<(u64, u32, u64)> {
    let ds = open_dataset(store, "phrases.lance").await.unwrap();
    let mut scan = ds.scan();
    scan.project(&["corpus_row", "token", "vector"]).unwrap();
    let mut stream = scan.try_into_stream().await.unwrap();
    let mut rows = Vec::new();
    while let Some(b) = stream.try_next().await.unwrap() {
        let corpus_row = b.column(0).as_primitive::<UInt64Type>();
        let token = b.column(1).as_primitive::<UInt32Type>();
        let vectors = b.column(2).as_fixed_size_list();
        for i in 0..b.num_rows() {
            let v = vectors.value(i);
            let bits = v.as_primitive::<Float32Type>().values().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
            rows.push((corpus_row.value(i), token.value(i), bits));
        }
        assert_eq!(vectors.null_count(), 0);
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_survives_kills_a_broker_restart_and_an_s3_stop_and_loses_nothing() {
    let seed = setting("PHRASESWEEP_CHAOS_SEED", 1);
    let kills = setting("PHRASESWEEP_CHAOS_KILLS", 4);
    let s3_stop = Duration::from_secs(setting("PHRASESWEEP_CHAOS_S3_STOP_S", 5));
    let s3 = s3_env();
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let docs = data("fixture/docs.jsonl");
    let questions = data("fixture/questions.jsonl");

    // The undisturbed run: embedded, on local disk.
    let local = dir.path().join("undisturbed");
    let config = write_config(dir.path(), "undisturbed", local.to_str().unwrap(), &docs, &sweep(&questions, ""));
    let clock = Instant::now();
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let undisturbed_s = clock.elapsed().as_secs_f64();

    // The same sweep on the farm, under fire. A job may be killed several times: the delivery limit
    // leaves room for it.
    let name = unique("chaos");
    let queue = format!("{name}.jobs");
    let uri = format!("s3://phrasesweep/{name}");
    let _cleanup = (QueueCleanup::new(&name, &queue), S3Cleanup::new(&uri, &s3));
    let broker = format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\ndelivery_limit = 20\n");
    let config = write_config(dir.path(), &name, &uri, &docs, &sweep(&questions, &broker));
    // The farm reaches S3 through a gate the driver can close: the server's port then refuses
    // connections and open ones are cut, as when the server stops (moto keeps its data in memory, so
    // it is not stopped itself).
    let s3_addr: std::net::SocketAddr = s3["AWS_ENDPOINT_URL"].trim_start_matches("http://").parse().unwrap();
    let gate = TcpGate::new(s3_addr);
    let mut gated = s3.clone();
    gated.insert("AWS_ENDPOINT_URL".into(), format!("http://{}", gate.addr));
    let spawn = |n: usize, life: usize| Proc::spawn(worker(&queue, &format!("w{n}.{life}"), &gated).args(["--heartbeat", "2", "--delivery-limit", "20"]));
    let mut workers: Vec<Proc> = (0..3).map(|n| spawn(n, 0)).collect();
    let mut lives = [0usize; 3];
    let mut dead: Vec<Proc> = Vec::new();
    let clock = Instant::now();
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]).envs(&gated));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut killed, mut broker_restarts, mut s3_stops) = (0u64, 0, 0);
    let mut reopen: Option<Instant> = None;
    while killed < kills {
        std::thread::sleep(rng.millis(300, 1500));
        if coord.child.try_wait().unwrap().is_some() {
            break;
        }
        let n = (rng.next() % 3) as usize;
        unsafe { libc::kill(workers[n].child.id() as i32, libc::SIGKILL) };
        workers[n].child.wait().unwrap();
        lives[n] += 1;
        dead.push(std::mem::replace(&mut workers[n], spawn(n, lives[n])));
        killed += 1;
        if killed == kills.div_ceil(4) {
            gate.close();
            reopen = Some(Instant::now() + s3_stop);
            s3_stops += 1;
        }
        if killed == (3 * kills).div_ceil(4) {
            infra("rabbitmq-stop.sh");
            infra("rabbitmq-start.sh");
            broker_restarts += 1;
        }
        if reopen.is_some_and(|at| Instant::now() >= at) {
            gate.open();
            reopen = None;
        }
    }
    if let Some(at) = reopen.take() {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        gate.open();
    }
    assert_eq!((killed, broker_restarts, s3_stops), (kills, 1, 1), "the sweep ended before the schedule did:\n{}", coord.log());
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    let farm_s = clock.elapsed().as_secs_f64();

    // Nothing lost, nothing twice.
    let farm = Store::from_config(&store_config(&uri, &s3)).unwrap();
    let embedded = Store::at(local.to_str().unwrap()).unwrap();
    assert_eq!(read_metrics(&farm).await.unwrap(), read_metrics(&embedded).await.unwrap(), "metrics differ from the undisturbed run");
    let (farm_results, embedded_results) = (results(&farm).await, results(&embedded).await);
    assert_eq!(farm_results.keys().collect::<Vec<_>>(), ["bm25-paragraph", "phrase-qsft", "sentence"]);
    for (retrieval, batch) in &embedded_results {
        let farm_batch = &farm_results[retrieval];
        assert_eq!(farm_batch.schema().fields(), batch.schema().fields(), "{retrieval}: the results' columns differ");
        assert_eq!(farm_batch.columns(), batch.columns(), "{retrieval}: results differ from the undisturbed run");
    }
    let (farm_phrases, embedded_phrases) = (phrases(&farm).await, phrases(&embedded).await);
    let mut keys: Vec<(u64, u32)> = farm_phrases.iter().map(|r| (r.0, r.1)).collect();
    keys.dedup();
    assert_eq!(keys.len(), farm_phrases.len(), "a token vector is stored twice");
    assert_eq!(farm_phrases, embedded_phrases, "the phrase vectors differ from the undisturbed run");
    let dead_letters = farm.list("jobs/").await.unwrap().iter().filter(|p| p.ends_with("/dead.json")).count();
    assert_eq!(dead_letters, 0, "a job was dead-lettered");

    let logs: String = workers.iter().chain(&dead).map(|w| w.log()).collect();
    let redeliveries = logs
        .lines()
        .filter(|l| (l.contains("started job") || l.contains("already done")) && l.split_whitespace().any(|w| w.strip_prefix("attempt=").is_some_and(|n| n != "1")))
        .count();
    let summary = format!(
        "chaos seed {seed}: {killed} kills, {broker_restarts} RabbitMQ node restart, {s3_stops} S3 stop of {} s; {redeliveries} redeliveries, \
         {dead_letters} dead letters; {} phrase rows and {} result tables equal to the undisturbed run; {farm_s:.0} s on the farm against {undisturbed_s:.0} s undisturbed (embedded)",
        s3_stop.as_secs(),
        farm_phrases.len(),
        farm_results.len()
    );
    println!("{summary}");
    if let Ok(file) = std::env::var("PHRASESWEEP_CHAOS_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&file).unwrap();
        writeln!(f, "{summary}").unwrap();
    }
}
