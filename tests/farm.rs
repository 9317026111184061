//! End-to-end: the farm. A coordinator and worker processes over a real RabbitMQ, storing on a real
//! S3-compatible server; a worker killed mid-job; unreachable services.

mod support;

use std::time::Duration;
use support::*;

const LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_two_workers_on_rabbitmq_and_s3_match_the_embedded_run() {
    let s3 = s3_env();
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let corpus = data("fixture/docs.jsonl");
    let name = unique("farm");
    let queue = format!("{name}.jobs");
    let uri = format!("s3://phrasesweep/{name}");
    let _cleanup = (QueueCleanup::new(&name, &queue), S3Cleanup::new(&uri, &s3));
    let broker = format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n");
    let config = write_config(dir.path(), &name, &uri, &corpus, &broker);

    let w1 = Proc::spawn(&mut worker(&queue, "w1", &s3));
    let w2 = Proc::spawn(&mut worker(&queue, "w2", &s3));
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]).envs(&s3));
    let status = coord.wait(LIMIT);
    assert!(status.success(), "coordinator failed:\n{}", coord.log());
    assert!(coord.log().contains("ran 3 jobs"), "{}", coord.log());
    let jobs_run = |p: &Proc| p.log().matches("finished job").count();
    assert_eq!(jobs_run(&w1) + jobs_run(&w2), 3, "w1:\n{}\nw2:\n{}", w1.log(), w2.log());

    let farm_rows = read_corpus(&store_config(&uri, &s3)).await;
    let local = dir.path().join("embedded-store");
    let embedded_config = write_config(dir.path(), "embedded", local.to_str().unwrap(), &corpus, "");
    let out = run_bounded(bin().args(["run", embedded_config.to_str().unwrap()]), LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let embedded_rows = read_corpus(&store_config(local.to_str().unwrap(), &Default::default())).await;
    assert_eq!(farm_rows.len(), expected_rows(&corpus).len());
    assert_eq!(checksum(&farm_rows), checksum(&embedded_rows), "farm and embedded runs must hold the same rows");
    assert_eq!(checksum(&farm_rows), checksum(&expected_rows(&corpus)));

    // Rerunning the finished sweep publishes nothing.
    let mut again = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]).envs(&s3));
    assert!(again.wait(LIMIT).success(), "{}", again.log());
    assert!(again.log().contains("nothing to do"), "{}", again.log());
    assert_eq!(jobs_run(&w1) + jobs_run(&w2), 3, "a rerun must execute no job");

    let secret = &s3["AWS_SECRET_ACCESS_KEY"];
    for (who, log) in [("coordinator", coord.log()), ("w1", w1.log()), ("w2", w2.log()), ("rerun", again.log())] {
        assert!(!log.contains(secret.as_str()), "{who} logged the S3 secret");
        assert!(!log.contains("guest:guest"), "{who} logged the broker password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let s3 = s3_env();
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let corpus = data("fixture/docs.jsonl");
    let name = unique("kill");
    let queue = format!("{name}.jobs");
    let uri = format!("s3://phrasesweep/{name}");
    let _cleanup = (QueueCleanup::new(&name, &queue), S3Cleanup::new(&uri, &s3));
    let config = write_config(dir.path(), &name, &uri, &corpus, &format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n"));

    // The doomed worker stops after writing its shard's data files, before recording the job.
    let mut doomed = Proc::spawn(worker(&queue, "doomed", &s3).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000"));
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]).envs(&s3));
    doomed.wait_for_log("fault injection: pausing", LIMIT);
    unsafe { libc::kill(doomed.child.id() as i32, libc::SIGKILL) };
    doomed.child.wait().unwrap();

    let rescuer = Proc::spawn(&mut worker(&queue, "rescuer", &s3));
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    assert_eq!(rescuer.log().matches("finished job").count(), 3, "the killed job is redelivered:\n{}", rescuer.log());
    assert!(rescuer.log().contains("attempt=2"), "the broker counts the redelivery:\n{}", rescuer.log());

    let rows = read_corpus(&store_config(&uri, &s3)).await;
    let mut expected = expected_rows(&corpus);
    expected.sort();
    assert_eq!(rows, expected, "complete, and no duplicate rows");
}

#[test]
fn wrong_s3_credentials_fail_fast_with_a_clear_error() {
    let mut s3 = s3_env();
    s3.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "creds", "s3://phrasesweep/creds", &data("fixture/docs.jsonl"), "");
    let out = run_bounded(bin().args(["run", config.to_str().unwrap()]).envs(&s3), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("s3://phrasesweep/creds") && stderr.contains("credentials"), "{stderr}");
    assert!(stderr.contains("SignatureDoesNotMatch") || stderr.contains("403"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "the secret must not be logged");
}

#[test]
fn an_unreachable_broker_fails_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "nobroker", dir.path().join("s").to_str().unwrap(), &data("fixture/docs.jsonl"), "");
    // Port 9 (discard) on loopback: nothing listens there.
    let url = "amqp://guest:hunter2@127.0.0.1:9/%2f";
    for args in [vec!["coordinator", config.to_str().unwrap(), "--broker", url], vec!["worker", "--broker", url]] {
        let out = run_bounded(bin().args(&args), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:9/%2f"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the broker password must not be logged");
    }
}

/// A training job killed after a resumable checkpoint resumes from it on another worker: the killed
/// worker's steps before the checkpoint, and its evaluation of the starting model, are not done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_killed_mid_epoch_resumes_from_its_last_checkpoint() {
    let s3 = s3_env();
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("resume");
    let queue = format!("{name}.jobs");
    let uri = format!("s3://phrasesweep/{name}");
    let _cleanup = (QueueCleanup::new(&name, &queue), S3Cleanup::new(&uri, &s3));
    let train = format!(
        "[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n\n[train]\nsquad_train = \"{}\"\nsquad_dev = \"{}\"\n\n\
         [train.reader]\nmax_examples = 24\neval_examples = 4\nmax_len = 96\noptim = {{ batch_size = 4, checkpoint_every = 2 }}\n",
        data("squad/dev.jsonl").display(),
        data("squad/dev.jsonl").display(),
    );
    let config = write_config(dir.path(), &name, &uri, &data("fixture/docs.jsonl"), &train);

    let mut doomed = Proc::spawn(&mut worker(&queue, "doomed", &s3));
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]).envs(&s3));
    doomed.wait_for_log("saved a resumable checkpoint step=4", LIMIT);
    unsafe { libc::kill(doomed.child.id() as i32, libc::SIGKILL) };
    doomed.child.wait().unwrap();

    let rescuer = Proc::spawn(&mut worker(&queue, "rescuer", &s3));
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    let log = rescuer.log();
    assert!(log.contains("resuming from a checkpoint step=4"), "the rescuer must resume at step 4:\n{log}");
    assert!(log.contains("train-reader: 6/6 steps"), "and finish the epoch's 6 steps:\n{log}");
    assert!(log.contains("the starting evaluation is on the store"), "nor evaluate the untrained reader again:\n{log}");
    assert!(coord.log().contains("reader: SQuAD dev"), "{}", coord.log());
    // The training log holds every step once: the killed worker's four from the checkpoint, then the
    // rescuer's two.
    let store = phrasesweep_workers::io::store::Store::from_config(&store_config(&uri, &s3)).unwrap();
    let logs = store.list(phrasesweep_workers::train::log::TRAINING_DIR).await.unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let (batches, _) = phrasesweep_workers::io::parquet::read_parquet(&store, &logs[0]).await.unwrap();
    let mut lr_steps = Vec::new();
    for b in &batches {
        use arrow::array::AsArray;
        let (step, metric) = (b.column(2).as_primitive::<arrow::datatypes::UInt64Type>(), b.column(3).as_string::<i32>());
        lr_steps.extend((0..b.num_rows()).filter(|&i| metric.value(i) == "lr").map(|i| step.value(i)));
    }
    assert_eq!(lr_steps, (0..6).collect::<Vec<u64>>(), "one log row per step, across the resume");
}

/// SIGTERM during a job drains the worker: it finishes the job, acks it and exits, and nothing is
/// delivered again. A second SIGTERM gives the job in hand back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_and_a_second_one_gives_its_job_back() {
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("drain");
    let queue = format!("{name}.jobs");
    let _cleanup = QueueCleanup::new(&name, &queue);
    let store = dir.path().join("store");
    let config = write_config(dir.path(), &name, store.to_str().unwrap(), &data("fixture/docs.jsonl"), &format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n"));
    let local = Default::default();
    let term = |p: &Proc| unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };

    let mut drained = Proc::spawn(worker(&queue, "drained", &local).env("PHRASESWEEP_FAULT_PAUSE_MS", "3000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]));
    drained.wait_for_log("fault injection: pausing", LIMIT);
    term(&drained);
    assert!(drained.wait(Duration::from_secs(60)).success(), "{}", drained.log());
    assert_eq!(drained.log().matches("finished job").count(), 1, "the job in hand is finished, no other is taken:\n{}", drained.log());
    assert!(drained.log().contains("drained: no job in hand, stopping"), "{}", drained.log());

    let mut stopped = Proc::spawn(worker(&queue, "stopped", &local).env("PHRASESWEEP_FAULT_PAUSE_MS", "120000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    stopped.wait_for_log("fault injection: pausing", LIMIT);
    term(&stopped);
    stopped.wait_for_log("finishing the job in hand", LIMIT);
    term(&stopped);
    assert!(stopped.wait(Duration::from_secs(20)).success(), "a second SIGTERM stops it long before its job would end:\n{}", stopped.log());
    assert!(stopped.log().contains("giving it back to the queue: the worker was stopped"), "{}", stopped.log());

    // The two jobs left, then it stops by itself.
    let mut rescuer = Proc::spawn(worker(&queue, "rescuer", &local).args(["--drain-after", "2"]));
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    assert!(rescuer.wait(Duration::from_secs(30)).success(), "--drain-after 2 stops the worker after two jobs:\n{}", rescuer.log());
    let log = rescuer.log();
    let mut started: Vec<&str> = log.lines().filter(|l| l.contains("started job")).map(|l| if l.contains("attempt=1") { "first" } else { "again" }).collect();
    started.sort();
    assert_eq!(started, ["again", "first"], "the given-back job comes back once; the drained one never:\n{}", rescuer.log());
}

/// Jobs go to the workers that serve their class: with a `cpu` worker and a `gpu` worker up, the `cpu`
/// one never gets a `gpu` job (encoding, dense search) and the `gpu` one never a `cpu` job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_the_workers_that_serve_their_class() {
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("classes");
    let queue = format!("{name}.jobs");
    let _cleanup = QueueCleanup::new(&name, &queue);
    let store = dir.path().join("store");
    let extra = format!(
        "[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n\n[questions]\npath = \"{}\"\n\n[encode]\nmodel = \"default\"\n\n\
         [[retrieval]]\nname = \"sentence\"\nmode = \"single\"\nunit = \"sentence\"\nencoder = \"base\"\n\n\
         [[retrieval]]\nname = \"bm25\"\nmode = \"bm25\"\nunit = \"paragraph\"\n",
        data("fixture/questions.jsonl").display()
    );
    let config = write_config(dir.path(), &name, store.to_str().unwrap(), &data("fixture/docs.jsonl"), &extra);
    let serving = |who: &str, class: &str| {
        Proc::spawn(bin().args(["worker", "--broker", &amqp, "--queue", &queue, "--name", who, "--serves", class]))
    };
    let cpu = serving("cpu-worker", "cpu");
    let gpu = serving("gpu-worker", "gpu");
    let mut coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]));
    assert!(coord.wait(LIMIT).success(), "coordinator failed:\n{}", coord.log());
    let kinds = |p: &Proc| -> Vec<String> {
        p.log()
            .lines()
            .filter(|l| l.contains("started job"))
            .filter_map(|l| l.split("what=").nth(1).and_then(|w| w.split_whitespace().next()).map(String::from))
            .collect()
    };
    let (cpu_kinds, gpu_kinds) = (kinds(&cpu), kinds(&gpu));
    assert!(cpu_kinds.iter().all(|k| ["ingest", "index", "bm25", "retrieve", "score"].contains(&k.as_str())), "{cpu_kinds:?}");
    assert!(cpu_kinds.contains(&"bm25".into()), "the BM25 index is built by a cpu worker: {cpu_kinds:?}");
    assert!(gpu_kinds.iter().all(|k| ["encode", "scan"].contains(&k.as_str())), "{gpu_kinds:?}");
    assert!(cpu_kinds.contains(&"ingest".into()) && gpu_kinds.contains(&"encode".into()), "both took jobs: {cpu_kinds:?} {gpu_kinds:?}");
    assert!(gpu.log().contains("serving gpu jobs (encoding, training, dense search) on a CPU build"), "{}", gpu.log());
}

/// Sweeps share a farm: a short sweep started 10 s after a long one finishes while the long one still
/// runs (workers take turns between sweeps rather than draining the first one's backlog), and a sweep
/// started with a higher priority has all its jobs taken before any other sweep's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_on_one_farm_take_turns_and_a_priority_jumps_the_queue() {
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("{}.jobs", unique("shared"));
    let (long, short, urgent) = (unique("long"), unique("short"), unique("urgent"));
    let _cleanup = [&long, &short, &urgent].map(|run| QueueCleanup::new(run, &queue));
    let corpus = data("fixture/docs.jsonl");
    let config = |name: &str, shard_docs: usize| {
        let store = dir.path().join(name);
        let path = write_config(dir.path(), name, store.to_str().unwrap(), &corpus, &format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n"));
        let text = std::fs::read_to_string(&path).unwrap().replace("shard_docs = 20", &format!("shard_docs = {shard_docs}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    // 60 ingest jobs of at least 0.7 s on two workers: about 25 s of work.
    let (long_config, short_config, urgent_config) = (config(&long, 1), config(&short, 20), config(&urgent, 10));
    let paused = |who: &str| Proc::spawn(worker(&queue, who, &Default::default()).env("PHRASESWEEP_FAULT_PAUSE_MS", "700").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    let (w1, w2) = (paused("w1"), paused("w2"));
    let coordinator = |config: &std::path::Path, priority: &str| Proc::spawn(bin().args(["coordinator", config.to_str().unwrap(), "--priority", priority]));

    let mut long_run = coordinator(&long_config, "0");
    std::thread::sleep(Duration::from_secs(10));
    let mut short_run = coordinator(&short_config, "0");
    assert!(short_run.wait(LIMIT).success(), "{}", short_run.log());
    assert!(long_run.child.try_wait().unwrap().is_none(), "the short sweep finished only after the long one:\n{}", long_run.log());

    let mut urgent_run = coordinator(&urgent_config, "5");
    assert!(urgent_run.wait(LIMIT).success(), "{}", urgent_run.log());
    assert!(long_run.child.try_wait().unwrap().is_none(), "the urgent sweep finished only after the long one:\n{}", long_run.log());
    assert!(long_run.wait(LIMIT).success(), "{}", long_run.log());

    let takes = takes(&[("w1", &w1), ("w2", &w2)]);
    let of = |sweep: &str| takes.iter().filter(|t| t.2 == *sweep).count();
    assert_eq!((of(&long), of(&short), of(&urgent)), (60, 3, 6), "every job taken once: {takes:?}");
    // Turns: a worker that took a short job takes a long one next, so two workers' three short jobs
    // have a long one among them.
    let (first, last) = (takes.iter().position(|t| t.2 == short).unwrap(), takes.iter().rposition(|t| t.2 == short).unwrap());
    assert!(takes[first..last].iter().any(|t| t.2 == long), "the sweeps take turns: {:?}", &takes[first..=last]);
    // Once a worker took an urgent job, no worker took another sweep's job until the urgent ones ran out.
    let first = takes.iter().position(|t| t.2 == urgent).unwrap();
    let last = takes.iter().rposition(|t| t.2 == urgent).unwrap();
    let cut_in: Vec<_> = takes[first..=last].iter().filter(|t| t.2 != urgent).collect();
    assert!(cut_in.len() <= 1, "the urgent sweep's jobs go first (one job of another sweep may be taken while a worker has not heard of it yet): {cut_in:?}");
}

/// `phrasesweep workers` lists the workers that answer the roll call, with the job each has in hand; a
/// killed worker drops off at once, and a hung one (SIGSTOP) is not listed until it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_lists_live_workers_and_drops_dead_ones() {
    let amqp = rabbitmq_url();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("roll");
    let queue = format!("{name}.jobs");
    let _cleanup = QueueCleanup::new(&name, &queue);
    let store = dir.path().join("store");
    let config = write_config(dir.path(), &name, store.to_str().unwrap(), &data("fixture/docs.jsonl"), &format!("[broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n"));
    let busy = |who: &str| Proc::spawn(worker(&queue, who, &Default::default()).env("PHRASESWEEP_FAULT_PAUSE_MS", "60000").env("PHRASESWEEP_FAULT_JOB", "ingest"));
    let (w1, mut w2) = (busy("roll-w1"), busy("roll-w2"));
    let _coord = Proc::spawn(bin().args(["coordinator", config.to_str().unwrap()]));
    for w in [&w1, &w2] {
        w.wait_for_log("fault injection: pausing", LIMIT);
    }
    let roll = || {
        let out = run_bounded(bin().args(["workers", "--broker", &amqp, "--queue", &queue]), LIMIT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = roll();
    assert!(listed.contains("2 workers answered"), "{listed}");
    for who in ["roll-w1", "roll-w2"] {
        let line = listed.lines().find(|l| l.starts_with(who)).unwrap_or_else(|| panic!("{who} is not listed:\n{listed}"));
        assert!(line.contains("ingest") && line.contains(&name), "{who} has an ingest job of {name} in hand:\n{listed}");
        assert!(line.contains("cpu,gpu") && line.contains("cpu (") && line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    }
    let signal = |p: &Proc, sig| unsafe { libc::kill(p.child.id() as i32, sig) };
    signal(&w1, libc::SIGSTOP);
    let listed = roll();
    assert!(listed.contains("1 worker answered") && !listed.contains("roll-w1"), "a hung worker does not answer:\n{listed}");
    signal(&w1, libc::SIGCONT);
    w2.child.kill().unwrap();
    w2.child.wait().unwrap();
    let listed = roll();
    assert!(listed.contains("1 worker answered") && listed.contains("roll-w1") && !listed.contains("roll-w2"), "the killed worker is gone:\n{listed}");
}
