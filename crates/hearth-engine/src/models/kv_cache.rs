//! Paged KV storage: keys and values of every layer, in fixed-size blocks of `block_size` positions.
//!
//! A sequence's positions map to slots through its block table: position `p` lives in block
//! `table[p / block_size]` at offset `p % block_size`. Layout per layer:
//! `k[(block * block_size + offset) * kv_dim + head * head_dim + d]`, likewise `v`.
//!
//! Who owns which block is not decided here: the scheduler's block manager hands out block ids (shared prefix
//! blocks included); a single-sequence [`crate::models::State`] simply uses blocks 0, 1, 2, ... and grows
//! the storage as it goes (in whole blocks, never per token).

/// Keys and values of one layer.
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The KV blocks of one model.
pub struct PagedKv {
    pub layers: Vec<LayerKv>,
    pub kv_dim: usize,
    pub block_size: usize,
    n_blocks: usize,
}

impl PagedKv {
    /// Storage for `n_blocks` blocks (more can be added with [`PagedKv::grow`]).
    pub fn new(n_layers: usize, kv_dim: usize, block_size: usize, n_blocks: usize) -> PagedKv {
        let mut kv = PagedKv {
            layers: (0..n_layers)
                .map(|_| LayerKv {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            kv_dim,
            block_size: block_size.max(1),
            n_blocks: 0,
        };
        kv.grow(n_blocks);
        kv
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Makes room for at least `n_blocks` blocks.
    pub fn grow(&mut self, n_blocks: usize) {
        if n_blocks <= self.n_blocks {
            return;
        }
        let floats = n_blocks * self.block_size * self.kv_dim;
        for l in &mut self.layers {
            l.k.resize(floats, 0.0);
            l.v.resize(floats, 0.0);
        }
        self.n_blocks = n_blocks;
    }

    /// Bytes one block takes over all layers.
    pub fn block_bytes(n_layers: usize, kv_dim: usize, block_size: usize) -> usize {
        2 * n_layers * block_size * kv_dim * 4
    }

    /// Copies block `src` into block `dst` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        let n = self.block_size * self.kv_dim;
        let (s, d) = (src as usize * n, dst as usize * n);
        for l in &mut self.layers {
            l.k.copy_within(s..s + n, d);
            l.v.copy_within(s..s + n, d);
        }
    }

    /// Float offset of position `pos` of a sequence with block table `table`.
    #[inline]
    pub fn slot(&self, table: &[u32], pos: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
            * self.kv_dim
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * 4)
            .sum()
    }
}
