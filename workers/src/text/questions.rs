//! Question JSON Lines (`{"id", "question", "answers", "titles", "context", "sentence"}`), read with errors
//! that name the file, the line and the field.

use crate::text::corpus::{InputError, json_lines};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub answers: Vec<String>,
    /// Titles of the gold documents.
    #[serde(default)]
    pub titles: Vec<String>,
    /// The gold paragraph.
    #[serde(default)]
    pub context: String,
    /// Gold sentence(s) holding an answer; empty when none holds one verbatim.
    #[serde(default)]
    pub sentence: Vec<String>,
}

/// Parses the lines of a questions file (or shard); `first_line` is the 1-based number of its first line.
pub fn parse_questions(file: &str, first_line: u64, bytes: &[u8]) -> Result<Vec<Question>, InputError> {
    let mut out = Vec::new();
    for (line, q) in json_lines::<Question>(file, first_line, bytes)? {
        let err = |field: &str, problem: &str| InputError { file: file.to_string(), line, field: Some(field.into()), problem: problem.into() };
        if q.question.trim().is_empty() {
            return Err(err("question", "is empty"));
        }
        if q.answers.iter().all(|a| a.trim().is_empty()) {
            return Err(err("answers", "needs at least one non-empty answer"));
        }
        out.push(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_questions_and_names_bad_fields() {
        let good = br#"{"id": "q1", "question": "who?", "answers": ["A"], "titles": ["T"]}"#;
        let qs = parse_questions("q.jsonl", 1, good).unwrap();
        assert_eq!(qs[0].answers, vec!["A".to_string()]);
        let bad = b"{\"id\": \"q1\", \"question\": \"who?\", \"answers\": [\"A\"]}\n{\"id\": \"q2\", \"question\": \"x\", \"answers\": [3]}";
        let e = parse_questions("q.jsonl", 10, bad).unwrap_err().to_string();
        assert!(e.starts_with("q.jsonl:11: field `answers[0]`: invalid type: integer `3`"), "{e}");
        let e = parse_questions("q.jsonl", 1, br#"{"id": "q", "question": "x", "answers": []}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("answers"));
        let e = parse_questions("q.jsonl", 1, br#"{"id": "q", "answers": ["a"]}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `question`"), "{e}");
    }
}
