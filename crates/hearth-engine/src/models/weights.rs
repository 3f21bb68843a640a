//! A model's tensors under one naming scheme, whatever file they came from.
//!
//! hearth uses llama.cpp's GGUF names (`token_embd.weight`, `blk.N.attn_q.weight`, ...) internally because they
//! are short and already arch-neutral; Hugging Face names are mapped onto them when a safetensors folder loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::models::config::Arch;
use crate::tensor::Tensor;

/// Tensors by GGUF-style name, plus the file they came from (for error messages).
pub struct Weights {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    /// Tensors present in the file in a type hearth cannot compute with: (name, type).
    pub unsupported: HashMap<String, String>,
}

impl Weights {
    /// A required tensor; the error names the file and the tensor (and the type, if it is one hearth lacks).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(t);
        }
        match self.unsupported.get(name) {
            Some(ty) => Err(Error::unsupported(
                &self.path,
                format!("tensor {name} has weight type {ty}"),
            )),
            None => Err(Error::tensor(
                &self.path,
                name,
                "missing from the model file",
            )),
        }
    }

    /// An optional tensor (a bias, a tied output matrix).
    pub fn opt(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// A required tensor with its shape checked (`[rows, cols]` for matrices, `[n]` for vectors).
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.get(name)?;
        check_shape(&self.path, t, shape)?;
        Ok(t)
    }

    /// An optional tensor, shape-checked when present.
    pub fn opt_shaped(&self, name: &str, shape: &[usize]) -> Result<Option<&Tensor>> {
        match self.opt(name) {
            Some(t) => check_shape(&self.path, t, shape).map(|_| Some(t)),
            None => Ok(None),
        }
    }

    /// Per-layer name: `blk.{layer}.{suffix}`.
    pub fn layer(&self, layer: usize, suffix: &str, shape: &[usize]) -> Result<&Tensor> {
        self.get_shaped(&format!("blk.{layer}.{suffix}"), shape)
    }

    /// Optional per-layer tensor.
    pub fn layer_opt(
        &self,
        layer: usize,
        suffix: &str,
        shape: &[usize],
    ) -> Result<Option<&Tensor>> {
        self.opt_shaped(&format!("blk.{layer}.{suffix}"), shape)
    }

    /// Bytes of every tensor, by type, for `hearth info` and the roofline.
    pub fn bytes_by_type(&self) -> Vec<(String, usize, usize)> {
        let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for t in self.tensors.values() {
            let e = m.entry(t.dtype.name().to_string()).or_default();
            e.0 += t.numel();
            e.1 += t.bytes().len();
        }
        m.into_iter().map(|(k, (n, b))| (k, n, b)).collect()
    }
}

fn check_shape(path: &Path, t: &Tensor, shape: &[usize]) -> Result<()> {
    // A 1-D vector may be stored as [1, n]; accept any shape with the same non-unit dims.
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if t.shape != shape && squeeze(&t.shape) != squeeze(shape) {
        return Err(Error::tensor(
            path,
            &t.name,
            format!("has shape {:?}, the config implies {:?}", t.shape, shape),
        ));
    }
    if t.dtype.bytes_for(t.cols()).is_none() {
        return Err(Error::tensor(
            path,
            &t.name,
            "rows are not whole quantization blocks",
        ));
    }
    Ok(())
}

/// Whole-model tensors: (Hugging Face name, GGUF name).
const MODEL_TENSORS: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer modules every architecture names alike: (Hugging Face module under `model.layers.N.`, GGUF
/// module under `blk.N.`). One table for both directions.
const LAYER_MODULES: [(&str, &str); 11] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// The norms whose names depend on the architecture. Llama-family models have one norm between attention
/// and the MLP, which GGUF calls ffn_norm (mapped back to `post_attention_layernorm`, the first match);
/// Gemma 3 has a norm after attention and another before the MLP.
const LLAMA_NORMS: [(&str, &str); 2] = [
    ("post_attention_layernorm", "ffn_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
];
const GEMMA3_NORMS: [(&str, &str); 2] = [
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
];

/// The (Hugging Face, GGUF) module pairs of `arch`, architecture-specific ones first.
fn layer_modules(arch: Arch) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let norms = if arch == Arch::Gemma3 {
        &GEMMA3_NORMS
    } else {
        &LLAMA_NORMS
    };
    norms.iter().chain(LAYER_MODULES.iter())
}

/// Maps a Hugging Face tensor name to the GGUF-style name, or None for tensors hearth ignores (a vision tower,
/// rotary caches).
pub fn hf_to_gguf_name(arch: Arch, name: &str) -> Option<String> {
    let name = name
        .strip_prefix("model.language_model.")
        .map(|s| format!("model.{s}"))
        .unwrap_or_else(|| name.to_string());
    let name = name.strip_prefix("language_model.").unwrap_or(&name);
    if let Some((_, g)) = MODEL_TENSORS.iter().find(|(h, _)| *h == name) {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (_, mapped) = layer_modules(arch).find(|(h, _)| *h == module)?;
    Some(format!("blk.{layer}.{mapped}.{kind}"))
}

/// Maps a GGUF tensor name back to its Hugging Face name (the inverse of [`hf_to_gguf_name`]), or None for a
/// tensor with no Hugging Face counterpart (`rope_freqs.weight`, which becomes config.json's `rope_scaling`).
pub fn gguf_to_hf_name(arch: Arch, name: &str) -> Option<String> {
    if let Some((h, _)) = MODEL_TENSORS.iter().find(|(_, g)| *g == name) {
        return Some(h.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (mapped, _) = layer_modules(arch).find(|(_, g)| *g == module)?;
    Some(format!("model.layers.{layer}.{mapped}.{kind}"))
}
