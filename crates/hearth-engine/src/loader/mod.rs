//! Model file loading: GGUF and Hugging Face folders (float or MLX-quantized), memory-mapped and validated;
//! and the GGUF and safetensors writers that `hearth convert` uses.

pub mod gguf;
pub mod gguf_write;
pub mod mlx;
pub mod safetensors;
pub mod safetensors_write;
