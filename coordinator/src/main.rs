//! The `phrasesweep` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use phrasesweep_coordinator::{RunReport, archive, compare, drive, results, run_embedded, search, status, summary, workers};
use phrasesweep_schemas::retrieval::Unit;
use phrasesweep_schemas::ExperimentConfig;
use phrasesweep_schemas::sweep::Point;
use phrasesweep_schemas::config::{BrokerConfig, WorkerSettings, redact_url};
use phrasesweep_schemas::farm::WorkerCard;
use phrasesweep_schemas::job::JobClass;
use phrasesweep_workers::io::queue::amqp::{AmqpQueue, DEFAULT_JOB_QUEUE};
use phrasesweep_workers::io::store::{Store, now_unix};
use phrasesweep_workers::worker::{Stop, StoreAccess, Worker};
use std::path::PathBuf;
use tracing::info;

/// The crate version and the commit this binary was built from (as the run ledger records them).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("PHRASESWEEP_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "phrasesweep", version = VERSION, about = "DensePhrases-style retrieval experiments, from one machine to a farm")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline of CONFIG (each point of its `[sweep]` in turn, sharing one store): in
    /// this process, or as coordinator when a broker is given.
    Run {
        config: PathBuf,
        /// RabbitMQ URL (overrides `broker.url` of the config); workers must be started separately.
        #[arg(long, env = "PHRASESWEEP_BROKER")]
        broker: Option<String>,
        /// The sweep's priority on a shared farm (overrides `coordinator.priority`).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
    },
    /// Plan CONFIG's jobs on RabbitMQ, follow them, and commit each stage.
    Coordinator {
        config: PathBuf,
        #[arg(long, env = "PHRASESWEEP_BROKER")]
        broker: Option<String>,
        /// The sweep's priority on a shared farm (overrides `coordinator.priority`).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
    },
    /// The live workers of a farm: each answers the roll call with its host, device, memory, classes
    /// served, build, job in hand, jobs settled and the sweeps it serves.
    Workers {
        #[arg(long, env = "PHRASESWEEP_BROKER")]
        broker: String,
        /// The farm's job queue (the config's `broker.queue`).
        #[arg(long, default_value = DEFAULT_JOB_QUEUE)]
        queue: String,
        /// Seconds to wait for answers.
        #[arg(long, default_value_t = 2.0)]
        wait: f64,
    },
    /// Serve jobs from RabbitMQ until stopped. S3 credentials come from the AWS_* environment.
    Worker {
        #[arg(long, env = "PHRASESWEEP_BROKER")]
        broker: String,
        /// Name in logs and job records (default: host:pid).
        #[arg(long)]
        name: Option<String>,
        /// Job queue to serve (the config's `broker.queue`).
        #[arg(long, default_value = DEFAULT_JOB_QUEUE)]
        queue: String,
        /// Deliveries of one job before RabbitMQ dead-letters it (the config's `broker.delivery_limit`).
        #[arg(long, default_value_t = 5)]
        delivery_limit: u32,
        /// Seconds a transient error is retried inside the worker (backoff with jitter) before the
        /// job goes back to the queue.
        #[arg(long, default_value_t = WorkerSettings::default().retry_for_s)]
        retry_for: u64,
        /// Seconds between a running job's heartbeats on the store.
        #[arg(long, default_value_t = WorkerSettings::default().heartbeat_s, value_parser = clap::value_parser!(u64).range(1..))]
        heartbeat: u64,
        /// Stop after settling this many jobs (as after a SIGTERM: the last one is finished first).
        #[arg(long, value_name = "N")]
        drain_after: Option<u64>,
        /// Classes of jobs to take, first come first: `gpu` (encoding, training, QSFT, dense search)
        /// and `cpu` (ingest, the index, merges, BM25, scoring). Default: both on a CUDA build, `cpu`
        /// on a CPU build (a CPU-only farm passes `--serves cpu,gpu`).
        #[arg(long, value_delimiter = ',')]
        serves: Option<Vec<JobClass>>,
    },
    /// Per stage (per point of a sweep): jobs done, running, stale, failed, dead-lettered and waiting;
    /// which worker runs each running job; and the attempt history of every job that failed, stalled or
    /// needed more than one delivery.
    Status { config: PathBuf },
    /// The points of CONFIG's sweep and, per stage, the jobs each point plans and how many are done
    /// already, then the jobs to run over all points (a job shared by points counted once). Runs nothing.
    Plan { config: PathBuf },
    /// Ranked evidence for one question from a run's phrase index.
    Search {
        /// The run's store (path, file:// or s3://): its latest committed index. S3 credentials come from
        /// the AWS_* environment.
        #[arg(long, required_unless_present = "config", conflicts_with = "config")]
        index: Option<String>,
        /// A config that ran: the index it built (on a store shared by a sweep's points, the one of
        /// `--point`), searched with its `[search]` settings.
        #[arg(long)]
        config: Option<PathBuf>,
        /// With `--config`, which point of its sweep (1-based, as `phrasesweep status` numbers them).
        #[arg(long, requires = "config")]
        point: Option<usize>,
        /// Query encoder: a HuggingFace BERT folder, a phrasesweep checkpoint, `default`, or with
        /// `--config` an encoder its retrievals name (`trained`, a QSFT run).
        #[arg(long, default_value = "default")]
        query_encoder: String,
        #[arg(long, value_enum, default_value = "sentence")]
        unit: UnitArg,
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// IVF partitions probed (default: the config's `[search] nprobes`, else its default).
        #[arg(long)]
        nprobes: Option<usize>,
        question: String,
    },
    /// The metrics of a store's last run; with several stores, `--where`, `--sort`, `--sql` or
    /// `--format`, a query over every run of every store named (their run ledgers): tables `runs`,
    /// `metrics`, `reading` (the reader's EM and F1 at each word budget), `questions` (per-question
    /// scores), `training` (training logs), and the view
    /// `results` (metrics beside their run's sweep, store, status, commit, start and jobs executed).
    Results {
        /// The stores (path, file:// or s3://); S3 credentials come from the AWS_* environment.
        #[arg(required = true)]
        stores: Vec<String>,
        /// Also write each retrieval's evidence as a run file of the reference study
        /// (`DIR/<retrieval>.tsv`: `qid \t repr(texts) \t repr(meta)` per question); one store only.
        #[arg(long, value_name = "DIR")]
        export_runs: Option<PathBuf>,
        /// A filter on `results`, in SQL (`"retrieval = 'sentence' AND mar_seed > 0.5"`).
        #[arg(long = "where", value_name = "SQL")]
        filter: Option<String>,
        /// The order of `results`, in SQL (`"mar_seed DESC"`).
        #[arg(long, value_name = "SQL")]
        sort: Option<String>,
        /// A whole query of one's own over `runs`, `metrics`, `training` and `results`.
        #[arg(long)]
        sql: Option<String>,
        #[arg(long, value_enum)]
        format: Option<archive::Format>,
        /// Where `--format parquet` writes (text formats go to standard output).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Two runs side by side (ids, or unique prefixes, from `results`): per retrieval both scored, the
    /// difference in mAR with a paired bootstrap 95 % interval over their questions, and the questions
    /// each did better on.
    Compare {
        run_a: String,
        run_b: String,
        /// The stores whose ledgers hold the runs (path, file:// or s3://).
        #[arg(long = "store", required = true)]
        stores: Vec<String>,
        /// Only this retrieval.
        #[arg(long)]
        retrieval: Option<String>,
        /// Questions named per direction.
        #[arg(long, default_value_t = 5)]
        show: usize,
    },
    /// One self-contained HTML page of the stores' archives: recall against words retrieved, the metrics
    /// with bootstrap intervals, each sweep axis against mAR, training loss curves, and the questions
    /// each retrieval found. Each point is shown by its latest finished run.
    Report {
        #[arg(required = true)]
        stores: Vec<String>,
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Score a run file in the reference study's format against a questions file, in every mAR form.
    Score { runfile: PathBuf, questions: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UnitArg {
    Phrase,
    Sentence,
    Paragraph,
    Document,
}

impl From<UnitArg> for Unit {
    fn from(u: UnitArg) -> Unit {
        match u {
            UnitArg::Phrase => Unit::Phrase,
            UnitArg::Sentence => Unit::Sentence,
            UnitArg::Paragraph => Unit::Paragraph,
            UnitArg::Document => Unit::Document,
        }
    }
}

/// A store named on the command line; endpoint and credentials come from the AWS_* environment.
fn main() -> std::process::ExitCode {
    phrasesweep_workers::env::give_lance_every_core();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PHRASESWEEP_LOG")
                .unwrap_or_else(|_| "info,lance=warn,lance_core=warn,lance_io=warn,lance_file=warn,datafusion=warn".into()),
        )
        .init();
    // Jobs compute on the threads that poll them (their kernels wait on rayon), so a runtime of one
    // thread per core can be all busy with jobs. The spare threads keep the coordinator, the store
    // lease and the job heartbeats running meanwhile.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cores + 8).enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(run(Cli::parse()));
    // Jobs still computing (an embedded run that failed or was stopped) are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A worker's stop requests: the first SIGTERM or SIGINT drains it (the job in hand is finished and
/// acked), the second stops it at once (the job goes back to the queue).
fn stop_signals() -> tokio::sync::watch::Receiver<Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel(Stop::No);
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
        for level in [Stop::Drain, Stop::Now] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            match level {
                Stop::Drain => tracing::warn!("stopping: finishing the job in hand, then exiting (signal again to give it back at once)"),
                _ => tracing::warn!("stopping now: giving the job in hand back to the queue"),
            }
            let _ = tx.send(level);
        }
    });
    rx
}

/// The broker to use: the flag, else the config's `[broker]`; `None` means embedded.
fn choose_broker(config: &ExperimentConfig, flag: Option<String>) -> Option<BrokerConfig> {
    match (flag, config.broker.clone()) {
        (Some(url), Some(b)) => Some(BrokerConfig { url, ..b }),
        (Some(url), None) => Some(BrokerConfig { url, queue: DEFAULT_JOB_QUEUE.into(), delivery_limit: 5 }),
        (None, b) => b,
    }
}

async fn coordinate(point: &Point, broker: &BrokerConfig) -> Result<RunReport> {
    let config = &point.config;
    let store = Store::from_config(&config.store)?;
    store.check_access().await?;
    let url = broker.url.as_str();
    let priority = config.coordinator.priority;
    let queue = AmqpQueue::coordinator(url, &broker.queue, broker.delivery_limit, &config.name, priority).await?;
    info!(broker = %redact_url(url), sweep = %config.name, priority, "coordinating");
    drive(&queue, &store, point).await
}

/// Runs each point of a sweep in turn, on the farm when there is a broker. A point that fails does not
/// stop the others (a stop signal does); the sweep fails if any point did, and a rerun runs only what
/// is not done.
async fn run_points(points: &[Point], broker: Option<String>) -> Result<()> {
    let mut failed = Vec::new();
    let mut scored = Vec::new();
    for (i, point) in points.iter().enumerate() {
        if points.len() > 1 {
            println!("\n== point {}/{}: {}", i + 1, points.len(), point.label);
        }
        let ran = match choose_broker(&point.config, broker.clone()) {
            Some(b) => coordinate(point, &b).await,
            None => run_embedded(point).await,
        };
        match ran {
            Ok(r) => {
                scored.extend(r.metrics.iter().map(|m| (point.label.clone(), m.retrieval.clone(), m.mar_seed, m.mar_strict)));
                report(&Store::from_config(&point.config.store)?, r).await?;
            }
            Err(e) if e.is::<drive::Stopped>() || points.len() == 1 => return Err(e),
            Err(e) => {
                tracing::error!(point = %point.label, "{e:#}");
                failed.push(format!("{}: {e:#}", point.label));
            }
        }
    }
    if points.len() > 1 && !scored.is_empty() {
        let width = scored.iter().map(|(p, ..)| p.len()).max().unwrap_or(0);
        println!("\n{:<width$} {:<24} {:>8} {:>10}", "point", "retrieval", "mAR", "mAR-strict");
        for (point, retrieval, seed, strict) in &scored {
            println!("{point:<width$} {retrieval:<24} {seed:>8.4} {strict:>10.4}");
        }
    }
    anyhow::ensure!(failed.is_empty(), "{} of {} points failed (a rerun retries them):\n{}", failed.len(), points.len(), failed.join("\n"));
    Ok(())
}

async fn report(store: &Store, report: RunReport) -> Result<()> {
    if report.executed == 0 && report.committed.is_empty() {
        println!("nothing to do: all {} jobs were already done (content-addressed ids)", report.skipped);
    } else {
        println!("ran {} jobs ({} already done); committed: {}", report.executed, report.skipped, report.committed.join(", "));
    }
    println!("{}", summary::corpus_summary(store).await?);
    for line in &report.training {
        println!("{line}");
    }
    if let Some(r) = report.recall_at_100 {
        println!("index recall@100 of start hits against exact search: {r:.4}");
    }
    if !report.metrics.is_empty() {
        print!("{}", results::table(&report.metrics));
    }
    if !report.reading.is_empty() {
        println!("the reader's exact match and F1 from the evidence cut at each word budget:");
        print!("{}", results::reading_table(&report.metrics, &report.reading));
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let points = |p: &PathBuf, priority: Option<i32>| -> Result<Vec<Point>> {
        let mut points = phrasesweep_coordinator::config_file::points(p)?;
        for point in &mut points {
            point.config.coordinator.priority = priority.unwrap_or(point.config.coordinator.priority);
        }
        Ok(points)
    };
    match cli.command {
        Command::Run { config, broker, priority } => run_points(&points(&config, priority)?, broker).await,
        Command::Coordinator { config, broker, priority } => {
            let points = points(&config, priority)?;
            choose_broker(&points[0].config, broker.clone()).context("no broker: pass --broker URL or set broker.url in the config")?;
            run_points(&points, broker).await
        }
        Command::Worker { broker, name, queue, delivery_limit, retry_for, heartbeat, drain_after, serves } => {
            let name = name.unwrap_or_else(phrasesweep_workers::env::host_pid);
            let serves = serves.unwrap_or_else(|| if cfg!(feature = "cuda") { JobClass::ALL.to_vec() } else { vec![JobClass::Cpu] });
            if serves.contains(&JobClass::Gpu) && !cfg!(feature = "cuda") {
                tracing::warn!("serving gpu jobs (encoding, training, dense search) on a CPU build: they run here, far slower than on a GPU");
            }
            info!(serves = ?serves, "job classes");
            let card = WorkerCard {
                name: name.clone(),
                host: phrasesweep_workers::env::host_name(),
                pid: std::process::id(),
                device: phrasesweep_workers::model::device::describe_job_device(),
                memory_bytes: phrasesweep_workers::env::memory_bytes(),
                serves,
                version: VERSION.into(),
                started_unix: now_unix(),
                current: None,
                jobs_settled: 0,
                sweeps: Vec::new(),
                at_unix: 0,
            };
            let queue = AmqpQueue::worker(&broker, &queue, delivery_limit, card).await?;
            let settings = WorkerSettings { retry_for_s: retry_for, heartbeat_s: heartbeat };
            Worker::new(name, StoreAccess::FromMessage, settings).serve(&queue, stop_signals(), drain_after).await
        }
        Command::Workers { broker, queue, wait } => {
            let farm = AmqpQueue::observer(&broker, &queue).await?;
            let cards = farm.roll_call(std::time::Duration::from_secs_f64(wait)).await?;
            print!("{}", workers::table(&cards, now_unix()));
            Ok(())
        }
        Command::Search { index, config, point, query_encoder, unit, k, nprobes, question } => {
            let points = config.as_ref().map(|c| points(c, None)).transpose()?.unwrap_or_default();
            let target = match (&index, &config) {
                (Some(uri), _) => search::Target::Store(uri),
                (None, Some(c)) => {
                    let i = match (point, points.len()) {
                        (Some(i), n) if (1..=n).contains(&i) => i - 1,
                        (Some(i), n) => anyhow::bail!("{}: --point {i}, but the config has {n} point(s)", c.display()),
                        (None, 1) => 0,
                        (None, n) => anyhow::bail!("{}: a sweep of {n} points: choose one with --point (`phrasesweep status` lists them)", c.display()),
                    };
                    search::Target::Config(&points[i].config)
                }
                (None, None) => unreachable!("clap requires --index or --config"),
            };
            let hits = search::search(target, &query_encoder, unit.into(), k, nprobes, &question).await?;
            for (rank, h) in hits.iter().enumerate() {
                println!("{:>3}. [{:.3}] {} ({}, paragraph {}): {}", rank + 1, h.score, h.title, h.doc_id, h.paragraph, h.text);
            }
            Ok(())
        }
        Command::Results { stores, export_runs, filter, sort, sql, format, output } if stores.len() > 1 || filter.is_some() || sort.is_some() || sql.is_some() || format.is_some() => {
            anyhow::ensure!(export_runs.is_none(), "--export-runs exports one store's last run: name one store and no query");
            let stores = stores.iter().map(|s| Store::at(s)).collect::<Result<Vec<_>>>()?;
            let (schema, batches) = archive::query(&stores, &archive::Query { sql, filter, sort }).await?;
            let format = format.unwrap_or(archive::Format::Table);
            let bytes = archive::render(&batches, schema, format)?;
            match (format, output) {
                (_, Some(path)) => std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?,
                (archive::Format::Parquet, None) => anyhow::bail!("--format parquet writes a file: name it with --output"),
                (_, None) => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            // Beside a table; apart from data meant for another program.
            for line in archive::reproductions(&stores).await? {
                if format == archive::Format::Table { println!("{line}") } else { eprintln!("{line}") }
            }
            Ok(())
        }
        Command::Results { stores, export_runs, .. } => {
            let store = Store::at(&stores[0])?;
            print!("{}", results::table(&results::read_metrics(&store).await?));
            // A sweep's store: every point's latest run, beside its axes.
            let points = "SELECT point, retrieval, mar_seed, mar_strict, recall_1000w, em_top_phrase FROM results \
                          WHERE point <> '' AND run_id IN (SELECT MAX(run_id) FROM runs WHERE status = 'done' GROUP BY point) ORDER BY point, retrieval";
            let (schema, batches) = archive::query(std::slice::from_ref(&store), &archive::Query { sql: Some(points.into()), ..Default::default() }).await?;
            if batches.iter().any(|b| b.num_rows() > 0) {
                println!("\nevery point of the sweep, by its latest run (`--where`, `--sort` and `--sql` ask for more):");
                std::io::Write::write_all(&mut std::io::stdout(), &archive::render(&batches, schema, archive::Format::Table)?)?;
            }
            for line in archive::reproductions(std::slice::from_ref(&store)).await? {
                println!("{line}");
            }
            if let Some(dir) = export_runs {
                for file in results::export_runs(&store, &dir).await? {
                    eprintln!("wrote {}", file.display());
                }
            }
            Ok(())
        }
        Command::Compare { run_a, run_b, stores, retrieval, show } => {
            let stores = stores.iter().map(|s| Store::at(s)).collect::<Result<Vec<_>>>()?;
            print!("{}", compare::compare(&stores, &run_a, &run_b, retrieval.as_deref(), show).await?);
            Ok(())
        }
        Command::Report { stores, output } => {
            let stores = stores.iter().map(|s| Store::at(s)).collect::<Result<Vec<_>>>()?;
            let page = phrasesweep_coordinator::report::render(&stores).await?;
            std::fs::write(&output, page).with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        Command::Score { runfile, questions } => {
            print!("{}", results::table(&[results::score_run_file(&runfile, &questions)?]));
            Ok(())
        }
        Command::Status { config } => {
            let points = points(&config, None)?;
            let mut notes = Vec::new();
            for (i, point) in points.iter().enumerate() {
                let status = status::stage_status(&point.config).await?;
                if points.len() > 1 {
                    println!("{}point {}/{}: {}", if i > 0 { "\n" } else { "" }, i + 1, points.len(), point.label);
                }
                println!("{}", status::HEADER);
                for s in &status.stages {
                    println!("{s}");
                }
                // A job shared by points is noted once.
                notes.extend(status.notes.into_iter().filter(|n| !notes.iter().any(|m: &status::JobNote| m.id == n.id)).collect::<Vec<_>>());
            }
            if !notes.is_empty() {
                println!("\njobs running, failed, stalled or that needed more than one delivery:");
                for note in &notes {
                    println!("  {note}");
                }
            }
            Ok(())
        }
        Command::Plan { config } => {
            print!("{}", status::sweep_plan(&points(&config, None)?).await?);
            Ok(())
        }
    }
}
