//! What a retrieval run is: the unit of evidence, the mode that combines units, and the query encoders it
//! uses. Named in the experiment config (`[[retrieval]]`) and carried whole in `retrieve` jobs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The granularity of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Phrase,
    Sentence,
    Paragraph,
    Document,
}

impl Unit {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Phrase => "phrase",
            Unit::Sentence => "sentence",
            Unit::Paragraph => "paragraph",
            Unit::Document => "document",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeKind {
    /// One unit, one query encoder.
    Single,
    /// The top-k phrases, then the top-k sentences.
    Static,
    /// Phrases and sentences from two query encoders, merged by score.
    Dynamic,
    /// The BM25 baseline over paragraphs or sentences (no encoder).
    Bm25,
}

/// A resolved mode, as the retrieve job runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Single { unit: Unit, encoder: String },
    Static { phrase_encoder: String, sentence_encoder: String },
    Dynamic { phrase_encoder: String, sentence_encoder: String },
    Bm25 { unit: Unit },
}

/// One `[[retrieval]]` of the experiment config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Names the results (`results/<name>/…`) and the row of the metrics table.
    pub name: String,
    pub mode: ModeKind,
    /// `single` and `bm25`: the unit of evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    /// `single`: the query encoder (a name from `[encoders]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// `static` and `dynamic`: the query encoders of the phrases and of the sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrase_encoder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence_encoder: Option<String>,
    /// Drop a phrase contained in a phrase ranked above it.
    #[serde(default)]
    pub opt: bool,
    /// Evidence kept per unit (per question).
    #[serde(default = "default_k")]
    pub k: usize,
}

fn default_k() -> usize {
    100
}

impl RetrievalConfig {
    /// The mode with its parts, or what is missing or out of place (as `field`: problem).
    pub fn resolve(&self) -> Result<Mode, (String, String)> {
        let need = |v: &Option<String>, f: &str| v.clone().ok_or_else(|| (f.to_string(), format!("required by mode {:?}", self.mode)));
        let forbid = |present: bool, f: &str| -> Result<(), (String, String)> {
            if present { Err((f.to_string(), format!("not used by mode {:?}", self.mode))) } else { Ok(()) }
        };
        if self.k == 0 {
            return Err(("k".into(), "must be at least 1".into()));
        }
        let mode = match self.mode {
            ModeKind::Single => {
                forbid(self.phrase_encoder.is_some(), "phrase_encoder")?;
                forbid(self.sentence_encoder.is_some(), "sentence_encoder")?;
                let unit = self.unit.ok_or_else(|| ("unit".to_string(), "required by mode single".to_string()))?;
                Mode::Single { unit, encoder: need(&self.encoder, "encoder")? }
            }
            ModeKind::Static | ModeKind::Dynamic => {
                forbid(self.unit.is_some(), "unit")?;
                forbid(self.encoder.is_some(), "encoder")?;
                let phrase_encoder = need(&self.phrase_encoder, "phrase_encoder")?;
                let sentence_encoder = need(&self.sentence_encoder, "sentence_encoder")?;
                if self.mode == ModeKind::Static {
                    Mode::Static { phrase_encoder, sentence_encoder }
                } else {
                    Mode::Dynamic { phrase_encoder, sentence_encoder }
                }
            }
            ModeKind::Bm25 => {
                forbid(self.encoder.is_some() || self.phrase_encoder.is_some() || self.sentence_encoder.is_some(), "encoder")?;
                forbid(self.opt, "opt")?;
                match self.unit {
                    Some(unit @ (Unit::Sentence | Unit::Paragraph)) => Mode::Bm25 { unit },
                    _ => return Err(("unit".into(), "mode bm25 needs unit \"sentence\" or \"paragraph\"".into())),
                }
            }
        };
        if self.opt && matches!(mode, Mode::Single { unit, .. } if unit != Unit::Phrase) {
            return Err(("opt".into(), "only applies to modes with phrases".into()));
        }
        Ok(mode)
    }

    /// Query encoder names this retrieval uses.
    pub fn encoders(&self) -> Vec<String> {
        [&self.encoder, &self.phrase_encoder, &self.sentence_encoder].into_iter().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(mode: ModeKind) -> RetrievalConfig {
        RetrievalConfig {
            name: "r".into(),
            mode,
            unit: None,
            encoder: None,
            phrase_encoder: None,
            sentence_encoder: None,
            opt: false,
            k: 10,
        }
    }

    #[test]
    fn modes_resolve_or_name_the_field() {
        let single = RetrievalConfig { unit: Some(Unit::Sentence), encoder: Some("q".into()), ..r(ModeKind::Single) };
        assert_eq!(single.resolve().unwrap(), Mode::Single { unit: Unit::Sentence, encoder: "q".into() });
        assert_eq!(r(ModeKind::Static).resolve().unwrap_err().0, "phrase_encoder");
        let bad_opt = RetrievalConfig { opt: true, ..single.clone() };
        assert_eq!(bad_opt.resolve().unwrap_err().0, "opt");
        let bm25 = RetrievalConfig { unit: Some(Unit::Phrase), ..r(ModeKind::Bm25) };
        assert_eq!(bm25.resolve().unwrap_err().0, "unit");
        let dynamic = RetrievalConfig {
            phrase_encoder: Some("a".into()),
            sentence_encoder: Some("b".into()),
            opt: true,
            ..r(ModeKind::Dynamic)
        };
        assert!(matches!(dynamic.resolve().unwrap(), Mode::Dynamic { .. }));
        assert_eq!(dynamic.encoders(), vec!["a".to_string(), "b".to_string()]);
    }
}
