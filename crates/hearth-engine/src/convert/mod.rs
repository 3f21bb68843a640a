//! `hearth convert`: moving a model between the formats hearth reads, without a round trip through Python.
//!
//! Every conversion reads its source through the same loaders the engine uses (so a file hearth cannot run is
//! never silently converted), streams tensors one at a time (a model never sits in memory twice), and writes
//! into a staging path that is renamed over the target only when everything is written ([`output`]).
//!
//! - [`output`]: the staging file or folder, `--force`, and the cleanup of a failed conversion.
//! - [`source`]: a model's tensors under Hugging Face names and layout, read row by row from a safetensors
//!   folder or mapped back from a GGUF file; the common input of both folder writers.
//! - [`to_mlx`]: Hugging Face folder or GGUF file → MLX folder (mlx-lm's layout, affine/mxfp4/nvfp4/mxfp8,
//!   mixed recipes), equal to `mlx_lm.convert`'s output tensor for tensor.
//! - [`to_gguf`]: Hugging Face (or MLX) folder → GGUF file (f32/f16/bf16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K),
//!   loadable by llama.cpp.
//! - [`repack`]: GGUF blocks that are MLX affine groups of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K),
//!   carried over exactly (`--keep-quant`).
//! - [`to_hf`]: GGUF file → Hugging Face folder (float safetensors, config.json, tokenizer.json).
//! - [`from_mlx`]: MLX folder → Hugging Face folder, dequantized as `mlx_lm.convert -d` does.
//! - [`hf_config`] and [`hf_tokenizer`]: config.json and tokenizer.json rebuilt from GGUF metadata.

pub mod from_mlx;
pub mod hf_config;
pub mod hf_tokenizer;
pub mod output;
pub mod repack;
pub mod source;
pub mod to_gguf;
pub mod to_hf;
pub mod to_mlx;

/// Reports progress of a long step: `(done, total)` in the step's own unit (bytes or tensors). The CLI draws a
/// progress bar from it; tests pass a no-op.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);
