//! The coordinator at Wikipedia scale (`make bench-scale`, docs/scale.md). Plans a synthetic stage of
//! N jobs (100,000 unless `PHRASESWEEP_SCALE_JOBS` says otherwise: copies of the demo's ingest job
//! over N shards, so each id and message is a real one) against a store on the S3 test server where half
//! of them are already done (each with the started, done and attempt records a worker leaves), and
//! measures what the coordinator does with them:
//!
//! - telling which jobs are done: before, a request or three per job one after another (a HEAD of
//!   done.json, and for each job not done its two failure records); now one listing of `jobs/` (and, for
//!   comparison, the same requests per job 32 at a time, what a stage of at most 1,000 jobs does);
//! - one look at the store while following the stage: before, three requests per pending job; now the
//!   same single listing;
//! - committing the stage, which reads every done job's outcome: before, one after another; now 32 at
//!   a time;
//! - publishing the jobs not done to RabbitMQ: before, one confirm round trip per job; now windows of
//!   confirms;
//! - memory: the process's resident size before and after planning, and its peak.
//!
//! The per-job paths are linear in the jobs, so they run on a sample and are scaled up. Store requests
//! are counted by the S3 server (its request log).

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use phrasesweep_coordinator::pipeline::read_outcomes;
use phrasesweep_coordinator::records::JobRecords;
use phrasesweep_schemas::record::{self, Attempt, AttemptOutcome, Done, Failed, Started};
use phrasesweep_schemas::{JobEnvelope, JobSpec};
use phrasesweep_workers::io::queue::JobQueue;
use phrasesweep_workers::io::queue::amqp::AmqpQueue;
use phrasesweep_workers::io::store::Store;
use std::path::PathBuf;
use std::time::Instant;

/// Jobs the per-job ("before") paths are timed on.
const SAMPLE: usize = 5_000;

#[tokio::main]
async fn main() -> Result<()> {
    let jobs: usize = std::env::var("PHRASESWEEP_SCALE_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let moto_log = PathBuf::from(std::env::var("PHRASESWEEP_STATE").context("PHRASESWEEP_STATE names the services' folder (make services)")?).join("moto.log");
    let prefix = format!("scale-{jobs}");
    let store = Store::at(&format!("s3://phrasesweep/{prefix}"))?;
    store.check_access().await?;
    let requests = || -> Result<usize> {
        let log = std::fs::read_to_string(&moto_log).with_context(|| format!("cannot read the S3 server's log {}", moto_log.display()))?;
        Ok(log.lines().filter(|l| l.contains(&prefix)).count())
    };

    // Plan: N copies of the demo's first ingest job, one per shard.
    let rss_before = memory_kib("VmRSS");
    let clock = Instant::now();
    let demo = phrasesweep_coordinator::config_file::load(&root.join("configs/demo.toml"))?;
    let template = phrasesweep_coordinator::plan::ingest_stage(&store, &demo).await?.jobs.remove(0);
    let planned: Vec<JobEnvelope> = (0..jobs)
        .map(|i| {
            let mut spec = template.spec.clone();
            if let JobSpec::Ingest { inputs, .. } = &mut spec {
                inputs.shard = i as u32;
                inputs.byte_start = i as u64 * 1000;
                inputs.byte_end = (i as u64 + 1) * 1000;
                inputs.sha256 = format!("{i:064x}");
            }
            JobEnvelope::new(store.location().clone(), spec, template.reply_to.clone())
        })
        .collect();
    let plan_s = clock.elapsed().as_secs_f64();
    let rss_planned = memory_kib("VmRSS");
    let message_bytes = planned.iter().map(|j| serde_json::to_vec(j).map_or(0, |b| b.len())).sum::<usize>() / jobs;
    println!("planned {jobs} jobs in {plan_s:.2} s; {message_bytes} bytes per job message; resident {} MiB → {} MiB", rss_before / 1024, rss_planned / 1024);

    // Half of them done, as a worker leaves them (seeded once per store).
    if !store.exists("seeded.json").await? {
        let clock = Instant::now();
        futures::stream::iter(planned.iter().step_by(2))
            .map(|job| seed_done(&store, job))
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await?;
        store.put_json("seeded.json", &jobs).await?;
        println!("seeded {} done jobs in {:.0} s", jobs / 2, clock.elapsed().as_secs_f64());
    }

    // Before: a HEAD per job, and two GETs per job not done, on a sample.
    let sample = &planned[..SAMPLE.min(jobs)];
    let (r0, clock) = (requests()?, Instant::now());
    for job in sample {
        if !store.exists(&record::done_path(&job.id.0)).await? {
            for path in [record::dead_path(&job.id.0), record::failed_path(&job.id.0)] {
                store.get_json::<Failed>(&path).await?;
            }
        }
    }
    let scale = jobs as f64 / sample.len() as f64;
    let (before_plan_s, before_plan_req) = (clock.elapsed().as_secs_f64() * scale, (requests()? - r0) as f64 * scale);
    // Before: one look while following, three requests per pending job.
    let (r0, clock) = (requests()?, Instant::now());
    for job in sample.iter().skip(1).step_by(2) {
        store.exists(&record::done_path(&job.id.0)).await?;
        store.get_json::<Failed>(&record::failed_path(&job.id.0)).await?;
        store.get_json::<Failed>(&record::dead_path(&job.id.0)).await?;
    }
    let (before_look_s, before_look_req) = (clock.elapsed().as_secs_f64() * scale, (requests()? - r0) as f64 * scale);
    // Asking about each job, 32 at a time (what a stage of at most `PROBE_AT_MOST` jobs does).
    let sample_ids: Vec<&str> = sample.iter().map(|j| j.id.0.as_str()).collect();
    let (r0, clock) = (requests()?, Instant::now());
    JobRecords::probe(&store, &sample_ids).await?;
    let (probe_s, probe_req) = (clock.elapsed().as_secs_f64() * scale, (requests()? - r0) as f64 * scale);

    // Now: one listing tells every job's state.
    let (r0, clock) = (requests()?, Instant::now());
    let records = JobRecords::list(&store).await?;
    let pending: Vec<&JobEnvelope> = planned.iter().filter(|j| !records.get(&j.id.0).done).collect();
    let (now_s, now_req) = (clock.elapsed().as_secs_f64(), requests()? - r0);
    anyhow::ensure!(pending.len() == jobs - jobs.div_ceil(2), "the listing found {} jobs not done of {jobs}", pending.len());
    println!(
        "which jobs are done: before {before_plan_s:.1} s and {before_plan_req:.0} requests (from {} jobs), now {now_s:.1} s and {now_req} requests",
        sample.len()
    );
    println!("asking about each job, {} at a time: {probe_s:.1} s and {probe_req:.0} requests", 32);
    println!("one look while following: before {before_look_s:.1} s and {before_look_req:.0} requests, now {now_s:.1} s and {now_req} requests (the same listing)");

    // Committing a stage reads every job's outcome from its done record: one after another before, 32
    // at a time now (a sample of the done jobs).
    let done_sample: Vec<&JobEnvelope> = sample.iter().step_by(2).collect();
    let clock = Instant::now();
    for job in &done_sample {
        store.get_json::<Done>(&record::done_path(&job.id.0)).await?;
    }
    let outcomes_scale = (jobs / 2) as f64 / done_sample.len() as f64;
    let before_outcomes_s = clock.elapsed().as_secs_f64() * outcomes_scale;
    let clock = Instant::now();
    read_outcomes::<serde_json::Value>(&store, "bench", done_sample.iter().copied()).await?;
    println!(
        "reading {} done jobs' outcomes: before {before_outcomes_s:.1} s, now {:.1} s",
        jobs / 2,
        clock.elapsed().as_secs_f64() * outcomes_scale
    );

    // Publishing the pending jobs: one round trip each (a sample) against windows of confirms.
    let amqp = std::env::var("PHRASESWEEP_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let farm = format!("{prefix}-{}", std::process::id());
    let queue = AmqpQueue::coordinator(&amqp, &farm, 5, "bench", 0).await?;
    let clock = Instant::now();
    for job in &pending[..SAMPLE.min(pending.len())] {
        queue.publish_job(job).await?;
    }
    let one_by_one = clock.elapsed().as_secs_f64() * pending.len() as f64 / SAMPLE.min(pending.len()) as f64;
    let clock = Instant::now();
    queue.publish_jobs(&pending).await?;
    println!("publishing {} jobs: before {one_by_one:.1} s (one confirm at a time), now {:.1} s", pending.len(), clock.elapsed().as_secs_f64());
    drop(queue);
    for q in [format!("{farm}.cpu.bench"), format!("{farm}.gpu.bench"), format!("{farm}.dead")] {
        let _ = std::process::Command::new(root.join("infra/rabbitmq-ctl.sh")).args(["-q", "delete_queue", &q]).output();
    }
    println!("memory: resident {} MiB, peak {} MiB", memory_kib("VmRSS") / 1024, memory_kib("VmHWM") / 1024);
    Ok(())
}

/// The records a worker leaves for a job it ran: started, done, and one attempt.
async fn seed_done(store: &Store, job: &JobEnvelope) -> Result<()> {
    let id = &job.id.0;
    let started = Started { worker: "seed".into(), attempt: 1, at_unix: 0, beat_unix: None };
    store.put_json(&record::started_path(id), &started).await?;
    let done = Done {
        id: id.clone(),
        kind: job.spec.kind().into(),
        label: job.spec.label(),
        worker: "seed".into(),
        seconds: 1.0,
        at_unix: 0,
        output: serde_json::json!({}),
    };
    store.put_json(&record::done_path(id), &done).await?;
    let attempt = Attempt { by: "seed".into(), delivery: 1, at_unix: 0, outcome: AttemptOutcome::Done };
    phrasesweep_workers::worker::record_attempt(store, id, &attempt).await
}

/// A field of /proc/self/status, in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}
