//! hearth-engine: everything that turns tokens into logits and logits into tokens.
//!
//! The flow for one generation: `loader` maps a model file and validates it, `models` builds an architecture's
//! forward pass over the file's tensors, `backend::cpu` runs its matrix kernels, `sample` picks the next token,
//! and `tokenizer` turns text into ids and back (with chat templates).

pub mod backend;
pub mod convert;
pub mod error;
pub mod generate;
pub mod kv;
pub mod loader;
pub mod models;
pub mod sample;
pub mod sched;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, Result};
