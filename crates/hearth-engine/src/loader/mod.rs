//! Model file loading: GGUF and Hugging Face folders (float or MLX-quantized), memory-mapped and validated.

pub mod gguf;
pub mod mlx;
pub mod safetensors;
