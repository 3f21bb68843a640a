//! Model file loading: GGUF and Hugging Face folders, memory-mapped and validated.

pub mod gguf;
pub mod gguf_write;
pub mod safetensors;
