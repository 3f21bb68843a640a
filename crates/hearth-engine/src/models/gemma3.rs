//! Gemma 3 (text): interleaved sliding-window and global attention layers, each with its own rope base;
//! RMS norms before and after both the attention and the MLP; per-head q/k norms; a GELU(tanh)-gated MLP;
//! embeddings scaled by sqrt(hidden); output tied to the embeddings.
//!
//! Per layer: x += PostAttnNorm(Attn(InputNorm(x))); x += PostFfwNorm(MLP(PreFfwNorm(x))).
//! Norm gains are `1 + w` in Hugging Face checkpoints; GGUF files store the sum, so `norm_offset` is 1 or 0.

use crate::backend::cpu::ops::SeqSpan;
use crate::backend::cpu::{matmul, ops};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::PagedKv;
use crate::models::layers::{embed, vector, Activation, Attention, Mlp, Scratch};
use crate::models::weights::Weights;
use crate::tensor::Tensor;

struct Layer {
    attn_norm: Vec<f32>,      // [hidden] input_layernorm
    attn: Attention,          // includes q/k norms [head_dim]
    post_attn_norm: Vec<f32>, // [hidden]
    ffn_norm: Vec<f32>,       // [hidden] pre_feedforward_layernorm
    mlp: Mlp,
    post_ffw_norm: Vec<f32>, // [hidden]
}

/// A loaded Gemma 3 text network.
pub struct Gemma3 {
    token_embd: Tensor, // [vocab, hidden]
    layers: Vec<Layer>,
    output_norm: Vec<f32>, // [hidden]
    output: Tensor,        // [vocab, hidden]; tied to token_embd unless the file has its own
    embed_scale: f32,
}

impl Gemma3 {
    pub fn load(w: &Weights, c: &ModelConfig, norm_offset: f32) -> Result<Gemma3> {
        let token_embd = w
            .get_shaped("token_embd.weight", &[c.vocab, c.hidden])?
            .clone();
        let output = match w.opt_shaped("output.weight", &[c.vocab, c.hidden])? {
            Some(t) => t.clone(),
            None => token_embd.clone(),
        };
        let norm = |l: usize, s: &str| -> Result<Vec<f32>> {
            Ok(vector(w.layer(l, s, &[c.hidden])?, norm_offset))
        };
        let layers = (0..c.n_layers)
            .map(|l| {
                Ok(Layer {
                    attn_norm: norm(l, "attn_norm.weight")?,
                    attn: Attention::load(w, c, l, norm_offset)?,
                    post_attn_norm: norm(l, "post_attention_norm.weight")?,
                    ffn_norm: norm(l, "ffn_norm.weight")?,
                    mlp: Mlp::load(w, c, l, Activation::GeluTanh)?,
                    post_ffw_norm: norm(l, "post_ffw_norm.weight")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma3 {
            output_norm: vector(
                w.get_shaped("output_norm.weight", &[c.hidden])?,
                norm_offset,
            ),
            token_embd,
            layers,
            output,
            // Hugging Face computes the scale in the activation dtype; f32 here.
            embed_scale: (c.hidden as f32).sqrt(),
        })
    }

    /// Runs a batch (`tokens`: every row of every sequence in `seqs`, positions in `s.positions`); leaves normed final hidden states in `s.xb` `[n, hidden]`.
    pub fn forward(
        &self,
        c: &ModelConfig,
        s: &mut Scratch,
        kv: &mut PagedKv,
        tokens: &[u32],
        seqs: &[SeqSpan],
    ) {
        let n = tokens.len();
        let h = c.hidden;
        let eps = c.rms_eps;
        embed(&self.token_embd, tokens, h, &mut s.x[..n * h]); // x: [n, hidden]
        s.x[..n * h].iter_mut().for_each(|v| *v *= self.embed_scale);
        for layer in &self.layers {
            ops::rmsnorm(&s.x[..n * h], &layer.attn_norm, eps, &mut s.xb[..n * h]);
            layer.attn.forward(c, s, kv, seqs, n); // xb2 = Attn(xb)
            ops::rmsnorm_inplace(&mut s.xb2[..n * h], &layer.post_attn_norm, eps);
            ops::add_inplace(&mut s.x[..n * h], &s.xb2[..n * h]);
            ops::rmsnorm(&s.x[..n * h], &layer.ffn_norm, eps, &mut s.xb[..n * h]);
            layer.mlp.forward(c, s, n); // xb2 = MLP(xb)
            ops::rmsnorm_inplace(&mut s.xb2[..n * h], &layer.post_ffw_norm, eps);
            ops::add_inplace(&mut s.x[..n * h], &s.xb2[..n * h]);
        }
        ops::rmsnorm(&s.x[..n * h], &self.output_norm, eps, &mut s.xb[..n * h]);
    }

    /// Logits `[rows, vocab]` of normed hidden states `xb` `[rows, hidden]`, soft-capped when configured.
    pub fn output(&self, c: &ModelConfig, xb: &[f32], rows: usize, logits: &mut [f32]) {
        matmul(&self.output, xb, rows, logits);
        if let Some(cap) = c.final_logit_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
    }
}
