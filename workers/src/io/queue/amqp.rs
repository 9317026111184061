//! RabbitMQ transport (lapin). Jobs live in a durable quorum queue with a dead-letter exchange and a
//! delivery limit, one queue per class of job (`gpu`, `cpu`); messages are persistent and published
//! with confirms; a worker takes one job at a time from the classes it serves and acks only once the
//! job's output is durable. A lost connection is re-opened with backoff; deliveries of the old
//! connection come back from the broker, which is harmless since jobs are idempotent.

use super::{JobDelivery, JobQueue};
use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use phrasesweep_schemas::config::redact_url;
use phrasesweep_schemas::job::JobClass;
use phrasesweep_schemas::{JobEnvelope, JobEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// The job queues, one per class (`<queue>.gpu`, `<queue>.cpu`), their dead-letter exchange
    /// (`<queue>.dlx`) and dead-letter queue (`<queue>.dead`).
    queue: String,
    dlx: String,
    dead: String,
    delivery_limit: u32,
    /// The classes this process takes jobs of, in the order it looks for them.
    serves: Vec<JobClass>,
    state: Mutex<Option<Link>>,
    /// The channel jobs are taken on (`basic.get`, one at a time) and settled on.
    jobs: Mutex<Option<Channel>>,
    events: Mutex<Option<(String, Consumer)>>,
}

/// The queue of a class of jobs.
pub fn class_queue(queue: &str, class: JobClass) -> String {
    format!("{queue}.{}", class.name())
}

/// How often an idle worker looks for a job, at most (it looks sooner right after one).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// One live connection and its channels.
struct Link {
    conn: Arc<Connection>,
    publish: Channel,
    generation: u64,
}

impl AmqpQueue {
    /// Connects and declares the topology; fails fast with a clear error if the broker cannot be reached.
    /// `serves` are the classes of jobs `next_job` takes (none for a coordinator).
    pub async fn connect(url: &str, queue: &str, delivery_limit: u32, serves: &[JobClass]) -> Result<Self> {
        let q = Self {
            inner: Arc::new(Inner {
                url: url.to_string(),
                queue: queue.to_string(),
                dlx: format!("{queue}.dlx"),
                dead: format!("{queue}.dead"),
                delivery_limit,
                serves: serves.to_vec(),
                state: Mutex::new(None),
                jobs: Mutex::new(None),
                events: Mutex::new(None),
            }),
        };
        let link = q.open(0).await?;
        *q.inner.state.lock().await = Some(link);
        info!(broker = %redact_url(url), "connected to RabbitMQ");
        Ok(q)
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
        self.declare(&conn).await?;
        Ok(Link { conn: Arc::new(conn), publish, generation })
    }

    async fn declare(&self, conn: &Connection) -> Result<()> {
        let mut ch = conn.create_channel().await?;
        ch.exchange_declare(
            self.inner.dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(self.inner.dead.as_str().into(), QueueDeclareOptions::durable(), quorum()).await?;
        ch.queue_bind(
            self.inner.dead.as_str().into(),
            self.inner.dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.inner.dlx.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(self.inner.delivery_limit as i32));
        for class in JobClass::ALL {
            let name = class_queue(&self.inner.queue, class);
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
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
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

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

pub struct AmqpDelivery {
    delivery: lapin::message::Delivery,
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
        settled("ack", self.delivery.acker.ack(BasicAckOptions::default()).await)
    }

    async fn retry(self) -> Result<()> {
        settled("nack", self.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await)
    }

    async fn dead_letter(self) -> Result<()> {
        settled("reject", self.delivery.acker.reject(BasicRejectOptions { requeue: false }).await)
    }
}

impl JobQueue for AmqpQueue {
    type Delivery = AmqpDelivery;

    async fn publish_job(&self, job: &JobEnvelope) -> Result<()> {
        self.publish(&class_queue(&self.inner.queue, job.spec.class()), &serde_json::to_vec(job)?).await
    }

    /// Takes one job with `basic.get` from the first of the served classes' queues that has one. A
    /// consumer per queue would hold a prefetched job of one class while running one of the other; a
    /// get takes a job only when the worker is free to run it.
    async fn next_job(&self) -> Result<Option<AmqpDelivery>> {
        let mut channel = self.inner.jobs.lock().await;
        let mut idle = Duration::from_millis(50);
        loop {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                let (conn, _, _) = self.link().await?;
                *channel = Some(conn.create_channel().await?);
            }
            let ch = channel.as_ref().unwrap();
            for &class in &self.inner.serves {
                let queue = class_queue(&self.inner.queue, class);
                match ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await {
                    Ok(Some(msg)) => return Ok(Some(AmqpDelivery { delivery: msg.delivery })),
                    Ok(None) => {}
                    Err(e) => {
                        warn!("cannot take a job from {queue}: {e}; reconnecting");
                        *channel = None;
                        break;
                    }
                }
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(IDLE_POLL);
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
        let (conn, _, _) = self.link().await?;
        let ch = conn.create_channel().await?;
        let msg = ch.basic_get(self.inner.dead.as_str().into(), BasicGetOptions { no_ack: true }).await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(msg.map(|m| m.delivery.data))
    }
}
