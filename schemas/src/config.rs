//! The experiment configuration: one TOML file names the data, the store, the broker and every stage's
//! settings. Errors name the file, the field and the problem.

use crate::job::StoreLocation;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

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
    /// `amqp://user:pass@host:port/vhost`; the password is never logged.
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
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { workers: default_workers() }
    }
}

fn default_workers() -> usize {
    2
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl ExperimentConfig {
    /// Reads and checks a config file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError { file: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut config = Self::parse(&text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

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

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &str| -> String {
            if p.contains("://") || Path::new(p).is_absolute() {
                p.to_string()
            } else {
                let joined = base.join(p);
                let absolute = std::path::absolute(&joined).unwrap_or(joined);
                normalize(&absolute).to_string_lossy().into_owned()
            }
        };
        self.store.uri = resolve(&self.store.uri);
        self.corpus.path = resolve(&self.corpus.path);
    }
}

/// Removes `.` and `..` without touching the file system (the store folder may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Hides the password of a URL such as `amqp://user:secret@host/`, for logs and errors.
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

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let mut c = ExperimentConfig::parse(GOOD).unwrap();
        c.corpus.path = "../data/./docs.jsonl".into();
        c.resolve_paths(Path::new("/work/sweeps/configs"));
        assert_eq!(c.corpus.path, "/work/sweeps/data/docs.jsonl");
        assert_eq!(c.store.uri, "/work/sweeps/configs/out");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("amqp://u:pw@h:5672/%2f"), "amqp://u:***@h:5672/%2f");
        assert_eq!(redact_url("amqp://h:5672"), "amqp://h:5672");
    }
}
