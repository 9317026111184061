//! Arrow schemas of the tables phrasesweep writes. Character offsets are Unicode scalar values (Python's
//! `str` indexing), half-open `[start, end)`.

use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

pub mod corpus {
    pub const DOC_ID: &str = "doc_id";
    pub const TITLE: &str = "title";
    pub const PARAGRAPH: &str = "paragraph";
    pub const TEXT: &str = "text";
    pub const SENTENCE_STARTS: &str = "sentence_starts";
    pub const SENTENCE_ENDS: &str = "sentence_ends";
}

/// One row per paragraph of the corpus.
pub fn corpus_schema() -> Arc<Schema> {
    let offsets = || DataType::List(Arc::new(Field::new("item", DataType::UInt32, false)));
    Arc::new(Schema::new(vec![
        Field::new(corpus::DOC_ID, DataType::Utf8, false),
        Field::new(corpus::TITLE, DataType::Utf8, false),
        Field::new(corpus::PARAGRAPH, DataType::UInt32, false),
        Field::new(corpus::TEXT, DataType::Utf8, false),
        Field::new(corpus::SENTENCE_STARTS, offsets(), false),
        Field::new(corpus::SENTENCE_ENDS, offsets(), false),
    ]))
}
