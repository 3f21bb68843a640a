//! Gemma 3 (text): interleaved sliding-window and global attention layers, each with its own rope base;
//! RMS norms before and after both the attention and the MLP; per-head q/k norms; a GELU(tanh)-gated MLP;
//! embeddings scaled by sqrt(hidden); output tied to the embeddings.
//!
//! Per layer: x += PostAttnNorm(Attn(InputNorm(x))); x += PostFfwNorm(MLP(PreFfwNorm(x))).
//! Norm gains are `1 + w` in Hugging Face checkpoints; GGUF files store the sum, so `norm_offset` is 1 or 0.

use crate::backend::{Act, Backend, StepRows};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::layers::{vector, Activation, Attention, Mlp};
use crate::models::weights::Weights;

struct Layer<B: Backend> {
    attn_norm: B::Vec,      // [hidden] input_layernorm
    attn: Attention<B>,     // includes q/k norms [head_dim]
    post_attn_norm: B::Vec, // [hidden]
    ffn_norm: B::Vec,       // [hidden] pre_feedforward_layernorm
    mlp: Mlp<B>,
    post_ffw_norm: B::Vec, // [hidden]
}

/// A loaded Gemma 3 text network, its weights held by backend `B`.
pub struct Gemma3<B: Backend> {
    token_embd: B::Mat, // [vocab, hidden]
    layers: Vec<Layer<B>>,
    output_norm: B::Vec, // [hidden]
    output: B::Mat,      // [vocab, hidden]; tied to token_embd unless the file has its own
    embed_scale: f32,
}

impl<B: Backend> Gemma3<B> {
    pub fn load(be: &B, w: &Weights, c: &ModelConfig, norm_offset: f32) -> Result<Gemma3<B>> {
        let embd = w.get_shaped("token_embd.weight", &[c.vocab, c.hidden])?;
        let output = w
            .opt_shaped("output.weight", &[c.vocab, c.hidden])?
            .unwrap_or(embd);
        let norm = |l: usize, s: &str| -> Result<B::Vec> {
            be.vector(vector(w.layer(l, s, &[c.hidden])?, norm_offset))
        };
        let layers = (0..c.n_layers)
            .map(|l| {
                Ok(Layer {
                    attn_norm: norm(l, "attn_norm.weight")?,
                    attn: Attention::load(be, w, c, l, norm_offset)?,
                    post_attn_norm: norm(l, "post_attention_norm.weight")?,
                    ffn_norm: norm(l, "ffn_norm.weight")?,
                    mlp: Mlp::load(be, w, c, l, Activation::GeluTanh)?,
                    post_ffw_norm: norm(l, "post_ffw_norm.weight")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma3 {
            output_norm: be.vector(vector(
                w.get_shaped("output_norm.weight", &[c.hidden])?,
                norm_offset,
            ))?,
            token_embd: be.mat(embd)?,
            layers,
            output: be.mat(output)?,
            // Hugging Face computes the scale in the activation dtype; f32 here.
            embed_scale: (c.hidden as f32).sqrt(),
        })
    }

    /// Runs a step's rows through the network; leaves normed final hidden states in `Xb` `[n, hidden]`.
    pub fn forward(
        &self,
        be: &B,
        c: &ModelConfig,
        s: &mut B::Step,
        kv: &mut B::Kv,
        rows: &StepRows,
    ) {
        let n = rows.tokens.len();
        let eps = c.rms_eps;
        be.embed(s, rows, &self.token_embd, Some(self.embed_scale)); // X: [n, hidden]
        let first = self
            .layers
            .first()
            .map_or(&self.output_norm, |l| &l.attn_norm);
        be.rmsnorm(s, n, Act::X, first, eps, Act::Xb);
        for (i, layer) in self.layers.iter().enumerate() {
            be.attention(s, kv, rows, &layer.attn, c); // Xb2 = Attn(Xb)
            be.rmsnorm(s, n, Act::Xb2, &layer.post_attn_norm, eps, Act::Xb2);
            be.add_rmsnorm(s, n, Act::Xb2, &layer.ffn_norm, eps, Act::Xb); // X += Xb2; Xb = norm(X)
            be.mlp(s, n, &layer.mlp, c); // Xb2 = MLP(Xb)
            be.rmsnorm(s, n, Act::Xb2, &layer.post_ffw_norm, eps, Act::Xb2);
            // X += Xb2; Xb = the next layer's input norm (the output norm after the last layer).
            let next = self
                .layers
                .get(i + 1)
                .map_or(&self.output_norm, |l| &l.attn_norm);
            be.add_rmsnorm(s, n, Act::Xb2, next, eps, Act::Xb);
        }
    }

    /// Logits `[out_rows, vocab]` of the step's wanted rows, soft-capped when configured.
    pub fn project(&self, be: &B, c: &ModelConfig, s: &mut B::Step, rows: &StepRows) {
        be.project(s, rows, &self.output, c.final_logit_softcap)
    }
}
