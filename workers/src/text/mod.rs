//! Input text: corpus and question JSON Lines (read with errors that name file, line and field) and
//! sentence splitting. Depends on `io` only.

pub mod corpus;
pub mod questions;
pub mod sentences;
