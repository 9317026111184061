//! RabbitMQ transport (lapin). Jobs live in durable quorum queues with a delivery limit, one queue per
//! sweep and class of job (`<queue>.<class>.<sweep>`), dead-lettered to the sweep's own
//! `<queue>.dead.<sweep>`; messages are
//! persistent and published with confirms; a worker takes one job at a time and acks only once the
//! job's output is durable. A lost connection is re-opened with backoff; deliveries of the old
//! connection come back from the broker, which is harmless since jobs are idempotent.
//!
//! A fanout exchange (`<queue>.farm`) carries the rest: each coordinator announces its sweep and
//! priority every [`ANNOUNCE_EVERY`], and workers look for jobs in the sweeps they heard of, in the
//! order of [`SweepBook`]; `phrasesweep workers` calls the roll on it and every live worker answers.

use super::sweeps::SweepBook;
use super::{JobDelivery, JobQueue};
use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use phrasesweep_schemas::config::redact_url;
use phrasesweep_schemas::farm::{CurrentJob, FarmMessage, WorkerCard};
use phrasesweep_schemas::job::JobClass;
use phrasesweep_schemas::{JobEnvelope, JobEvent};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// The default job queue; a farm that shares a broker with another picks its own name.
pub const DEFAULT_JOB_QUEUE: &str = "phrasesweep.jobs";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a running process keeps trying to get back to a broker that went away.
const RECONNECT_FOR: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    /// The name every queue and exchange of the farm starts with.
    queue: String,
    /// The broadcast exchange (`<queue>.farm`) of sweep announcements and roll calls.
    farm: String,
    delivery_limit: u32,
    role: Role,
    state: Mutex<Option<Link>>,
    /// The channel jobs are taken on (`basic.get`, one at a time) and settled on.
    jobs: Mutex<Option<Channel>>,
    events: Mutex<Option<(String, Consumer)>>,
    /// A worker's sweeps, fed by its listener.
    book: Arc<std::sync::Mutex<SweepBook>>,
    /// A worker's job in hand and count of settled deliveries, for the roll call.
    live: Arc<std::sync::Mutex<Live>>,
    /// Wakes a worker's idle poll when a sweep is announced: a coordinator announces right after it
    /// publishes a stage's jobs, so idle workers take them at once instead of at their next poll.
    wake: tokio::sync::Notify,
}

/// What a connection is for.
enum Role {
    /// Publishes the jobs of one sweep and announces it.
    Coordinator { sweep: String, priority: i32 },
    /// Takes jobs of the classes it serves and answers roll calls.
    Worker { card: WorkerCard },
    /// Reads the dead-letter queue or calls the roll; takes and publishes no job.
    Observer,
}

#[derive(Debug, Default)]
struct Live {
    current: Option<CurrentJob>,
    settled: u64,
}

/// The queue of one sweep's jobs of one class.
pub fn sweep_queue(queue: &str, class: JobClass, sweep: &str) -> String {
    format!("{queue}.{}.{sweep}", class.name())
}

/// The queue of one sweep's dead-lettered jobs, which only that sweep's coordinator reads (it records
/// them on the sweep's store, which another sweep's coordinator may not even reach).
pub fn dead_queue(queue: &str, sweep: &str) -> String {
    format!("{queue}.dead.{sweep}")
}

/// Jobs published before waiting for their confirms.
const PUBLISH_WINDOW: usize = 512;

/// How often a coordinator announces its sweep; a worker forgets a sweep not heard of for three times as
/// long, and a worker that starts mid-sweep finds it within this long.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// A sweep queue nobody took from, published to or declared for this long is deleted with what it
/// holds: its coordinator is long gone, and a rerun publishes every job that is not done again.
const SWEEP_QUEUE_EXPIRES: Duration = Duration::from_secs(24 * 3600);

/// How often an idle worker looks for a job, at most (it looks sooner right after one, and at once when a
/// sweep is announced).
const IDLE_POLL: Duration = Duration::from_secs(1);
const FIRST_POLL: Duration = Duration::from_millis(50);

/// One live connection and its channels.
struct Link {
    conn: Arc<Connection>,
    publish: Channel,
    generation: u64,
}

impl AmqpQueue {
    /// A coordinator's connection: publishes the jobs of `sweep` and announces it with `priority` until
    /// dropped.
    pub async fn coordinator(url: &str, queue: &str, delivery_limit: u32, sweep: &str, priority: i32) -> Result<Self> {
        let q = Self::connect(url, queue, delivery_limit, Role::Coordinator { sweep: sweep.to_string(), priority }).await?;
        q.announce().await?;
        let weak = Arc::downgrade(&q.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ANNOUNCE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (AmqpQueue { inner }).announce().await {
                    warn!("cannot announce the sweep: {e:#}");
                }
            }
        });
        Ok(q)
    }

    /// A worker's connection: takes jobs of the classes `card` serves, from the sweeps it hears of, and
    /// answers roll calls with `card`.
    pub async fn worker(url: &str, queue: &str, delivery_limit: u32, card: WorkerCard) -> Result<Self> {
        let q = Self::connect(url, queue, delivery_limit, Role::Worker { card }).await?;
        listen(Arc::downgrade(&q.inner));
        Ok(q)
    }

    /// A connection that takes and publishes no job: for the dead letters, and the roll call.
    pub async fn observer(url: &str, queue: &str) -> Result<Self> {
        Self::connect(url, queue, 1, Role::Observer).await
    }

    /// Connects and declares the topology; fails fast with a clear error if the broker cannot be reached.
    async fn connect(url: &str, queue: &str, delivery_limit: u32, role: Role) -> Result<Self> {
        let q = Self {
            inner: Arc::new(Inner {
                url: url.to_string(),
                queue: queue.to_string(),
                farm: format!("{queue}.farm"),
                delivery_limit,
                role,
                state: Mutex::new(None),
                jobs: Mutex::new(None),
                events: Mutex::new(None),
                book: Default::default(),
                live: Default::default(),
                wake: Default::default(),
            }),
        };
        let link = q.open(0).await?;
        *q.inner.state.lock().await = Some(link);
        info!(broker = %redact_url(url), "connected to RabbitMQ");
        Ok(q)
    }

    /// Calls the roll: every worker of this farm that answers within `wait`, by name.
    pub async fn roll_call(&self, wait: Duration) -> Result<Vec<WorkerCard>> {
        let (conn, _, _) = self.link().await?;
        let ch = conn.create_channel().await?;
        let farm = self.inner.farm.as_str();
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        if ch.exchange_declare(farm.into(), ExchangeKind::Fanout, passive, FieldTable::default()).await.is_err() {
            bail!("no farm on this broker uses the job queue `{}` (no exchange {farm}): check --queue", self.inner.queue);
        }
        let reply = ch
            .queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default())
            .await?;
        let mut answers = ch
            .basic_consume(reply.name().as_str().into(), "roll-call".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await?;
        let props = BasicProperties::default().with_reply_to(reply.name().as_str().into());
        let body = serde_json::to_vec(&FarmMessage::RollCall)?;
        ch.basic_publish(self.inner.farm.as_str().into(), "".into(), BasicPublishOptions::default(), &body, props).await?;
        let mut cards = Vec::new();
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(d))) = tokio::time::timeout_at(until, answers.next()).await {
            match serde_json::from_slice::<WorkerCard>(&d.data) {
                Ok(card) => cards.push(card),
                Err(e) => warn!("ignoring an unreadable answer to the roll call: {e}"),
            }
        }
        let _ = ch.close(200, "roll called".into()).await;
        cards.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(cards)
    }

    /// Announces the coordinator's sweep, declaring its queues first (which also keeps them from
    /// expiring while the sweep runs).
    async fn announce(&self) -> Result<()> {
        self.announce_with(false).await
    }

    /// Announces the sweep as having just published jobs: idle workers that hear it look at once.
    async fn announce_published(&self) -> Result<()> {
        self.announce_with(true).await
    }

    async fn announce_with(&self, published: bool) -> Result<()> {
        let Role::Coordinator { sweep, priority } = &self.inner.role else { return Ok(()) };
        let (conn, ch, _) = self.link().await?;
        self.declare_sweep(&conn, sweep).await?;
        let body = serde_json::to_vec(&FarmMessage::Sweep { sweep: sweep.clone(), priority: *priority, every_s: ANNOUNCE_EVERY.as_secs(), published })?;
        let confirm = ch.basic_publish(self.inner.farm.as_str().into(), "".into(), BasicPublishOptions::default(), &body, BasicProperties::default()).await?.await?;
        if confirm.is_nack() {
            bail!("RabbitMQ refused the sweep's announcement (nack)");
        }
        Ok(())
    }

    async fn open(&self, generation: u64) -> Result<Link> {
        let shown = redact_url(&self.inner.url);
        // The process id names the connection, so an operator (or a test) can find and close it.
        let props = ConnectionProperties::default().with_connection_name(format!("phrasesweep-{}", std::process::id()).into());
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.inner.url, props))
            .await
            .map_err(|_| anyhow!("cannot reach RabbitMQ at {shown}: no answer within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("cannot reach RabbitMQ at {shown}: {e}"))?;
        let publish = conn.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        if !matches!(self.inner.role, Role::Observer) {
            self.declare(&conn).await?;
        }
        Ok(Link { conn: Arc::new(conn), publish, generation })
    }

    async fn declare(&self, conn: &Connection) -> Result<()> {
        let ch = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(self.inner.farm.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        let _ = ch.close(200, "declared".into()).await;
        if let Role::Coordinator { sweep, .. } = &self.inner.role {
            self.declare_sweep(conn, sweep).await?;
        }
        Ok(())
    }

    /// Declares `sweep`'s job queues, one per class, and its dead-letter queue.
    async fn declare_sweep(&self, conn: &Connection, sweep: &str) -> Result<()> {
        let mut ch = conn.create_channel().await?;
        let dead = dead_queue(&self.inner.queue, sweep);
        let mut expires = quorum();
        expires.insert("x-expires".into(), AMQPValue::LongInt(SWEEP_QUEUE_EXPIRES.as_millis() as i32));
        ch.queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), expires.clone()).await?;
        let mut args = expires;
        // Through the default exchange, straight to the sweep's own dead-letter queue.
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(self.inner.delivery_limit as i32));
        for class in JobClass::ALL {
            let name = sweep_queue(&self.inner.queue, class, sweep);
            if let Err(e) = ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args.clone()).await {
                // Declared earlier with other arguments (another delivery limit): use it as it is. The
                // refusal closed the channel.
                warn!("job queue {name} exists with other settings ({e}); using it as declared");
                ch = conn.create_channel().await?;
                ch.queue_declare(name.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?;
            }
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    /// The current link, reconnecting if the last one failed.
    async fn link(&self) -> Result<(Arc<Connection>, Channel, u64)> {
        let mut state = self.inner.state.lock().await;
        if let Some(l) = state.as_ref() {
            if l.conn.status().connected() && l.publish.status().connected() {
                return Ok((l.conn.clone(), l.publish.clone(), l.generation));
            }
        }
        let generation = state.as_ref().map_or(0, |l| l.generation) + 1;
        *state = None;
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            match self.open(generation).await {
                Ok(l) => {
                    info!("reconnected to RabbitMQ");
                    let out = (l.conn.clone(), l.publish.clone(), l.generation);
                    *state = Some(l);
                    return Ok(out);
                }
                Err(e) if started.elapsed() < RECONNECT_FOR => {
                    warn!("{e:#}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e.context(format!("gave up reconnecting after {RECONNECT_FOR:?}"))),
            }
        }
    }

    /// Publishes persistently to a queue through the default exchange and waits for the confirm,
    /// retrying across reconnects.
    async fn publish(&self, queue: &str, body: &[u8]) -> Result<()> {
        let props = persistent_json();
        for attempt in 0..5 {
            let (_, ch, _) = self.link().await?;
            let res = async {
                let confirm = ch
                    .basic_publish("".into(), queue.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, body, props.clone())
                    .await?
                    .await?;
                if confirm.is_nack() {
                    bail!("RabbitMQ refused the message (nack)");
                }
                if let Some(ret) = confirm.take_message() {
                    bail!("RabbitMQ could not route the message to queue {queue} (reply {})", ret.reply_code);
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 4 => warn!("publish to {queue} failed: {e:#}; retrying"),
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    async fn ensure_event_queue(&self, conn: &Connection, name: &str) -> Result<()> {
        let ch = conn.create_channel().await?;
        ch.queue_declare(name.into(), QueueDeclareOptions::durable(), quorum()).await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }
}

/// What every job and event is published with: persistent, JSON.
fn persistent_json() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into())
}

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

pub struct AmqpDelivery {
    delivery: lapin::message::Delivery,
    live: Arc<std::sync::Mutex<Live>>,
}

impl AmqpDelivery {
    /// The job leaves the worker's hands, whatever became of it.
    fn settle(&self) {
        let mut live = self.live.lock().unwrap();
        live.current = None;
        live.settled += 1;
    }
}

/// lapin answers `Ok(false)` when the delivery's channel is gone: the broker never got the answer and
/// delivers the job again. Say so, as an error the worker logs and carries on from.
fn settled(what: &str, result: lapin::Result<bool>) -> Result<()> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => bail!("the {what} did not reach RabbitMQ: the delivery's channel closed"),
        Err(e) => Err(anyhow!(e).context(format!("the {what} failed"))),
    }
}

impl JobDelivery for AmqpDelivery {
    fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    fn attempt(&self) -> u32 {
        let count = self.delivery.properties.headers().as_ref().and_then(|h| {
            h.inner().get("x-delivery-count").and_then(|v| match v {
                AMQPValue::LongLongInt(n) => Some(*n as u32),
                AMQPValue::LongInt(n) => Some(*n as u32),
                AMQPValue::LongUInt(n) => Some(*n),
                AMQPValue::ShortInt(n) => Some(*n as u32),
                _ => None,
            })
        });
        match count {
            Some(n) => n + 1,
            None if self.delivery.redelivered => 2,
            None => 1,
        }
    }

    async fn ack(self) -> Result<()> {
        self.settle();
        settled("ack", self.delivery.acker.ack(BasicAckOptions::default()).await)
    }

    async fn retry(self) -> Result<()> {
        self.settle();
        settled("nack", self.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await)
    }

    async fn dead_letter(self) -> Result<()> {
        self.settle();
        settled("reject", self.delivery.acker.reject(BasicRejectOptions { requeue: false }).await)
    }
}

impl JobQueue for AmqpQueue {
    type Delivery = AmqpDelivery;

    async fn publish_job(&self, job: &JobEnvelope) -> Result<()> {
        let Role::Coordinator { sweep, .. } = &self.inner.role else { bail!("only a coordinator's connection publishes jobs") };
        self.publish(&sweep_queue(&self.inner.queue, job.spec.class(), sweep), &serde_json::to_vec(job)?).await
    }

    /// Publishes a window of jobs at a time and then waits for their confirms, rather than a round trip
    /// per job; a job the broker did not confirm goes again the careful way, one at a time. Then
    /// announces the sweep, which wakes idle workers.
    async fn publish_jobs(&self, jobs: &[&JobEnvelope]) -> Result<()> {
        let Role::Coordinator { sweep, .. } = &self.inner.role else { bail!("only a coordinator's connection publishes jobs") };
        let props = persistent_json();
        for window in jobs.chunks(PUBLISH_WINDOW) {
            let (_, ch, _) = self.link().await?;
            let mut sent = Vec::with_capacity(window.len());
            let mut again = Vec::new();
            for &job in window {
                let queue = sweep_queue(&self.inner.queue, job.spec.class(), sweep);
                let body = serde_json::to_vec(job)?;
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                match ch.basic_publish("".into(), queue.as_str().into(), options, &body, props.clone()).await {
                    Ok(confirm) => sent.push((job, confirm)),
                    Err(_) => again.push(job),
                }
            }
            for (job, confirm) in sent {
                let confirmed = match confirm.await {
                    Ok(c) => !c.is_nack() && c.take_message().is_none(),
                    Err(_) => false,
                };
                if !confirmed {
                    again.push(job);
                }
            }
            for job in again {
                self.publish_job(job).await.with_context(|| format!("cannot publish job {}", job.id.short()))?;
            }
        }
        if !jobs.is_empty()
            && let Err(e) = self.announce_published().await
        {
            // The jobs are in their queues; idle workers find them at their next poll.
            warn!("cannot announce the published jobs: {e:#}");
        }
        Ok(())
    }

    /// Takes one job with `basic.get`: of the first served class that has one, from the first sweep in
    /// the book's order that has one. A consumer per queue would hold a prefetched job of one queue
    /// while running one of another; a get takes a job only when the worker is free to run it.
    async fn next_job(&self) -> Result<Option<AmqpDelivery>> {
        let Role::Worker { card } = &self.inner.role else { bail!("only a worker's connection takes jobs") };
        let mut channel = self.inner.jobs.lock().await;
        let mut idle = FIRST_POLL;
        loop {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                let (conn, _, _) = self.link().await?;
                *channel = Some(conn.create_channel().await?);
            }
            let ch = channel.as_ref().unwrap();
            // A higher priority first, then the classes in the order served, then the sweeps' turns.
            let groups = self.inner.book.lock().unwrap().order(Instant::now());
            let mut order: Vec<(JobClass, &String)> = Vec::new();
            for group in &groups {
                order.extend(card.serves.iter().flat_map(|&class| group.iter().map(move |sweep| (class, sweep))));
            }
            for (class, sweep) in order {
                let queue = sweep_queue(&self.inner.queue, class, sweep);
                match ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await {
                    Ok(Some(msg)) => {
                        info!(sweep = %sweep, class = class.name(), "took a job");
                        self.inner.book.lock().unwrap().served(sweep);
                        let job = serde_json::from_slice::<JobEnvelope>(&msg.delivery.data).ok();
                        self.inner.live.lock().unwrap().current = Some(CurrentJob {
                            id: job.as_ref().map(|j| j.id.0.clone()).unwrap_or_default(),
                            label: job.as_ref().map(|j| j.spec.label()).unwrap_or_else(|| "unreadable".into()),
                            sweep: sweep.clone(),
                            since_unix: unix_now(),
                        });
                        return Ok(Some(AmqpDelivery { delivery: msg.delivery, live: self.inner.live.clone() }));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // The queue is gone (the refusal closed the channel) or so is the link: look
                        // again once the sweep is announced again.
                        warn!("cannot take a job from {queue}: {e}");
                        self.inner.book.lock().unwrap().forget(sweep);
                        *channel = None;
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => idle = (idle * 2).min(IDLE_POLL),
                _ = self.inner.wake.notified() => idle = FIRST_POLL,
            }
        }
    }

    async fn publish_event(&self, to: &str, event: &JobEvent) -> Result<()> {
        let (conn, _, _) = self.link().await?;
        self.ensure_event_queue(&conn, to).await?;
        self.publish(to, &serde_json::to_vec(event)?).await
    }

    async fn next_event(&self, from: &str) -> Result<JobEvent> {
        let mut events = self.inner.events.lock().await;
        loop {
            if events.as_ref().is_none_or(|(name, _)| name != from) {
                let (conn, _, generation) = self.link().await?;
                self.ensure_event_queue(&conn, from).await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(64, BasicQosOptions::default()).await?;
                let c = ch
                    .basic_consume(
                        from.into(),
                        format!("coordinator-{}-{generation}", std::process::id()).as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                *events = Some((from.to_string(), c));
            }
            match events.as_mut().unwrap().1.next().await {
                Some(Ok(d)) => {
                    let parsed = serde_json::from_slice::<JobEvent>(&d.data);
                    // Events are only notifications (the store holds the truth): ack them as read.
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    match parsed {
                        Ok(e) => return Ok(e),
                        Err(e) => warn!("ignoring an unreadable event: {e}"),
                    }
                    continue;
                }
                Some(Err(e)) => warn!("event consumer failed: {e}; reconnecting"),
                None => warn!("event consumer closed; reconnecting"),
            }
            *events = None;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn next_dead_letter(&self) -> Result<Option<Vec<u8>>> {
        let Role::Coordinator { sweep, .. } = &self.inner.role else { return Ok(None) };
        let (conn, _, _) = self.link().await?;
        let ch = conn.create_channel().await?;
        let msg = ch.basic_get(dead_queue(&self.inner.queue, sweep).as_str().into(), BasicGetOptions { no_ack: true }).await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(msg.map(|m| m.delivery.data))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A worker's listener: keeps a consumer on its own queue bound to the farm's exchange, across
/// reconnects, for as long as the worker's connection lives. Sweep announcements go into the book; a
/// roll call is answered with the worker's card.
fn listen(weak: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let q = AmqpQueue { inner };
            let subscribed = q.subscribe().await;
            drop(q);
            match subscribed {
                Ok((ch, mut consumer)) => {
                    while let Some(Ok(d)) = consumer.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        match serde_json::from_slice::<FarmMessage>(&d.data) {
                            Ok(FarmMessage::Sweep { sweep, priority, every_s, published }) => {
                                let new = inner.book.lock().unwrap().heard(&sweep, priority, every_s, Instant::now());
                                // A permit is kept if the worker is busy: its next idle wait ends at once.
                                if published || new {
                                    inner.wake.notify_one();
                                }
                            }
                            Ok(FarmMessage::RollCall) => {
                                if let Some(to) = d.properties.reply_to() {
                                    answer_roll_call(&inner, &ch, to.as_str()).await;
                                }
                            }
                            Err(e) => warn!("ignoring an unreadable message on the farm's exchange: {e}"),
                        }
                    }
                    warn!("the farm's exchange listener closed; listening again");
                }
                Err(e) => warn!("cannot listen to the farm's exchange: {e:#}; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

async fn answer_roll_call(inner: &Inner, ch: &Channel, to: &str) {
    let Role::Worker { card } = &inner.role else { return };
    let mut card = card.clone();
    {
        let live = inner.live.lock().unwrap();
        card.current = live.current.clone();
        card.jobs_settled = live.settled;
    }
    card.sweeps = inner.book.lock().unwrap().order(Instant::now()).concat();
    card.at_unix = unix_now();
    let body = serde_json::to_vec(&card).expect("a worker card serialises");
    if let Err(e) = ch.basic_publish("".into(), to.into(), BasicPublishOptions::default(), &body, BasicProperties::default()).await {
        warn!("cannot answer the roll call: {e}");
    }
}

impl AmqpQueue {
    /// The worker's own queue (gone with its connection), bound to the farm's exchange, and a consumer
    /// on it.
    async fn subscribe(&self) -> Result<(Channel, Consumer)> {
        let (conn, _, _) = self.link().await?;
        let ch = conn.create_channel().await?;
        let mut args = FieldTable::default();
        // Announcements pile up while nothing reads them: keep the newest.
        args.insert("x-max-length".into(), AMQPValue::LongInt(256));
        let own = ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, args).await?;
        ch.queue_bind(own.name().as_str().into(), self.inner.farm.as_str().into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
        let consumer = ch
            .basic_consume(own.name().as_str().into(), "farm".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await?;
        Ok((ch, consumer))
    }
}
