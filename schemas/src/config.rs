//! The experiment configuration: one TOML file names the data, the store, the broker and every stage's
//! settings. Errors name the file, the field and the problem.

use crate::job::StoreLocation;
use crate::settings::{DEFAULT_MODEL, DENSEPHRASES_PREFIX, EncodeSettings, IndexSettings, ReadSettings, SearchSettings, TRAINED_READER};
use crate::retrieval::RetrievalConfig;
use crate::train::{LossTerm, QsftRun, TRAINED_ENCODER, TrainConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name of the sweep, used to name its event queue and in results.
    pub name: String,
    pub store: StoreConfig,
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    pub corpus: CorpusConfig,
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    #[serde(default)]
    pub coordinator: CoordinatorSettings,
    /// The phrase encoder and how paragraphs are cut for it. A run goes as far as its config asks:
    /// ingest only; with `[encode]`, up to the phrase index; with `[questions]`, through scoring.
    #[serde(default)]
    pub encode: Option<EncodeSettings>,
    #[serde(default)]
    pub index: IndexSettings,
    #[serde(default)]
    pub search: SearchSettings,
    /// Questions to retrieve for; without them a run stops after the index.
    #[serde(default)]
    pub questions: Option<QuestionsConfig>,
    /// Query encoders by name: a HuggingFace BERT folder or a phrasesweep checkpoint (relative to the
    /// config file), or `default` for the pretrained all-MiniLM-L6-v2 that `make setup` fetches.
    #[serde(default = "default_encoders")]
    pub encoders: BTreeMap<String, String>,
    #[serde(default)]
    pub retrieval: Vec<RetrievalConfig>,
    /// Training data and the supervised runs (reader teacher, phrase encoder) that precede encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
    /// The read stage: a reader answers each question from each retrieval's evidence at word budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReadSettings>,
    /// Query-side fine-tuning runs; retrievals name them as query encoders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qsft: Vec<QsftRun>,
    /// A grid over any of the keys above (see [`crate::sweep`]); each point's config has none.
    #[serde(default, skip_serializing)]
    pub sweep: Option<toml::Table>,
}

fn default_encoders() -> BTreeMap<String, String> {
    BTreeMap::from([("base".to_string(), DEFAULT_MODEL.to_string())])
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionsConfig {
    /// Questions JSON Lines (`{"id", "question", "answers", ...}`): a path or an object-store URI.
    pub path: String,
    /// Questions per retrieve job.
    #[serde(default = "default_shard_questions")]
    pub shard_questions: u64,
}

fn default_shard_questions() -> u64 {
    100
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A local path (relative to the config file), `file:///…`, or `s3://bucket/prefix`.
    pub uri: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Optional; otherwise `AWS_ACCESS_KEY_ID` from the environment. Never logged nor sent to workers.
    #[serde(default, skip_serializing)]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("uri", &self.uri)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<redacted>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl StoreConfig {
    /// The part of the store config that may travel in job messages.
    pub fn location(&self) -> StoreLocation {
        StoreLocation {
            uri: self.uri.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`; the password is never logged, and a serialised config
    /// (provenance, the run ledger) holds the URL without it.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Job queue name; farms sharing one broker use different names.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Deliveries of one job before RabbitMQ dead-letters it (a job that keeps killing its worker).
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(&self.url))
            .field("queue", &self.queue)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

fn default_queue() -> String {
    "phrasesweep.jobs".into()
}

fn default_delivery_limit() -> u32 {
    5
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    /// Corpus JSON Lines: a path (relative to the config file) or an object-store URI.
    pub path: String,
    /// Documents per ingest job.
    #[serde(default = "default_shard_docs")]
    pub shard_docs: u64,
}

fn default_shard_docs() -> u64 {
    500
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Worker tasks in the embedded (no broker) mode.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How those workers ride out trouble (`[embedded.worker]`; farm workers take it from flags).
    #[serde(default)]
    pub worker: WorkerSettings,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { workers: default_workers(), worker: WorkerSettings::default() }
    }
}

/// How coordinators share a store, and a farm (`[coordinator]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSettings {
    /// Seconds a coordinator's lease on the store lasts without renewal (it renews every third of it).
    /// A second coordinator is refused while the lease holds; once its holder died, the store is free
    /// again after this long.
    #[serde(default = "default_lease_s")]
    pub lease_s: u64,
    /// `status` calls a running job stale when its worker's last heartbeat is older than this.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u64,
    /// On a farm shared by several sweeps, workers take jobs from the sweeps of the highest priority
    /// that have any, round-robin among sweeps of equal priority. 0 unless someone jumps the queue on
    /// purpose; negative yields to everyone else.
    #[serde(default)]
    pub priority: i32,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self { lease_s: default_lease_s(), stale_after_s: default_stale_after_s(), priority: 0 }
    }
}

fn default_lease_s() -> u64 {
    60
}

fn default_stale_after_s() -> u64 {
    60
}

/// How a worker rides out trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Seconds a transient error (the store, the network) is retried inside the worker, with exponential
    /// backoff and jitter, before the delivery goes back to the queue: a short outage then costs no
    /// delivery, and the delivery limit is left for jobs that kill their worker.
    #[serde(default = "default_retry_for_s")]
    pub retry_for_s: u64,
    /// Seconds between the heartbeats a running job's worker writes to the job's record.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self { retry_for_s: default_retry_for_s(), heartbeat_s: default_heartbeat_s() }
    }
}

fn default_retry_for_s() -> u64 {
    120
}

fn default_heartbeat_s() -> u64 {
    10
}

fn default_workers() -> usize {
    2
}

impl ExperimentConfig {
    /// Parses TOML text; the error names the field path and the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            format!("field `{path}`: {}", inner.trim_end())
        })?;
        config.check()?;
        Ok(config)
    }

    /// Whether the run encodes the corpus (and builds the index).
    pub fn encodes(&self) -> bool {
        self.encode.is_some() || self.questions.is_some()
    }

    pub fn encode_settings(&self) -> EncodeSettings {
        self.encode.clone().unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        let bad = |field: &str, problem: &str| Err(format!("field `{field}`: {problem}"));
        if self.name.trim().is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return bad("name", "must be non-empty and use only ASCII letters, digits, '-', '_' and '.'");
        }
        if self.store.uri.trim().is_empty() {
            return bad("store.uri", "must not be empty");
        }
        if self.store.uri.starts_with("s3://") && self.store.uri.trim_start_matches("s3://").is_empty() {
            return bad("store.uri", "an s3:// URI needs a bucket, as in s3://bucket/prefix");
        }
        if self.corpus.shard_docs == 0 {
            return bad("corpus.shard_docs", "must be at least 1");
        }
        if self.embedded.workers == 0 {
            return bad("embedded.workers", "must be at least 1");
        }
        if self.coordinator.lease_s < 3 {
            return bad("coordinator.lease_s", "must be at least 3 (the lease is renewed every third of it)");
        }
        if self.embedded.worker.heartbeat_s == 0 {
            return bad("embedded.worker.heartbeat_s", "must be at least 1");
        }
        let encode = self.encode_settings();
        if encode.max_len < 16 || encode.overlap >= encode.max_len / 2 {
            return bad("encode.max_len", "must be at least 16 and more than twice `encode.overlap`");
        }
        if encode.batch_size == 0 || encode.job_paragraphs == 0 {
            return bad(if encode.batch_size == 0 { "encode.batch_size" } else { "encode.job_paragraphs" }, "must be at least 1");
        }
        if self.search.nprobes == 0 {
            return bad("search.nprobes", "must be at least 1");
        }
        if let Some(q) = &self.questions {
            if q.shard_questions == 0 {
                return bad("questions.shard_questions", "must be at least 1");
            }
        }
        self.check_training()?;
        if let Some(r) = &self.reader {
            r.check()?;
            if r.endpoint.is_none() && r.model == TRAINED_READER && self.train.as_ref().is_none_or(|t| t.reader.is_none()) {
                return bad("reader.model", "`trained` reads with the reader of [train.reader], which this config does not train; name a reader folder instead");
            }
            if let Some(missing) = r.retrievals.iter().find(|n| !self.retrieval.iter().any(|x| &x.name == *n)) {
                let known: Vec<&str> = self.retrieval.iter().map(|x| x.name.as_str()).collect();
                return bad("reader.retrievals", &format!("no retrieval named `{missing}` (known: {})", known.join(", ")));
            }
        }
        let known = self.encoder_names();
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.retrieval.iter().enumerate() {
            let field = |f: &str| format!("retrieval[{i}].{f}");
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) {
                return bad(&field("name"), "must be non-empty and use only ASCII letters, digits, '-', '_', '.' and '+'");
            }
            if !names.insert(r.name.as_str()) {
                return bad(&field("name"), &format!("`{}` is used twice", r.name));
            }
            // The mode itself (required and unused fields, `opt`, `k`) was checked as it was read.
            for e in r.encoders() {
                if !known.contains(&e) {
                    return bad(&field("encoder"), &format!("no query encoder named `{e}` (known: {})", known.join(", ")));
                }
            }
        }
        if !self.retrieval.is_empty() && self.questions.is_none() {
            return bad("questions", "required when [[retrieval]] runs are configured");
        }
        if let Some(b) = &self.broker {
            if !(b.url.starts_with("amqp://") || b.url.starts_with("amqps://")) {
                return bad("broker.url", "must start with amqp:// or amqps://");
            }
            if b.delivery_limit == 0 {
                return bad("broker.delivery_limit", "must be at least 1");
            }
        }
        Ok(())
    }

    /// Query encoder names retrievals may use: `[encoders]`, `trained` with `[train.phrase]`, and every
    /// `[[qsft]]` run.
    pub fn encoder_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.encoders.keys().cloned().collect();
        if self.train.as_ref().is_some_and(|t| t.phrase.is_some()) {
            names.push(TRAINED_ENCODER.into());
        }
        names.extend(self.qsft.iter().map(|q| q.name.clone()));
        names
    }

    fn check_training(&self) -> Result<(), String> {
        let bad = |field: String, problem: &str| Err(format!("field `{field}`: {problem}"));
        if let Some(t) = &self.train {
            for (name, s) in [("reader", &t.reader), ("phrase", &t.phrase)] {
                let Some(s) = s else { continue };
                if s.optim.batch_size == 0 {
                    return bad(format!("train.{name}.optim.batch_size"), "must be at least 1");
                }
                if s.max_len < 32 {
                    return bad(format!("train.{name}.max_len"), "must be at least 32");
                }
                // The window holds the question (reader) or the title (phrase encoder), three special
                // tokens and at least one piece of the passage.
                let (what, pieces) = if name == "reader" { ("question_pieces", s.question_pieces) } else { ("title_tokens", s.title_tokens) };
                if s.max_len <= pieces + 3 {
                    return bad(format!("train.{name}.{what}"), &format!("must be below max_len - 3 ({})", s.max_len - 3));
                }
                if t.squad_train.is_none() || t.squad_dev.is_none() {
                    return bad("train.squad_train".into(), &format!("[train.{name}] needs both train.squad_train and train.squad_dev"));
                }
            }
            if t.phrase.as_ref().is_some_and(|p| p.distill.is_some()) && t.reader.is_none() {
                return bad("train.phrase.distill".into(), "needs a teacher: add [train.reader]");
            }
        }
        if self.qsft.is_empty() {
            return Ok(());
        }
        let Some(t) = &self.train else { return bad("train".into(), "required by [[qsft]] (its qsft_train and qsft_dev)") };
        if t.qsft_train.is_none() || t.qsft_dev.is_none() {
            return bad("train.qsft_train".into(), "[[qsft]] needs both train.qsft_train and train.qsft_dev");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, q) in self.qsft.iter().enumerate() {
            let field = |f: &str| format!("qsft[{i}].{f}");
            if q.name.is_empty() || !q.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) {
                return bad(field("name"), "must be non-empty and use only ASCII letters, digits, '-', '_', '.' and '+'");
            }
            if !seen.insert(q.name.as_str()) || self.encoders.contains_key(&q.name) || q.name == TRAINED_ENCODER {
                return bad(field("name"), &format!("`{}` is already a query encoder name", q.name));
            }
            if q.terms.is_empty() || q.terms.values().any(|w| !(*w > 0.0)) {
                return bad(field("terms"), "needs at least one term, each with a weight above 0");
            }
            if q.terms.contains_key(&LossTerm::Distill) && t.reader.is_none() {
                return bad(field("terms.distill"), "needs a teacher: add [train.reader]");
            }
            let starts = self.encoders.contains_key(&q.start_from) || (q.start_from == TRAINED_ENCODER && t.phrase.is_some());
            if !starts {
                return bad(field("start_from"), &format!("`{}` is not in [encoders] (nor `trained` with [train.phrase])", q.start_from));
            }
            if q.epochs == 0 || q.candidates == 0 || q.optim.batch_size == 0 {
                return bad(field("epochs"), "epochs, candidates and optim.batch_size must be at least 1");
            }
            if q.distill.window <= q.distill.question_pieces + 3 {
                return bad(field("distill.window"), &format!("must be above distill.question_pieces + 3 ({})", q.distill.question_pieces + 3));
            }
        }
        if self.questions.is_none() && self.encode.is_none() {
            return bad("encode".into(), "[[qsft]] trains against the phrase index: add [encode]");
        }
        Ok(())
    }

    /// Rewrites every path the config names (data files, the store, model folders other than `default`)
    /// with `resolve`: the loader takes relative paths from the config file's folder.
    pub fn resolve_paths(&mut self, resolve: impl Fn(&str) -> String) {
        self.store.uri = resolve(&self.store.uri);
        self.corpus.path = resolve(&self.corpus.path);
        if let Some(q) = &mut self.questions {
            q.path = resolve(&q.path);
        }
        let model = |m: &str| match m.strip_prefix(DENSEPHRASES_PREFIX) {
            _ if m == DEFAULT_MODEL => m.to_string(),
            Some(folder) => format!("{DENSEPHRASES_PREFIX}{}", resolve(folder)),
            None => resolve(m),
        };
        if let Some(e) = &mut self.encode {
            e.model = model(&e.model);
        }
        for path in self.encoders.values_mut() {
            *path = model(path);
        }
        if let Some(r) = &mut self.reader
            && r.model != TRAINED_READER
            && r.endpoint.is_none()
        {
            r.model = model(&r.model);
        }
        if let Some(t) = &mut self.train {
            for p in [&mut t.squad_train, &mut t.squad_dev, &mut t.nq_train, &mut t.qsft_train, &mut t.qsft_dev].into_iter().flatten() {
                *p = resolve(p);
            }
            for s in [&mut t.reader, &mut t.phrase].into_iter().flatten() {
                s.model = model(&s.model);
            }
        }
    }
}

/// Hides the password of a URL such as `amqp://user:secret@host/`, for logs and errors.
fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    match tail {
        Some(t) => format!("{scheme}://{authority}/{t}"),
        None => format!("{scheme}://{authority}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[store]
uri = "out"
secret_access_key = "hunter2"
[corpus]
path = "docs.jsonl"
"#;

    #[test]
    fn parses_with_defaults_and_hides_secrets() {
        let c = ExperimentConfig::parse(GOOD).unwrap();
        assert_eq!(c.corpus.shard_docs, 500);
        assert_eq!(c.embedded.workers, 2);
        assert!(c.broker.is_none());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
        let farm = ExperimentConfig::parse(&format!("{GOOD}\n[broker]\nurl = \"amqp://guest:sesame@host:5672/%2f\"\n")).unwrap();
        let written = toml::to_string(&farm).unwrap();
        assert!(!written.contains("sesame") && written.contains("amqp://guest:***@host:5672/%2f"), "{written}");
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let e = ExperimentConfig::parse(&GOOD.replace("path = \"docs.jsonl\"", "path = \"d\"\nshard_docs = \"x\""))
            .unwrap_err();
        assert!(e.contains("corpus.shard_docs"), "{e}");
        assert!(e.contains("line 8"), "{e}");
        let e = ExperimentConfig::parse(&GOOD.replace("[corpus]", "[corpus]\nshards = 3")).unwrap_err();
        assert!(e.contains("shards"), "{e}");
        let e = ExperimentConfig::parse(&GOOD.replace("path = \"docs.jsonl\"", "")).unwrap_err();
        assert!(e.contains("corpus") && e.contains("path"), "{e}");
        let e = ExperimentConfig::parse(&GOOD.replace("[corpus]", "[corpus]\nshard_docs = 0")).unwrap_err();
        assert!(e.contains("corpus.shard_docs") && e.contains("at least 1"), "{e}");
    }

    const TRAIN: &str = r#"
[encode]
[train]
squad_train = "s/train.jsonl"
squad_dev = "s/dev.jsonl"
qsft_train = "nq/train.jsonl"
qsft_dev = "nq/dev.jsonl"
[train.phrase]
[[qsft]]
name = "query+context"
terms = { query = 1.0, context = 0.5 }
start_from = "trained"
[questions]
path = "q.jsonl"
[[retrieval]]
name = "dyn"
mode = "dynamic"
phrase_encoder = "trained"
sentence_encoder = "query+context"
"#;

    #[test]
    fn training_runs_parse_and_name_their_problems() {
        let c = ExperimentConfig::parse(&format!("{GOOD}{TRAIN}")).unwrap();
        assert_eq!(c.qsft[0].terms[&LossTerm::Context], 0.5);
        assert_eq!(c.qsft[0].optim.batch_size, 12);
        assert!((c.qsft[0].optim.lr - 3e-5).abs() < 1e-12);
        assert_eq!(c.qsft[0].epochs, 3);
        assert!(c.encoder_names().contains(&"query+context".to_string()));
        let bad = |from: &str, to: &str| ExperimentConfig::parse(&format!("{GOOD}{}", TRAIN.replace(from, to))).unwrap_err();
        let e = bad("context = 0.5", "contxt = 0.5");
        assert!(e.contains("qsft") && e.contains("contxt"), "{e}");
        let e = bad("context = 0.5", "distill = 1.0");
        assert!(e.contains("qsft[0].terms.distill") && e.contains("train.reader"), "{e}");
        let e = bad("[train.phrase]\n", "");
        assert!(e.contains("qsft[0].start_from"), "{e}");
        let e = bad("sentence_encoder = \"query+context\"", "sentence_encoder = \"nope\"");
        assert!(e.contains("retrieval[0].encoder") && e.contains("nope"), "{e}");
        let e = bad("context = 0.5", "context = 0.0");
        assert!(e.contains("qsft[0].terms"), "{e}");
        let e = bad("qsft_dev = \"nq/dev.jsonl\"\n", "");
        assert!(e.contains("train.qsft_train"), "{e}");
        let e = bad("[train.phrase]\n", "[train.phrase]\nmax_len = 40\ntitle_tokens = 37\n");
        assert!(e.contains("train.phrase.title_tokens") && e.contains("max_len - 3"), "{e}");
        let e = bad("start_from = \"trained\"", "start_from = \"trained\"\ndistill = { window = 60 }");
        assert!(e.contains("qsft[0].distill.window"), "{e}");
        let e = bad("squad_dev = \"s/dev.jsonl\"\n", "");
        assert!(e.contains("train.squad_train") && e.contains("[train.phrase]"), "{e}");
        // Without reader or phrase training, QSFT needs no SQuAD.
        let qsft_only = TRAIN.replace("squad_train = \"s/train.jsonl\"\nsquad_dev = \"s/dev.jsonl\"\n", "").replace("[train.phrase]\n", "");
        let qsft_only = qsft_only.replace("start_from = \"trained\"", "start_from = \"base\"").replace("phrase_encoder = \"trained\"", "phrase_encoder = \"base\"");
        ExperimentConfig::parse(&format!("{GOOD}{qsft_only}")).unwrap();
    }

    #[test]
    fn invalid_retrievals_name_the_retrieval_and_the_field() {
        let retrieval = |body: &str| format!("{GOOD}[questions]\npath = \"q.jsonl\"\n[[retrieval]]\nname = \"r\"\n{body}");
        ExperimentConfig::parse(&retrieval("mode = \"single\"\nunit = \"phrase\"\nencoder = \"base\"\nopt = true\n")).unwrap();
        let bad = |body: &str| ExperimentConfig::parse(&retrieval(body)).unwrap_err();
        let e = bad("mode = \"single\"\nunit = \"sentence\"\nencoder = \"base\"\nopt = true\n");
        assert!(e.contains("retrieval[0]") && e.contains("field `opt`") && e.contains("only applies to modes with phrases"), "{e}");
        let e = bad("mode = \"dynamic\"\nphrase_encoder = \"base\"\n");
        assert!(e.contains("retrieval[0]") && e.contains("field `sentence_encoder`") && e.contains("required by mode dynamic"), "{e}");
        let e = bad("mode = \"bm25\"\nunit = \"phrase\"\n");
        assert!(e.contains("retrieval[0]") && e.contains("field `unit`"), "{e}");
        let e = bad("mode = \"single\"\nunit = \"sentence\"\nencoder = \"base\"\nk = 0\n");
        assert!(e.contains("retrieval[0]") && e.contains("field `k`") && e.contains("at least 1"), "{e}");
        let e = bad("mode = \"single\"\nunit = \"sentence\"\nencoder = \"nope\"\n");
        assert!(e.contains("retrieval[0].encoder") && e.contains("nope"), "{e}");
        // The read stage reads retrievals by name.
        let read = |names: &str| retrieval(&format!("mode = \"bm25\"\nunit = \"paragraph\"\n[reader]\nmodel = \"default\"\nretrievals = [{names}]\n"));
        ExperimentConfig::parse(&read("\"r\"")).unwrap();
        let e = ExperimentConfig::parse(&read("\"r\", \"s\"")).unwrap_err();
        assert!(e.contains("reader.retrievals") && e.contains("`s`") && e.contains("known: r"), "{e}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("amqp://u:pw@h:5672/%2f"), "amqp://u:***@h:5672/%2f");
        assert_eq!(redact_url("amqp://h:5672"), "amqp://h:5672");
    }
}
