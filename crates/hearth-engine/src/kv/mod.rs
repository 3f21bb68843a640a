//! KV-cache bookkeeping: which block holds which token positions of which sequence, and which blocks can be
//! reused by a later prompt. No tensors live here; the storage (`models::kv_cache::PagedKv`) holds the K/V
//! floats and follows the block ids and copies this module hands out.
//!
//! - [`BlockManager`] owns the pool of `n_blocks` blocks of `block_size` token slots: reference counts, a free
//!   list, the prefix cache and LRU eviction of cached blocks nobody references.
//! - [`SeqBlocks`] is one sequence's block table plus how many of its positions already hold valid KV.
//! - Prefix cache: a full block is keyed by a chained hash of (model key, parent block's hash, its tokens), so
//!   a block is reused only when the whole prefix before it matches too. A partly filled block is kept under
//!   its parent's hash with the tokens it holds, so a conversation that grows turn by turn recomputes only its
//!   new tokens. Unreferenced cached blocks stay cached until allocation needs them (least recently released
//!   first, the tail of a chain before its head).
//! - Copy-on-write: a sequence never writes a slot another sequence or a cache entry may read. When its next
//!   write would land in such a block, the manager gives it a private copy and reports a [`BlockCopy`] that
//!   the storage must perform before the step's forward pass.
//!
//! Positions: position `p` of a sequence lives in block `table[p / block_size]` at offset `p % block_size`.

mod blocks;
mod prefix;

pub use blocks::{BlockManager, SeqBlocks};
pub use prefix::BlockHash;

/// Index of a block in the pool, `0..n_blocks`; the storage addresses its K/V by it.
pub type BlockId = u32;

/// A copy the storage must perform before the step that needs it runs: every slot of block `src` (all layers,
/// K and V) into block `dst`. Produced by copy-on-write; `dst` is freshly allocated and private to the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockCopy {
    /// The shared (or cached) block being copied from; left unchanged.
    pub src: BlockId,
    /// The writer's new private block.
    pub dst: BlockId,
}

/// Not enough free or evictable blocks for the request; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("out of KV blocks: {needed} needed, {available} available")]
pub struct OutOfBlocks {
    /// Blocks the operation needed.
    pub needed: usize,
    /// Blocks that were free or evictable at the time.
    pub available: usize,
}

/// Prefix-cache counters since the manager was created (cumulative; never reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Sequences allocated (each is one prefix lookup).
    pub lookups: u64,
    /// Prompt tokens looked up, summed over allocations.
    pub lookup_tokens: u64,
    /// Of those, tokens whose KV was reused from the cache.
    pub hit_tokens: u64,
    /// Full blocks reused.
    pub full_block_hits: u64,
    /// Partly matched blocks reused (a partial tail, or the leading part of a cached block).
    pub partial_block_hits: u64,
    /// Cached blocks evicted to satisfy an allocation.
    pub evictions: u64,
    /// Copy-on-write copies reported.
    pub copies: u64,
}

impl CacheStats {
    /// Looked-up tokens that had to be computed.
    pub fn miss_tokens(&self) -> u64 {
        self.lookup_tokens - self.hit_tokens
    }
}
