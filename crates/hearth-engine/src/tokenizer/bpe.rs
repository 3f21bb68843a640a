//! Byte-pair encoding for GGUF vocabularies (`tokenizer.ggml.model = "gpt2"` and `"gemma4"`).
//!
//! A GGUF file carries the token list, the merge list and the name of the pre-tokenizer (`tokenizer.ggml.pre`),
//! but not the split regexes themselves: those are a property of the original Hugging Face tokenizer and are
//! looked up here by name. Each name maps to the regexes the original `tokenizer.json` applies (in order, each
//! splitting every piece further and keeping both matches and the text between them, as HF's `Split` with
//! `Isolated` behaviour does), which is also what llama.cpp's vocabulary code encodes for the same names.
//!
//! Merging follows the classic rank-ordered algorithm: within one pre-tokenized word, repeatedly merge the
//! adjacent pair with the lowest merge rank (leftmost on ties) until no pair has a rank. Working on token ids
//! rather than strings keeps it allocation-light.

use std::collections::{BinaryHeap, HashMap};

use super::vocab::IdHasher;

/// The GPT-2 regex as Hugging Face's `ByteLevel` pre-tokenizer applies it.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3 (and DBRX, Smaug, GLM-4): case-insensitive contractions, digits in groups of at most three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2 (and StableLM 2): like Llama 3 but every digit alone.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5: combining marks stay with their letters.
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken: words split at case changes.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o (o200k) and Llama 4: Tekken-like case splits with contractions and three-digit groups.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// BLOOM, Poro, GPT-3 Finnish: anything up to whitespace or sentence punctuation.
const BLOOM: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
/// The letter class of DeepSeek LLM's tokenizer (cased letters of Latin, Greek, Cyrillic, Armenian, Georgian,
/// Cherokee and a few more scripts), kept exactly as that tokenizer lists it.
const DEEPSEEK_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";
const CJK_HANGUL: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

/// How a named pre-tokenizer splits text and what it implies for the rest of the vocabulary.
pub(crate) struct PreTokenizer {
    /// Regexes applied in order; each splits every piece further (matches and gaps both kept).
    pub regexes: Vec<&'static str>,
    /// A word that is itself a token is emitted whole without merging (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// Whether encoding adds BOS when the file does not say (`tokenizer.ggml.add_bos_token` absent).
    pub default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, or `None` when hearth does not know it. An absent
    /// name means `"default"`, as in old conversions.
    pub fn by_name(name: &str) -> Option<PreTokenizer> {
        let (regexes, ignore_merges, default_add_bos): (Vec<&'static str>, bool, bool) = match name
        {
            "default" | "" => (
                vec![
                    r"[\p{P}\$\+<=>\^~\|]+",
                    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                    r"\p{N}+",
                    "[0-9][0-9][0-9]",
                ],
                false,
                false,
            ),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => (vec![LLAMA3], true, true),
            "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => (vec![LLAMA3], false, false),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" | "grok-2" => {
                (vec![QWEN2], false, false)
            }
            "qwen35" => (vec![QWEN35], false, false),
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de" | "jina-v2-es"
            | "jina-v2-de" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "gigachat"
            | "exaone4" | "trillion" | "mellum" | "a.x-4.0" | "granite-docling" | "modern-bert" => {
                (vec![GPT2], false, false)
            }
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => (vec![r"\p{N}", GPT2], false, false),
            "falcon" => (
                vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
                false,
                false,
            ),
            "deepseek-llm" => (
                vec![
                    r"[\r\n]",
                    DEEPSEEK_LETTERS,
                    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
                    r"\s+$",
                    CJK_HANGUL,
                    r"\p{N}+",
                ],
                false,
                false,
            ),
            "deepseek-coder" => (
                vec![r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_HANGUL, r"\p{N}"],
                false,
                false,
            ),
            "deepseek-v3" => (
                vec![
                    r"\p{N}{1,3}",
                    r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
                    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
                ],
                false,
                false,
            ),
            "poro-chat" | "bloom" | "gpt3-finnish" => (vec![BLOOM], false, false),
            "viking" => (vec![BLOOM, r"\p{N}"], false, false),
            "tekken" => (vec![TEKKEN], true, true),
            "gpt-4o" | "llama4" | "minimax-m2" => (vec![GPT4O], false, false),
            "chameleon" => (
                vec![
                    r"<sentinel:[0-9]+>",
                    r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                    r"([\t\n]|    |  )",
                    r"\p{N}",
                    r"[\p{P}!-/:-@\[-`{-~]",
                    GPT2,
                ],
                false,
                true,
            ),
            "seed-coder" => (
                vec![
                    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
                ],
                false,
                false,
            ),
            "bailingmoe" | "bailingmoe2" | "llada-moe" => (
                vec![
                    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
                ],
                false,
                false,
            ),
            // Gemma 4: SentencePiece-style BPE over the whole text; only newlines are split off.
            "gemma4" => (vec![r"[^\n]+|[\n]+"], false, true),
            _ => return None,
        };
        Some(PreTokenizer {
            regexes,
            ignore_merges,
            default_add_bos,
        })
    }
}

/// Compiled split regexes.
pub(crate) struct Splitter {
    regexes: Vec<fancy_regex::Regex>,
}

impl Splitter {
    pub fn new(patterns: &[&str]) -> std::result::Result<Splitter, String> {
        let mut regexes = Vec::with_capacity(patterns.len());
        for p in patterns {
            let re = fancy_regex::RegexBuilder::new(p)
                .backtrack_limit(10_000_000)
                .build()
                .map_err(|e| format!("pre-tokenizer regex {p:?}: {e}"))?;
            regexes.push(re);
        }
        Ok(Splitter { regexes })
    }

    /// Splits `text` into words: each regex in turn splits every piece into its matches and the text between.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut last = 0;
                for m in re.find_iter(piece) {
                    // A regex that gives up (backtracking limit) leaves the rest of the piece whole.
                    let Ok(m) = m else { break };
                    if m.start() > last {
                        next.push(&piece[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push(&piece[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }
}

/// GPT-2's reversible byte-to-character map: printable Latin-1 bytes stand for themselves, the others are
/// shifted to U+0100 onwards (in byte order), so every byte string becomes a printable string.
struct ByteLevel {
    to_char: [char; 256],
    /// Byte of each shifted character U+0100 + i.
    shifted: Vec<u8>,
}

fn printable(b: u32) -> bool {
    (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
}

static BYTE_LEVEL: std::sync::LazyLock<ByteLevel> = std::sync::LazyLock::new(|| {
    let mut to_char = ['\0'; 256];
    let mut shifted = Vec::new();
    for b in 0..256u32 {
        to_char[b as usize] = if printable(b) {
            char::from_u32(b).unwrap()
        } else {
            shifted.push(b as u8);
            char::from_u32(255 + shifted.len() as u32).unwrap()
        };
    }
    ByteLevel { to_char, shifted }
});

/// The character byte `b` is written as in a byte-level vocabulary.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_LEVEL.to_char[b as usize]
}

/// Inverse of [`byte_to_char`]: the byte a character stands for, if any.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if printable(u) {
        return Some(u as u8);
    }
    u.checked_sub(256)
        .and_then(|i| BYTE_LEVEL.shifted.get(i as usize))
        .copied()
}

/// The merge table: for a pair of adjacent token ids, its rank (lower merges first) and the merged token.
pub(crate) type Merges = HashMap<(u32, u32), (u32, u32), IdHasher>;

#[derive(Clone, Copy)]
struct Symbol {
    /// `None`: a character that is not a token; it can never merge and falls back to bytes.
    id: Option<u32>,
    /// Byte range in the word (for the byte fallback).
    start: usize,
    end: usize,
    prev: usize,
    next: usize,
    alive: bool,
}

const NONE: usize = usize::MAX;

#[derive(PartialEq, Eq)]
struct Candidate {
    rank: u32,
    left: usize,
    left_id: u32,
    right_id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap pops the greatest: lowest rank first, then leftmost.
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Merges the initial symbols of one word (`initial`: token id or `None` with the byte range it covers) and
/// appends the resulting ids to `out`. `fallback` turns the bytes of an unmergeable non-token symbol into ids.
pub(crate) fn merge_word(
    initial: &[(Option<u32>, usize, usize)],
    merges: &Merges,
    out: &mut Vec<u32>,
    mut fallback: impl FnMut(usize, usize, &mut Vec<u32>),
) {
    let n = initial.len();
    if n == 1 {
        let (id, s, e) = initial[0];
        match id {
            Some(id) => out.push(id),
            None => fallback(s, e, out),
        }
        return;
    }
    let mut syms: Vec<Symbol> = initial
        .iter()
        .enumerate()
        .map(|(i, &(id, start, end))| Symbol {
            id,
            start,
            end,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
            alive: true,
        })
        .collect();
    let mut heap = BinaryHeap::with_capacity(n);
    let push = |heap: &mut BinaryHeap<Candidate>, syms: &[Symbol], left: usize| {
        if left == NONE {
            return;
        }
        let right = syms[left].next;
        if right == NONE {
            return;
        }
        if let (Some(l), Some(r)) = (syms[left].id, syms[right].id) {
            if let Some(&(rank, _)) = merges.get(&(l, r)) {
                heap.push(Candidate {
                    rank,
                    left,
                    left_id: l,
                    right_id: r,
                });
            }
        }
    };
    for i in 0..n - 1 {
        push(&mut heap, &syms, i);
    }
    while let Some(c) = heap.pop() {
        let left = c.left;
        if !syms[left].alive || syms[left].id != Some(c.left_id) {
            continue;
        }
        let right = syms[left].next;
        if right == NONE || syms[right].id != Some(c.right_id) {
            continue;
        }
        let merged = merges[&(c.left_id, c.right_id)].1;
        syms[left].id = Some(merged);
        syms[left].end = syms[right].end;
        syms[left].next = syms[right].next;
        syms[right].alive = false;
        if syms[right].next != NONE {
            let nn = syms[right].next;
            syms[nn].prev = left;
        }
        push(&mut heap, &syms, syms[left].prev);
        push(&mut heap, &syms, left);
    }
    let mut i = 0;
    while i != NONE {
        let s = syms[i];
        match s.id {
            Some(id) => out.push(id),
            None => fallback(s.start, s.end, out),
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte('é'), Some(0xe9));
        assert_eq!(char_to_byte('\u{2581}'), None);
    }

    #[test]
    fn every_named_pre_tokenizer_compiles() {
        for name in [
            "default",
            "llama-bpe",
            "dbrx",
            "qwen2",
            "qwen35",
            "gpt-2",
            "starcoder",
            "falcon",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "bloom",
            "viking",
            "tekken",
            "gpt-4o",
            "chameleon",
            "seed-coder",
            "bailingmoe",
            "gemma4",
        ] {
            let pre = PreTokenizer::by_name(name).unwrap();
            Splitter::new(&pre.regexes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn gpt2_split_keeps_space_with_word() {
        let s = Splitter::new(&[GPT2]).unwrap();
        assert_eq!(
            s.split("Hello  world!\n"),
            vec!["Hello", " ", " world", "!", "\n"]
        );
    }
}
