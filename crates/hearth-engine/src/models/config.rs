//! The hyperparameters a forward pass needs, read from GGUF metadata or a Hugging Face config.json into one
//! struct, so the architecture files never look at a file format.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;

/// Architectures hearth runs. Llama, Mistral, Qwen2 and Qwen3 share `models/llama.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How rotary embedding pairs dimensions. Hugging Face checkpoints rotate the two halves of a head
/// ("neox" style); llama.cpp's converter permutes llama-arch q/k rows so that adjacent pairs rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1).
    Interleaved,
    /// Pairs (i, i + rope_dim/2).
    Neox,
}

/// Llama 3's frequency-dependent rope scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: f32,
}

/// Everything about a model's shape and numerics.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Positions the model was trained for: the context limit.
    pub context_len: usize,
    pub rms_eps: f32,
    /// Rope base for global-attention layers.
    pub rope_theta: f32,
    /// Rope base for sliding-window layers (Gemma 3 uses a smaller one); equals `rope_theta` elsewhere.
    pub rope_local_theta: f32,
    /// Linear position scaling of global layers (positions are divided by it); 1.0 = none.
    pub rope_linear_factor: f32,
    pub llama3_rope: Option<Llama3Rope>,
    /// Leading dimensions of each head that rotate (the rest pass through).
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// Keys further back than this are masked on sliding layers.
    pub sliding_window: Option<usize>,
    /// Per layer: does it use the sliding window?
    pub sliding_layers: Vec<bool>,
    /// Multiplier of q·k.
    pub attn_scale: f32,
    pub attn_logit_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
}

fn missing(path: &Path, key: &str) -> Error {
    Error::format(path, format!("missing or invalid metadata key {key}"))
}

impl ModelConfig {
    /// Reads the config from GGUF metadata (llama.cpp's key names).
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
        let path = &g.path;
        let arch_name = g
            .architecture()
            .ok_or_else(|| missing(path, "general.architecture"))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "architecture {other:?} (hearth runs llama, mistral, qwen2, qwen3, gemma3)"
                    ),
                ))
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let int = |s: &str| {
            g.get_u64(&k(s))
                .map(|v| v as usize)
                .ok_or_else(|| missing(path, &k(s)))
        };
        let hidden = int("embedding_length")?;
        let n_layers = int("block_count")?;
        let n_heads = int("attention.head_count")?;
        let n_kv_heads = g
            .get_u64(&k("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        if n_heads == 0 || hidden == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::format(
                path,
                format!("bad head counts: {n_heads} heads, {n_kv_heads} KV heads"),
            ));
        }
        let head_dim = g
            .get_u64(&k("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden / n_heads);
        let vocab = match g.get_u64(&k("vocab_size")) {
            Some(v) => v as usize,
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.array_len())
                .unwrap_or(0),
        };
        let rope_theta = g.get_f64(&k("rope.freq_base")).unwrap_or(10000.0) as f32;
        let scaling_type = g.get_str(&k("rope.scaling.type")).unwrap_or("none");
        let scaling_factor = g.get_f64(&k("rope.scaling.factor")).unwrap_or(1.0) as f32;
        let rope_linear_factor =
            if scaling_type == "linear" || (arch == Arch::Gemma3 && scaling_factor > 0.0) {
                scaling_factor.max(1e-6)
            } else {
                1.0
            };
        let sliding_window = g
            .get_u64(&k("attention.sliding_window"))
            .map(|v| v as usize)
            .filter(|&w| w > 0);
        let sliding_layers = match arch {
            // llama.cpp's gemma3 graph: every sixth layer is global, the rest slide.
            Arch::Gemma3 => {
                let pattern = g
                    .get_u64(&k("attention.sliding_window_pattern"))
                    .unwrap_or(6) as usize;
                (0..n_layers)
                    .map(|i| pattern == 0 || (i + 1) % pattern != 0)
                    .collect()
            }
            _ => vec![sliding_window.is_some(); n_layers],
        };
        let attn_scale = match g.get_f64(&k("attention.scale")) {
            Some(s) => s as f32,
            // Gemma 3 27B scales queries by hidden/heads rather than head_dim (its query_pre_attn_scalar);
            // GGUF does not store it, so follow llama.cpp and key on the 62-layer shape.
            None if arch == Arch::Gemma3 && n_layers == 62 => {
                1.0 / ((hidden / n_heads) as f32).sqrt()
            }
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let cfg = ModelConfig {
            arch,
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: int("feed_forward_length")?,
            vocab,
            context_len: int("context_length")?,
            rms_eps: g
                .get_f64(&k("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            rope_theta,
            rope_local_theta: if arch == Arch::Gemma3 {
                10000.0
            } else {
                rope_theta
            },
            rope_linear_factor,
            llama3_rope: None,
            rope_dim: g
                .get_u64(&k("rope.dimension_count"))
                .map(|v| v as usize)
                .unwrap_or(head_dim),
            rope_style: if matches!(arch, Arch::Llama | Arch::Mistral) {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
            sliding_window,
            sliding_layers,
            attn_scale,
            attn_logit_softcap: g
                .get_f64(&k("attn_logit_softcapping"))
                .map(|v| v as f32)
                .filter(|&v| v > 0.0),
            final_logit_softcap: g
                .get_f64(&k("final_logit_softcapping"))
                .map(|v| v as f32)
                .filter(|&v| v > 0.0),
        };
        cfg.validate(path)
    }

    /// Reads a Hugging Face `config.json` (both the older `rope_theta`/`rope_scaling` keys and transformers 5's
    /// `rope_parameters`; Gemma 3's multimodal config nests the text model under `text_config`).
    pub fn from_hf_config(path: &Path, root: &Value) -> Result<ModelConfig> {
        let arch_field = root
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .unwrap_or("");
        let model_type = root
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let (arch, c) = match (model_type, arch_field) {
            ("llama", _) => (Arch::Llama, root),
            ("mistral", _) => (Arch::Mistral, root),
            ("qwen2", _) => (Arch::Qwen2, root),
            ("qwen3", _) => (Arch::Qwen3, root),
            ("gemma3_text", _) => (Arch::Gemma3, root),
            ("gemma3", _) => (Arch::Gemma3, root.get("text_config").unwrap_or(root)),
            (other, a) => {
                return Err(Error::unsupported(
                    path,
                    format!(
                    "model_type {other:?} ({a}); hearth runs llama, mistral, qwen2, qwen3, gemma3"
                ),
                ))
            }
        };
        let int = |key: &str| -> Result<usize> {
            c.get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| missing(path, key))
        };
        let float = |key: &str| c.get(key).and_then(|v| v.as_f64());
        let hidden = int("hidden_size")?;
        let n_heads = int("num_attention_heads")?;
        let n_kv_heads = int("num_key_value_heads").unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::format(
                path,
                format!("bad head counts: {n_heads} heads, {n_kv_heads} KV heads"),
            ));
        }
        let head_dim = c
            .get("head_dim")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(hidden / n_heads);
        let n_layers = int("num_hidden_layers")?;

        // Rope: transformers 5 writes rope_parameters (per layer type for Gemma 3); older configs rope_theta,
        // rope_scaling and Gemma 3's rope_local_base_freq.
        let params = c.get("rope_parameters");
        let global = params.map(|p| p.get("full_attention").unwrap_or(p));
        let local = params.and_then(|p| p.get("sliding_attention"));
        let theta_of =
            |p: Option<&Value>| p.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64());
        let default_theta = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10000.0
        };
        let rope_theta = theta_of(global)
            .or(float("rope_theta"))
            .unwrap_or(default_theta) as f32;
        let rope_local_theta = if arch == Arch::Gemma3 {
            theta_of(local)
                .or(float("rope_local_base_freq"))
                .unwrap_or(10000.0) as f32
        } else {
            rope_theta
        };
        let scaling = global
            .filter(|p| p.get("rope_type").is_some())
            .or(c.get("rope_scaling"))
            .filter(|v| v.is_object());
        let mut rope_linear_factor = 1.0;
        let mut llama3_rope = None;
        if let Some(s) = scaling {
            let ty = s
                .get("rope_type")
                .or(s.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            let f = |k: &str| s.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
            match ty {
                "default" => {}
                "linear" => rope_linear_factor = f("factor").unwrap_or(1.0),
                "llama3" => {
                    llama3_rope = Some(Llama3Rope {
                        factor: f("factor").unwrap_or(8.0),
                        low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
                        high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
                        original_context: f("original_max_position_embeddings").unwrap_or(8192.0),
                    })
                }
                other => {
                    return Err(Error::unsupported(
                        path,
                        format!("rope scaling type {other:?}"),
                    ))
                }
            }
        }

        let sliding_window = c
            .get("sliding_window")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        let use_sliding = match arch {
            Arch::Qwen2 | Arch::Qwen3 => c
                .get("use_sliding_window")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            _ => true,
        };
        let sliding_window = sliding_window.filter(|&w| w > 0 && use_sliding);
        let sliding_layers: Vec<bool> =
            if let Some(types) = c.get("layer_types").and_then(|v| v.as_array()) {
                if types.len() != n_layers {
                    return Err(Error::format(
                        path,
                        "layer_types length differs from num_hidden_layers",
                    ));
                }
                types
                    .iter()
                    .map(|t| t.as_str() == Some("sliding_attention"))
                    .collect()
            } else if arch == Arch::Gemma3 {
                let pattern = c
                    .get("sliding_window_pattern")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(6) as usize;
                (0..n_layers)
                    .map(|i| pattern == 0 || (i + 1) % pattern != 0)
                    .collect()
            } else {
                vec![sliding_window.is_some(); n_layers]
            };
        let attn_scale = match (arch, float("query_pre_attn_scalar")) {
            (Arch::Gemma3, Some(q)) => 1.0 / (q as f32).sqrt(),
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let softcap = |k: &str| float(k).map(|v| v as f32).filter(|&v| v > 0.0);
        let cfg = ModelConfig {
            arch,
            hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn: int("intermediate_size")?,
            vocab: int("vocab_size")?,
            context_len: int("max_position_embeddings").unwrap_or(2048),
            rms_eps: float("rms_norm_eps").unwrap_or(1e-6) as f32,
            rope_theta,
            rope_local_theta,
            rope_linear_factor,
            llama3_rope,
            rope_dim: (head_dim as f64 * float("partial_rotary_factor").unwrap_or(1.0)) as usize,
            rope_style: RopeStyle::Neox,
            sliding_window,
            sliding_layers,
            attn_scale,
            attn_logit_softcap: softcap("attn_logit_softcapping"),
            final_logit_softcap: softcap("final_logit_softcapping"),
        };
        cfg.validate(path)
    }

    fn validate(self, path: &Path) -> Result<ModelConfig> {
        let bad = |m: String| Err(Error::format(path, m));
        if self.n_layers == 0
            || self.head_dim == 0
            || self.ffn == 0
            || self.vocab == 0
            || self.context_len == 0
        {
            return bad(format!("degenerate shape: {self:?}"));
        }
        if self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad(format!(
                "rope dimension {} does not fit head dimension {}",
                self.rope_dim, self.head_dim
            ));
        }
        if self.sliding_layers.len() != self.n_layers {
            return bad("sliding layer list has the wrong length".into());
        }
        Ok(self)
    }

    /// Rotary inverse frequencies for a layer (global or sliding), with the model's scaling folded in.
    /// Length `rope_dim / 2`.
    pub fn rope_inv_freq(&self, sliding: bool) -> Vec<f32> {
        let theta = if sliding {
            self.rope_local_theta
        } else {
            self.rope_theta
        };
        let half = self.rope_dim / 2;
        (0..half)
            .map(|i| {
                let f = 1.0 / (theta as f64).powf(2.0 * i as f64 / self.rope_dim as f64);
                let mut f = f as f32;
                if !sliding {
                    f /= self.rope_linear_factor;
                    if let Some(l3) = self.llama3_rope {
                        f = llama3_scale(f, l3);
                    }
                }
                f
            })
            .collect()
    }
}

/// Llama 3 scaling: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
fn llama3_scale(freq: f32, s: Llama3Rope) -> f32 {
    let low_wavelen = s.original_context / s.low_freq_factor;
    let high_wavelen = s.original_context / s.high_freq_factor;
    let wavelen = 2.0 * std::f32::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (s.original_context / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}
