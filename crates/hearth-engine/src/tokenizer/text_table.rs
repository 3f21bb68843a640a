//! Every token's text in one buffer, found by id or by text.
//!
//! Why not `Vec<String>` plus a `HashMap<String, u32>`: for Gemma 3's 262,144-entry vocabulary those two
//! held each text twice in separate small allocations, about 30 MB; here the texts share one buffer (about
//! 2 MB) and the index maps a 64-bit hash of the text to the id (about 5 MB). Two different texts with the
//! same hash are told apart by comparing with the stored text; the later one goes to a small side map.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The index's keys are already uniform 64-bit hashes: used as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IndexHasher = BuildHasherDefault<PassThrough>;

#[derive(Default)]
pub(crate) struct TextTable {
    /// The texts one after another.
    text: String,
    /// Where text `i` ends in `text`.
    ends: Vec<u32>,
    /// Hash of a text -> the first id with that hash.
    index: HashMap<u64, u32, IndexHasher>,
    /// Texts whose hash an earlier, different text already took (almost always empty).
    collided: HashMap<String, u32>,
}

/// SipHash with fixed keys: uniform bits (the index takes them as they are) and the same value every run.
fn text_hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(s.as_bytes());
    h.finish()
}

impl TextTable {
    pub(crate) fn with_capacity(n: usize) -> TextTable {
        TextTable {
            ends: Vec::with_capacity(n),
            index: HashMap::with_capacity_and_hasher(n, IndexHasher::default()),
            ..TextTable::default()
        }
    }

    /// Appends the next id's text. A text seen before keeps its first id for [`TextTable::lookup`].
    pub(crate) fn push(&mut self, t: &str) {
        let id = self.ends.len() as u32;
        self.text.push_str(t);
        self.ends
            .push(u32::try_from(self.text.len()).expect("vocabulary text under 4 GiB"));
        let h = text_hash(t);
        match self.index.get(&h) {
            None => {
                self.index.insert(h, id);
            }
            Some(&first) if self.get(first) == Some(t) => {}
            Some(_) => {
                self.collided.entry(t.to_string()).or_insert(id);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The text of `id`.
    pub(crate) fn get(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    /// The first id whose text is `t`.
    pub(crate) fn lookup(&self, t: &str) -> Option<u32> {
        match self.index.get(&text_hash(t)) {
            Some(&id) if self.get(id) == Some(t) => Some(id),
            _ => self.collided.get(t).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_texts_round_trip_and_duplicates_keep_the_first_id() {
        let mut t = TextTable::with_capacity(4);
        for s in ["a", "", "ab", "a", "ü"] {
            t.push(s);
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(2), Some("ab"));
        assert_eq!(t.get(1), Some(""));
        assert_eq!(t.get(5), None);
        assert_eq!(t.lookup("a"), Some(0));
        assert_eq!(t.lookup("ü"), Some(4));
        assert_eq!(t.lookup("b"), None);
    }

    #[test]
    fn a_hash_collision_is_resolved_by_the_text() {
        let mut t = TextTable::with_capacity(2);
        t.push("x");
        // Force "y" under "x"'s hash, as a real 64-bit collision would be.
        let h = text_hash("x");
        t.text.push('y');
        t.ends.push(t.text.len() as u32);
        assert_eq!(t.index.get(&h), Some(&0));
        t.collided.insert("y".into(), 1);
        assert_eq!(t.lookup("x"), Some(0));
        assert_eq!(t.lookup("y"), Some(1));
    }
}
