//! Questions as the study prepares them for a query encoder: a trailing `?` dropped, and a question
//! written all in lowercase (as NQ's are) truecased — each word in its most frequent form in the corpus,
//! the first word capitalised. Truecasing matters only to a cased tokenizer; an uncased one (MiniLM's)
//! lowercases it all again, so `auto` leaves it off there.

use super::corpus::for_each_corpus_row;
use crate::io::store::Store;
use anyhow::Result;
use phrasesweep_schemas::job::DatasetVersion;
use phrasesweep_schemas::settings::{QuestionText, Truecase};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Each word's most frequent written form, learned from text.
#[derive(Debug, Default, Clone)]
pub struct Truecaser {
    forms: HashMap<String, String>,
}

/// The forms of every word seen so far, counted text by text (a corpus streams through).
#[derive(Debug, Default)]
pub struct CaseCounts {
    counts: HashMap<String, HashMap<String, u32>>,
}

/// A token's word, without the punctuation around it: `(leading, word, trailing)`.
fn split_word(token: &str) -> (&str, &str, &str) {
    let start = token.find(|c: char| c.is_alphanumeric()).unwrap_or(token.len());
    let end = token.rfind(|c: char| c.is_alphanumeric()).map(|i| i + token[i..].chars().next().map_or(1, char::len_utf8)).unwrap_or(start);
    (&token[..start], &token[start..end.max(start)], &token[end.max(start)..])
}

impl CaseCounts {
    /// Counts the forms of the words of `text`, leaving out sentence-initial words (capitalised by
    /// position, not by what they are).
    pub fn add(&mut self, text: &str) {
        let mut initial = true;
        for token in text.split_whitespace() {
            let (_, word, trailing) = split_word(token);
            if !word.is_empty() && !initial {
                *self.counts.entry(word.to_lowercase()).or_default().entry(word.to_string()).or_default() += 1;
            }
            initial = trailing.ends_with(['.', '!', '?']) || word.is_empty() && initial;
        }
    }

    /// Each word's most frequent form; a tie goes to the lowercase form, then to the first in order.
    pub fn truecaser(self) -> Truecaser {
        let forms = self
            .counts
            .into_iter()
            .map(|(lower, forms)| {
                let best = forms.into_iter().max_by(|a, b| a.1.cmp(&b.1).then((a.0 == lower).cmp(&(b.0 == lower))).then(b.0.cmp(&a.0))).map(|f| f.0);
                (lower.clone(), best.unwrap_or(lower))
            })
            .collect();
        Truecaser { forms }
    }
}

impl Truecaser {
    /// Learned from `texts`.
    pub fn learn<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut counts = CaseCounts::default();
        texts.into_iter().for_each(|t| counts.add(t));
        counts.truecaser()
    }

    /// `question` truecased, when it is all lowercase; otherwise as it is.
    pub fn apply(&self, question: &str) -> String {
        if question != question.to_lowercase() {
            return question.to_string();
        }
        let mut out = Vec::new();
        for (i, token) in question.split_whitespace().enumerate() {
            let (lead, word, trail) = split_word(token);
            let mut form = self.forms.get(word).cloned().unwrap_or_else(|| word.to_string());
            if i == 0 {
                form = capitalise(&form);
            }
            out.push(format!("{lead}{form}{trail}"));
        }
        out.join(" ")
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Whether questions are truecased for a query encoder whose tokenizer does (`cased`) or does not keep case.
pub fn truecases(settings: &QuestionText, cased: bool) -> bool {
    match settings.truecase {
        Truecase::On => true,
        Truecase::Off => false,
        Truecase::Auto => cased,
    }
}

/// The text a query encoder reads for `question`; `caser` when it is to be truecased.
pub fn prepare(question: &str, settings: &QuestionText, caser: Option<&Truecaser>) -> String {
    let mut q = question.trim();
    if settings.strip_question_mark {
        q = q.strip_suffix('?').unwrap_or(q).trim_end();
    }
    match caser {
        Some(c) => c.apply(q),
        None => q.to_string(),
    }
}

/// Truecasers learned from a corpus version, by store and version: every job of a run on a worker
/// shares one.
static TRUECASERS: LazyLock<moka::sync::Cache<String, Arc<Truecaser>>> = LazyLock::new(|| moka::sync::Cache::new(4));

/// The casing of the corpus's titles and paragraphs.
async fn truecaser(store: &Store, corpus: &DatasetVersion) -> Result<Arc<Truecaser>> {
    let key = format!("{}\u{0}{}@{}", store.root_uri(), corpus.dataset, corpus.version);
    if let Some(found) = TRUECASERS.get(&key) {
        return Ok(found);
    }
    // Each paragraph, and each document's title once.
    let (mut counts, mut document) = (CaseCounts::default(), String::new());
    for_each_corpus_row(store, corpus, |p| {
        if p.doc_id != document {
            counts.add(&p.title);
            document = p.doc_id;
        }
        counts.add(&p.text);
    })
    .await?;
    let caser = Arc::new(counts.truecaser());
    TRUECASERS.insert(key, caser.clone());
    Ok(caser)
}

/// The texts a query encoder reads for `questions`, prepared as `settings` say; `cased`: its tokenizer
/// keeps case ([`TextEncoder::keeps_case`](crate::model::text::TextEncoder::keeps_case)).
pub async fn query_texts<S: AsRef<str>>(store: &Store, corpus: &DatasetVersion, questions: &[S], settings: &QuestionText, cased: bool) -> Result<Vec<String>> {
    let caser = match truecases(settings, cased) {
        true => Some(truecaser(store, corpus).await?),
        false => None,
    };
    Ok(questions.iter().map(|q| prepare(q.as_ref(), settings, caser.as_deref())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_questions_take_the_corpus_casing_and_lose_their_question_mark() {
        let caser = Truecaser::learn([
            "The Beatles played in Hamburg. They met in Liverpool.",
            "Singer Paul McCartney and the Beatles. Hamburg was where the band played.",
        ]);
        let settings = QuestionText::default();
        assert_eq!(prepare("where did the beatles play before liverpool?", &settings, Some(&caser)), "Where did the Beatles play before Liverpool");
        assert_eq!(prepare("who is paul mccartney ?", &settings, Some(&caser)), "Who is Paul McCartney");
        // Cased already: left as it is; `?` kept when asked.
        let keep = QuestionText { strip_question_mark: false, ..settings };
        assert_eq!(prepare("Who is paul?", &keep, Some(&caser)), "Who is paul?");
        assert_eq!(prepare("who?", &keep, None), "who?");
        // "They" starts a sentence: its capital is not learned.
        assert_eq!(caser.apply("they played"), "They played");
        assert_eq!(caser.apply("band they"), "Band they");
    }

    #[test]
    fn auto_truecases_for_cased_tokenizers_only() {
        let s = |truecase| QuestionText { truecase, strip_question_mark: true };
        assert!(truecases(&s(Truecase::Auto), true) && !truecases(&s(Truecase::Auto), false));
        assert!(truecases(&s(Truecase::On), false) && !truecases(&s(Truecase::Off), true));
    }
}
