//! The reference study's run files: one line per question, `qid \t repr(list of texts) \t repr(meta)`,
//! the texts in rank order. `phrasesweep results --export-runs` writes one per retrieval and
//! `phrasesweep score` scores any such file (the study's own included), so a number from the study's
//! code and ours can be put side by side on the same run.
//!
//! The lists are Python literals: written with ASCII escapes (`ast.literal_eval` reads them back to
//! the same strings), read with everything `ast.literal_eval` accepts for a list or tuple of strings.

use crate::text::corpus::InputError;
use anyhow::Result;
use py_literal::Value;

/// One question's line.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLine {
    pub qid: String,
    pub texts: Vec<String>,
}

/// A line of a run file; `meta` becomes a Python dict of strings to lists of strings or floats.
pub fn format_line(qid: &str, texts: &[String], meta: &[(&str, MetaValue)]) -> Result<String> {
    let list = Value::List(texts.iter().map(|t| Value::String(t.clone())).collect());
    let meta = Value::Dict(meta.iter().map(|(k, v)| (Value::String(k.to_string()), v.to_value())).collect());
    anyhow::ensure!(!qid.contains(['\t', '\n']), "question id {qid:?} holds a tab or a line break");
    Ok(format!("{qid}\t{}\t{}", literal(&list)?, literal(&meta)?))
}

/// `value` as a Python literal on one line without tabs: the formatter leaves tabs and carriage returns
/// raw inside strings, where `\t` and `\r` mean the same to Python (and outside strings it writes none).
fn literal(value: &Value) -> Result<String> {
    Ok(value.format_ascii()?.replace('\t', "\\t").replace('\r', "\\r"))
}

/// What a line's `meta` dict holds.
pub enum MetaValue {
    Text(String),
    Texts(Vec<String>),
    Numbers(Vec<f64>),
}

impl MetaValue {
    fn to_value(&self) -> Value {
        match self {
            MetaValue::Text(t) => Value::String(t.clone()),
            MetaValue::Texts(v) => Value::List(v.iter().map(|t| Value::String(t.clone())).collect()),
            MetaValue::Numbers(v) => Value::List(v.iter().map(|&x| Value::Float(x)).collect()),
        }
    }
}

/// Parses a run file. Blank lines are skipped; the meta column may be absent. An error names the file,
/// the line and the column.
pub fn parse(file: &str, text: &str) -> Result<Vec<RunLine>, InputError> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |field: &str, problem: String| InputError { file: file.to_string(), line: i as u64 + 1, field: Some(field.into()), problem };
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, '\t');
        let qid = cols.next().unwrap_or_default().trim();
        if qid.is_empty() {
            return Err(err("qid", "is empty".into()));
        }
        let list = cols.next().ok_or_else(|| err("texts", "missing: a line is `qid<TAB>[texts]<TAB>{meta}`".into()))?;
        let value: Value = list.trim().parse().map_err(|e| err("texts", format!("not a Python literal: {e}")))?;
        let items = match value {
            Value::List(v) | Value::Tuple(v) => v,
            other => return Err(err("texts", format!("a list of strings was expected, found {other}"))),
        };
        let texts = items
            .into_iter()
            .enumerate()
            .map(|(at, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(err("texts", format!("item {at} is {other}, not a string"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        lines.push(RunLine { qid: qid.to_string(), texts });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written_whatever_the_text_holds() {
        let texts = vec!["plain".to_string(), "it's \"quoted\"\tand\nbroken \\ café — 東京".to_string(), String::new()];
        let meta = [("retrieval", MetaValue::Text("dynamic".into())), ("scores", MetaValue::Numbers(vec![9.0, 0.5]))];
        let line = format_line("q1", &texts, &meta).unwrap();
        assert_eq!(line.matches('\t').count(), 2, "tabs inside texts are escaped: {line}");
        assert!(line.is_ascii());
        assert_eq!(parse("run.tsv", &line).unwrap(), vec![RunLine { qid: "q1".into(), texts }]);
    }

    #[test]
    fn python_written_lines_parse() {
        // As Python's repr writes them: single quotes, double quotes when the text has a single quote.
        let text = "7\t['a b', \"it's\", 'caf\\xe9 \\u6771']\t{'k': 1}\n\n8\t[]\n";
        let lines = parse("study.tsv", text).unwrap();
        assert_eq!(lines[0].texts, vec!["a b", "it's", "café 東"]);
        assert_eq!((lines[1].qid.as_str(), lines[1].texts.len()), ("8", 0));
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        let e = parse("run.tsv", "1\t['a']\n2\t['a', 3]\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line, e.field.as_deref()), ("run.tsv", 2, Some("texts")));
        assert!(e.problem.contains("item 1"), "{e}");
        let e = parse("run.tsv", "1\t['a'\n").unwrap_err();
        assert!(e.to_string().starts_with("run.tsv:1: field `texts`: not a Python literal"), "{e}");
        assert_eq!(parse("run.tsv", "1\n").unwrap_err().field.as_deref(), Some("texts"));
        assert_eq!(parse("run.tsv", "\t[]\n").unwrap_err().field.as_deref(), Some("qid"));
    }
}
