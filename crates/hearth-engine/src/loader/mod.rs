//! Model file loading: GGUF and Hugging Face folders, memory-mapped and validated; and the safetensors writer
//! that `hearth convert` uses.

pub mod gguf;
pub mod safetensors;
pub mod safetensors_write;
