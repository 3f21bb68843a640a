//! config.json for a GGUF file's model: the inverse of [`ModelConfig::from_hf_config`] for the architectures
//! hearth runs, written with the keys transformers (and mlx-lm) read.
//!
//! It starts from the [`ModelConfig`] hearth derives from the GGUF metadata, so that the Hugging Face folder
//! behaves exactly as the GGUF does in hearth (same rope bases, attention scale, sliding layers), even where
//! GGUF lost a setting of the original checkpoint (Gemma 3's `query_pre_attn_scalar` is written as the scale
//! llama.cpp and hearth use).

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::models::config::{Arch, ModelConfig};
use crate::tensor::mlx::MlxFloat;
use crate::tokenizer::Tokenizer;

use super::source::torch_name;

/// Llama 3.x's rope scaling, recovered from the `rope_freqs.weight` divisors llama.cpp stores instead of the
/// parameters: the divisors are recomputed for the usual parameter sets and the one that matches is taken.
pub fn llama3_rope_from_freqs(cfg: &ModelConfig, divisors: &[f32]) -> Option<Value> {
    let mut best: Option<Value> = None;
    for &orig in &[8192.0f32, 4096.0, 2048.0, 16384.0, 32768.0, 131072.0] {
        for &(low, high) in &[(1.0f32, 4.0f32), (1.0, 2.0), (1.0, 8.0), (2.0, 8.0)] {
            let factor = *divisors.last()?;
            let half = cfg.rope_dim / 2;
            let ok = (0..half).all(|i| {
                let freq =
                    1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / cfg.rope_dim as f64) as f32;
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                let (lw, hw) = (orig / low, orig / high);
                let d = if wavelen < hw {
                    1.0
                } else if wavelen > lw {
                    factor
                } else {
                    let smooth = (orig / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                (d - divisors[i]).abs() <= 1e-3 * d.abs().max(1.0)
            });
            if ok && best.is_none() {
                best = Some(json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": orig as u64,
                }));
            }
        }
    }
    best
}

/// Builds config.json for the GGUF `g` whose tensors are written in `dtype`. `tied` says whether the output
/// head is the embedding table (no `output.weight`); `has_qkv_bias` whether attention has biases.
pub fn gguf_to_hf_config(
    g: &GgufFile,
    tok: &Tokenizer,
    dtype: MlxFloat,
    tied: bool,
    has_qkv_bias: bool,
) -> Result<Value> {
    let c = ModelConfig::from_gguf(g)?;
    let (architecture, model_type) = match c.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Mistral => ("MistralForCausalLM", "mistral"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    if c.rope_dim != c.head_dim {
        return Err(Error::unsupported(
            &g.path,
            format!(
                "rope over {} of {} head dimensions has no config.json spelling for {model_type}",
                c.rope_dim, c.head_dim
            ),
        ));
    }
    let mut m = Map::new();
    m.insert("architectures".into(), json!([architecture]));
    m.insert("model_type".into(), json!(model_type));
    m.insert("hidden_size".into(), json!(c.hidden));
    m.insert("intermediate_size".into(), json!(c.ffn));
    m.insert("num_hidden_layers".into(), json!(c.n_layers));
    m.insert("num_attention_heads".into(), json!(c.n_heads));
    m.insert("num_key_value_heads".into(), json!(c.n_kv_heads));
    m.insert("head_dim".into(), json!(c.head_dim));
    m.insert("max_position_embeddings".into(), json!(c.context_len));
    m.insert("vocab_size".into(), json!(c.vocab));
    m.insert("tie_word_embeddings".into(), json!(tied));
    m.insert("attention_dropout".into(), json!(0.0));
    m.insert("initializer_range".into(), json!(0.02));
    m.insert("use_cache".into(), json!(true));
    m.insert("torch_dtype".into(), json!(torch_name(dtype)));
    insert_special_ids(&mut m, tok);
    if let Some(p) = g.get_u64("tokenizer.ggml.padding_token_id") {
        m.insert("pad_token_id".into(), json!(p));
    }
    // rope_theta is the float the GGUF holds; widen through f32's shortest decimal so 1e6 stays 1e6.
    let theta = |t: f32| -> f64 { t.to_string().parse().unwrap_or(t as f64) };
    m.insert("rope_theta".into(), json!(theta(c.rope_theta)));
    m.insert("rms_norm_eps".into(), json!(theta(c.rms_eps)));
    let mut rope_scaling = Value::Null;
    if c.rope_linear_factor != 1.0 {
        rope_scaling = json!({"rope_type": "linear", "factor": c.rope_linear_factor as f64});
    }
    if let Some(t) = g.tensors.iter().find(|t| t.name == "rope_freqs.weight") {
        rope_scaling = llama3_rope_from_freqs(&c, &t.to_f32()).ok_or_else(|| {
            Error::unsupported(
                &g.path,
                "rope_freqs.weight does not match any Llama 3 rope scaling hearth knows",
            )
        })?;
    }
    m.insert("rope_scaling".into(), rope_scaling);
    match c.arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("attention_bias".into(), json!(has_qkv_bias));
            m.insert("mlp_bias".into(), json!(false));
        }
        Arch::Gemma3 => {}
    }
    match c.arch {
        Arch::Llama => {}
        Arch::Mistral => {
            m.insert("sliding_window".into(), json!(c.sliding_window));
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            m.insert(
                "use_sliding_window".into(),
                json!(c.sliding_window.is_some()),
            );
            m.insert("sliding_window".into(), json!(c.sliding_window));
            m.insert("max_window_layers".into(), json!(c.n_layers));
        }
        Arch::Gemma3 => {
            m.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            m.insert("attention_bias".into(), json!(false));
            // hearth's (and llama.cpp's) scale is 1/sqrt(query_pre_attn_scalar).
            let scalar = (1.0 / (c.attn_scale as f64 * c.attn_scale as f64)).round();
            m.insert("query_pre_attn_scalar".into(), json!(scalar as u64));
            m.insert(
                "rope_local_base_freq".into(),
                json!(theta(c.rope_local_theta)),
            );
            m.insert(
                "sliding_window".into(),
                json!(c.sliding_window.unwrap_or(4096)),
            );
            let types: Vec<&str> = c
                .sliding_layers
                .iter()
                .map(|&s| {
                    if s {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            // mlx-lm reads the period; transformers reads layer_types.
            let pattern = c
                .sliding_layers
                .iter()
                .position(|s| !s)
                .map(|i| i + 1)
                .unwrap_or(c.n_layers + 1);
            m.insert("layer_types".into(), json!(types));
            m.insert("sliding_window_pattern".into(), json!(pattern));
            m.insert(
                "attn_logit_softcapping".into(),
                json!(c.attn_logit_softcap.map(|v| v as f64)),
            );
            m.insert(
                "final_logit_softcapping".into(),
                json!(c.final_logit_softcap.map(|v| v as f64)),
            );
            m.insert("use_bidirectional_attention".into(), json!(false));
        }
    }
    let mut sorted: Vec<(String, Value)> = m.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Value::Object(sorted.into_iter().collect()))
}

/// generation_config.json: the ids generation starts and stops with.
pub fn generation_config(tok: &Tokenizer) -> Value {
    let mut m = Map::new();
    insert_special_ids(&mut m, tok);
    Value::Object(m)
}

/// `bos_token_id` and `eos_token_id` (one id, or a list when there are several) as config.json and
/// generation_config.json both carry them.
fn insert_special_ids(m: &mut Map<String, Value>, tok: &Tokenizer) {
    if let Some(b) = tok.bos_id() {
        m.insert("bos_token_id".into(), json!(b));
    }
    match tok.eos_ids() {
        [] => {}
        [one] => {
            m.insert("eos_token_id".into(), json!(one));
        }
        many => {
            m.insert("eos_token_id".into(), json!(many));
        }
    }
}
