//! Model code (burn): the BERT base, HuggingFace loading, text encoding, and the phrase, query and
//! reader models. Generic over the backend: CPU (`flex`) by default, CUDA with `--features cuda`.

pub mod bert;
pub mod checkpoint;
pub mod densephrases;
pub mod device;
pub mod encoders;
pub mod kernels;
pub mod load;
pub mod registry;
pub mod text;
