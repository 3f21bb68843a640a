//! Paged KV storage: keys and values of every layer, in fixed-size blocks of `block_size` positions.
//!
//! A sequence's positions map to slots through its block table: position `p` lives in block
//! `table[p / block_size]` at offset `p % block_size`. Layout per layer:
//! `k[(block * block_size + offset) * kv_dim + head * head_dim + d]`, likewise `v`.
//!
//! Who owns which block is not decided here: the scheduler's block manager hands out block ids (shared prefix
//! blocks included); a single-sequence [`crate::models::State`] simply uses blocks 0, 1, 2, ... and grows
//! the storage as it goes (in whole blocks, never per token).
//!
//! Where the blocks live is the backend's business: host memory ([`HostKv`], f32) for the CPU, device memory
//! for a GPU. [`PagedKv`] is the one type the rest of the engine holds, whatever the device.

use std::any::Any;

use crate::error::Result;

/// Storage behind a [`PagedKv`], implemented by each backend.
pub trait KvStorage: Any + Send {
    /// Makes room for at least `n_blocks` blocks (never shrinks); fails when the device is out of memory.
    fn grow(&mut self, n_blocks: usize) -> Result<()>;
    /// Copies block `src` into block `dst` in every layer (copy-on-write of a shared block).
    fn copy_block(&mut self, src: u32, dst: u32);
    /// Bytes held.
    fn bytes(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The KV blocks of one model, on whichever device runs it.
pub struct PagedKv {
    pub kv_dim: usize,
    pub block_size: usize,
    n_blocks: usize,
    store: Box<dyn KvStorage>,
}

impl PagedKv {
    /// Wraps a backend's storage, which already holds `n_blocks` blocks.
    pub fn with_storage(
        kv_dim: usize,
        block_size: usize,
        n_blocks: usize,
        store: Box<dyn KvStorage>,
    ) -> PagedKv {
        PagedKv {
            kv_dim,
            block_size: block_size.max(1),
            n_blocks,
            store,
        }
    }

    /// Host storage for `n_blocks` blocks (more can be added with [`PagedKv::grow`]).
    pub fn new(n_layers: usize, kv_dim: usize, block_size: usize, n_blocks: usize) -> PagedKv {
        let block_size = block_size.max(1);
        let mut host = HostKv {
            layers: (0..n_layers)
                .map(|_| LayerKv {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            kv_dim,
            block_size,
        };
        host.grow(n_blocks).expect("host memory");
        PagedKv::with_storage(kv_dim, block_size, n_blocks, Box::new(host))
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Makes room for at least `n_blocks` blocks.
    pub fn grow(&mut self, n_blocks: usize) -> Result<()> {
        if n_blocks > self.n_blocks {
            self.store.grow(n_blocks)?;
            self.n_blocks = n_blocks;
        }
        Ok(())
    }

    /// Bytes one block takes over all layers in host (f32) storage.
    pub fn block_bytes(n_layers: usize, kv_dim: usize, block_size: usize) -> usize {
        2 * n_layers * block_size * kv_dim * 4
    }

    /// Copies block `src` into block `dst` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        self.store.copy_block(src, dst);
    }

    /// Float offset of position `pos` of a sequence with block table `table`.
    #[inline]
    pub fn slot(&self, table: &[u32], pos: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
            * self.kv_dim
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.store.bytes()
    }

    /// The backend's storage, when it is of type `T` (a model's KV handed to another device's model is
    /// `None`).
    pub fn storage_mut<T: KvStorage>(&mut self) -> Option<&mut T> {
        self.store.as_any_mut().downcast_mut::<T>()
    }
}

/// Keys and values of one layer in host memory.
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The CPU's KV storage: f32, one pair of vectors per layer.
pub struct HostKv {
    pub layers: Vec<LayerKv>,
    pub kv_dim: usize,
    pub block_size: usize,
}

impl HostKv {
    /// Float offset of position `pos` of a sequence with block table `table`.
    #[inline]
    pub fn slot(&self, table: &[u32], pos: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
            * self.kv_dim
    }
}

impl KvStorage for HostKv {
    fn grow(&mut self, n_blocks: usize) -> Result<()> {
        let floats = n_blocks * self.block_size * self.kv_dim;
        for l in &mut self.layers {
            if l.k.len() < floats {
                l.k.resize(floats, 0.0);
                l.v.resize(floats, 0.0);
            }
        }
        Ok(())
    }

    fn copy_block(&mut self, src: u32, dst: u32) {
        let n = self.block_size * self.kv_dim;
        let (s, d) = (src as usize * n, dst as usize * n);
        for l in &mut self.layers {
            l.k.copy_within(s..s + n, d);
            l.v.copy_within(s..s + n, d);
        }
    }

    fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * 4)
            .sum()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
