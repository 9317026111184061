//! Input text: corpus and question JSON Lines (read with errors that name file, line and field) and
//! sentence splitting, and questions prepared as the study prepares them. Depends on `io` only.

pub mod corpus;
pub mod questions;
pub mod sentences;
pub mod truecase;
