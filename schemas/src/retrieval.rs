//! What a retrieval run is: the unit of evidence, the mode that combines units, and the query encoders it
//! uses. Named in the experiment config (`[[retrieval]]`) and carried whole in `retrieve` and `score` jobs.
//!
//! [`RetrievalConfig`] holds a [`Mode`] that is valid by construction from config or JSON: the flat wire
//! form (`mode`, `unit`, `encoder`, `phrase_encoder`, `sentence_encoder`, `opt`, `k`) is checked once,
//! when it is deserialized, and an invalid combination is an error that names the field.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The granularity of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// The name of a mode, as the config's `mode` field spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl ModeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ModeKind::Single => "single",
            ModeKind::Static => "static",
            ModeKind::Dynamic => "dynamic",
            ModeKind::Bm25 => "bm25",
        }
    }
}

impl fmt::Display for ModeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How `dynamic` decides that a phrase and a sentence are the same evidence (the phrase then becomes the
/// sentence, with the larger of the two scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DynamicMerge {
    /// The study's design: the phrase's own span is one of the index hits the sentence query encoder
    /// found for that sentence.
    #[default]
    SharedHits,
    /// The phrase's sentence has the text of a retrieved sentence (phrasesweep before 2026-12-02).
    Sentence,
}

/// A mode with its parts, as the retrieve job runs it. `opt` drops a phrase contained in a phrase ranked
/// above it; it only exists where there are phrases (`Single` allows it only with `unit = Phrase`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Single { unit: Unit, encoder: String, opt: bool },
    Static { phrase_encoder: String, sentence_encoder: String, opt: bool },
    Dynamic { phrase_encoder: String, sentence_encoder: String, opt: bool, merge: DynamicMerge },
    /// `unit` is `Sentence` or `Paragraph`.
    Bm25 { unit: Unit },
}

impl Mode {
    pub fn kind(&self) -> ModeKind {
        match self {
            Mode::Single { .. } => ModeKind::Single,
            Mode::Static { .. } => ModeKind::Static,
            Mode::Dynamic { .. } => ModeKind::Dynamic,
            Mode::Bm25 { .. } => ModeKind::Bm25,
        }
    }

    /// Whether contained phrases are dropped.
    pub fn opt(&self) -> bool {
        match self {
            Mode::Single { opt, .. } | Mode::Static { opt, .. } | Mode::Dynamic { opt, .. } => *opt,
            Mode::Bm25 { .. } => false,
        }
    }

    /// Query encoder names the mode uses, in config order (none for BM25).
    pub fn encoders(&self) -> Vec<String> {
        match self {
            Mode::Single { encoder, .. } => vec![encoder.clone()],
            Mode::Static { phrase_encoder, sentence_encoder, .. } | Mode::Dynamic { phrase_encoder, sentence_encoder, .. } => {
                vec![phrase_encoder.clone(), sentence_encoder.clone()]
            }
            Mode::Bm25 { .. } => Vec::new(),
        }
    }
}

/// The label of the metrics table's `mode` column: the mode's name, with `+opt` when it drops contained
/// phrases (`single`, `single+opt`, `static`, `static+opt`, `dynamic`, `dynamic+opt`, `bm25`).
impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())?;
        if self.opt() {
            f.write_str("+opt")?;
        }
        Ok(())
    }
}

/// One `[[retrieval]]` of the experiment config. Serialises as the flat [`RetrievalWire`] form, so its
/// JSON (and the id of every job that carries it) is what it always was; deserialising checks the mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RetrievalWire", try_from = "RetrievalWire")]
pub struct RetrievalConfig {
    /// Names the results (`results/<name>/…`) and the row of the metrics table.
    pub name: String,
    pub mode: Mode,
    /// Evidence kept per unit (per question); at least 1.
    pub k: usize,
}

impl RetrievalConfig {
    /// Query encoder names this retrieval uses.
    pub fn encoders(&self) -> Vec<String> {
        self.mode.encoders()
    }
}

/// What is wrong with a `[[retrieval]]`: the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalError {
    pub field: &'static str,
    pub problem: String,
}

impl RetrievalError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self { field, problem: problem.into() }
    }
}

impl fmt::Display for RetrievalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.problem)
    }
}

impl std::error::Error for RetrievalError {}

/// The wire form of a [`RetrievalConfig`]: a flat record whose fields depend on `mode`. Its field order
/// and skip rules fix the JSON that job ids hash; do not change them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalWire {
    name: String,
    mode: ModeKind,
    /// `single` and `bm25`: the unit of evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<Unit>,
    /// `single`: the query encoder (a name from `[encoders]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoder: Option<String>,
    /// `static` and `dynamic`: the query encoders of the phrases and of the sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phrase_encoder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sentence_encoder: Option<String>,
    /// Drop a phrase contained in a phrase ranked above it.
    #[serde(default)]
    opt: bool,
    /// Evidence kept per unit (per question).
    #[serde(default = "default_k")]
    k: usize,
    /// `dynamic`: which phrases become their sentence. Always written for `dynamic` (its results changed
    /// when `dynamic` stopped cutting to k, so its job ids did too); absent for every other mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<DynamicMerge>,
}

/// The study's tables are top-200 per unit.
pub const DEFAULT_K: usize = 200;

fn default_k() -> usize {
    DEFAULT_K
}

impl From<RetrievalConfig> for RetrievalWire {
    fn from(r: RetrievalConfig) -> Self {
        let mut w = RetrievalWire {
            name: r.name,
            mode: r.mode.kind(),
            unit: None,
            encoder: None,
            phrase_encoder: None,
            sentence_encoder: None,
            opt: r.mode.opt(),
            k: r.k,
            merge: None,
        };
        match r.mode {
            Mode::Single { unit, encoder, .. } => {
                w.unit = Some(unit);
                w.encoder = Some(encoder);
            }
            Mode::Static { phrase_encoder, sentence_encoder, .. } => {
                w.phrase_encoder = Some(phrase_encoder);
                w.sentence_encoder = Some(sentence_encoder);
            }
            Mode::Dynamic { phrase_encoder, sentence_encoder, merge, .. } => {
                w.phrase_encoder = Some(phrase_encoder);
                w.sentence_encoder = Some(sentence_encoder);
                w.merge = Some(merge);
            }
            Mode::Bm25 { unit } => w.unit = Some(unit),
        }
        w
    }
}

impl TryFrom<RetrievalWire> for RetrievalConfig {
    type Error = RetrievalError;

    /// The mode with its parts, or the first field that is missing or out of place.
    fn try_from(w: RetrievalWire) -> Result<Self, RetrievalError> {
        let kind = w.mode;
        let need = |v: Option<String>, field: &'static str| -> Result<String, RetrievalError> {
            v.ok_or_else(|| RetrievalError::new(field, format!("required by mode {kind}")))
        };
        let forbid = |present: bool, field: &'static str| -> Result<(), RetrievalError> {
            if present { Err(RetrievalError::new(field, format!("not used by mode {kind}"))) } else { Ok(()) }
        };
        if w.k == 0 {
            return Err(RetrievalError::new("k", "must be at least 1"));
        }
        let opt = w.opt;
        if kind != ModeKind::Dynamic {
            forbid(w.merge.is_some(), "merge")?;
        }
        let mode = match kind {
            ModeKind::Single => {
                forbid(w.phrase_encoder.is_some(), "phrase_encoder")?;
                forbid(w.sentence_encoder.is_some(), "sentence_encoder")?;
                let unit = w.unit.ok_or_else(|| RetrievalError::new("unit", format!("required by mode {kind}")))?;
                let encoder = need(w.encoder, "encoder")?;
                if opt && unit != Unit::Phrase {
                    return Err(RetrievalError::new("opt", "only applies to modes with phrases"));
                }
                Mode::Single { unit, encoder, opt }
            }
            ModeKind::Static | ModeKind::Dynamic => {
                forbid(w.unit.is_some(), "unit")?;
                forbid(w.encoder.is_some(), "encoder")?;
                let phrase_encoder = need(w.phrase_encoder, "phrase_encoder")?;
                let sentence_encoder = need(w.sentence_encoder, "sentence_encoder")?;
                if kind == ModeKind::Static {
                    Mode::Static { phrase_encoder, sentence_encoder, opt }
                } else {
                    Mode::Dynamic { phrase_encoder, sentence_encoder, opt, merge: w.merge.unwrap_or_default() }
                }
            }
            ModeKind::Bm25 => {
                forbid(w.encoder.is_some(), "encoder")?;
                forbid(w.phrase_encoder.is_some(), "phrase_encoder")?;
                forbid(w.sentence_encoder.is_some(), "sentence_encoder")?;
                forbid(opt, "opt")?;
                match w.unit {
                    Some(unit @ (Unit::Sentence | Unit::Paragraph)) => Mode::Bm25 { unit },
                    _ => return Err(RetrievalError::new("unit", "mode bm25 needs unit \"sentence\" or \"paragraph\"")),
                }
            }
        };
        Ok(RetrievalConfig { name: w.name, mode, k: w.k })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(mode: ModeKind) -> RetrievalWire {
        RetrievalWire {
            name: "r".into(),
            mode,
            unit: None,
            encoder: None,
            phrase_encoder: None,
            sentence_encoder: None,
            opt: false,
            k: 10,
            merge: None,
        }
    }

    fn field(w: RetrievalWire) -> &'static str {
        RetrievalConfig::try_from(w).unwrap_err().field
    }

    #[test]
    fn modes_resolve_or_name_the_field() {
        let single = RetrievalWire { unit: Some(Unit::Sentence), encoder: Some("q".into()), ..wire(ModeKind::Single) };
        let r = RetrievalConfig::try_from(single.clone()).unwrap();
        assert_eq!(r.mode, Mode::Single { unit: Unit::Sentence, encoder: "q".into(), opt: false });
        assert_eq!(r.k, 10);
        assert_eq!(field(wire(ModeKind::Static)), "phrase_encoder");
        assert_eq!(field(RetrievalWire { opt: true, ..single.clone() }), "opt");
        assert_eq!(field(RetrievalWire { k: 0, ..single.clone() }), "k");
        assert_eq!(field(RetrievalWire { phrase_encoder: Some("p".into()), ..single.clone() }), "phrase_encoder");
        assert_eq!(field(RetrievalWire { unit: None, ..single.clone() }), "unit");
        assert_eq!(field(RetrievalWire { encoder: None, ..single.clone() }), "encoder");
        let phrase_opt = RetrievalWire { unit: Some(Unit::Phrase), opt: true, ..single };
        assert!(RetrievalConfig::try_from(phrase_opt).unwrap().mode.opt());
        assert_eq!(field(RetrievalWire { unit: Some(Unit::Phrase), ..wire(ModeKind::Bm25) }), "unit");
        assert_eq!(field(RetrievalWire { unit: Some(Unit::Paragraph), opt: true, ..wire(ModeKind::Bm25) }), "opt");
        assert_eq!(field(RetrievalWire { unit: Some(Unit::Paragraph), encoder: Some("q".into()), ..wire(ModeKind::Bm25) }), "encoder");
        let dynamic = RetrievalWire {
            phrase_encoder: Some("a".into()),
            sentence_encoder: Some("b".into()),
            opt: true,
            ..wire(ModeKind::Dynamic)
        };
        assert_eq!(field(RetrievalWire { unit: Some(Unit::Phrase), ..dynamic.clone() }), "unit");
        let dynamic = RetrievalConfig::try_from(dynamic).unwrap();
        assert!(matches!(dynamic.mode, Mode::Dynamic { opt: true, merge: DynamicMerge::SharedHits, .. }), "the design's merge by default");
        assert_eq!(field(RetrievalWire { merge: Some(DynamicMerge::Sentence), ..wire(ModeKind::Static) }), "merge");
        assert_eq!(dynamic.encoders(), vec!["a".to_string(), "b".to_string()]);
        let bm25 = RetrievalConfig::try_from(RetrievalWire { unit: Some(Unit::Sentence), ..wire(ModeKind::Bm25) }).unwrap();
        assert_eq!(bm25.mode, Mode::Bm25 { unit: Unit::Sentence });
        assert!(bm25.encoders().is_empty());
    }

    #[test]
    fn deserialising_an_invalid_mode_names_the_field() {
        let err = |json: &str| serde_json::from_str::<RetrievalConfig>(json).unwrap_err().to_string();
        let e = err(r#"{"name":"r","mode":"single","unit":"sentence","encoder":"q","opt":true}"#);
        assert!(e.contains("field `opt`") && e.contains("only applies to modes with phrases"), "{e}");
        let e = err(r#"{"name":"r","mode":"static","phrase_encoder":"a"}"#);
        assert!(e.contains("field `sentence_encoder`") && e.contains("required by mode static"), "{e}");
        let e = err(r#"{"name":"r","mode":"bm25","unit":"document"}"#);
        assert!(e.contains("field `unit`"), "{e}");
        let e = err(r#"{"name":"r","mode":"single","unit":"sentence","encoder":"q","encoders":"x"}"#);
        assert!(e.contains("encoders"), "unknown fields are refused: {e}");
    }

    /// The JSON that the former flat, derived `RetrievalConfig` wrote: fields in declaration order
    /// (`name`, `mode`, `unit`, `encoder`, `phrase_encoder`, `sentence_encoder`, `opt`, `k`), the four
    /// optional ones left out when absent, `opt` always written. Job ids hash it: it must not change,
    /// except for `dynamic`, which now writes its `merge` rule (its results changed, so must its ids).
    #[test]
    fn wire_json_is_unchanged() {
        let cases = [
            (
                RetrievalConfig { name: "sentence".into(), mode: Mode::Single { unit: Unit::Sentence, encoder: "base".into(), opt: false }, k: 100 },
                r#"{"name":"sentence","mode":"single","unit":"sentence","encoder":"base","opt":false,"k":100}"#,
            ),
            (
                RetrievalConfig { name: "phrase-opt".into(), mode: Mode::Single { unit: Unit::Phrase, encoder: "q".into(), opt: true }, k: 10 },
                r#"{"name":"phrase-opt","mode":"single","unit":"phrase","encoder":"q","opt":true,"k":10}"#,
            ),
            (
                RetrievalConfig {
                    name: "static".into(),
                    mode: Mode::Static { phrase_encoder: "a".into(), sentence_encoder: "b".into(), opt: false },
                    k: 100,
                },
                r#"{"name":"static","mode":"static","phrase_encoder":"a","sentence_encoder":"b","opt":false,"k":100}"#,
            ),
            (
                RetrievalConfig {
                    name: "dynamic-opt".into(),
                    mode: Mode::Dynamic {
                        phrase_encoder: "trained".into(),
                        sentence_encoder: "query+context".into(),
                        opt: true,
                        merge: DynamicMerge::SharedHits,
                    },
                    k: 5,
                },
                r#"{"name":"dynamic-opt","mode":"dynamic","phrase_encoder":"trained","sentence_encoder":"query+context","opt":true,"k":5,"merge":"shared-hits"}"#,
            ),
            (
                RetrievalConfig { name: "bm25-paragraph".into(), mode: Mode::Bm25 { unit: Unit::Paragraph }, k: 100 },
                r#"{"name":"bm25-paragraph","mode":"bm25","unit":"paragraph","opt":false,"k":100}"#,
            ),
        ];
        for (config, json) in cases {
            assert_eq!(serde_json::to_string(&config).unwrap(), json);
            assert_eq!(serde_json::from_str::<RetrievalConfig>(json).unwrap(), config, "{json}");
        }
        // `opt` defaults to false; `k` to the study's 200 (it was 100).
        let r: RetrievalConfig = serde_json::from_str(r#"{"name":"b","mode":"bm25","unit":"sentence"}"#).unwrap();
        assert_eq!(r, RetrievalConfig { name: "b".into(), mode: Mode::Bm25 { unit: Unit::Sentence }, k: 200 });
        let d: RetrievalConfig = serde_json::from_str(r#"{"name":"d","mode":"dynamic","phrase_encoder":"a","sentence_encoder":"b","merge":"sentence"}"#).unwrap();
        assert!(matches!(d.mode, Mode::Dynamic { merge: DynamicMerge::Sentence, .. }));
    }

    #[test]
    fn labels_are_the_mode_names() {
        let label = |mode: Mode| mode.to_string();
        assert_eq!(label(Mode::Single { unit: Unit::Sentence, encoder: "q".into(), opt: false }), "single");
        assert_eq!(label(Mode::Single { unit: Unit::Phrase, encoder: "q".into(), opt: true }), "single+opt");
        assert_eq!(label(Mode::Static { phrase_encoder: "a".into(), sentence_encoder: "b".into(), opt: false }), "static");
        assert_eq!(
            label(Mode::Dynamic { phrase_encoder: "a".into(), sentence_encoder: "b".into(), opt: true, merge: DynamicMerge::SharedHits }),
            "dynamic+opt"
        );
        assert_eq!(label(Mode::Bm25 { unit: Unit::Paragraph }), "bm25");
    }
}
