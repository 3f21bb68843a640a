//! The llama family: Llama 2/3, Mistral, Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms), SmolLM.
//!
//! Per layer: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x)) with a SiLU-gated MLP. The optional pieces (biases,
//! q/k norms, sliding window) are present or absent in the weights and config, so one forward serves all.

use crate::backend::cpu::ops::SeqSpan;
use crate::backend::cpu::{matmul, ops};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::PagedKv;
use crate::models::layers::{embed, vector, Activation, Attention, Mlp, Scratch};
use crate::models::weights::Weights;
use crate::tensor::Tensor;

struct Layer {
    attn_norm: Vec<f32>, // [hidden]
    attn: Attention,
    ffn_norm: Vec<f32>, // [hidden]
    mlp: Mlp,
}

/// A loaded llama-family network.
pub struct Llama {
    token_embd: Tensor, // [vocab, hidden]
    layers: Vec<Layer>,
    output_norm: Vec<f32>, // [hidden]
    output: Tensor,        // [vocab, hidden]; the embedding matrix when tied
}

impl Llama {
    pub fn load(w: &Weights, c: &ModelConfig) -> Result<Llama> {
        let token_embd = w
            .get_shaped("token_embd.weight", &[c.vocab, c.hidden])?
            .clone();
        let output = match w.opt_shaped("output.weight", &[c.vocab, c.hidden])? {
            Some(t) => t.clone(),
            None => token_embd.clone(),
        };
        let layers = (0..c.n_layers)
            .map(|l| {
                Ok(Layer {
                    attn_norm: vector(w.layer(l, "attn_norm.weight", &[c.hidden])?, 0.0),
                    attn: Attention::load(w, c, l, 0.0)?,
                    ffn_norm: vector(w.layer(l, "ffn_norm.weight", &[c.hidden])?, 0.0),
                    mlp: Mlp::load(w, c, l, Activation::Silu)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            output_norm: vector(w.get_shaped("output_norm.weight", &[c.hidden])?, 0.0),
            token_embd,
            layers,
            output,
        })
    }

    /// Runs a batch (`tokens`: every row of every sequence in `seqs`, positions in `s.positions`) through the
    /// network; leaves the final hidden states, normed, in
    /// `s.xb` `[n, hidden]` for the caller to project to logits with [`Llama::output`].
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
        embed(&self.token_embd, tokens, h, &mut s.x[..n * h]); // x: [n, hidden]
        for layer in &self.layers {
            ops::rmsnorm(
                &s.x[..n * h],
                &layer.attn_norm,
                c.rms_eps,
                &mut s.xb[..n * h],
            );
            layer.attn.forward(c, s, kv, seqs, n); // xb2 = Attn(xb)
            ops::add_inplace(&mut s.x[..n * h], &s.xb2[..n * h]);
            ops::rmsnorm(
                &s.x[..n * h],
                &layer.ffn_norm,
                c.rms_eps,
                &mut s.xb[..n * h],
            );
            layer.mlp.forward(c, s, n); // xb2 = MLP(xb)
            ops::add_inplace(&mut s.x[..n * h], &s.xb2[..n * h]);
        }
        ops::rmsnorm(
            &s.x[..n * h],
            &self.output_norm,
            c.rms_eps,
            &mut s.xb[..n * h],
        );
    }

    /// Logits `[rows, vocab]` of normed hidden states `xb` `[rows, hidden]`.
    pub fn output(&self, xb: &[f32], rows: usize, logits: &mut [f32]) {
        matmul(&self.output, xb, rows, logits);
    }
}
