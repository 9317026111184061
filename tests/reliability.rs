//! End-to-end: what farms do to a sweep. A job that panics, a transient store error, a worker whose
//! broker connection is closed under it, a worker that dies mid-job, two coordinators on one store, a
//! coordinator killed between a Lance commit and its record, and a job delivered twice. Each test fails
//! on code without the defence it names.

mod support;

use phrasesweep_schemas::record::{self, Attempt, AttemptOutcome};
use phrasesweep_workers::io::lance::open_dataset;
use phrasesweep_workers::io::queue::JobQueue;
use phrasesweep_workers::io::queue::embedded::EmbeddedQueue;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::worker::{StoreAccess, Worker};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(300);

/// A fixture run (three ingest jobs) on a local store, with `extra` TOML.
fn local_run(dir: &Path, name: &str, extra: &str) -> (PathBuf, PathBuf) {
    let store = dir.join(format!("{name}-store"));
    (write_config(dir, name, store.to_str().unwrap(), &data("fixture/docs.jsonl"), extra), store)
}

/// A job that panics is a failed delivery, not a hung run: after the delivery limit it is dead-lettered
/// with the panic's message, visible in `status`; a rerun retries it once, and its history shows it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_dead_lettered_with_its_panic_and_a_rerun_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = local_run(dir.path(), "poison", "");
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_PANIC_DOC", "nqgold_00089"), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a run whose job always panics must fail");
    assert!(stderr.contains("was dead-lettered") && stderr.contains("poison document (nqgold_00089)"), "{stderr}");

    let status = status_of(&config);
    assert_eq!(status_row(&status, "ingest"), [3, 2, 0, 0, 0, 1, 0], "{status}");
    assert_eq!(status.matches("panicked: fault injection: a poison document").count(), 3, "three deliveries, each recorded:\n{status}");

    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "the rerun retries the dead-lettered job: {}", String::from_utf8_lossy(&out.stderr));
    let rows = read_corpus(&store_config(store.to_str().unwrap(), &Default::default())).await;
    let mut expected = expected_rows(&data("fixture/docs.jsonl"));
    expected.sort();
    assert_eq!(rows, expected);
    let status = status_of(&config);
    assert_eq!(status_row(&status, "ingest"), [3, 3, 0, 0, 0, 0, 0], "{status}");
    assert!(status.contains("rerun by coordinator: cleared `delivered too many times; the last delivery: fault injection"), "{status}");
    assert!(status.contains(": done"), "the history ends with the rerun's success:\n{status}");
}

/// A transient error is retried inside the worker with backoff: eight failures in a row, more than the
/// embedded delivery limit of three would allow, cost no delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_with_backoff_inside_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = local_run(dir.path(), "transient", "[embedded.worker]\nretry_for_s = 300\n");
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_TRANSIENT", "8"), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("fault injection: a transient store error; retrying in").count(), 8, "{stderr}");
    assert_eq!(read_corpus(&store_config(store.to_str().unwrap(), &Default::default())).await.len(), expected_rows(&data("fixture/docs.jsonl")).len());
    let status = status_of(&config);
    assert!(!status.contains("delivery 2"), "no job needed a second delivery:\n{status}");

    // With no time to retry, the same errors go back to the queue and use up the deliveries.
    let (config, _) = local_run(dir.path(), "no-retry", "[embedded.worker]\nretry_for_s = 0\n");
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_TRANSIENT", "8"), LIMIT);
    assert!(!out.status.success());
    assert!(status_of(&config).contains("gave the job back after 0 retries: fault injection: a transient store error"));
}

/// A worker whose broker connection is closed while it runs a job cannot ack it; it carries on, takes
/// the redelivery, finds the job recorded and acks it as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_connection_is_closed_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("lost-channel");
    let queue = format!("{name}.jobs");
    let _cleanup = QueueCleanup::new(&name, &queue);
    let (config, store) = local_run(dir.path(), &name, &format!("[broker]\nurl = \"{}\"\nqueue = \"{queue}\"\n", rabbitmq_url()));
    let no_s3 = Default::default();
    let w = Proc::spawn(worker(&queue, "w", &no_s3).env("PHRASESWEEP_FAULT_PAUSE_MS", "3000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]));
    w.wait_for_log("fault injection: pausing", LIMIT);
    assert!(close_connections_of(w.child.id()) >= 1, "the worker's connection was not found on the broker");
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}\nworker:\n{}", coord.log(), w.log());
    let mut w = w;
    assert!(w.child.try_wait().unwrap().is_none(), "the worker must still be serving:\n{}", w.log());
    assert!(w.log().contains("cannot settle a delivery"), "{}", w.log());
    assert!(w.log().contains("already done; acknowledging"), "the redelivery is acked as done:\n{}", w.log());
    assert_eq!(read_corpus(&store_config(store.to_str().unwrap(), &no_s3)).await.len(), expected_rows(&data("fixture/docs.jsonl")).len());
}

/// A running job's worker beats a heartbeat into its record; once the worker is dead, `status` calls
/// the job stale and names the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_marks_a_job_stale_once_its_worker_stops_beating() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("stale");
    let queue = format!("{name}.jobs");
    let _cleanup = QueueCleanup::new(&name, &queue);
    let extra = format!("[broker]\nurl = \"{}\"\nqueue = \"{queue}\"\n\n[coordinator]\nstale_after_s = 3\n", rabbitmq_url());
    let (config, _) = local_run(dir.path(), &name, &extra);
    let mut doomed = Proc::spawn(worker(&queue, "doomed", &Default::default()).args(["--heartbeat", "1"]).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000"));
    let _coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]));
    doomed.wait_for_log("fault injection: pausing", LIMIT);
    std::thread::sleep(Duration::from_secs(5));
    let status = status_of(&config);
    assert_eq!(status_row(&status, "ingest")[2..4], [1, 0], "alive and beating, so running:\n{status}");
    assert!(status.contains("running on doomed (delivery 1)"), "status names the job's worker:\n{status}");

    unsafe { libc::kill(doomed.child.id() as i32, libc::SIGKILL) };
    doomed.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let status = status_of(&config);
    assert_eq!(status_row(&status, "ingest")[2..4], [0, 1], "dead, so stale:\n{status}");
    assert!(status.contains("stale: doomed last sent a heartbeat"), "{status}");
}

/// One coordinator per store: a second is refused with the holder's name while the first runs; once the
/// first died, its lease expires and the next coordinator takes the store over.
#[test]
fn a_second_coordinator_is_refused_until_the_first_ones_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = local_run(dir.path(), "lease", "[coordinator]\nlease_s = 3\n");
    let mut first = Proc::spawn(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    first.wait_for_log("fault injection: pausing", LIMIT);
    // Longer than the lease: the first coordinator renews it.
    std::thread::sleep(Duration::from_secs(4));
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second coordinator must be refused");
    assert!(stderr.contains("is in use by another coordinator") && stderr.contains(&format!(":{} (run `lease`", first.child.id())), "{stderr}");

    unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) };
    first.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("taking over the expired lease"), "{stderr}");
}

/// A coordinator stopped with Ctrl-C (or SIGTERM) ends at once, mid-job, and frees the store: the next
/// one starts without waiting for the lease to expire.
#[test]
fn a_stopped_coordinator_ends_at_once_and_frees_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = local_run(dir.path(), "stopped", "[coordinator]\nlease_s = 600\n");
    let mut first = Proc::spawn(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    first.wait_for_log("fault injection: pausing", LIMIT);
    unsafe { libc::kill(first.child.id() as i32, libc::SIGINT) };
    assert!(!first.wait(Duration::from_secs(20)).success());
    assert!(first.log().contains("stopped by SIGINT"), "{}", first.log());
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "the store is free at once: {}", String::from_utf8_lossy(&out.stderr));
}

/// A coordinator killed after committing a stage's Lance version and before recording it: the next one
/// finds its own commit and does not commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_between_commit_and_record_commits_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = local_run(dir.path(), "commit-once", "[coordinator]\nlease_s = 3\n");
    let mut first = Proc::spawn(bin().args(["run", config.to_str().unwrap()]).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000").env("PHRASESWEEP_FAULT_JOB", "commit"));
    first.wait_for_log("fault injection: pausing", LIMIT);
    unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) };
    first.child.wait().unwrap();
    assert!(!store.join("stages/ingest.json").exists(), "killed before the stage record");
    std::thread::sleep(Duration::from_secs(4));
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let s = Store::at(store.to_str().unwrap()).unwrap();
    let ds = open_dataset(&s, "corpus.lance").await.unwrap();
    assert_eq!(ds.versions().await.unwrap().len(), 1, "one commit of the corpus");
    let rows = read_corpus(&store_config(store.to_str().unwrap(), &Default::default())).await;
    assert_eq!(rows.len(), expected_rows(&data("fixture/docs.jsonl")).len());
}

/// The same job message delivered twice, the second after the first finished: one output, and the
/// second delivery is recorded as a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_is_a_recorded_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = local_run(dir.path(), "duplicate", "");
    let config = phrasesweep_coordinator::config_file::load(&config).unwrap();
    let store = Store::from_config(&config.store).unwrap();
    let stage = phrasesweep_coordinator::plan::ingest_stage(&store, &config).await.unwrap();
    let job = &stage.jobs[0];
    let queue = EmbeddedQueue::new(3);
    queue.publish_job(job).await.unwrap();
    queue.publish_job(job).await.unwrap();
    queue.close();
    Worker::new("w", StoreAccess::Config(config.store.clone()), Default::default()).run(&queue).await.unwrap();

    let id = &job.id.0;
    let done: record::Done = store.get_json(&record::done_path(id)).await.unwrap().unwrap();
    assert_eq!(done.output["docs"], 20);
    let attempts: Vec<Attempt> = phrasesweep_coordinator::history::attempts(&store, id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(outcomes, [AttemptOutcome::Done, AttemptOutcome::AlreadyDone]);
    let written = std::fs::read_dir(dir.path().join("duplicate-store/corpus.lance/data")).unwrap().count();
    assert_eq!(written, done.output["fragments"].as_array().unwrap().len(), "the second delivery wrote nothing");
}
