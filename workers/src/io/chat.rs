//! A client of an OpenAI-compatible chat endpoint (`POST {endpoint}/chat/completions`), for the read
//! stage's generative reader: requests spaced to a rate, retried with exponential backoff on 429 and
//! server errors (a `Retry-After` is honoured), and answers cached on the store by the sha256 of what
//! was asked, so a rerun pays for nothing it asked before. The API key is read from the environment and
//! goes only into the request's `Authorization` header: never into a log line, an error or the store.

use crate::io::store::Store;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Attempts of one request before the job fails (it is then retried as a job).
const ATTEMPTS: u32 = 6;
/// Where answers are cached on the store, by the sha256 of endpoint, model and messages.
pub const CACHE_DIR: &str = "reader-cache/";

/// One answer and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatAnswer {
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

pub struct ChatReader {
    http: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
    max_tokens: u32,
    every: Duration,
    next: Instant,
    /// The first backoff; doubled at each retry (a test shortens it).
    backoff: Duration,
}

impl std::fmt::Debug for ChatReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatReader").field("url", &self.url).field("model", &self.model).field("key", &self.key.as_ref().map(|_| "<redacted>")).finish()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: [Message<'a>; 1],
    temperature: f32,
    max_tokens: u32,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ReplyMessage,
}

#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl ChatReader {
    /// A client of `endpoint` (e.g. `https://api.openai.com/v1`) for `model`, its key in the environment
    /// variable `key_env` (none set: no `Authorization` header), at most `per_minute` requests a minute.
    pub fn new(endpoint: &str, model: &str, key_env: &str, max_tokens: u32, per_minute: u32) -> Result<Self> {
        let key = crate::env::secret(key_env);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", endpoint.trim_end_matches('/')),
            model: model.into(),
            key,
            max_tokens,
            every: Duration::from_secs_f64(60.0 / per_minute.max(1) as f64),
            next: Instant::now(),
            backoff: Duration::from_secs(1),
        })
    }

    /// Shortens the first backoff (tests).
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The answer to `prompt`: from the store's cache, else from the endpoint (then cached).
    pub async fn ask(&mut self, store: &Store, prompt: &str) -> Result<(ChatAnswer, bool)> {
        let body = serde_json::to_vec(&Request { model: &self.model, messages: [Message { role: "user", content: prompt }], temperature: 0.0, max_tokens: self.max_tokens })?;
        let mut h = Sha256::new();
        h.update(self.url.as_bytes());
        h.update([0]);
        h.update(&body);
        let cached = format!("{CACHE_DIR}{}.json", hex::encode(h.finalize()));
        if let Some(hit) = store.get_json::<ChatAnswer>(&cached).await? {
            return Ok((hit, true));
        }
        let answer = self.post(body).await?;
        store.put_json(&cached, &answer).await?;
        Ok((answer, false))
    }

    async fn post(&mut self, body: Vec<u8>) -> Result<ChatAnswer> {
        let mut wait = self.backoff;
        for attempt in 1..=ATTEMPTS {
            tokio::time::sleep_until(self.next).await;
            self.next = Instant::now() + self.every;
            let mut request = self.http.post(&self.url).header("content-type", "application/json").body(body.clone());
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            let failed = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let bytes = r.bytes().await.with_context(|| format!("{}: the answer was cut off", self.url))?;
                    let reply: Response = serde_json::from_slice(&bytes).with_context(|| format!("{}: not a chat completion: {}", self.url, String::from_utf8_lossy(&bytes[..bytes.len().min(200)])))?;
                    let text = reply.choices.into_iter().next().and_then(|c| c.message.content).unwrap_or_default();
                    let usage = reply.usage.unwrap_or(Usage { prompt_tokens: 0, completion_tokens: 0 });
                    debug!(url = %self.url, attempt, "chat answer");
                    return Ok(ChatAnswer { text: text.trim().to_string(), tokens_in: usage.prompt_tokens, tokens_out: usage.completion_tokens });
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    let after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok()).map(Duration::from_secs_f64);
                    wait = after.unwrap_or(wait);
                    format!("HTTP {}", r.status())
                }
                // Anything else (a bad key, a bad model) will not pass on a retry.
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    bail!("{} answered {status}: {}", self.url, text.chars().take(300).collect::<String>());
                }
                Err(e) => format!("{}", without_url_secrets(&e)),
            };
            if attempt == ATTEMPTS {
                bail!("{}: {failed}, {ATTEMPTS} attempts", self.url);
            }
            warn!(url = %self.url, attempt, wait_s = wait.as_secs_f64(), "{failed}: retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        unreachable!("the last attempt returns")
    }
}

/// A request error as text, without the request (whose headers hold the key).
fn without_url_secrets(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() { "timed out" } else if e.is_connect() { "cannot connect" } else { "request failed" };
    format!("{kind}: {}", std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default())
}
