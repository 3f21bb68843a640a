//! The llama family: Llama 2/3, Mistral, Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms), SmolLM.
//!
//! Per layer: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x)) with a SiLU-gated MLP. The optional pieces (biases,
//! q/k norms, sliding window) are present or absent in the weights and config, so one forward serves all.

use crate::backend::{Act, Backend, StepRows};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::layers::{vector, Activation, Attention, Mlp};
use crate::models::weights::Weights;

struct Layer<B: Backend> {
    attn_norm: B::Vec, // [hidden]
    attn: Attention<B>,
    ffn_norm: B::Vec, // [hidden]
    mlp: Mlp<B>,
}

/// A loaded llama-family network, its weights held by backend `B`.
pub struct Llama<B: Backend> {
    token_embd: B::Mat, // [vocab, hidden]
    layers: Vec<Layer<B>>,
    output_norm: B::Vec, // [hidden]
    output: B::Mat,      // [vocab, hidden]; the embedding matrix when tied
}

impl<B: Backend> Llama<B> {
    pub fn load(be: &B, w: &Weights, c: &ModelConfig) -> Result<Llama<B>> {
        let embd = w.get_shaped("token_embd.weight", &[c.vocab, c.hidden])?;
        let output = w
            .opt_shaped("output.weight", &[c.vocab, c.hidden])?
            .unwrap_or(embd);
        let norm = |t| be.vector(vector(t, 0.0));
        let layers = (0..c.n_layers)
            .map(|l| {
                Ok(Layer {
                    attn_norm: norm(w.layer(l, "attn_norm.weight", &[c.hidden])?)?,
                    attn: Attention::load(be, w, c, l, 0.0)?,
                    ffn_norm: norm(w.layer(l, "ffn_norm.weight", &[c.hidden])?)?,
                    mlp: Mlp::load(be, w, c, l, Activation::Silu)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            output_norm: norm(w.get_shaped("output_norm.weight", &[c.hidden])?)?,
            token_embd: be.mat(embd)?,
            layers,
            output: be.mat(output)?,
        })
    }

    /// Runs a step's rows through the network; leaves the final hidden states, normed, in `Xb`
    /// `[n, hidden]` for [`Llama::logits`].
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
        be.embed(s, rows, &self.token_embd, None); // X: [n, hidden]
        let first = self
            .layers
            .first()
            .map_or(&self.output_norm, |l| &l.attn_norm);
        be.rmsnorm(s, n, Act::X, first, eps, Act::Xb);
        for (i, layer) in self.layers.iter().enumerate() {
            be.attention(s, kv, rows, &layer.attn, c); // Xb2 = Attn(Xb)
            be.add_rmsnorm(s, n, Act::Xb2, &layer.ffn_norm, eps, Act::Xb); // X += Xb2; Xb = norm(X)
            be.mlp(s, n, &layer.mlp, c); // Xb2 = MLP(Xb)
                                         // X += Xb2; Xb = the next layer's input norm (the output norm after the last layer).
            let next = self
                .layers
                .get(i + 1)
                .map_or(&self.output_norm, |l| &l.attn_norm);
            be.add_rmsnorm(s, n, Act::Xb2, next, eps, Act::Xb);
        }
    }

    /// Logits `[out_rows, vocab]` of the step's wanted rows (see [`Backend::logits`]).
    pub fn project(&self, be: &B, s: &mut B::Step, rows: &StepRows) {
        be.project(s, rows, &self.output, None)
    }
}
