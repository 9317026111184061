//! Artifact storage: a local folder or an S3 bucket prefix, behind one `object_store` handle for small
//! artifacts (job records, stage markers) and the matching storage options for Lance datasets.
//!
//! Credentials come from the config or the usual `AWS_*` variables and stay in this process: they are
//! never part of a job message, a log line or a result.

use anyhow::{Context, Result, anyhow, bail};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use phrasesweep_schemas::config::StoreConfig;
use phrasesweep_schemas::job::StoreLocation;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Bounds on how long a broken or unreachable store is retried before the error surfaces: each request
/// rides out an outage of up to a minute (object_store's jittered backoff from 0.1 s to 15 s; the time
/// bounds it, not the count), so a store that restarts costs a sweep nothing. Refusals (wrong
/// credentials, a missing bucket) are not retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_RETRIES: usize = 100;
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `check_access` waits: a store that does not answer at the start of a run is a wrong endpoint
/// more often than an outage.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct Secrets {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

/// A store root, opened.
#[derive(Clone)]
pub struct Store {
    location: StoreLocation,
    /// `file:///abs/root` or `s3://bucket/prefix`, without a trailing slash.
    root_uri: String,
    objects: Arc<dyn ObjectStore>,
    /// Path of the root inside `objects` (empty for local stores, the prefix for S3).
    prefix: ObjectPath,
    secrets: Secrets,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root_uri).finish()
    }
}

use crate::env::aws as env;

impl Store {
    /// A store from a URI or a local path (the CLI's `--index`, the examples); for S3, endpoint, region
    /// and credentials come from the AWS_* environment.
    pub fn at(uri: &str) -> Result<Self> {
        let uri = if uri.contains("://") { uri.to_string() } else { std::path::absolute(uri)?.display().to_string() };
        Self::from_config(&StoreConfig { uri, endpoint: None, region: None, allow_http: None, access_key_id: None, secret_access_key: None })
    }

    /// Opens a store from the full config (the coordinator and embedded workers).
    pub fn from_config(config: &StoreConfig) -> Result<Self> {
        let secrets = Secrets {
            access_key_id: config.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID")),
            secret_access_key: config.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY")),
            session_token: env("AWS_SESSION_TOKEN"),
        };
        Self::open(config.location(), secrets)
    }

    /// Opens the store a job message names, with credentials from this process's environment.
    pub fn from_location(location: &StoreLocation) -> Result<Self> {
        let secrets = Secrets {
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
        };
        Self::open(location.clone(), secrets)
    }

    fn open(mut location: StoreLocation, secrets: Secrets) -> Result<Self> {
        let uri = location.uri.trim_end_matches('/').to_string();
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("store URI {uri} names no bucket (expected s3://bucket/prefix)");
            }
            location.endpoint = location.endpoint.or_else(|| env("AWS_ENDPOINT_URL"));
            location.region = location.region.or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION"));
            location.allow_http =
                location.allow_http.or_else(|| env("AWS_ALLOW_HTTP").map(|v| v == "true" || v == "1"));
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(location.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_retry(RetryConfig { max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT, ..Default::default() })
                // Client options carry allow_http too: set them whole, in one place.
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(location.allow_http.unwrap_or(false))
                        .with_connect_timeout(CONNECT_TIMEOUT)
                        .with_timeout(REQUEST_TIMEOUT),
                );
            if let Some(endpoint) = &location.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(k) = &secrets.access_key_id {
                builder = builder.with_access_key_id(k);
            }
            if let Some(s) = &secrets.secret_access_key {
                builder = builder.with_secret_access_key(s);
            }
            if let Some(t) = &secrets.session_token {
                builder = builder.with_token(t);
            }
            let objects = builder.build().with_context(|| format!("cannot open S3 store {uri}"))?;
            let prefix = ObjectPath::from(prefix);
            location.uri = uri.clone();
            Ok(Self { location, root_uri: uri, objects: Arc::new(objects), prefix, secrets })
        } else {
            if let Some((scheme, _)) = uri.split_once("://")
                && scheme != "file"
            {
                bail!("store URI {uri}: the scheme `{scheme}://` is not supported (use a local path, file:// or s3://)");
            }
            let path = uri.strip_prefix("file://").unwrap_or(&uri);
            if !std::path::Path::new(path).is_absolute() {
                bail!("store path {path} must be absolute (config paths are resolved from the config file)");
            }
            std::fs::create_dir_all(path).with_context(|| format!("cannot create store folder {path}"))?;
            let objects = LocalFileSystem::new_with_prefix(path)
                .with_context(|| format!("cannot open store folder {path}"))?;
            location.uri = format!("file://{path}");
            Ok(Self {
                root_uri: location.uri.clone(),
                location,
                objects: Arc::new(objects),
                prefix: ObjectPath::default(),
                secrets,
            })
        }
    }

    /// What job messages carry about this store (no secrets).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    pub fn root_uri(&self) -> &str {
        &self.root_uri
    }

    /// URI of a Lance dataset under the root.
    pub fn dataset_uri(&self, name: &str) -> String {
        format!("{}/{name}", self.root_uri)
    }

    /// Storage options for Lance: endpoint, region, credentials and the same bounded retries.
    pub fn lance_options(&self) -> HashMap<String, String> {
        let mut o = HashMap::new();
        if !self.root_uri.starts_with("s3://") {
            return o;
        }
        let mut set = |k: &str, v: Option<&String>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v.clone());
            }
        };
        set("aws_endpoint", self.location.endpoint.as_ref());
        set("aws_region", Some(&self.location.region.clone().unwrap_or_else(|| "us-east-1".into())));
        set("aws_access_key_id", self.secrets.access_key_id.as_ref());
        set("aws_secret_access_key", self.secrets.secret_access_key.as_ref());
        set("aws_session_token", self.secrets.session_token.as_ref());
        if self.location.allow_http == Some(true) {
            o.insert("allow_http".into(), "true".into());
        }
        o.insert("client_max_retries".into(), MAX_RETRIES.to_string());
        o.insert("client_retry_timeout".into(), RETRY_TIMEOUT.as_secs().to_string());
        o.insert("connect_timeout".into(), format!("{}s", CONNECT_TIMEOUT.as_secs()));
        o
    }

    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Writes a whole object in one request, so readers see all of it or none.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.objects
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .with_context(|| format!("cannot write {}/{rel}", self.root_uri))?;
        Ok(())
    }

    /// Writes an object unless it exists already; returns false when another writer got there first.
    pub async fn put_if_absent(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.objects.put_opts(&self.path(rel), PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("cannot write {}/{rel}", self.root_uri)),
        }
    }

    pub async fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match self.objects.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.with_context(|| format!("cannot read {}/{rel}", self.root_uri))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("cannot read {}/{rel}", self.root_uri)),
        }
    }

    /// Removes an object; a missing one is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.objects.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("cannot delete {}/{rel}", self.root_uri)),
        }
    }

    /// The objects under `dir` (a relative path ending in `/`), as paths relative to the root, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let prefix = self.path(dir.trim_end_matches('/'));
        let metas: Vec<_> = self
            .objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .with_context(|| format!("cannot list {}/{dir}", self.root_uri))?;
        let root = self.prefix.as_ref();
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| {
                let p = m.location.as_ref();
                p.strip_prefix(root).map_or(p, |r| r.trim_start_matches('/')).to_string()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn exists(&self, rel: &str) -> Result<bool> {
        match self.objects.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("cannot reach the store at {}", self.root_uri)),
        }
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<Option<T>> {
        match self.get(rel).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("{}/{rel} is not a valid record", self.root_uri)),
        }
    }

    pub async fn put_json<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        self.put(rel, serde_json::to_vec_pretty(value)?).await
    }

    /// Checks that the store answers and accepts these credentials, with a clear error otherwise.
    /// A listing, not a read: reading a missing object answers the same with or without the bucket.
    pub async fn check_access(&self) -> Result<()> {
        let hint = "check its endpoint, bucket and credentials (store.endpoint, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
        let listed = tokio::time::timeout(CHECK_TIMEOUT, self.objects.list_with_delimiter(Some(&self.prefix))).await;
        let Ok(listed) = listed else { bail!("the store {} cannot be used: no answer within {CHECK_TIMEOUT:?}; {hint}", self.root_uri) };
        let Err(e) = listed else { return Ok(()) };
        if e.to_string().contains("NoSuchBucket") {
            let bucket = self.root_uri.trim_start_matches("s3://").split('/').next().unwrap_or_default();
            bail!("the store {} cannot be used: the bucket `{bucket}` does not exist; {hint}", self.root_uri);
        }
        Err(anyhow!(e).context(format!("the store {} cannot be used: {hint}", self.root_uri)))
    }
}

/// An input a job pinned by sha256 when it was planned (a data file, a shard of one, a model's weights)
/// is no longer what was planned. Retrying cannot help: the job fails as an input error, at once.
#[derive(Debug, thiserror::Error)]
#[error("{what} changed since the run was planned (sha256 {actual}, planned {planned}); rerun to plan again")]
pub struct InputChanged {
    pub what: String,
    pub actual: String,
    pub planned: String,
}

/// The bytes of `uri` (`range` of them, for a shard), checked against the sha256 they were planned
/// with; `what` names them in the error.
pub async fn read_pinned(like: &Store, uri: &str, range: Option<std::ops::Range<u64>>, sha256: &str, what: &str) -> Result<Vec<u8>> {
    let bytes = match range {
        Some(r) => read_input_range(like, uri, r).await?,
        None => read_input(like, uri).await?,
    };
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    if actual != sha256 {
        return Err(InputChanged { what: what.to_string(), actual, planned: sha256.to_string() }.into());
    }
    Ok(bytes)
}

/// Reads a byte range of an input file: a local path, `file://…` or an `s3://` object (with the
/// credentials and endpoint of `like`, the run's store).
pub async fn read_input_range(like: &Store, uri: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
    let (objects, path) = input_object(like, uri)?;
    Ok(objects.get_range(&path, range).await.map_err(|e| input_error(uri, e))?.to_vec())
}

/// Reads a whole input file.
pub async fn read_input(like: &Store, uri: &str) -> Result<Vec<u8>> {
    let (objects, path) = input_object(like, uri)?;
    let get = objects.get(&path).await.map_err(|e| input_error(uri, e))?;
    Ok(get.bytes().await.map_err(|e| input_error(uri, e))?.to_vec())
}

/// An input file that is not there (on disk or on S3): retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {0}: no such file")]
pub struct InputMissing(pub String);

/// An input that cannot be read, said once: object_store's messages repeat their source error.
fn input_error(uri: &str, e: object_store::Error) -> anyhow::Error {
    match e {
        object_store::Error::NotFound { .. } => InputMissing(uri.to_string()).into(),
        e => anyhow!("cannot read {uri}: {e}"),
    }
}

/// Opens an input file as a stream of byte chunks.
pub async fn read_input_stream(
    like: &Store,
    uri: &str,
) -> Result<futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>> {
    let (objects, path) = input_object(like, uri)?;
    Ok(objects.get(&path).await.map_err(|e| input_error(uri, e))?.into_stream())
}

fn input_object(like: &Store, uri: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').ok_or_else(|| anyhow!("input {uri} names no object"))?;
        let store = Store::open(
            StoreLocation { uri: format!("s3://{bucket}"), ..like.location.clone() },
            like.secrets.clone(),
        )?;
        Ok((store.objects, ObjectPath::from(key)))
    } else {
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        let objects = LocalFileSystem::new();
        let path = ObjectPath::from_absolute_path(path).with_context(|| format!("bad input path {uri}"))?;
        Ok((Arc::new(objects), path))
    }
}

/// Seconds since the Unix epoch, for the `at_unix` of records on the store.
/// A local cache folder filled once per machine: when `dir` lacks `marker`, `fill` writes the folder's
/// files into a fresh temporary folder beside it (`marker` last), which then becomes `dir`. A failed fill
/// leaves nothing behind, and of two jobs filling it at once the first rename wins.
pub async fn cached_folder(dir: &std::path::Path, marker: &str, fill: impl AsyncFnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    if dir.join(marker).exists() {
        return Ok(());
    }
    let parent = dir.parent().context("a cache folder has a parent")?;
    let tmp = parent.join(format!(".{}-{}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = fill(&tmp).await {
        std::fs::remove_dir_all(&tmp).ok();
        return Err(e);
    }
    if std::fs::rename(&tmp, dir).is_err() {
        // Another job on this machine filled it first.
        std::fs::remove_dir_all(&tmp).ok();
    }
    Ok(())
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
