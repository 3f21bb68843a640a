//! A contiguous per-sequence KV cache: for each layer, keys and values of every position so far, in f32.
//!
//! Layout per layer: `k[pos * kv_dim + head * head_dim + d]`, likewise `v`. The buffers grow in steps of
//! `GROW` positions (never per token), up to the model's context length. (The paged cache of the batching
//! scheduler replaces this for the server.)

use crate::backend::cpu::ops::KvView;

const GROW: usize = 256;

/// Keys and values of one layer.
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The cache of one sequence.
pub struct KvCache {
    pub layers: Vec<LayerKv>,
    pub kv_dim: usize,
    /// Positions stored so far.
    pub len: usize,
    /// Positions allocated.
    cap: usize,
    /// Most positions the cache may hold (the context length).
    pub max: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, max: usize) -> KvCache {
        KvCache {
            layers: (0..n_layers)
                .map(|_| LayerKv {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            kv_dim,
            len: 0,
            cap: 0,
            max,
        }
    }

    /// Makes room for positions up to `end` (exclusive), growing in whole steps.
    pub fn reserve(&mut self, end: usize) {
        if end <= self.cap {
            return;
        }
        let cap = end
            .div_ceil(GROW)
            .saturating_mul(GROW)
            .min(self.max.max(end));
        for l in &mut self.layers {
            l.k.resize(cap * self.kv_dim, 0.0);
            l.v.resize(cap * self.kv_dim, 0.0);
        }
        self.cap = cap;
    }

    /// Writes `n` positions' keys and values (`[n, kv_dim]` each) of `layer` starting at position `start`.
    pub fn store(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let d = self.kv_dim;
        let l = &mut self.layers[layer];
        l.k[start * d..start * d + k.len()].copy_from_slice(k);
        l.v[start * d..start * d + v.len()].copy_from_slice(v);
    }

    /// Read access to one layer for attention.
    pub fn view(&self, layer: usize) -> KvView<'_> {
        let l = &self.layers[layer];
        KvView { k: &l.k, v: &l.v }
    }

    /// Forgets positions from `len` on (for re-running a shortened prompt).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * 4)
            .sum()
    }
}
