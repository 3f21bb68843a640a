//! SentencePiece BPE as llama.cpp runs it for GGUF vocabularies with `tokenizer.ggml.model = "llama"`.
//!
//! The file carries no merge list, only a score per token. Encoding starts from single characters and keeps
//! merging the adjacent pair whose concatenation is a token with the highest score (leftmost on ties); what
//! never became a token is spelled with byte tokens `<0xXX>`. This is done here rather than through the
//! `tokenizers` crate's BPE with merges derived from scores: the derived merge order is not guaranteed to equal
//! the score order for every pair, and hearth's reference for GGUF files is llama.cpp.

use std::collections::BinaryHeap;

use super::vocab::TokenLookup;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    end: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Highest score first, then the leftmost pair.
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Tokenizes `text` (whitespace already escaped to U+2581) and appends the ids to `out`. `byte_token(b)` is the
/// id spelling byte `b` when a piece is not in the vocabulary.
pub(crate) fn tokenize(
    text: &str,
    vocab: &dyn TokenLookup,
    out: &mut Vec<u32>,
    byte_token: impl Fn(u8) -> u32,
) {
    if text.is_empty() {
        return;
    }
    let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let i = syms.len();
        syms.push(Symbol {
            start,
            end: start + c.len_utf8(),
            prev: if i == 0 { NONE } else { i - 1 },
            next: i + 1,
        });
    }
    if let Some(last) = syms.last_mut() {
        last.next = NONE;
    }

    let mut heap = BinaryHeap::with_capacity(syms.len());
    let try_pair =
        |heap: &mut BinaryHeap<Candidate>, syms: &[Symbol], left: usize, right: usize| {
            if left == NONE || right == NONE {
                return;
            }
            let (s, e) = (syms[left].start, syms[right].end);
            if let Some(id) = vocab.lookup(&text[s..e]) {
                heap.push(Candidate {
                    score: vocab.score(id),
                    left,
                    right,
                    size: e - s,
                });
            }
        };
    for i in 1..syms.len() {
        try_pair(&mut heap, &syms, i - 1, i);
    }

    while let Some(c) = heap.pop() {
        let (l, r) = (syms[c.left], syms[c.right]);
        // Stale: one side was merged away or grew since this pair was queued.
        if l.end == l.start || r.end == r.start || (l.end - l.start) + (r.end - r.start) != c.size {
            continue;
        }
        syms[c.left].end = r.end;
        syms[c.right].end = syms[c.right].start; // emptied
        syms[c.left].next = r.next;
        if r.next != NONE {
            syms[r.next].prev = c.left;
        }
        let prev = syms[c.left].prev;
        try_pair(&mut heap, &syms, prev, c.left);
        let next = syms[c.left].next;
        try_pair(&mut heap, &syms, c.left, next);
    }

    let mut i = 0;
    while i != NONE {
        let s = syms[i];
        let piece = &text[s.start..s.end];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().map(&byte_token)),
        }
        i = s.next;
    }
}
