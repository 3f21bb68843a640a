//! The two blocks every supported architecture is built from: self-attention (with the optional q/k/v biases,
//! per-head q/k norms and sliding window of the various families) and the gated MLP. The architecture files
//! compose them, with their own norms and residuals, into a forward pass; a backend runs them
//! ([`Backend::attention`], [`Backend::mlp`]).

use crate::backend::Backend;
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::weights::Weights;
use crate::tensor::Tensor;

/// A 1-D weight (norm gain or bias) as f32, plus `offset` (Gemma stores norm gains as `w` meaning `1 + w` in
/// Hugging Face checkpoints; GGUF files already hold `1 + w`).
pub fn vector(t: &Tensor, offset: f32) -> Vec<f32> {
    t.to_f32().into_iter().map(|v| v + offset).collect()
}

/// One layer's self-attention weights, as backend `B` holds them.
pub struct Attention<B: Backend> {
    pub layer: usize,
    pub wq: B::Mat,             // [n_heads*head_dim, hidden]
    pub wk: B::Mat,             // [n_kv_heads*head_dim, hidden]
    pub wv: B::Mat,             // [n_kv_heads*head_dim, hidden]
    pub wo: B::Mat,             // [hidden, n_heads*head_dim]
    pub bq: Option<B::Vec>,     // [n_heads*head_dim] (qwen2)
    pub bk: Option<B::Vec>,     // [n_kv_heads*head_dim]
    pub bv: Option<B::Vec>,     // [n_kv_heads*head_dim]
    pub q_norm: Option<B::Vec>, // [head_dim] (qwen3, gemma3)
    pub k_norm: Option<B::Vec>, // [head_dim]
    pub sliding: bool,
}

impl<B: Backend> Attention<B> {
    /// Loads layer `l`'s attention; `norm_offset` is added to q/k norm gains (see [`vector`]).
    pub fn load(
        be: &B,
        w: &Weights,
        c: &ModelConfig,
        l: usize,
        norm_offset: f32,
    ) -> Result<Attention<B>> {
        let (qdim, kvdim, hd) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let opt = |s: &str, n: usize, offset: f32| -> Result<Option<B::Vec>> {
            w.layer_opt(l, s, &[n])?
                .map(|t| be.vector(vector(t, offset)))
                .transpose()
        };
        Ok(Attention {
            layer: l,
            wq: be.mat(w.layer(l, "attn_q.weight", &[qdim, c.hidden])?)?,
            wk: be.mat(w.layer(l, "attn_k.weight", &[kvdim, c.hidden])?)?,
            wv: be.mat(w.layer(l, "attn_v.weight", &[kvdim, c.hidden])?)?,
            wo: be.mat(w.layer(l, "attn_output.weight", &[c.hidden, qdim])?)?,
            bq: opt("attn_q.bias", qdim, 0.0)?,
            bk: opt("attn_k.bias", kvdim, 0.0)?,
            bv: opt("attn_v.bias", kvdim, 0.0)?,
            q_norm: opt("attn_q_norm.weight", hd, norm_offset)?,
            k_norm: opt("attn_k_norm.weight", hd, norm_offset)?,
            sliding: c.sliding_layers[l] && c.sliding_window.is_some(),
        })
    }
}

/// The MLP's activation: SiLU for llama-family models, tanh-approximated GELU for Gemma.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// One layer's gated MLP: `down(act(gate(x)) * up(x))`.
pub struct Mlp<B: Backend> {
    pub gate: B::Mat, // [ffn, hidden]
    pub up: B::Mat,   // [ffn, hidden]
    pub down: B::Mat, // [hidden, ffn]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    pub fn load(be: &B, w: &Weights, c: &ModelConfig, l: usize, act: Activation) -> Result<Mlp<B>> {
        Ok(Mlp {
            gate: be.mat(w.layer(l, "ffn_gate.weight", &[c.ffn, c.hidden])?)?,
            up: be.mat(w.layer(l, "ffn_up.weight", &[c.ffn, c.hidden])?)?,
            down: be.mat(w.layer(l, "ffn_down.weight", &[c.hidden, c.ffn])?)?,
            act,
        })
    }
}
