//! GGUF file → Hugging Face folder: float safetensors, config.json, generation_config.json, tokenizer.json
//! and tokenizer_config.json, loadable by transformers, mlx-lm and hearth.
//!
//! Tensors are dequantized (block types) or widened (floats) row by row and written in the chosen float
//! dtype, with llama.cpp's conversion undone: names mapped back ([`gguf_to_hf_name`], the inverse of
//! [`hf_to_gguf_name`]), llama/mistral q and k rows put back in rotate-half order (llama.cpp interleaves each
//! head's rotary pairs; see [`RowOrder::Unpermute`]), and Gemma's norm gains shifted from `1 + w` back to `w`.
//! A GGUF without `output.weight` has tied embeddings and so gets no `lm_head.weight`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::convert::hf_config::{generation_config, gguf_to_hf_config};
use crate::convert::hf_tokenizer::{tokenizer_config, tokenizer_json};
use crate::convert::output::{Kind, Staged};
use crate::convert::source::{sort_model_order, st_dtype, HfTensor, RowOrder};
use crate::convert::to_mlx::{write_mlx, MlxOptions};
use crate::convert::Progress;
use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::loader::safetensors_write::{
    write_json, ShardedWriter, TensorSpec, WriteOptions, DEFAULT_MAX_SHARD,
};
use crate::models::config::{Arch, ModelConfig};
pub use crate::models::weights::gguf_to_hf_name;
use crate::tensor::mlx::MlxFloat;
use crate::tensor::DType;
use crate::tokenizer::Tokenizer;

/// The float dtype a GGUF converts to when none is asked for: the file's own for float files (f32, bf16),
/// f16 for block-quantized ones (their scales are f16), except bf16 for Gemma 3 (whose activations overflow
/// f16, the reason Google ships it in bf16).
pub fn default_dtype(g: &GgufFile, arch: Arch) -> MlxFloat {
    let big: Vec<DType> = g
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2)
        .map(|t| t.dtype)
        .collect();
    if !big.is_empty() && big.iter().all(|&d| d == DType::F32) {
        MlxFloat::F32
    } else if big.contains(&DType::BF16) || arch == Arch::Gemma3 {
        MlxFloat::BF16
    } else {
        MlxFloat::F16
    }
}

/// Everything a Hugging Face-style folder needs from one GGUF file.
pub(crate) struct HfParts {
    pub config: Value,
    pub tensors: Vec<HfTensor>,
    /// `(file name, bytes)`: tokenizer.json, tokenizer_config.json, generation_config.json.
    pub files: Vec<(String, Vec<u8>)>,
    pub dtype: MlxFloat,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("JSON of plain values");
    out.push(b'\n');
    out
}

/// Describes the GGUF `g` as a Hugging Face model (nothing is read or converted yet).
pub(crate) fn gguf_hf_parts(g: &GgufFile, dtype: Option<MlxFloat>) -> Result<HfParts> {
    let cfg = ModelConfig::from_gguf(g)?;
    if let Some((name, ty)) = g.unsupported.first() {
        return Err(Error::unsupported(
            &g.path,
            format!("tensor {name} has weight type {ty}, which hearth cannot read"),
        ));
    }
    let tok = Tokenizer::from_gguf(g)?;
    let requested = dtype;
    let dtype = dtype.unwrap_or_else(|| default_dtype(g, cfg.arch));
    let permute = matches!(cfg.arch, Arch::Llama | Arch::Mistral);
    let mut tensors = Vec::new();
    for t in &g.tensors {
        if t.name == "rope_freqs.weight" {
            continue;
        }
        let name = gguf_to_hf_name(cfg.arch, &t.name).ok_or_else(|| {
            Error::unsupported(
                &g.path,
                format!(
                    "tensor {} has no Hugging Face name for {}",
                    t.name,
                    cfg.arch.name()
                ),
            )
        })?;
        let rows = match (permute, t.name.rsplit('.').nth(1)) {
            (true, Some("attn_q")) => RowOrder::Unpermute { heads: cfg.n_heads },
            (true, Some("attn_k")) => RowOrder::Unpermute {
                heads: cfg.n_kv_heads,
            },
            _ => RowOrder::Same,
        };
        let offset = if cfg.arch == Arch::Gemma3 && t.name.ends_with("norm.weight") {
            -1.0
        } else {
            0.0
        };
        // The chosen dtype applies to every tensor when asked for; by default 1-D tensors that the GGUF
        // keeps in f32 (norms, biases: llama.cpp never rounds them) stay f32, so nothing is lost.
        let this = if requested.is_none() && t.shape.len() == 1 && t.dtype == DType::F32 {
            MlxFloat::F32
        } else {
            dtype
        };
        tensors.push(HfTensor::mapped(name, t.clone(), rows, offset, this)?);
    }
    sort_model_order(&mut tensors);
    let tied = !g.tensors.iter().any(|t| t.name == "output.weight");
    let has_bias = g.tensors.iter().any(|t| t.name.ends_with("attn_q.bias"));
    let config = gguf_to_hf_config(g, &tok, dtype, tied, has_bias)?;
    let files = vec![
        (
            "tokenizer.json".to_string(),
            json_bytes(&tokenizer_json(g, &tok)?),
        ),
        (
            "tokenizer_config.json".to_string(),
            json_bytes(&tokenizer_config(g, &tok)),
        ),
        (
            "generation_config.json".to_string(),
            json_bytes(&generation_config(&tok)),
        ),
    ];
    Ok(HfParts {
        config,
        tensors,
        files,
        dtype,
    })
}

/// Converts the GGUF file `src` into a Hugging Face folder at `dst` with tensors in `dtype` (default: see
/// [`default_dtype`], with f32 1-D tensors kept f32).
pub fn gguf_to_hf(
    src: &Path,
    dst: &Path,
    dtype: Option<MlxFloat>,
    force: bool,
    progress: Progress,
) -> Result<PathBuf> {
    let g = GgufFile::open(src)?;
    let parts = gguf_hf_parts(&g, dtype)?;
    let staged = Staged::new(dst, Kind::Folder, force)?;
    write_hf_folder(
        staged.path(),
        &parts.config,
        &parts.tensors,
        &parts.files,
        progress,
    )?;
    staged.commit()
}

/// Writes a Hugging Face folder into `dir` (an empty staging folder): config.json, `files` (`(name, bytes)`),
/// and the tensors as `"pt"` safetensors (5 GiB shards with an index when larger).
pub(crate) fn write_hf_folder(
    dir: &Path,
    config: &Value,
    tensors: &[HfTensor],
    files: &[(String, Vec<u8>)],
    progress: Progress,
) -> Result<()> {
    write_json(&dir.join("config.json"), config)?;
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
    }
    let plan = tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, st_dtype(t.dtype), t.shape.clone()))
        .collect();
    let total_parameters: usize = tensors.iter().map(HfTensor::numel).sum();
    let mut meta = Map::new();
    meta.insert("total_parameters".into(), json!(total_parameters));
    let opts = WriteOptions {
        format: "pt",
        max_shard_bytes: DEFAULT_MAX_SHARD,
        always_index: false,
        index_metadata: meta,
    };
    let mut w = ShardedWriter::new(dir, plan, opts)?;
    let total = tensors.len() as u64;
    for (i, t) in tensors.iter().enumerate() {
        w.write(&t.name, &t.to_bytes())?;
        progress(i as u64 + 1, total);
    }
    w.finish()?;
    Ok(())
}

/// Converts the GGUF file `src` straight into an MLX folder at `dst`: the tensors are mapped back as for
/// [`gguf_to_hf`] and quantized as [`crate::convert::to_mlx::hf_to_mlx`] would quantize that Hugging Face
/// folder, without writing it. Unquantized tensors and scales are in `opts.dtype` or the default of
/// [`default_dtype`]; with `opts.keep_quant` (and no `opts.dtype`) floats keep the dtypes [`gguf_to_hf`] maps
/// them to, and carried weights their exact scales.
pub fn gguf_to_mlx(
    src: &Path,
    dst: &Path,
    opts: &MlxOptions,
    force: bool,
    progress: Progress,
) -> Result<PathBuf> {
    let g = GgufFile::open(src)?;
    let parts = gguf_hf_parts(&g, opts.dtype)?;
    let staged = Staged::new(dst, Kind::Folder, force)?;
    // With --keep-quant and no --dtype the float tensors keep their mapped dtypes (an f32 norm stays f32):
    // the point is a folder equal to the GGUF, not to a bf16 Hugging Face checkpoint.
    let cast = if opts.keep_quant && opts.dtype.is_none() {
        None
    } else {
        Some(parts.dtype)
    };
    write_mlx(
        staged.path(),
        parts.config,
        parts.tensors,
        cast,
        opts,
        &parts.files,
        progress,
    )?;
    staged.commit()
}
