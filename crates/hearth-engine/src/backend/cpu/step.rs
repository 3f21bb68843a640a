//! The CPU as a [`Backend`]: f32 activations in host vectors, weights borrowed from the memory map, the
//! SIMD matmul kernels of this module's parent, and the attention of [`super::ops`].

use super::{matmul, matmul_group, ops};
use crate::backend::{Act, Backend, StepRows};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::HostKv;
use crate::models::layers::{Activation, Attention, Mlp};
use crate::tensor::Tensor;

/// The CPU backend (it holds nothing: the kernel pool and the SIMD level are process-wide).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// Scratch buffers for one step of up to `max_tokens` tokens, allocated once per batch.
pub struct Scratch {
    pub max_tokens: usize,
    pub x: Vec<f32>,      // [n, hidden] residual stream
    pub xb: Vec<f32>,     // [n, hidden] normed input of a block
    pub xb2: Vec<f32>,    // [n, hidden] block output
    pub q: Vec<f32>,      // [n, n_heads*head_dim]
    pub k: Vec<f32>,      // [n, kv_dim]
    pub v: Vec<f32>,      // [n, kv_dim]
    pub att: Vec<f32>,    // [n, n_heads*head_dim]
    pub gate: Vec<f32>,   // [n, ffn]
    pub up: Vec<f32>,     // [n, ffn]
    pub rope: Vec<f32>,   // [2 (global, local), n, rope_dim] cos/sin tables
    pub logits: Vec<f32>, // [n_out, vocab]
    pub out_x: Vec<f32>,  // [n_out, hidden] the wanted rows' final hidden states
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
            out_x: Vec::new(),
        }
    }

    fn act(&mut self, a: Act) -> &mut Vec<f32> {
        match a {
            Act::X => &mut self.x,
            Act::Xb => &mut self.xb,
            Act::Xb2 => &mut self.xb2,
        }
    }

    /// Two distinct activation buffers: `a` to read, `b` to write.
    fn pair(&mut self, a: Act, b: Act) -> (&[f32], &mut [f32]) {
        let Scratch { x, xb, xb2, .. } = self;
        match (a, b) {
            (Act::X, Act::Xb) => (x, xb),
            (Act::X, Act::Xb2) => (x, xb2),
            (Act::Xb, Act::X) => (xb, x),
            (Act::Xb, Act::Xb2) => (xb, xb2),
            (Act::Xb2, Act::X) => (xb2, x),
            (Act::Xb2, Act::Xb) => (xb2, xb),
            _ => panic!("pair of one buffer {a:?}"),
        }
    }
}

impl Backend for Cpu {
    type Mat = Tensor;
    type Vec = Vec<f32>;
    type Step = Scratch;
    type Kv = HostKv;

    fn mat(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn vector(&self, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }

    fn begin(
        &self,
        s: &mut Scratch,
        c: &ModelConfig,
        rows: &StepRows,
        (inv_global, inv_local): (&[f32], &[f32]),
    ) -> Result<()> {
        let rd = c.rope_dim;
        let (g, l) = s.rope.split_at_mut(s.max_tokens * rd);
        for (t, &pos) in rows.positions.iter().enumerate() {
            ops::rope_table(pos, inv_global, &mut g[t * rd..(t + 1) * rd]);
            ops::rope_table(pos, inv_local, &mut l[t * rd..(t + 1) * rd]);
        }
        Ok(())
    }

    fn embed(&self, s: &mut Scratch, rows: &StepRows, table: &Tensor, scale: Option<f32>) {
        let h = table.cols();
        let n = rows.tokens.len();
        for (t, &id) in rows.tokens.iter().enumerate() {
            crate::tensor::quants::dequantize_row(
                table.dtype,
                table.row(id as usize),
                &mut s.x[t * h..(t + 1) * h],
            );
        }
        if let Some(k) = scale {
            s.x[..n * h].iter_mut().for_each(|v| *v *= k);
        }
    }

    fn rmsnorm(&self, s: &mut Scratch, n: usize, src: Act, gain: &Vec<f32>, eps: f32, dst: Act) {
        let h = gain.len();
        if src == dst {
            ops::rmsnorm_inplace(&mut s.act(dst)[..n * h], gain, eps);
        } else {
            let (a, b) = s.pair(src, dst);
            ops::rmsnorm(&a[..n * h], gain, eps, &mut b[..n * h]);
        }
    }

    fn add_rmsnorm(
        &self,
        s: &mut Scratch,
        n: usize,
        src: Act,
        gain: &Vec<f32>,
        eps: f32,
        dst: Act,
    ) {
        let h = gain.len();
        let (a, x) = s.pair(src, Act::X);
        ops::add_inplace(&mut x[..n * h], &a[..n * h]);
        self.rmsnorm(s, n, Act::X, gain, eps, dst);
    }

    fn attention(
        &self,
        s: &mut Scratch,
        kv: &mut HostKv,
        rows: &StepRows,
        a: &Attention<Cpu>,
        c: &ModelConfig,
    ) {
        let n = rows.tokens.len();
        let (qdim, kvdim, hd) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.head_dim,
        );
        let xb = &s.xb[..n * c.hidden];
        let (q, k, v) = (
            &mut s.q[..n * qdim],
            &mut s.k[..n * kvdim],
            &mut s.v[..n * kvdim],
        );
        // q = xb·Wqᵀ (+bq): [n, qdim]; k, v: [n, kvdim] — one parallel loop for the three.
        matmul_group(
            &[&a.wq, &a.wk, &a.wv],
            xb,
            n,
            &mut [&mut *q, &mut *k, &mut *v],
        );
        for (buf, b) in [(&mut *q, &a.bq), (&mut *k, &a.bk), (&mut *v, &a.bv)] {
            if let Some(b) = b {
                for row in buf.chunks_exact_mut(b.len()) {
                    ops::add_inplace(row, b);
                }
            }
        }
        // Per-head RMS norm of q and k (each head_dim-wide row), before rope.
        if let Some(g) = &a.q_norm {
            ops::rmsnorm_inplace(q, g, c.rms_eps);
        }
        if let Some(g) = &a.k_norm {
            ops::rmsnorm_inplace(k, g, c.rms_eps);
        }
        let rd = c.rope_dim;
        for t in 0..n {
            let off = (if a.sliding { s.max_tokens * rd } else { 0 }) + t * rd;
            let cs = &s.rope[off..off + rd];
            ops::rope_apply(&mut q[t * qdim..(t + 1) * qdim], hd, cs, c.rope_style);
            ops::rope_apply(&mut k[t * kvdim..(t + 1) * kvdim], hd, cs, c.rope_style);
        }
        // Keys and values go to each row's slot: [kv_dim] per position.
        for t in 0..n {
            let sp = &rows.seqs[rows.token_seq[t] as usize];
            let at = kv.slot(sp.table, rows.positions[t]);
            let l = &mut kv.layers[a.layer];
            l.k[at..at + kvdim].copy_from_slice(&k[t * kvdim..(t + 1) * kvdim]);
            l.v[at..at + kvdim].copy_from_slice(&v[t * kvdim..(t + 1) * kvdim]);
        }
        let p = ops::AttnParams {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            scale: c.attn_scale,
            window: if a.sliding { c.sliding_window } else { None },
            softcap: c.attn_logit_softcap,
        };
        let att = &mut s.att[..n * qdim];
        let l = &kv.layers[a.layer];
        let view = ops::KvView {
            k: &l.k,
            v: &l.v,
            block_size: kv.block_size,
        };
        ops::attention(q, &view, rows.seqs, &rows.token_seq[..n], &p, att);
        // out = att·Woᵀ: [n, hidden]
        matmul(&a.wo, att, n, &mut s.xb2[..n * c.hidden]);
    }

    fn mlp(&self, s: &mut Scratch, n: usize, m: &Mlp<Cpu>, c: &ModelConfig) {
        let xb = &s.xb[..n * c.hidden];
        let (gate, up) = (&mut s.gate[..n * c.ffn], &mut s.up[..n * c.ffn]);
        // gate, up: [n, ffn] each, one parallel loop for the two.
        matmul_group(&[&m.gate, &m.up], xb, n, &mut [&mut *gate, &mut *up]);
        match m.act {
            Activation::Silu => ops::silu_mul(gate, up),
            Activation::GeluTanh => ops::gelu_tanh_mul(gate, up),
        }
        matmul(&m.down, gate, n, &mut s.xb2[..n * c.hidden]); // [n, hidden]
    }

    fn project(&self, s: &mut Scratch, rows: &StepRows, w: &Tensor, softcap: Option<f32>) {
        // Logits only for the rows asked for: gather their hidden states, then one output matmul.
        let (h, vocab) = (w.cols(), w.rows());
        let n_out = rows.out_rows.len();
        s.out_x.resize(n_out * h, 0.0);
        for (i, &r) in rows.out_rows.iter().enumerate() {
            s.out_x[i * h..(i + 1) * h].copy_from_slice(&s.xb[r * h..(r + 1) * h]);
        }
        s.logits.resize(n_out * vocab, 0.0);
        if n_out > 0 {
            matmul(w, &s.out_x, n_out, &mut s.logits);
            if let Some(cap) = softcap {
                s.logits
                    .iter_mut()
                    .for_each(|v| *v = cap * (*v / cap).tanh());
            }
        }
    }

    fn logits<'s>(&self, s: &'s mut Scratch, _rows: &StepRows) -> Result<&'s [f32]> {
        Ok(&s.logits)
    }
}
