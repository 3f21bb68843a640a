//! The block pool: reference counts, free list, LRU of cached blocks, per-sequence tables, copy-on-write.
//!
//! Life of a sequence: [`BlockManager::allocate`] matches the longest cached prefix of its tokens (those
//! blocks are shared, not copied) and reserves slots for the first chunk to compute; before each later step
//! [`BlockManager::ensure_slots`] reserves slots for that step's tokens (copy-on-write where needed); after the
//! step wrote its KV, [`BlockManager::commit`] publishes the newly filled blocks and the partial tail to the
//! prefix cache; [`BlockManager::free`] drops its references (cached blocks stay cached until evicted).
//!
//! Block states: referenced (refcount > 0, in at least one table); free (refcount 0, not cached, in the free
//! list); evictable (refcount 0, cached, in the LRU). Allocation takes free blocks first, then evicts the least
//! recently released cached block. A referenced block is never handed out.

use std::collections::BTreeMap;

use super::prefix::{BlockHash, PrefixIndex};
use super::{BlockCopy, BlockId, CacheStats, OutOfBlocks};

/// One sequence's view of the pool: its block table and how many leading positions hold valid KV.
///
/// Created by [`BlockManager::allocate`] and consumed by [`BlockManager::free`]; not `Clone`, so each table's
/// references are dropped exactly once.
#[derive(Debug)]
pub struct SeqBlocks {
    table: Vec<BlockId>,
    /// Positions `0..computed` hold valid KV for this sequence's tokens (reused or committed).
    computed: usize,
    /// Positions reused from the prefix cache at allocation.
    cached_tokens: usize,
    /// Chain hash of each full block in `0..computed / block_size`.
    hashes: Vec<BlockHash>,
}

impl SeqBlocks {
    /// The block table: position `p` lives in `table()[p / block_size]` at offset `p % block_size`.
    pub fn table(&self) -> &[BlockId] {
        &self.table
    }

    /// Leading positions whose KV is valid: reused from the cache or written and [committed].
    ///
    /// [committed]: BlockManager::commit
    pub fn num_computed(&self) -> usize {
        self.computed
    }

    /// Leading prompt positions that were reused from the prefix cache when the sequence was allocated
    /// (`allocate` never reports the whole prompt: at least its last token is computed, for its logits).
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// Positions that have slots reserved (`table().len() * block_size`).
    pub fn capacity(&self, block_size: usize) -> usize {
        self.table.len() * block_size
    }
}

/// How the next write into a sequence's tail block must be done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cow {
    /// Write in place: the tail is private and nobody else may read the slots being written.
    None,
    /// Copy first: another table holds the block.
    Required(usize),
    /// Copy if a block is free, since the cache entry holds tokens past this sequence's view; when none is
    /// free, drop the entry and write in place (only this sequence references the block).
    Optional(usize),
}

/// The pool of KV blocks of one model, with prefix caching. See the module docs for the life cycle.
pub struct BlockManager {
    block_size: usize,
    model_key: u64,
    root: BlockHash,
    refs: Vec<u32>,
    /// LRU key of each evictable block.
    tick_of: Vec<u64>,
    next_tick: u64,
    free: Vec<BlockId>,
    evictable: BTreeMap<u64, BlockId>,
    index: PrefixIndex,
    stats: CacheStats,
}

impl BlockManager {
    /// A pool of `n_blocks` blocks of `block_size` token slots each. `model_key` seeds every chain hash, so
    /// caches of different models (or of different KV layouts of one model) can never match each other.
    pub fn new(n_blocks: usize, block_size: usize, model_key: u64) -> BlockManager {
        assert!(block_size > 0, "block_size must be positive");
        assert!(n_blocks <= BlockId::MAX as usize, "too many blocks");
        BlockManager {
            block_size,
            model_key,
            root: BlockHash::root(model_key),
            refs: vec![0; n_blocks],
            tick_of: vec![0; n_blocks],
            next_tick: 0,
            // Popped from the end: block 0 is handed out first.
            free: (0..n_blocks as BlockId).rev().collect(),
            evictable: BTreeMap::new(),
            index: PrefixIndex::new(n_blocks),
            stats: CacheStats::default(),
        }
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that can be handed out now: free plus evictable (cached but unreferenced).
    pub fn num_free(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Of [`num_free`](Self::num_free), the blocks that still hold reusable cached KV.
    pub fn num_evictable(&self) -> usize {
        self.evictable.len()
    }

    /// Blocks referenced by at least one table (`n_blocks() - num_free()`).
    pub fn num_used(&self) -> usize {
        self.n_blocks() - self.num_free()
    }

    /// Tables referencing block `b`.
    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.refs[b as usize]
    }

    /// Whether block `b` is in the prefix cache (full or partial).
    pub fn is_cached(&self, b: BlockId) -> bool {
        self.index.is_registered(b)
    }

    /// Prefix-cache counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Blocks needed to hold `len` positions.
    pub fn blocks_for(&self, len: usize) -> usize {
        len.div_ceil(self.block_size)
    }

    /// The slot of position `pos` of `seq`: (block, offset in the block). Panics when `pos` has no slot.
    pub fn slot(&self, seq: &SeqBlocks, pos: usize) -> (BlockId, usize) {
        (seq.table[pos / self.block_size], pos % self.block_size)
    }

    /// How many leading tokens of `tokens` [`allocate`](Self::allocate) would reuse now (no side effects).
    pub fn cached_prefix(&self, tokens: &[u32]) -> usize {
        self.find_prefix(tokens).cached
    }

    /// Starts a sequence with prompt (or known tokens) `tokens`: references the longest cached prefix, then
    /// reserves slots so that up to `max_compute` more tokens (clamped to the rest of `tokens`) can be computed
    /// in the first step. All or nothing: on error nothing changed (not even the statistics).
    ///
    /// At most `tokens.len() - 1` tokens are reused even when all are cached, so the last one is computed and
    /// yields logits. Slots are reserved here rather than in a separate call so that a sequence that cannot
    /// get its first chunk is not half admitted. Returns the copies the storage must do before the step.
    pub fn allocate(
        &mut self,
        tokens: &[u32],
        max_compute: usize,
    ) -> Result<(SeqBlocks, Vec<BlockCopy>), OutOfBlocks> {
        let m = self.find_prefix(tokens);
        let target = m.cached + (tokens.len() - m.cached).min(max_compute);
        // Reusing an evictable block takes it out of the pool available to new allocations.
        let reclaimed = m
            .blocks
            .iter()
            .filter(|&&b| self.refs[b as usize] == 0)
            .count();
        let available = self.num_free() - reclaimed;
        let extra = self.blocks_for(target).saturating_sub(m.blocks.len());
        let cow = match m.blocks.last() {
            Some(&b) if target > m.cached && !m.cached.is_multiple_of(self.block_size) => {
                // Refcount as it will be once this sequence holds the block.
                let refs = self.refs[b as usize] + 1;
                let view = m.cached % self.block_size;
                usize::from(
                    refs > 1 || (self.index.cached_len(b) != Some(view) && available > extra),
                )
            }
            _ => 0,
        };
        if extra + cow > available {
            return Err(OutOfBlocks {
                needed: extra + cow,
                available,
            });
        }
        for &b in &m.blocks {
            self.acquire(b);
        }
        let partial = usize::from(!m.cached.is_multiple_of(self.block_size));
        self.stats.lookups += 1;
        self.stats.lookup_tokens += tokens.len() as u64;
        self.stats.hit_tokens += m.cached as u64;
        self.stats.full_block_hits += (m.blocks.len() - partial) as u64;
        self.stats.partial_block_hits += partial as u64;
        let mut seq = SeqBlocks {
            table: m.blocks,
            computed: m.cached,
            cached_tokens: m.cached,
            hashes: m.hashes,
        };
        let copies = self
            .ensure_slots(&mut seq, target)
            .expect("capacity was checked");
        Ok((seq, copies))
    }

    /// The largest length `<= want_len` (and `>= seq.num_computed()`) that
    /// [`ensure_slots`](Self::ensure_slots) can satisfy right now.
    pub fn fit_len(&self, seq: &SeqBlocks, want_len: usize) -> usize {
        if want_len <= seq.computed {
            return want_len.max(seq.computed);
        }
        let free = self.num_free();
        let cow = match self.cow_need(seq) {
            Cow::Required(_) => 1,
            Cow::None | Cow::Optional(_) => 0,
        };
        if free < cow {
            return seq.computed;
        }
        let capacity = (seq.table.len() + free - cow) * self.block_size;
        want_len.min(capacity).max(seq.computed)
    }

    /// Makes positions `seq.num_computed()..new_len` writable: allocates blocks up to `new_len` and, when the
    /// tail block that the first new position falls in may be read by someone else, replaces it with a private
    /// copy. Returns the copies the storage must perform before the step. All or nothing: on error nothing
    /// changed.
    pub fn ensure_slots(
        &mut self,
        seq: &mut SeqBlocks,
        new_len: usize,
    ) -> Result<Vec<BlockCopy>, OutOfBlocks> {
        if new_len <= seq.computed {
            return Ok(Vec::new());
        }
        let extra = self.blocks_for(new_len).saturating_sub(seq.table.len());
        let available = self.num_free();
        let (cow, drop_entry) = match self.cow_need(seq) {
            Cow::Optional(i) if extra < available => (Some(i), None),
            // No block to spare for a copy: this sequence is the only reader, so drop the cache entry (its
            // tokens past our view would be overwritten) and write in place.
            Cow::Optional(i) => (None, Some(seq.table[i])),
            Cow::Required(i) => (Some(i), None),
            Cow::None => (None, None),
        };
        let needed = extra + usize::from(cow.is_some());
        if needed > available {
            return Err(OutOfBlocks { needed, available });
        }
        if let Some(b) = drop_entry {
            self.index.unregister(b);
        }
        let mut copies = Vec::new();
        if let Some(i) = cow {
            let src = seq.table[i];
            let dst = self.take_block();
            self.refs[dst as usize] = 1;
            seq.table[i] = dst;
            self.release(src);
            self.stats.copies += 1;
            copies.push(BlockCopy { src, dst });
        }
        for _ in 0..extra {
            let b = self.take_block();
            self.refs[b as usize] = 1;
            seq.table.push(b);
        }
        Ok(copies)
    }

    /// Records that KV for `tokens` (all of the sequence's tokens from position 0 whose KV is now written:
    /// `tokens.len()` is the new [`num_computed`](SeqBlocks::num_computed)) is in place, and publishes it to
    /// the prefix cache: each newly filled block under its chain hash, and the partly filled tail block with
    /// the tokens it holds. Positions below the old `num_computed` must be the same tokens as before.
    /// Panics when `tokens` is longer than the reserved slots.
    pub fn commit(&mut self, seq: &mut SeqBlocks, tokens: &[u32]) {
        let n = tokens.len();
        assert!(
            n <= seq.capacity(self.block_size),
            "commit past reserved slots"
        );
        if n <= seq.computed {
            return;
        }
        let bs = self.block_size;
        while seq.hashes.len() < n / bs {
            let i = seq.hashes.len();
            let parent = self.parent_hash(seq, i);
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let hash = BlockHash::chain(self.model_key, parent, chunk);
            seq.hashes.push(hash);
            let b = seq.table[i];
            if self.index.entry(b).and_then(|e| e.hash) != Some(hash) {
                self.index.register_full(b, parent, hash, chunk);
            }
        }
        let view = n % bs;
        if view > 0 {
            let i = n / bs;
            let b = seq.table[i];
            let tail = &tokens[i * bs..n];
            match self.index.cached_len(b) {
                None if self.refs[b as usize] == 1 => {
                    let parent = self.parent_hash(seq, i);
                    self.index.register_partial(b, parent, tail);
                }
                // The sole writer appended in place: the entry grows with it.
                Some(len) if len < view => self.index.extend_partial(b, tail),
                _ => {}
            }
        }
        seq.computed = n;
    }

    /// Drops the sequence's references. Its cached blocks become evictable, the tail of its chain first (so a
    /// chain is evicted from its end and its head, shared by most prompts, lasts longest).
    pub fn free(&mut self, seq: SeqBlocks) {
        for &b in seq.table.iter().rev() {
            self.release(b);
        }
    }

    /// Checks the pool's internal invariants (tests and debugging): every block is exactly one of referenced,
    /// free or evictable; free blocks are not cached, evictable ones are; the cache's maps agree.
    pub fn check_consistency(&self) -> Result<(), String> {
        let n = self.n_blocks();
        let mut seen = vec![0u8; n];
        for &b in &self.free {
            let b = b as usize;
            if self.refs[b] != 0 || self.index.is_registered(b as BlockId) {
                return Err(format!("free block {b} is referenced or cached"));
            }
            seen[b] += 1;
        }
        for (&t, &b) in &self.evictable {
            let b = b as usize;
            if self.refs[b] != 0 || !self.index.is_registered(b as BlockId) || self.tick_of[b] != t
            {
                return Err(format!(
                    "evictable block {b} is referenced, uncached or mis-ticked"
                ));
            }
            seen[b] += 1;
        }
        for (b, (&refs, &listed)) in self.refs.iter().zip(&seen).enumerate() {
            if listed != u8::from(refs == 0) {
                return Err(format!(
                    "block {b}: refcount {refs} but listed {listed} times as free or evictable"
                ));
            }
        }
        self.index.check(self.block_size)
    }

    fn parent_hash(&self, seq: &SeqBlocks, i: usize) -> BlockHash {
        if i == 0 {
            self.root
        } else {
            seq.hashes[i - 1]
        }
    }

    fn cow_need(&self, seq: &SeqBlocks) -> Cow {
        let view = seq.computed % self.block_size;
        if view == 0 {
            return Cow::None;
        }
        let i = seq.computed / self.block_size;
        let b = seq.table[i];
        if self.refs[b as usize] > 1 {
            Cow::Required(i)
        } else if self.index.cached_len(b).is_some_and(|len| len != view) {
            Cow::Optional(i)
        } else {
            Cow::None
        }
    }

    fn find_prefix(&self, tokens: &[u32]) -> PrefixMatch {
        let bs = self.block_size;
        let limit = tokens.len().saturating_sub(1);
        let mut m = PrefixMatch {
            blocks: Vec::new(),
            hashes: Vec::new(),
            cached: 0,
        };
        let mut parent = self.root;
        while m.cached + bs <= limit {
            let chunk = &tokens[m.cached..m.cached + bs];
            let hash = BlockHash::chain(self.model_key, parent, chunk);
            let Some(b) = self.index.lookup_full(parent, hash, chunk) else {
                break;
            };
            m.blocks.push(b);
            m.hashes.push(hash);
            m.cached += bs;
            parent = hash;
        }
        let rest = &tokens[m.cached..limit.min(m.cached + bs)];
        if !rest.is_empty() {
            if let Some((b, k)) = self.index.best_partial(parent, rest) {
                m.blocks.push(b);
                m.cached += k;
            }
        }
        m
    }

    fn acquire(&mut self, b: BlockId) {
        if self.refs[b as usize] == 0 {
            self.evictable.remove(&self.tick_of[b as usize]);
        }
        self.refs[b as usize] += 1;
    }

    fn release(&mut self, b: BlockId) {
        let r = &mut self.refs[b as usize];
        assert!(*r > 0, "block {b} released more often than referenced");
        *r -= 1;
        if *r == 0 {
            if self.index.is_registered(b) {
                let t = self.next_tick;
                self.next_tick += 1;
                self.tick_of[b as usize] = t;
                self.evictable.insert(t, b);
            } else {
                self.free.push(b);
            }
        }
    }

    /// A block with refcount 0, uncached: a free one, else the least recently released cached one.
    fn take_block(&mut self) -> BlockId {
        if let Some(b) = self.free.pop() {
            return b;
        }
        let (_, b) = self.evictable.pop_first().expect("caller checked num_free");
        self.index.unregister(b);
        self.stats.evictions += 1;
        b
    }
}

/// The result of a prefix lookup.
struct PrefixMatch {
    blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
    cached: usize,
}
