//! The read stage's chat endpoint client against a small HTTP server of its own that speaks the
//! OpenAI chat-completions API: the request it sends, the prompt template, retries on 429 and 500,
//! the answer cached on the store, and the API key in no log line, error or stored file. No real model
//! is reachable here; this is the only endpoint the client has met.

use phrasesweep_workers::io::chat::ChatReader;
use phrasesweep_workers::io::store::Store;
use phrasesweep_workers::jobs::read::prompt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-test-4f1d9c0e7b";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// Serves the scripted (status, extra header, body) answers in turn, one per connection, recording
/// each request.
async fn serve(script: Vec<(u16, &'static str, String)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, header, body) in script {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, length) = loop {
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())).unwrap_or(0);
                    buf.drain(..end + 4);
                    break (head, length);
                }
            };
            while buf.len() < length {
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut lines = head.lines();
            let line = lines.next().unwrap().to_string();
            let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
            log.lock().unwrap().push(Seen { line, headers, body: serde_json::from_slice(&buf).unwrap() });
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{header}\r\n{body}", body.len());
            socket.write_all(reply.as_bytes()).await.unwrap();
            socket.shutdown().await.ok();
        }
    });
    (format!("http://{addr}/v1"), seen)
}

/// Log lines written while the test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn completion(text: &str) -> String {
    serde_json::json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33}}).to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn the_chat_client_asks_retries_caches_and_keeps_its_key_to_itself() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::DEBUG).finish());
    // SAFETY: set before any thread of this test reads the environment; the variable is this test's own.
    unsafe { std::env::set_var("PHRASESWEEP_TEST_CHAT_KEY", KEY) };

    let error = serde_json::json!({"error": {"message": "slow down"}}).to_string();
    let (endpoint, seen) = serve(vec![(429, "retry-after: 0\r\n", error.clone()), (500, "", error), (200, "", completion(" Paris "))]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path().to_str().unwrap()).unwrap();
    let mut chat = ChatReader::new(&endpoint, "tiny-chat", "PHRASESWEEP_TEST_CHAT_KEY", 16, 6000).unwrap().with_backoff(Duration::from_millis(20));
    let asked = prompt("Evidence: {evidence}\nQuestion: {question}\nAnswer:", "where is the Louvre?", "The Louvre is in Paris.");
    assert_eq!(asked, "Evidence: The Louvre is in Paris.\nQuestion: where is the Louvre?\nAnswer:");

    let (answer, cached) = chat.ask(&store, &asked).await.unwrap();
    assert_eq!((answer.text.as_str(), answer.tokens_in, answer.tokens_out, cached), ("Paris", 31, 2, false));
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "a 429 and a 500 are retried");
    let last = &requests[2];
    assert_eq!(last.line, "POST /v1/chat/completions HTTP/1.1");
    assert!(last.headers.contains(&("authorization".into(), format!("Bearer {KEY}"))), "{:?}", last.headers);
    assert!(last.headers.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(last.body["model"], "tiny-chat");
    assert_eq!(last.body["messages"], serde_json::json!([{"role": "user", "content": asked}]));
    assert_eq!((last.body["temperature"].as_f64(), last.body["max_tokens"].as_u64()), (Some(0.0), Some(16)));

    // Asked again (a rerun): the store's cache answers, and the server, which has nothing left to
    // serve, is not called.
    let (again, cached) = chat.ask(&store, &asked).await.unwrap();
    assert_eq!((again, cached), (answer, true));
    assert_eq!(seen.lock().unwrap().len(), 3);

    // A refused key is not retried, and the error does not repeat it.
    let (endpoint, _) = serve(vec![(401, "", serde_json::json!({"error": {"message": "invalid api key"}}).to_string())]).await;
    let mut refused = ChatReader::new(&endpoint, "tiny-chat", "PHRASESWEEP_TEST_CHAT_KEY", 16, 6000).unwrap();
    let e = refused.ask(&store, "another question").await.unwrap_err();
    assert!(format!("{e:#}").contains("401") && !format!("{e:#}").contains(KEY), "{e:#}");
    assert!(!format!("{refused:?}").contains(KEY));

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("retrying"), "the retries are logged:\n{logged}");
    assert!(!logged.contains(KEY), "the key is in the log:\n{logged}");
    for entry in walk(dir.path()) {
        assert!(!std::fs::read_to_string(&entry).unwrap_or_default().contains(KEY), "{} holds the key", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
