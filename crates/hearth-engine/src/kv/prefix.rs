//! The prefix cache's index: which blocks hold which tokens after which prefix.
//!
//! Every registered block has an [`Entry`]: its parent hash (the chain hash of all blocks before it), the
//! tokens it holds, and, once full, its own chain hash. Full blocks are found by their chain hash; every
//! registered block, full or partial, is also listed under its parent hash and first token, so that a prompt
//! whose remaining tokens end inside a block (or diverge inside one) can reuse the leading slots of the best
//! match without scanning unrelated blocks.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::BlockId;

/// Chained hash of a prefix that ends at a block boundary: `hash(model key, parent hash, block tokens)`.
///
/// 128 bits, made of two SipHash-1-3 runs (std's `DefaultHasher::new()`, whose keys are fixed) over the same
/// input with different domain bytes. The value is deterministic within a build of the program, which is all
/// the cache needs (it lives in memory). With 128 bits, two different prefixes colliding is not a practical
/// concern, and a hit also checks the block's own tokens and parent hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHash(pub u128);

impl BlockHash {
    /// The parent hash of a sequence's first block.
    pub fn root(model_key: u64) -> BlockHash {
        BlockHash::chain(model_key, BlockHash(0), &[])
    }

    /// The hash of a block holding `tokens` whose preceding blocks hash to `parent`.
    pub fn chain(model_key: u64, parent: BlockHash, tokens: &[u32]) -> BlockHash {
        let half = |domain: u8| {
            let mut h = DefaultHasher::new();
            h.write_u8(domain);
            h.write_u64(model_key);
            h.write_u128(parent.0);
            tokens.hash(&mut h);
            h.finish()
        };
        BlockHash(((half(0x5a) as u128) << 64) | half(0xa5) as u128)
    }
}

/// What a registered block holds.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Chain hash of the blocks before this one.
    pub parent: BlockHash,
    /// This block's chain hash, once it is full.
    pub hash: Option<BlockHash>,
    /// The tokens whose KV the block holds, from offset 0 (`block_size` of them when full).
    pub tokens: Vec<u32>,
}

/// Registered blocks, by chain hash (full blocks) and by parent hash (all).
pub(crate) struct PrefixIndex {
    entries: Vec<Option<Entry>>,
    full: HashMap<BlockHash, BlockId>,
    /// Registered blocks by (parent hash, first token), in registration order.
    children: HashMap<(BlockHash, u32), Vec<BlockId>>,
}

impl PrefixIndex {
    pub fn new(n_blocks: usize) -> PrefixIndex {
        PrefixIndex {
            entries: vec![None; n_blocks],
            full: HashMap::new(),
            children: HashMap::new(),
        }
    }

    pub fn entry(&self, b: BlockId) -> Option<&Entry> {
        self.entries[b as usize].as_ref()
    }

    pub fn is_registered(&self, b: BlockId) -> bool {
        self.entries[b as usize].is_some()
    }

    /// Number of tokens a block's entry holds, if registered.
    pub fn cached_len(&self, b: BlockId) -> Option<usize> {
        self.entry(b).map(|e| e.tokens.len())
    }

    /// The full block with chain hash `hash` under `parent`, if it holds exactly `tokens`.
    pub fn lookup_full(
        &self,
        parent: BlockHash,
        hash: BlockHash,
        tokens: &[u32],
    ) -> Option<BlockId> {
        let b = *self.full.get(&hash)?;
        let e = self.entry(b)?;
        (e.parent == parent && e.tokens == tokens).then_some(b)
    }

    /// The registered block under `parent` whose tokens share the longest non-empty common prefix with
    /// `tokens`, and that length. Ties go to the block registered first.
    pub fn best_partial(&self, parent: BlockHash, tokens: &[u32]) -> Option<(BlockId, usize)> {
        let mut best: Option<(BlockId, usize)> = None;
        for &b in self.children.get(&(parent, *tokens.first()?))? {
            let e = self.entry(b).expect("child is registered");
            let k = e
                .tokens
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count();
            if k > 0 && best.is_none_or(|(_, bk)| k > bk) {
                best = Some((b, k));
            }
        }
        best
    }

    /// Registers an unregistered block as a partial block holding `tokens` after `parent`.
    pub fn register_partial(&mut self, b: BlockId, parent: BlockHash, tokens: &[u32]) {
        debug_assert!(!self.is_registered(b));
        self.entries[b as usize] = Some(Entry {
            parent,
            hash: None,
            tokens: tokens.to_vec(),
        });
        self.children
            .entry((parent, tokens[0]))
            .or_default()
            .push(b);
    }

    /// Replaces a partial block's tokens with a longer list that starts with them (its writer appended).
    pub fn extend_partial(&mut self, b: BlockId, tokens: &[u32]) {
        let e = self.entries[b as usize].as_mut().expect("registered");
        debug_assert!(e.hash.is_none() && tokens.starts_with(&e.tokens));
        e.tokens.clear();
        e.tokens.extend_from_slice(tokens);
    }

    /// Registers block `b`, now full with `tokens`, under chain hash `hash`. When another block already holds
    /// that hash, `b` is left (or made) unregistered instead and `false` is returned: tables stay as they are,
    /// the duplicate is simply not shared.
    pub fn register_full(
        &mut self,
        b: BlockId,
        parent: BlockHash,
        hash: BlockHash,
        tokens: &[u32],
    ) -> bool {
        if self.full.contains_key(&hash) {
            self.unregister(b);
            return false;
        }
        if self.is_registered(b) {
            let e = self.entries[b as usize].as_mut().expect("registered");
            debug_assert!(e.parent == parent && e.hash.is_none() && tokens.starts_with(&e.tokens));
            e.hash = Some(hash);
            e.tokens.clear();
            e.tokens.extend_from_slice(tokens);
        } else {
            self.entries[b as usize] = Some(Entry {
                parent,
                hash: Some(hash),
                tokens: tokens.to_vec(),
            });
            self.children
                .entry((parent, tokens[0]))
                .or_default()
                .push(b);
        }
        self.full.insert(hash, b);
        true
    }

    /// Forgets block `b` (eviction, or a duplicate full block); a no-op when it is not registered.
    pub fn unregister(&mut self, b: BlockId) {
        let Some(e) = self.entries[b as usize].take() else {
            return;
        };
        if let Some(h) = e.hash {
            if self.full.get(&h) == Some(&b) {
                self.full.remove(&h);
            }
        }
        let key = (e.parent, e.tokens[0]);
        if let Some(list) = self.children.get_mut(&key) {
            // Keep registration order (ties in `best_partial` go to the oldest).
            list.retain(|&c| c != b);
            if list.is_empty() {
                self.children.remove(&key);
            }
        }
    }

    /// Checks that the three views agree; used by [`super::BlockManager::check_consistency`].
    pub fn check(&self, block_size: usize) -> Result<(), String> {
        let mut listed = 0;
        for (&(parent, first), list) in &self.children {
            for &b in list {
                let e = self.entry(b).ok_or(format!("child {b} not registered"))?;
                if e.parent != parent || e.tokens.first() != Some(&first) {
                    return Err(format!("block {b} listed under a key it does not have"));
                }
                listed += 1;
            }
        }
        let registered = self.entries.iter().filter(|e| e.is_some()).count();
        if listed != registered {
            return Err(format!(
                "{registered} registered, {listed} listed by parent"
            ));
        }
        for (h, &b) in &self.full {
            let e = self.entry(b).ok_or(format!("full {b} not registered"))?;
            if e.hash != Some(*h) || e.tokens.len() != block_size {
                return Err(format!("full block {b} has a wrong entry"));
            }
        }
        for (b, e) in self.entries.iter().enumerate() {
            if let Some(e) = e {
                if e.tokens.is_empty() || e.tokens.len() > block_size {
                    return Err(format!("block {b} holds {} tokens", e.tokens.len()));
                }
                if e.hash.is_some() != (e.tokens.len() == block_size) {
                    return Err(format!("block {b}: full iff hashed is violated"));
                }
                if let Some(h) = e.hash {
                    if self.full.get(&h) != Some(&(b as BlockId)) {
                        return Err(format!("full block {b} missing from the hash map"));
                    }
                }
            }
        }
        Ok(())
    }
}
