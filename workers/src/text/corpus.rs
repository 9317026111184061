//! Corpus JSON Lines: one document per line, `{"id", "title", "paragraphs": [..], ...}`. Reading checks
//! every field so a bad line is reported by file, line and field, and cutting the file into shards is a
//! single streaming pass that never holds the corpus in memory.

use crate::io::store::{Store, read_input_stream};
use anyhow::{Context, Result};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt32Type;
use phrasesweep_schemas::tables::corpus;
use futures::StreamExt;
use phrasesweep_schemas::job::{DatasetVersion, LineShard};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The 1-based line of the file it was read from.
    pub line: u64,
    pub id: String,
    pub title: String,
    pub paragraphs: Vec<String>,
}

/// A paragraph row of the committed `corpus` dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRow {
    pub doc_id: String,
    pub title: String,
    pub paragraph: u32,
    pub text: String,
    /// `[start, end)` character spans of its sentences.
    pub sentences: Vec<(u32, u32)>,
}

/// The columns [`corpus_rows`] reads.
pub const CORPUS_COLUMNS: [&str; 6] =
    [corpus::DOC_ID, corpus::TITLE, corpus::PARAGRAPH, corpus::TEXT, corpus::SENTENCE_STARTS, corpus::SENTENCE_ENDS];

/// Every row of a version of the corpus dataset, batch by batch, given to `each`.
pub async fn for_each_corpus_row(store: &Store, corpus: &DatasetVersion, mut each: impl FnMut(CorpusRow)) -> Result<()> {
    let ds = crate::io::lance::open_dataset(store, &corpus.dataset).await?;
    let ds = ds.checkout_version(corpus.version).await.with_context(|| format!("{} has no version {}", corpus.dataset, corpus.version))?;
    let mut scan = ds.scan();
    scan.project(&CORPUS_COLUMNS)?;
    let mut stream = scan.try_into_stream().await?;
    while let Some(batch) = futures::TryStreamExt::try_next(&mut stream).await? {
        corpus_rows(&batch)?.into_iter().for_each(&mut each);
    }
    Ok(())
}

/// The rows of a batch of the `corpus` dataset holding at least [`CORPUS_COLUMNS`].
pub fn corpus_rows(batch: &RecordBatch) -> Result<Vec<CorpusRow>> {
    let col = |n: &str| batch.column_by_name(n).with_context(|| format!("corpus column {n} is missing"));
    let ids = col(corpus::DOC_ID)?.as_string::<i32>();
    let titles = col(corpus::TITLE)?.as_string::<i32>();
    let paras = col(corpus::PARAGRAPH)?.as_primitive::<UInt32Type>();
    let texts = col(corpus::TEXT)?.as_string::<i32>();
    let starts = col(corpus::SENTENCE_STARTS)?.as_list::<i32>();
    let ends = col(corpus::SENTENCE_ENDS)?.as_list::<i32>();
    Ok((0..batch.num_rows())
        .map(|i| {
            let (s, e) = (starts.value(i), ends.value(i));
            let (s, e) = (s.as_primitive::<UInt32Type>(), e.as_primitive::<UInt32Type>());
            CorpusRow {
                doc_id: ids.value(i).to_string(),
                title: titles.value(i).to_string(),
                paragraph: paras.value(i),
                text: texts.value(i).to_string(),
                sentences: s.values().iter().copied().zip(e.values().iter().copied()).collect(),
            }
        })
        .collect())
}

/// Parses JSON Lines into `T`, skipping blank lines; `first_line` is the 1-based number of the first line.
/// Errors name the file, the line and the field (as serde's path to it).
pub fn json_lines<T: serde::de::DeserializeOwned>(file: &str, first_line: u64, bytes: &[u8]) -> Result<Vec<(u64, T)>, InputError> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = first_line + i as u64;
        let err = |field: Option<String>, problem: String| InputError { file: file.to_string(), line, field, problem };
        let text = std::str::from_utf8(raw).map_err(|e| err(None, format!("not valid UTF-8 at byte {}", e.valid_up_to())))?;
        if text.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            err((path != ".").then_some(path), e.into_inner().to_string())
        })?;
        out.push((line, value));
    }
    Ok(out)
}

/// A problem with the input itself: retrying cannot fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {}{problem}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct InputError {
    pub file: String,
    pub line: u64,
    pub field: Option<String>,
    pub problem: String,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one line of a corpus file.
pub fn parse_document(file: &str, line: u64, text: &str) -> Result<Document, InputError> {
    let err = |field: Option<&str>, problem: String| InputError {
        file: file.to_string(),
        line,
        field: field.map(str::to_string),
        problem,
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| err(None, format!("invalid JSON at column {}: {e}", e.column())))?;
    let Value::Object(mut obj) = value else {
        return Err(err(None, format!("expected a JSON object, found {}", json_type(&value))));
    };
    let mut string = |name: &str| -> Result<String, InputError> {
        match obj.remove(name) {
            None => Err(err(Some(name), "missing".into())),
            Some(Value::String(s)) if s.trim().is_empty() => Err(err(Some(name), "is empty".into())),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(err(Some(name), format!("expected a string, found {}", json_type(&other)))),
        }
    };
    let id = string("id")?;
    let title = string("title")?;
    let paragraphs = match obj.remove("paragraphs") {
        None => return Err(err(Some("paragraphs"), "missing".into())),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::String(s) => Ok(s),
                other => Err(err(
                    Some(&format!("paragraphs[{i}]")),
                    format!("expected a string, found {}", json_type(&other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(err(Some("paragraphs"), format!("expected an array of strings, found {}", json_type(&other))));
        }
    };
    if paragraphs.is_empty() {
        return Err(err(Some("paragraphs"), "is empty: a document needs at least one paragraph".into()));
    }
    Ok(Document { line, id, title, paragraphs })
}

/// Parses the lines of one shard's bytes; `first_line` is the 1-based number of its first line.
pub fn parse_documents(file: &str, first_line: u64, bytes: &[u8]) -> Result<Vec<Document>, InputError> {
    let mut docs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = first_line + i as u64;
        let text = std::str::from_utf8(raw).map_err(|e| InputError {
            file: file.to_string(),
            line,
            field: None,
            problem: format!("not valid UTF-8 at byte {}", e.valid_up_to()),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        docs.push(parse_document(file, line, text)?);
    }
    if let Some((id, first, again)) = repeated_id(docs.iter().map(|d| (d.id.as_str(), d.line))) {
        return Err(repeated_id_error(file, id, first, again));
    }
    Ok(docs)
}

/// The first document id that occurs twice among `(id, line)`: the id, its first line and the line
/// that repeats it.
pub fn repeated_id<'a>(ids: impl IntoIterator<Item = (&'a str, u64)>) -> Option<(&'a str, u64, u64)> {
    let mut seen = std::collections::HashMap::new();
    let mut found: Option<(&str, u64, u64)> = None;
    for (id, line) in ids {
        if let Some(&first) = seen.get(id) {
            let (a, b) = (line.min(first), line.max(first));
            if found.is_none_or(|(_, _, f)| b < f) {
                found = Some((id, a, b));
            }
        } else {
            seen.insert(id, line);
        }
    }
    found
}

/// Two documents with one id would share its paragraph rows (and lose a title): the second is an error.
pub fn repeated_id_error(file: &str, id: &str, first: u64, again: u64) -> InputError {
    InputError {
        file: file.to_string(),
        line: again,
        field: Some("id".into()),
        problem: format!("document id `{id}` is already used at line {first}; every document needs its own id"),
    }
}

/// The longest line a JSON Lines input may have (a whole Wikipedia article is well under 1 MiB).
pub const MAX_LINE_BYTES: u64 = 16 << 20;

/// Cuts a JSON Lines file into shards of `shard_docs` records (non-blank lines), in one streaming pass.
/// `break_at` (ascending) ends a shard at each of those byte offsets where a line ends: where an earlier
/// run's shards ended, so that they (and their job ids) come out the same when the file has grown since.
pub async fn plan_shards(store: &Store, corpus: &str, shard_docs: u64, break_at: &[u64]) -> Result<Vec<LineShard>> {
    let mut stream = read_input_stream(store, corpus).await?;
    let mut shards = Vec::new();
    let mut cur = LineShard {
        path: corpus.to_string(),
        shard: 0,
        first_line: 1,
        byte_start: 0,
        byte_end: 0,
        records: 0,
        sha256: String::new(),
    };
    let mut hasher = Sha256::new();
    let (mut offset, mut line, mut line_start) = (0u64, 1u64, 0u64);
    let mut line_has_text = false;
    let too_long = |line: u64| {
        anyhow::anyhow!(
            "{corpus}:{line}: the line is longer than {} MiB: one record per line, and a record this long means a file without line breaks",
            MAX_LINE_BYTES >> 20
        )
    };
    let mut finish = |cur: &mut LineShard, hasher: &mut Sha256, end: u64, next_line: u64| {
        cur.byte_end = end;
        cur.sha256 = hex::encode(std::mem::take(hasher).finalize());
        let next = LineShard {
            shard: cur.shard + 1,
            first_line: next_line,
            byte_start: end,
            byte_end: end,
            records: 0,
            sha256: String::new(),
            path: cur.path.clone(),
        };
        shards.push(std::mem::replace(cur, next));
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!(e)).map_err(|e| e.context(format!("cannot read {corpus}")))?;
        let mut from = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                if offset + i as u64 - line_start > MAX_LINE_BYTES {
                    return Err(too_long(line));
                }
                line_start = offset + i as u64 + 1;
                hasher.update(&chunk[from..=i]);
                from = i + 1;
                if line_has_text {
                    cur.records += 1;
                }
                line += 1;
                line_has_text = false;
                let end = offset + i as u64 + 1;
                if cur.records == shard_docs || (cur.records > 0 && break_at.binary_search(&end).is_ok()) {
                    finish(&mut cur, &mut hasher, end, line);
                }
            } else if !b.is_ascii_whitespace() {
                line_has_text = true;
            }
        }
        hasher.update(&chunk[from..]);
        offset += chunk.len() as u64;
    }
    if offset - line_start > MAX_LINE_BYTES {
        return Err(too_long(line));
    }
    if line_has_text {
        cur.records += 1;
    }
    if cur.records > 0 {
        finish(&mut cur, &mut hasher, offset, line);
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_file_line_and_field() {
        let e = |text: &str| parse_document("docs.jsonl", 7, text).unwrap_err().to_string();
        assert!(e("{\"id\": 1").starts_with("docs.jsonl:7: invalid JSON at column"), "{}", e("{\"id\": 1"));
        assert_eq!(e(r#"{"id":"a","paragraphs":[]}"#), "docs.jsonl:7: field `title`: missing");
        assert_eq!(e(r#"{"id":"a","title":" ","paragraphs":[]}"#), "docs.jsonl:7: field `title`: is empty");
        assert_eq!(
            e(r#"{"id":"a","title":"T","paragraphs":["ok", 3]}"#),
            "docs.jsonl:7: field `paragraphs[1]`: expected a string, found a number"
        );
        assert_eq!(
            e(r#"{"id":"a","title":"T","paragraphs":"p"}"#),
            "docs.jsonl:7: field `paragraphs`: expected an array of strings, found a string"
        );
        assert_eq!(e("[1]"), "docs.jsonl:7: expected a JSON object, found an array");
    }

    #[test]
    fn parses_lines_with_numbers() {
        let bytes = b"{\"id\":\"a\",\"title\":\"A\",\"paragraphs\":[\"x\"]}\n\n{\"id\":\"b\",\"title\":\"B\",\"paragraphs\":[\"\"]}";
        let docs = parse_documents("f", 10, bytes).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].id, "b");
        let bad = b"{\"id\":\"a\",\"title\":\"A\",\"paragraphs\":[\"x\"]}\n\n{\"id\":\"b\"}";
        assert_eq!(parse_documents("f", 10, bad).unwrap_err().line, 12);
        let empty = b"{\"id\":\"a\",\"title\":\"A\",\"paragraphs\":[]}";
        assert_eq!(parse_documents("f", 10, empty).unwrap_err().field.as_deref(), Some("paragraphs"));
        let twice = b"{\"id\":\"a\",\"title\":\"A\",\"paragraphs\":[\"x\"]}\n{\"id\":\"a\",\"title\":\"B\",\"paragraphs\":[\"y\"]}";
        let e = parse_documents("f", 10, twice).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (11, Some("id")), "{e}");
        assert!(e.to_string().contains("already used at line 10"), "{e}");
    }
}
