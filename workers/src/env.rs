//! The one place the data plane reads its process environment, once: model and cache folders, the job
//! device, the AWS_* store settings, the scratch folder and fault injection. Everything else in the crate takes these as
//! values from here, so what a worker depends on outside its job messages is listed in one file.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment a worker runs in.
#[derive(Debug, Clone)]
pub struct Env {
    /// The default encoder: `$PHRASESWEEP_MODEL_DIR`, else where `make setup` puts all-MiniLM-L6-v2.
    pub model_dir: PathBuf,
    /// Where fetched checkpoints (and BM25 indexes, in `bm25/`) are kept: `$PHRASESWEEP_CACHE`, else
    /// `~/.cache/phrasesweep/checkpoints`.
    pub checkpoint_cache: PathBuf,
    /// `$PHRASESWEEP_DEVICE`: `cpu`, `cuda` or `cuda:N` (absent: the build's default).
    pub device: Option<String>,
    /// `$PHRASESWEEP_FAULT_PAUSE_MS`, for the crash tests (see `fault.rs`).
    pub fault_pause_ms: Option<u64>,
    /// `$PHRASESWEEP_FAULT_JOB`: the job kind the pause applies to (absent: every kind that pauses).
    pub fault_job: Option<String>,
    /// `$PHRASESWEEP_FAULT_PANIC_DOC`: ingest panics on the shard holding this document id (a poison job).
    pub fault_panic_doc: Option<String>,
    /// `$PHRASESWEEP_FAULT_TRANSIENT`: ingest attempts of this process that fail with a transient error.
    pub fault_transient: Option<u32>,
    /// Where local scratch files go (`$TMPDIR`, else `/tmp`).
    pub temp_dir: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A variable of the environment that the store reads (`AWS_*`): empty counts as unset.
pub fn aws(name: &str) -> Option<String> {
    var(name)
}

/// A secret that a config names by its variable (the read stage's API key): read where it is used, kept
/// in no struct that is logged, and never written anywhere.
pub fn secret(name: &str) -> Option<String> {
    var(name)
}

/// The environment, read on first use.
pub fn get() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let home = PathBuf::from(var("HOME").unwrap_or_default());
        Env {
            model_dir: var("PHRASESWEEP_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| home.join(".cache/phrasesweep/models/all-MiniLM-L6-v2")),
            checkpoint_cache: var("PHRASESWEEP_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join(".cache/phrasesweep/checkpoints")),
            device: var("PHRASESWEEP_DEVICE"),
            fault_pause_ms: var("PHRASESWEEP_FAULT_PAUSE_MS").and_then(|v| v.parse().ok()),
            fault_job: var("PHRASESWEEP_FAULT_JOB"),
            fault_panic_doc: var("PHRASESWEEP_FAULT_PANIC_DOC"),
            fault_transient: var("PHRASESWEEP_FAULT_TRANSIENT").and_then(|v| v.parse().ok()),
            temp_dir: std::env::temp_dir(),
        }
    })
}

/// This machine's name (/etc/hostname).
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// This process as logs and records name it: `host:pid`.
pub fn host_pid() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo; 0 where there is none).
pub fn memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// Lets Lance compute on every core: it keeps two cores for I/O and, on a machine with two, computes on
/// one thread unless `LANCE_CPU_THREADS` says otherwise (it reads the variable when its pool starts).
/// Call before any thread starts; a value already set is kept.
pub fn give_lance_every_core() {
    if var("LANCE_CPU_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called at the top of `main`, before the process has other threads.
        unsafe { std::env::set_var("LANCE_CPU_THREADS", cores.to_string()) };
    }
}
