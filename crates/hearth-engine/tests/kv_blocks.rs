//! Block manager: reference counts, prefix reuse (full and partial blocks), copy-on-write, LRU eviction,
//! all-or-nothing reservations. A shadow "storage" stands in for the KV floats: each slot holds a fingerprint
//! of the token prefix it was computed for, so any slot that a sequence reads but that holds another
//! prefix's KV (a sharing or copy-on-write bug) is caught.

use hearth_engine::kv::{BlockCopy, BlockHash, BlockId, BlockManager, SeqBlocks};

/// Fingerprint of the KV at position `tokens.len() - 1` (it depends on every token up to it).
fn fingerprint(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x100_0000_01b3)
    })
}

struct Shadow {
    bs: usize,
    slots: Vec<Option<u64>>,
}

impl Shadow {
    fn new(m: &BlockManager) -> Shadow {
        Shadow {
            bs: m.block_size(),
            slots: vec![None; m.n_blocks() * m.block_size()],
        }
    }

    fn copy(&mut self, copies: &[BlockCopy]) {
        for c in copies {
            let (s, d) = (c.src as usize * self.bs, c.dst as usize * self.bs);
            for o in 0..self.bs {
                self.slots[d + o] = self.slots[s + o];
            }
        }
    }

    fn at(&self, m: &BlockManager, s: &SeqBlocks, pos: usize) -> usize {
        let (b, o) = m.slot(s, pos);
        b as usize * self.bs + o
    }

    /// Every position the sequence considers computed holds its own prefix's KV.
    fn check(&self, m: &BlockManager, s: &SeqBlocks, tokens: &[u32]) {
        for p in 0..s.num_computed() {
            assert_eq!(
                self.slots[self.at(m, s, p)],
                Some(fingerprint(&tokens[..=p])),
                "position {p} holds foreign KV"
            );
        }
    }

    fn write(&mut self, m: &BlockManager, s: &SeqBlocks, tokens: &[u32]) {
        for p in s.num_computed()..tokens.len() {
            let i = self.at(m, s, p);
            self.slots[i] = Some(fingerprint(&tokens[..=p]));
        }
    }
}

/// A forward step over `tokens[seq.num_computed()..]`: reserve, copy, check what is read, write, commit.
fn step(
    m: &mut BlockManager,
    sh: &mut Shadow,
    s: &mut SeqBlocks,
    tokens: &[u32],
) -> Vec<BlockCopy> {
    let copies = m.ensure_slots(s, tokens.len()).expect("slots");
    sh.copy(&copies);
    sh.check(m, s, tokens);
    sh.write(m, s, tokens);
    m.commit(s, tokens);
    sh.check(m, s, tokens);
    copies
}

/// Allocates a sequence and computes all of `tokens`.
fn start(m: &mut BlockManager, sh: &mut Shadow, tokens: &[u32]) -> (SeqBlocks, Vec<BlockCopy>) {
    let (mut s, mut copies) = m.allocate(tokens, usize::MAX).expect("allocate");
    sh.copy(&copies);
    copies.extend(step(m, sh, &mut s, tokens));
    (s, copies)
}

fn toks(r: std::ops::Range<u32>) -> Vec<u32> {
    r.collect()
}

fn check_refcounts(m: &BlockManager, tables: &[&SeqBlocks]) {
    m.check_consistency().unwrap();
    for b in 0..m.n_blocks() as BlockId {
        let holders = tables.iter().filter(|s| s.table().contains(&b)).count();
        assert_eq!(m.ref_count(b) as usize, holders, "block {b}");
    }
    assert_eq!(m.num_free() + m.num_used(), m.n_blocks());
}

#[test]
fn chain_hash_is_deterministic_and_keyed() {
    let root = BlockHash::root(7);
    assert_eq!(
        BlockHash::chain(7, root, &[1, 2]),
        BlockHash::chain(7, root, &[1, 2])
    );
    assert_ne!(
        BlockHash::chain(7, root, &[1, 2]),
        BlockHash::chain(8, root, &[1, 2])
    );
    assert_ne!(
        BlockHash::chain(7, root, &[1, 2]),
        BlockHash::chain(7, root, &[2, 1])
    );
    let h = BlockHash::chain(7, root, &[1, 2]);
    assert_ne!(
        BlockHash::chain(7, h, &[3]),
        BlockHash::chain(7, root, &[3])
    );
}

#[test]
fn identical_prompt_hits_all_full_blocks_and_the_partial_tail() {
    let mut m = BlockManager::new(16, 4, 1);
    let mut sh = Shadow::new(&m);
    let p = toks(100..110); // 2 full blocks + 2 tokens
    let (a, copies) = start(&mut m, &mut sh, &p);
    assert_eq!(a.cached_tokens(), 0);
    assert!(copies.is_empty());
    let a_table = a.table().to_vec();
    m.free(a);
    assert_eq!(m.num_used(), 0);
    assert_eq!(m.num_evictable(), 3);

    let (b, copies) = m.allocate(&p, usize::MAX).unwrap();
    // All but the last token: 2 full blocks and 1 of the 2 cached tail tokens.
    assert_eq!(b.cached_tokens(), 9);
    assert_eq!(&b.table()[..2], &a_table[..2]);
    // The cached tail holds token 9 too, which this sequence is about to rewrite: copy-on-write.
    assert_eq!(
        copies,
        vec![BlockCopy {
            src: a_table[2],
            dst: b.table()[2]
        }]
    );
    assert_ne!(b.table()[2], a_table[2]);
    assert!(m.is_cached(a_table[2]), "the original tail stays cached");
    let s = m.stats();
    assert_eq!((s.lookups, s.lookup_tokens, s.hit_tokens), (2, 20, 9));
    assert_eq!(
        (s.full_block_hits, s.partial_block_hits, s.copies),
        (2, 1, 1)
    );
    assert_eq!(s.miss_tokens(), 11);
    check_refcounts(&m, &[&b]);
}

#[test]
fn fully_cached_block_aligned_prompt_recomputes_only_the_last_token() {
    let mut m = BlockManager::new(16, 4, 1);
    let mut sh = Shadow::new(&m);
    let p = toks(0..12);
    let (a, _) = start(&mut m, &mut sh, &p);
    let a_table = a.table().to_vec();
    m.free(a);
    let (mut b, mut copies) = m.allocate(&p, usize::MAX).unwrap();
    assert_eq!(b.cached_tokens(), 11);
    assert_eq!(
        copies,
        vec![BlockCopy {
            src: a_table[2],
            dst: b.table()[2]
        }]
    );
    sh.copy(&copies);
    copies.extend(step(&mut m, &mut sh, &mut b, &p));
    assert_eq!(copies.len(), 1);
    assert_eq!(b.num_computed(), 12);
}

#[test]
fn sharing_is_by_prefix_only() {
    let mut m = BlockManager::new(32, 4, 1);
    let mut sh = Shadow::new(&m);
    let sys = toks(0..8);
    let p1 = [&sys[..], &[50, 51, 52][..]].concat();
    let p2 = [&sys[..], &[60, 61, 62, 63, 64][..]].concat();
    let p3 = toks(200..211);
    let (a, _) = start(&mut m, &mut sh, &p1);
    let (b, _) = start(&mut m, &mut sh, &p2);
    let (c, _) = start(&mut m, &mut sh, &p3);
    assert_eq!(b.cached_tokens(), 8);
    assert_eq!(&a.table()[..2], &b.table()[..2]);
    assert_eq!(m.ref_count(a.table()[0]), 2);
    assert_ne!(a.table()[2], b.table()[2]);
    for x in c.table() {
        assert!(!a.table().contains(x) && !b.table().contains(x));
    }
    check_refcounts(&m, &[&a, &b, &c]);
    sh.check(&m, &a, &p1);
    sh.check(&m, &b, &p2);
    m.free(a);
    m.free(b);
    m.free(c);
    check_refcounts(&m, &[]);
    assert_eq!(m.num_free(), 32);
}

#[test]
fn copy_on_write_of_a_shared_partial_block() {
    let mut m = BlockManager::new(16, 4, 1);
    let mut sh = Shadow::new(&m);
    let mut ta = toks(0..6); // block 1 holds 2 tokens, cached as a partial block
    let (mut a, _) = start(&mut m, &mut sh, &ta);
    let shared = a.table()[1];
    assert!(m.is_cached(shared));

    // B's prompt extends A's: it shares A's partial tail (refcount 2) and must copy before writing into it.
    let tb = [&ta[..], &[90, 91, 92][..]].concat();
    let (mut b, copies) = m.allocate(&tb, 0).unwrap();
    assert_eq!(b.cached_tokens(), 6);
    assert_eq!(b.table(), a.table());
    assert_eq!(m.ref_count(shared), 2);
    assert!(copies.is_empty(), "nothing written yet");
    let copies = step(&mut m, &mut sh, &mut b, &tb);
    assert_eq!(
        copies,
        vec![BlockCopy {
            src: shared,
            dst: b.table()[1]
        }]
    );
    assert_eq!(m.ref_count(shared), 1);

    // A is the sole holder again and the cache entry holds exactly its tokens: it appends in place.
    ta.push(7);
    assert!(step(&mut m, &mut sh, &mut a, &ta).is_empty());
    assert_eq!(a.table()[1], shared);
    check_refcounts(&m, &[&a, &b]);

    // C matched A's tail when it held 3 tokens; A appended since (entry now 3, C's view 3, refcount 2):
    // A's next write must copy, C's too.
    let tc = [&ta[..], &[70][..]].concat();
    let (mut c, _) = m.allocate(&tc, 0).unwrap();
    assert_eq!(c.cached_tokens(), 7);
    ta.push(8);
    let ca = step(&mut m, &mut sh, &mut a, &ta);
    assert_eq!(
        ca,
        vec![BlockCopy {
            src: shared,
            dst: a.table()[1]
        }]
    );
    // C is now the only holder and the entry still holds exactly C's 3 tokens: in place.
    assert!(step(&mut m, &mut sh, &mut c, &tc).is_empty());
    check_refcounts(&m, &[&a, &b, &c]);
    sh.check(&m, &a, &ta);
    sh.check(&m, &b, &tb);
    sh.check(&m, &c, &tc);
}

#[test]
fn growing_conversation_computes_only_new_tokens() {
    let mut m = BlockManager::new(16, 4, 1);
    let mut sh = Shadow::new(&m);
    // Turn 1: a 9-token prompt, then 3 decode steps; the last sampled token is never computed.
    let mut t = toks(0..9);
    let (mut s, _) = start(&mut m, &mut sh, &t);
    for g in [40, 41, 42] {
        t.push(g);
        if g != 42 {
            step(&mut m, &mut sh, &mut s, &t);
        }
    }
    assert_eq!(s.num_computed(), 11);
    m.free(s);

    // Turn 2 repeats the whole conversation and adds a message: everything computed before is reused,
    // including the 3 tokens of the partly filled block, without a copy (the entry is exactly our prefix).
    let turn2 = [&t[..], &[80, 81, 82, 83, 84][..]].concat();
    assert_eq!(m.cached_prefix(&turn2), 11);
    let (mut s, copies) = m.allocate(&turn2, usize::MAX).unwrap();
    assert_eq!(s.cached_tokens(), 11);
    assert!(copies.is_empty());
    let before = s.table()[2];
    assert!(step(&mut m, &mut sh, &mut s, &turn2).is_empty());
    assert_eq!(s.table()[2], before, "appended in place");
    assert_eq!(m.stats().hit_tokens, 11);
    assert_eq!(
        turn2.len() - s.cached_tokens(),
        6,
        "42 and the 5 new tokens"
    );
    check_refcounts(&m, &[&s]);
}

#[test]
fn unreferenced_cached_blocks_are_evicted_lru_tail_first() {
    let mut m = BlockManager::new(6, 2, 1);
    let mut sh = Shadow::new(&m);
    let a = toks(0..4);
    let b = toks(10..14);
    let probe = |t: &[u32]| [t, &[99][..]].concat();
    let (sa, _) = start(&mut m, &mut sh, &a);
    m.free(sa);
    let (sb, _) = start(&mut m, &mut sh, &b);
    m.free(sb);
    assert_eq!((m.num_free(), m.num_evictable()), (6, 4));
    assert_eq!(m.cached_prefix(&probe(&a)), 4);

    // 3 new blocks: 2 never-used free blocks, then the oldest cached one, A's tail.
    let (c, _) = m.allocate(&toks(20..26), usize::MAX).unwrap();
    assert_eq!(m.cached_prefix(&probe(&a)), 2);
    assert_eq!(m.cached_prefix(&probe(&b)), 4);
    // Next: A's head (A was released before B).
    let (d, _) = m.allocate(&toks(30..32), usize::MAX).unwrap();
    assert_eq!(m.cached_prefix(&probe(&a)), 0);
    assert_eq!(m.cached_prefix(&probe(&b)), 4);
    // Reusing B's head refreshes it: B's tail goes next, B's head survives.
    let (e, _) = m.allocate(&[10, 11, 77], 0).unwrap();
    m.free(e);
    let (f, _) = m.allocate(&toks(40..42), usize::MAX).unwrap();
    assert_eq!(m.cached_prefix(&probe(&b)), 2);
    assert_eq!(m.stats().evictions, 3);
    assert_eq!(m.num_free(), 1);
    check_refcounts(&m, &[&c, &d, &f]);
}

#[test]
fn reservations_are_all_or_nothing() {
    let mut m = BlockManager::new(4, 4, 1);
    let mut sh = Shadow::new(&m);
    let ta = toks(0..10);
    let (mut a, _) = start(&mut m, &mut sh, &ta); // 3 blocks, 1 free
    let stats = m.stats();
    let err = m.allocate(&toks(50..58), usize::MAX).unwrap_err();
    assert_eq!((err.needed, err.available), (2, 1));
    assert_eq!(m.stats(), stats, "a failed allocation counts nothing");
    assert_eq!(m.num_free(), 1);

    let table = a.table().to_vec();
    assert!(m.ensure_slots(&mut a, 20).is_err());
    assert_eq!((a.table(), a.num_computed()), (&table[..], 10));
    assert_eq!(m.fit_len(&a, 20), 16);
    assert!(m.ensure_slots(&mut a, 16).unwrap().is_empty());
    assert_eq!(m.num_free(), 0);
    check_refcounts(&m, &[&a]);

    // A second sequence shares A's partial tail: writing needs a copy, and there is no block for it.
    let tb = [&ta[..], &[5][..]].concat();
    let (mut b, _) = m.allocate(&tb, 0).unwrap();
    assert_eq!(b.cached_tokens(), 10);
    assert_eq!(m.fit_len(&b, 11), 10);
    let err = m.ensure_slots(&mut b, 11).unwrap_err();
    assert_eq!((err.needed, err.available), (1, 0));
    assert_eq!(b.table(), &table[..]);
    check_refcounts(&m, &[&a, &b]);
    m.free(a);
    m.free(b);
    check_refcounts(&m, &[]);
}

#[test]
fn copy_degrades_to_in_place_when_the_pool_is_exactly_full() {
    // The prompt fills the whole pool; re-running it reuses a full block for 3 of its 4 tokens. With no
    // block to copy into, the block's cache entry is dropped and the last token is written in place.
    let mut m = BlockManager::new(3, 4, 1);
    let mut sh = Shadow::new(&m);
    let p = toks(0..12);
    let (a, _) = start(&mut m, &mut sh, &p);
    m.free(a);
    let (mut b, copies) = m.allocate(&p, usize::MAX).unwrap();
    assert!(copies.is_empty());
    assert_eq!(b.cached_tokens(), 11);
    assert!(!m.is_cached(b.table()[2]));
    step(&mut m, &mut sh, &mut b, &p);
    assert!(m.is_cached(b.table()[2]), "re-registered once full");
    check_refcounts(&m, &[&b]);
}

/// splitmix64: a small fixed-seed generator for the randomized tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn randomized_sharing_keeps_every_view_intact() {
    for (seed, bs, n_blocks) in [(1u64, 1usize, 40usize), (2, 2, 30), (3, 4, 24), (4, 16, 12)] {
        let mut rng = Rng(seed);
        let mut m = BlockManager::new(n_blocks, bs, seed);
        let mut sh = Shadow::new(&m);
        let mut live: Vec<(SeqBlocks, Vec<u32>)> = Vec::new();
        let mut done: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4, 5, 6, 7, 8, 9]];
        for _ in 0..3000 {
            match rng.below(10) {
                0..=2 => {
                    // New sequence: a prefix of an earlier one plus a few tokens, over a tiny alphabet.
                    let base = &done[rng.below(done.len())];
                    let mut t = base[..rng.below(base.len() + 1)].to_vec();
                    for _ in 0..1 + rng.below(3 * bs) {
                        t.push(rng.below(3) as u32);
                    }
                    let cached = m.cached_prefix(&t);
                    let chunk = rng.below(t.len() + 1);
                    match m.allocate(&t, chunk) {
                        Ok((s, copies)) => {
                            assert_eq!(s.cached_tokens(), cached);
                            assert!(cached < t.len());
                            sh.copy(&copies);
                            sh.check(&m, &s, &t);
                            live.push((s, t));
                        }
                        Err(e) => assert!(e.needed > e.available),
                    }
                }
                3..=7 if !live.is_empty() => {
                    // Advance a sequence: compute pending tokens (a chunk), or "sample" one more.
                    let i = rng.below(live.len());
                    let (s, t) = &mut live[i];
                    if s.num_computed() == t.len() {
                        t.push(rng.below(3) as u32);
                    }
                    let want = s.num_computed() + 1 + rng.below(t.len() - s.num_computed());
                    let len = m.fit_len(s, want);
                    if len > s.num_computed() {
                        step(&mut m, &mut sh, s, &t[..len]);
                    }
                }
                _ if !live.is_empty() => {
                    let (s, t) = live.swap_remove(rng.below(live.len()));
                    done.push(t[..s.num_computed().max(1)].to_vec());
                    m.free(s);
                }
                _ => {}
            }
            for (s, t) in &live {
                sh.check(&m, s, t);
            }
            let tables: Vec<&SeqBlocks> = live.iter().map(|(s, _)| s).collect();
            check_refcounts(&m, &tables);
        }
        let st = m.stats();
        assert!(st.hit_tokens > 0 && st.evictions > 0, "{st:?}");
        assert!(bs == 1 || st.copies > 0, "{st:?}");
        for (s, _) in live {
            m.free(s);
        }
        check_refcounts(&m, &[]);
    }
}
