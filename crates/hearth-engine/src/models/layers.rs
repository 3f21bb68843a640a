//! The two blocks every supported architecture is built from: self-attention (with the optional q/k/v biases,
//! per-head q/k norms and sliding window of the various families) and the gated MLP. The architecture files
//! compose them, with their own norms and residuals, into a forward pass.

use crate::backend::cpu::{matmul, matmul_group, ops};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::PagedKv;
use crate::models::weights::Weights;
use crate::tensor::Tensor;

/// A 1-D weight (norm gain or bias) as f32, plus `offset` (Gemma stores norm gains as `w` meaning `1 + w` in
/// Hugging Face checkpoints; GGUF files already hold `1 + w`).
pub fn vector(t: &Tensor, offset: f32) -> Vec<f32> {
    t.to_f32().into_iter().map(|v| v + offset).collect()
}

/// Scratch buffers for one step of up to `max_tokens` tokens, allocated once per sequence state.
pub struct Scratch {
    pub max_tokens: usize,
    pub x: Vec<f32>,           // [n, hidden] residual stream
    pub xb: Vec<f32>,          // [n, hidden] normed input of a block
    pub xb2: Vec<f32>,         // [n, hidden] block output
    pub q: Vec<f32>,           // [n, n_heads*head_dim]
    pub k: Vec<f32>,           // [n, kv_dim]
    pub v: Vec<f32>,           // [n, kv_dim]
    pub att: Vec<f32>,         // [n, n_heads*head_dim]
    pub gate: Vec<f32>,        // [n, ffn]
    pub up: Vec<f32>,          // [n, ffn]
    pub rope: Vec<f32>,        // [2 (global, local), n, rope_dim] cos/sin tables
    pub logits: Vec<f32>,      // [n_out, vocab]
    pub token_seq: Vec<u32>,   // [n] which sequence of the batch each row belongs to
    pub positions: Vec<usize>, // [n] each row's position in its sequence
    pub out_rows: Vec<usize>,  // rows whose logits are wanted
    pub out_x: Vec<f32>,       // [n_out, hidden] their final hidden states
}

impl Scratch {
    pub fn new(c: &ModelConfig, max_tokens: usize) -> Scratch {
        let n = max_tokens;
        let qdim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        Scratch {
            max_tokens,
            x: vec![0.0; n * c.hidden],
            xb: vec![0.0; n * c.hidden],
            xb2: vec![0.0; n * c.hidden],
            q: vec![0.0; n * qdim],
            k: vec![0.0; n * kv_dim],
            v: vec![0.0; n * kv_dim],
            att: vec![0.0; n * qdim],
            gate: vec![0.0; n * c.ffn],
            up: vec![0.0; n * c.ffn],
            rope: vec![0.0; 2 * n * c.rope_dim],
            logits: Vec::new(),
            token_seq: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            out_rows: Vec::with_capacity(n),
            out_x: Vec::new(),
        }
    }

    /// Fills the rope tables for every row's position in `self.positions` (global set, then local set).
    pub fn fill_rope(&mut self, c: &ModelConfig, inv_global: &[f32], inv_local: &[f32]) {
        let rd = c.rope_dim;
        let (g, l) = self.rope.split_at_mut(self.max_tokens * rd);
        for (t, &pos) in self.positions.iter().enumerate() {
            ops::rope_table(pos, inv_global, &mut g[t * rd..(t + 1) * rd]);
            ops::rope_table(pos, inv_local, &mut l[t * rd..(t + 1) * rd]);
        }
    }
}

/// One layer's self-attention weights.
pub struct Attention {
    pub layer: usize,
    pub wq: Tensor,               // [n_heads*head_dim, hidden]
    pub wk: Tensor,               // [n_kv_heads*head_dim, hidden]
    pub wv: Tensor,               // [n_kv_heads*head_dim, hidden]
    pub wo: Tensor,               // [hidden, n_heads*head_dim]
    pub bq: Option<Vec<f32>>,     // [n_heads*head_dim] (qwen2)
    pub bk: Option<Vec<f32>>,     // [n_kv_heads*head_dim]
    pub bv: Option<Vec<f32>>,     // [n_kv_heads*head_dim]
    pub q_norm: Option<Vec<f32>>, // [head_dim] (qwen3, gemma3)
    pub k_norm: Option<Vec<f32>>, // [head_dim]
    pub sliding: bool,
}

impl Attention {
    /// Loads layer `l`'s attention; `norm_offset` is added to q/k norm gains (see [`vector`]).
    pub fn load(w: &Weights, c: &ModelConfig, l: usize, norm_offset: f32) -> Result<Attention> {
        let (qdim, kvdim, hd) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let bias = |s: &str, n: usize| -> Result<Option<Vec<f32>>> {
            Ok(w.layer_opt(l, s, &[n])?.map(|t| vector(t, 0.0)))
        };
        let norm = |s: &str| -> Result<Option<Vec<f32>>> {
            Ok(w.layer_opt(l, s, &[hd])?.map(|t| vector(t, norm_offset)))
        };
        Ok(Attention {
            layer: l,
            wq: w.layer(l, "attn_q.weight", &[qdim, c.hidden])?.clone(),
            wk: w.layer(l, "attn_k.weight", &[kvdim, c.hidden])?.clone(),
            wv: w.layer(l, "attn_v.weight", &[kvdim, c.hidden])?.clone(),
            wo: w.layer(l, "attn_output.weight", &[c.hidden, qdim])?.clone(),
            bq: bias("attn_q.bias", qdim)?,
            bk: bias("attn_k.bias", kvdim)?,
            bv: bias("attn_v.bias", kvdim)?,
            q_norm: norm("attn_q_norm.weight")?,
            k_norm: norm("attn_k_norm.weight")?,
            sliding: c.sliding_layers[l] && c.sliding_window.is_some(),
        })
    }

    /// `s.xb` `[n, hidden]` (normed input of every row of the batch) → `s.xb2` `[n, hidden]`, storing the
    /// rows' keys and values in their sequences' slots of `kv`.
    pub fn forward(
        &self,
        c: &ModelConfig,
        s: &mut Scratch,
        kv: &mut PagedKv,
        seqs: &[ops::SeqSpan],
        n: usize,
    ) {
        let (qdim, kvdim, hd) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let s = &mut *s;
        let xb = &s.xb[..n * c.hidden];
        let (q, k, v) = (
            &mut s.q[..n * qdim],
            &mut s.k[..n * kvdim],
            &mut s.v[..n * kvdim],
        );
        // q = xb·Wqᵀ (+bq): [n, qdim]; k, v: [n, kvdim] — one parallel loop for the three.
        matmul_group(
            &[&self.wq, &self.wk, &self.wv],
            xb,
            n,
            &mut [&mut *q, &mut *k, &mut *v],
        );
        for (buf, b) in [
            (&mut *q, &self.bq),
            (&mut *k, &self.bk),
            (&mut *v, &self.bv),
        ] {
            if let Some(b) = b {
                for row in buf.chunks_exact_mut(b.len()) {
                    ops::add_inplace(row, b);
                }
            }
        }
        // Per-head RMS norm of q and k (each head_dim-wide row), before rope.
        if let Some(g) = &self.q_norm {
            ops::rmsnorm_inplace(q, g, c.rms_eps);
        }
        if let Some(g) = &self.k_norm {
            ops::rmsnorm_inplace(k, g, c.rms_eps);
        }
        let rd = c.rope_dim;
        for t in 0..n {
            let off = (if self.sliding { s.max_tokens * rd } else { 0 }) + t * rd;
            let cs = &s.rope[off..off + rd];
            ops::rope_apply(&mut q[t * qdim..(t + 1) * qdim], hd, cs, c.rope_style);
            ops::rope_apply(&mut k[t * kvdim..(t + 1) * kvdim], hd, cs, c.rope_style);
        }
        // Keys and values go to each row's slot: [kv_dim] per position.
        for t in 0..n {
            let sp = &seqs[s.token_seq[t] as usize];
            let at = kv.slot(sp.table, s.positions[t]);
            let l = &mut kv.layers[self.layer];
            l.k[at..at + kvdim].copy_from_slice(&k[t * kvdim..(t + 1) * kvdim]);
            l.v[at..at + kvdim].copy_from_slice(&v[t * kvdim..(t + 1) * kvdim]);
        }
        let p = ops::AttnParams {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            scale: c.attn_scale,
            window: if self.sliding { c.sliding_window } else { None },
            softcap: c.attn_logit_softcap,
        };
        let att = &mut s.att[..n * qdim];
        let l = &kv.layers[self.layer];
        let view = ops::KvView {
            k: &l.k,
            v: &l.v,
            block_size: kv.block_size,
        };
        ops::attention(q, &view, seqs, &s.token_seq[..n], &p, att);
        // out = att·Woᵀ: [n, hidden]
        matmul(&self.wo, att, n, &mut s.xb2[..n * c.hidden]);
    }
}

/// The MLP's activation: SiLU for llama-family models, tanh-approximated GELU for Gemma.
#[derive(Clone, Copy)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// One layer's gated MLP: `down(act(gate(x)) * up(x))`.
pub struct Mlp {
    pub gate: Tensor, // [ffn, hidden]
    pub up: Tensor,   // [ffn, hidden]
    pub down: Tensor, // [hidden, ffn]
    pub act: Activation,
}

impl Mlp {
    pub fn load(w: &Weights, c: &ModelConfig, l: usize, act: Activation) -> Result<Mlp> {
        Ok(Mlp {
            gate: w.layer(l, "ffn_gate.weight", &[c.ffn, c.hidden])?.clone(),
            up: w.layer(l, "ffn_up.weight", &[c.ffn, c.hidden])?.clone(),
            down: w.layer(l, "ffn_down.weight", &[c.hidden, c.ffn])?.clone(),
            act,
        })
    }

    /// `s.xb` `[n, hidden]` → `s.xb2` `[n, hidden]`.
    pub fn forward(&self, c: &ModelConfig, s: &mut Scratch, n: usize) {
        let xb = &s.xb[..n * c.hidden];
        let (gate, up) = (&mut s.gate[..n * c.ffn], &mut s.up[..n * c.ffn]);
        // gate, up: [n, ffn] each, one parallel loop for the two.
        matmul_group(&[&self.gate, &self.up], xb, n, &mut [&mut *gate, &mut *up]);
        match self.act {
            Activation::Silu => ops::silu_mul(gate, up),
            Activation::GeluTanh => ops::gelu_tanh_mul(gate, up),
        }
        matmul(&self.down, gate, n, &mut s.xb2[..n * c.hidden]); // [n, hidden]
    }
}

/// Looks up token embeddings: row `id` of `embd` (`[vocab, hidden]`, any weight type) into `out` rows.
pub fn embed(embd: &Tensor, tokens: &[u32], hidden: usize, out: &mut [f32]) {
    for (t, &id) in tokens.iter().enumerate() {
        crate::tensor::quants::dequantize_row(
            embd.dtype,
            embd.row(id as usize),
            &mut out[t * hidden..(t + 1) * hidden],
        );
    }
}
