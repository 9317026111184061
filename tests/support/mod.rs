//! Shared helpers of the end-to-end tests: the real binary, the shared data, the real services.
#![allow(dead_code)]

use arrow::array::AsArray;
use arrow::datatypes::UInt32Type;
use futures::TryStreamExt;
use phrasesweep_schemas::config::StoreConfig;
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::io::store::Store;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `phrasesweep worker` on the test RabbitMQ serving `queue` (jobs of both classes), with the S3
/// environment `s3`.
pub fn worker(queue: &str, name: &str, s3: &HashMap<String, String>) -> Command {
    let mut cmd = bin();
    cmd.args(["worker", "--broker", &rabbitmq_url(), "--queue", queue, "--name", name, "--serves", "cpu,gpu"]).envs(s3);
    cmd
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phrasesweep"));
    c.env_remove("PHRASESWEEP_LOG").env_remove("PHRASESWEEP_BROKER");
    c
}

/// `../shared/data` beside the project root.
pub fn data(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(rel);
    assert!(p.exists(), "test data {} is missing: these tests read ../shared/data beside the checkout", p.display());
    p.canonicalize().unwrap()
}

/// One paragraph as the input file has it, read with serde_json alone (independent of the ingest code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub doc_id: String,
    pub paragraph: u32,
    pub title: String,
    pub text: String,
}

pub fn expected_rows(corpus: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for line in std::fs::read_to_string(corpus).unwrap().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for (i, p) in v["paragraphs"].as_array().unwrap().iter().enumerate() {
            rows.push(Row {
                doc_id: v["id"].as_str().unwrap().into(),
                paragraph: i as u32,
                title: v["title"].as_str().unwrap().into(),
                text: p.as_str().unwrap().into(),
            });
        }
    }
    rows
}

pub fn store_config(uri: &str, env: &HashMap<String, String>) -> StoreConfig {
    StoreConfig {
        uri: uri.into(),
        endpoint: env.get("AWS_ENDPOINT_URL").cloned(),
        region: env.get("AWS_REGION").cloned(),
        allow_http: env.get("AWS_ALLOW_HTTP").map(|v| v == "true"),
        access_key_id: env.get("AWS_ACCESS_KEY_ID").cloned(),
        secret_access_key: env.get("AWS_SECRET_ACCESS_KEY").cloned(),
    }
}

/// Every row of the committed `corpus` dataset, sorted, and the sentence spans checked on the way.
pub async fn read_corpus(store: &StoreConfig) -> Vec<Row> {
    let store = Store::from_config(store).unwrap();
    let ds = open_dataset(&store, "corpus.lance").await.unwrap();
    let mut rows = Vec::new();
    let mut stream = ds.scan().try_into_stream().await.unwrap();
    while let Some(b) = stream.try_next().await.unwrap() {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (ids, titles, paras, texts) = (col("doc_id"), col("title"), col("paragraph"), col("text"));
        let (starts, ends) = (col("sentence_starts"), col("sentence_ends"));
        for i in 0..b.num_rows() {
            let text = texts.as_string::<i32>().value(i).to_string();
            let s = starts.as_list::<i32>().value(i);
            let e = ends.as_list::<i32>().value(i);
            let (s, e) = (s.as_primitive::<UInt32Type>(), e.as_primitive::<UInt32Type>());
            let chars = text.chars().count() as u32;
            assert_eq!(s.len(), e.len());
            assert!(text.trim().is_empty() || !s.is_empty(), "a non-empty paragraph has no sentence");
            for k in 0..s.len() {
                assert!(s.value(k) < e.value(k) && e.value(k) <= chars, "bad sentence span in {text:?}");
                assert!(k == 0 || s.value(k) >= e.value(k - 1), "overlapping sentences in {text:?}");
            }
            rows.push(Row {
                doc_id: ids.as_string::<i32>().value(i).into(),
                paragraph: paras.as_primitive::<UInt32Type>().value(i),
                title: titles.as_string::<i32>().value(i).into(),
                text,
            });
        }
    }
    rows.sort();
    rows
}

pub fn checksum(rows: &[Row]) -> String {
    let mut sorted = rows.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for r in &sorted {
        for f in [r.doc_id.as_bytes(), r.paragraph.to_string().as_bytes(), r.title.as_bytes(), r.text.as_bytes()] {
            h.update((f.len() as u64).to_le_bytes());
            h.update(f);
        }
    }
    hex::encode(h.finalize())
}

pub fn write_config(dir: &Path, name: &str, store_uri: &str, corpus: &Path, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n{extra}\n[store]\nuri = \"{store_uri}\"\n\n[corpus]\npath = \"{}\"\nshard_docs = 20\n",
        corpus.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a command to its end, failing the test if it takes longer than `limit` (a hang).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn phrasesweep");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command hung for more than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running child process whose stderr is collected on a thread.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn phrasesweep");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stdout.take().unwrap())] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Self { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(started.elapsed() < limit, "no `{needle}` within {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own; fails the test after `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            if started.elapsed() > limit {
                self.child.kill().ok();
                panic!("process ran longer than {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test RabbitMQ on loopback; fails with what to run when it is not there.
pub fn rabbitmq_url() -> String {
    let url = std::env::var("PHRASESWEEP_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    if std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("RabbitMQ is not running on 127.0.0.1:5672: start it with `make services` (infra/rabbitmq-start.sh)");
    }
    url
}

/// The test S3 server's settings (written by infra/s3-start.sh); fails with what to run when absent.
pub fn s3_env() -> HashMap<String, String> {
    let state = std::env::var("PHRASESWEEP_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/phrasesweep/services"));
    let file = state.join("s3.env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!("the S3 test server is not running ({} is missing): start it with `make services` (infra/s3-start.sh)", file.display())
    });
    let env: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let endpoint = env["AWS_ENDPOINT_URL"].trim_start_matches("http://").to_string();
    if std::net::TcpStream::connect_timeout(&endpoint.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!("the S3 test server does not answer on {endpoint}: start it with `make services` (infra/s3-start.sh)");
    }
    env
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A script of the project's `infra/` folder.
pub fn infra_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra").join(name)
}

/// Runs `fut` to its end on a runtime of its own, on a thread of its own: usable from a test's runtime
/// and from a `Drop` that runs in one.
pub fn on_own_runtime<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(fut))
        .join()
        .unwrap()
}

/// `rabbitmqctl` on the test node (infra/rabbitmq-ctl.sh); fails the test when it cannot run.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let script = infra_script("rabbitmq-ctl.sh");
    let out = Command::new(script).args(args).output().expect("run infra/rabbitmq-ctl.sh");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Closes every broker connection of process `pid` (they are named `phrasesweep-<pid>`), as a network
/// failure or a broker-side kill would. Returns how many it closed.
pub fn close_connections_of(pid: u32) -> usize {
    let name = format!("phrasesweep-{pid}");
    let mut closed = 0;
    for line in rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]).lines() {
        if line.contains(&format!("\"{name}\"")) {
            let conn = line.split_whitespace().next().unwrap();
            rabbitmqctl(&["close_connection", conn, "closed by a reliability test"]);
            closed += 1;
        }
    }
    closed
}

/// Deletes a test's queues and exchange from the broker when dropped: the sweep's job and dead-letter
/// queues, the run's event queue, and the farm's exchange.
pub struct QueueCleanup {
    pub queue: String,
    pub run: String,
}

impl QueueCleanup {
    pub fn new(run: &str, queue: &str) -> Self {
        Self { queue: queue.to_string(), run: run.to_string() }
    }
}

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let script = infra_script("rabbitmq-ctl.sh");
        let (queue, run) = (&self.queue, &self.run);
        for q in [format!("{queue}.gpu.{run}"), format!("{queue}.cpu.{run}"), format!("{queue}.dead.{run}"), format!("phrasesweep.events.{run}")] {
            let _ = Command::new(&script).args(["-q", "delete_queue", &q]).output();
        }
        // rabbitmqctl has no delete_exchange: the broker's own function does it.
        let delete = format!("rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"{queue}.farm\">>), false, <<\"tests\">>).");
        let _ = Command::new(&script).args(["-q", "eval", &delete]).output();
    }
}

/// The `took a job` lines of worker logs, in time order: (time, worker, sweep). Every log line starts
/// with its RFC 3339 time, so the text orders them.
pub fn takes(workers: &[(&str, &Proc)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (who, p) in workers {
        for line in p.log().lines().filter(|l| l.contains("took a job")) {
            let time = line.split_whitespace().next().unwrap_or_default().to_string();
            let sweep = line.split("sweep=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_default().to_string();
            out.push((time, who.to_string(), sweep));
        }
    }
    out.sort();
    out
}

/// The `status` table row of `stage`, as numbers: jobs, done, running, stale, failed, dead-lettered, waiting.
pub fn status_row(status: &str, stage: &str) -> Vec<usize> {
    let line = status.lines().find(|l| l.split_whitespace().next() == Some(stage)).unwrap_or_else(|| panic!("no {stage} row in:\n{status}"));
    line.split_whitespace().skip(1).take(7).map(|n| n.parse().unwrap()).collect()
}

/// Runs `phrasesweep status CONFIG` and returns its output.
pub fn status_of(config: &Path) -> String {
    let out = run_bounded(bin().args(["status", config.to_str().unwrap()]), Duration::from_secs(60));
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes every object under an S3 store URI when dropped, so the test server does not fill up.
pub struct S3Cleanup {
    pub uri: String,
    pub env: HashMap<String, String>,
}

impl S3Cleanup {
    pub fn new(uri: &str, env: &HashMap<String, String>) -> Self {
        Self { uri: uri.to_string(), env: env.clone() }
    }
}

impl Drop for S3Cleanup {
    fn drop(&mut self) {
        let config = store_config(&self.uri, &self.env);
        on_own_runtime(async move {
            let Ok(store) = Store::from_config(&config) else { return };
            for path in store.list("").await.unwrap_or_default() {
                let _ = store.delete(&path).await;
            }
        });
    }
}

/// A TCP forwarder in front of a server, to take it off the network and back without stopping it:
/// closed, its port refuses connections and the open ones are cut, as if the server had stopped.
pub struct TcpGate {
    pub addr: std::net::SocketAddr,
    state: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    closed: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    conns: Mutex<Vec<std::net::TcpStream>>,
}

impl TcpGate {
    pub fn new(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let state = Arc::new(GateState::default());
        let s = state.clone();
        std::thread::spawn(move || {
            let mut listener = Some(first);
            while !s.stop.load(SeqCst) {
                if s.closed.load(SeqCst) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match std::net::TcpListener::bind(addr) {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = std::net::TcpStream::connect(target) else { continue };
                        let mut conns = s.conns.lock().unwrap();
                        conns.push(client.try_clone().unwrap());
                        conns.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, state }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&self) {
        self.state.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn open(&self) {
        self.state.closed.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.state.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.close();
    }
}
