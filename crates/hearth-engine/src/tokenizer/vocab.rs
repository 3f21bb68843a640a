//! A tokenizer built from the vocabulary embedded in a GGUF file.
//!
//! GGUF stores the token strings, per-token types and scores, the BPE merges and a few flags, and names the
//! pre-tokenizer. Encoding here reproduces llama.cpp (the reference for GGUF files, and itself checked against
//! the original Hugging Face tokenizers): special and user-defined tokens are cut out of the text first, each
//! remaining fragment is tokenized on its own (SentencePiece score merges, or pre-tokenizer regexes then
//! byte-level BPE merges). Decoding works in bytes so that streaming can hold back incomplete UTF-8.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::bpe::{self, Merges, PreTokenizer, Splitter};
use super::spm;
use super::text_table::TextTable;
use crate::error::{Error, Result};
use crate::loader::gguf::{GgufFile, MetaValue};

/// A small, fast, non-cryptographic hasher for the vocabulary maps (built once per model, up to a million
/// entries for large merge lists, so SipHash's cost shows in load time). Inputs are model files, not attackers.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builder for maps keyed by token ids or token strings.
pub(crate) type IdHasher = BuildHasherDefault<FastHasher>;

/// Token kinds as GGUF's `tokenizer.ggml.token_type` numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    fn from_i64(v: i64) -> TokenType {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// Looking tokens up by text, as the merge algorithms need it.
pub(crate) trait TokenLookup {
    fn lookup(&self, text: &str) -> Option<u32>;
    fn score(&self, id: u32) -> f32;
}

enum Algorithm {
    /// SentencePiece: merge by token score over whole fragments.
    Spm,
    /// BPE over regex-split words. `byte_level`: words are GPT-2 byte-encoded before merging; otherwise (Gemma 4)
    /// characters are used as they are, with `<0xXX>` byte tokens as fallback.
    Bpe {
        splitter: Splitter,
        merges: Merges,
        byte_level: bool,
        ignore_merges: bool,
    },
}

/// Tokens that end a generation besides EOS, recognized by their text (GGUF rarely lists them explicitly; chat
/// models end a turn with them).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// A GGUF-embedded vocabulary with everything needed to encode and decode.
pub(crate) struct GgufVocab {
    algorithm: Algorithm,
    /// Every token's text, by id and by text.
    texts: TextTable,
    types: Vec<TokenType>,
    scores: Vec<f32>,
    /// Control, user-defined and unknown tokens, matched in text before tokenizing (longest at a position wins).
    specials: Option<(AhoCorasick, Vec<u32>)>,
    /// Special tokens that swallow the whitespace after them (Phi-3's, as its HF tokenizer marks them `rstrip`;
    /// GGUF does not record the flag, so it is recognized by model name as llama.cpp does).
    rstrip: Vec<u32>,
    /// For byte-level BPE: the token of each raw byte. For SentencePiece: the `<0xXX>` tokens.
    byte_tokens: [Option<u32>; 256],
    add_space_prefix: bool,
    escape_whitespace: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// EOS first, then other end-of-generation tokens.
    pub eog: Vec<u32>,
}

impl TokenLookup for GgufVocab {
    fn lookup(&self, text: &str) -> Option<u32> {
        self.texts.lookup(text)
    }
    fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
}

fn meta_bool(g: &GgufFile, key: &str) -> Option<bool> {
    g.get(key).and_then(|v| v.as_bool())
}

fn meta_id(g: &GgufFile, key: &str, n: usize) -> Option<u32> {
    g.get(key)
        .and_then(|v| v.as_u64())
        .filter(|&id| (id as usize) < n)
        .map(|id| id as u32)
}

impl GgufVocab {
    /// Reads the `tokenizer.ggml.*` keys of `g`.
    pub fn from_gguf(g: &GgufFile) -> Result<GgufVocab> {
        let path = g.path.as_path();
        let model = g.get_str("tokenizer.ggml.model").ok_or_else(|| {
            Error::format(path, "no tokenizer.ggml.model: the file has no vocabulary")
        })?;
        let list = g
            .get("tokenizer.ggml.tokens")
            .filter(|v| v.array_len().is_some())
            .ok_or_else(|| Error::format(path, "tokenizer.ggml.tokens missing or not an array"))?;
        let n = list.array_len().unwrap_or(0);
        let mut texts = TextTable::with_capacity(n);
        for i in 0..n {
            let s = list.str_at(i).ok_or_else(|| {
                Error::format(path, format!("tokenizer.ggml.tokens[{i}] is not a string"))
            })?;
            if s.is_empty() {
                texts.push(&format!("[EMPTY_{i}]"));
            } else {
                texts.push(s);
            }
        }
        // Per-token arrays: as long as the vocabulary (longer is tolerated, shorter is an error).
        let per_token = |key: &str| -> Result<Option<&MetaValue>> {
            match g.get(key).filter(|v| v.array_len().is_some()) {
                Some(a) if a.array_len().unwrap_or(0) >= n => Ok(Some(a)),
                Some(a) => Err(Error::format(
                    path,
                    format!(
                        "{key} has {} entries for {n} tokens",
                        a.array_len().unwrap_or(0)
                    ),
                )),
                None => Ok(None),
            }
        };
        let types: Vec<TokenType> = match per_token("tokenizer.ggml.token_type")? {
            Some(a) => (0..n)
                .map(|i| TokenType::from_i64(a.i64_at(i).unwrap_or(1)))
                .collect(),
            None => vec![TokenType::Normal; n],
        };
        let scores: Vec<f32> = match per_token("tokenizer.ggml.scores")? {
            Some(a) => (0..n).map(|i| a.f64_at(i).unwrap_or(0.0) as f32).collect(),
            None => vec![0.0; n],
        };
        let pre_name = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let (algorithm, is_spm, default_add_bos, escape_whitespace) = match model {
            "llama" => (Algorithm::Spm, true, true, true),
            "gpt2" | "gemma4" => {
                let gemma4 = model == "gemma4";
                let pre_name = if gemma4 { "gemma4" } else { pre_name };
                let pre = PreTokenizer::by_name(pre_name).ok_or_else(|| {
                    Error::unsupported(path, format!("pre-tokenizer {pre_name:?} (tokenizer.ggml.pre)"))
                })?;
                let splitter = Splitter::new(&pre.regexes).map_err(|e| Error::format(path, e))?;
                let merges = read_merges(g, &texts)?;
                let algorithm = Algorithm::Bpe {
                    splitter,
                    merges,
                    byte_level: !gemma4,
                    ignore_merges: pre.ignore_merges,
                };
                (algorithm, false, pre.default_add_bos, gemma4)
            }
            other => {
                return Err(Error::unsupported(
                    path,
                    format!("tokenizer model {other:?} (hearth reads \"llama\", \"gpt2\" and \"gemma4\" vocabularies)"),
                ))
            }
        };

        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = match &algorithm {
                Algorithm::Bpe {
                    byte_level: true, ..
                } => {
                    let c = bpe::byte_to_char(b as u8);
                    texts.lookup(c.encode_utf8(&mut [0; 4]))
                }
                _ => texts.lookup(&format!("<0x{b:02X}>")).or_else(|| {
                    std::str::from_utf8(&[b as u8])
                        .ok()
                        .and_then(|s| texts.lookup(s))
                }),
            };
        }

        // Special ids: SentencePiece files default to the Llama layout; BPE files must say.
        let defaults = |d: u32| {
            if is_spm && (d as usize) < n {
                Some(d)
            } else {
                None
            }
        };
        let bos = meta_id(g, "tokenizer.ggml.bos_token_id", n).or(defaults(1));
        let eos = meta_id(g, "tokenizer.ggml.eos_token_id", n).or(defaults(2));
        let unk = meta_id(g, "tokenizer.ggml.unknown_token_id", n).or(defaults(0));
        let add_bos = meta_bool(g, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos)
            && bos.is_some();
        let add_eos =
            meta_bool(g, "tokenizer.ggml.add_eos_token").unwrap_or(false) && eos.is_some();
        let add_space_prefix = meta_bool(g, "tokenizer.ggml.add_space_prefix").unwrap_or(is_spm);

        let mut eog: Vec<u32> = Vec::new();
        eog.extend(eos);
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eog.extend(meta_id(g, key, n));
        }
        for text in END_OF_GENERATION {
            eog.extend(texts.lookup(text));
        }
        // gpt-oss: "<|end|>" ends a message, not the generation, when "<|return|>" and "<|call|>" exist.
        if texts.lookup("<|return|>").is_some() && texts.lookup("<|call|>").is_some() {
            if let Some(end) = texts.lookup("<|end|>") {
                eog.retain(|&t| t != end || Some(t) == eos);
            }
        }
        let mut seen = std::collections::HashSet::new();
        eog.retain(|t| seen.insert(*t));

        let mut special_ids = Vec::new();
        let mut special_texts = Vec::new();
        for (i, t) in types.iter().enumerate() {
            if matches!(
                t,
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown
            ) {
                special_ids.push(i as u32);
                special_texts.push(texts.get(i as u32).unwrap_or_default());
            }
        }
        let model_name = g.get_str("general.name").unwrap_or("").to_lowercase();
        let rstrip = if model_name.contains("phi-3") || model_name.contains("phi3") {
            let mut r: Vec<u32> = special_ids.clone();
            r.extend(texts.lookup("</s>"));
            let keep: Vec<u32> = ["<unk>", "<s>", "<|endoftext|>"]
                .iter()
                .filter_map(|t| texts.lookup(t))
                .collect();
            r.retain(|id| !keep.contains(id));
            r.sort_unstable();
            r.dedup();
            r
        } else {
            Vec::new()
        };
        let specials = if special_ids.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&special_texts)
                .map_err(|e| Error::format(path, format!("special tokens: {e}")))?;
            Some((ac, special_ids))
        };

        Ok(GgufVocab {
            algorithm,
            texts,
            types,
            scores,
            specials,
            rstrip,
            byte_tokens,
            add_space_prefix,
            escape_whitespace,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            eog,
        })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id)
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.texts.lookup(text)
    }

    /// Control, user-defined and unknown token strings.
    pub fn special_token_texts(&self) -> Vec<String> {
        match &self.specials {
            Some((_, ids)) => ids
                .iter()
                .filter_map(|&i| self.texts.get(i).map(str::to_string))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Encodes `text`; special and user-defined tokens written in it become their ids. With `add_special`, BOS
    /// (and EOS) are added as the model's flags say, but a BOS already at the start of the text is not doubled.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        // Text fragments alternate with special tokens, so each one either starts the text or follows a special
        // token; SentencePiece vocabularies with `add_space_prefix` give every one of them the leading space.
        let fragment = |frag: &str, out: &mut Vec<u32>| match &self.algorithm {
            Algorithm::Spm => {
                let mut s = String::with_capacity(frag.len() + 4);
                if self.add_space_prefix {
                    s.push('\u{2581}');
                }
                for c in frag.chars() {
                    s.push(if c == ' ' { '\u{2581}' } else { c });
                }
                spm::tokenize(&s, self, out, |b| self.byte_fallback(b));
            }
            Algorithm::Bpe {
                splitter,
                merges,
                byte_level,
                ignore_merges,
            } => {
                let escaped;
                let frag = if self.escape_whitespace {
                    escaped = frag.replace(' ', "\u{2581}");
                    escaped.as_str()
                } else {
                    frag
                };
                for word in splitter.split(frag) {
                    self.bpe_word(word, merges, *byte_level, *ignore_merges, out);
                }
            }
        };
        match &self.specials {
            Some((ac, ids)) => {
                let mut last = 0;
                for m in ac.find_iter(text) {
                    if m.start() < last {
                        continue; // inside whitespace an rstrip token swallowed
                    }
                    if m.start() > last {
                        fragment(&text[last..m.start()], &mut out);
                    }
                    let id = ids[m.pattern().as_usize()];
                    out.push(id);
                    last = m.end();
                    if self.rstrip.binary_search(&id).is_ok() {
                        let rest = &text.as_bytes()[last..];
                        last += rest
                            .iter()
                            .take_while(|b| b.is_ascii_whitespace() || **b == 0x0b)
                            .count();
                    }
                }
                if last < text.len() {
                    fragment(&text[last..], &mut out);
                }
            }
            None if !text.is_empty() => fragment(text, &mut out),
            None => {}
        }
        if add_special
            && self.add_bos
            && out.len() >= 2
            && out[0] == out[1]
            && Some(out[0]) == self.bos
        {
            out.remove(0);
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn byte_fallback(&self, b: u8) -> u32 {
        self.byte_tokens[b as usize].or(self.unk).unwrap_or(0)
    }

    fn bpe_word(
        &self,
        word: &str,
        merges: &Merges,
        byte_level: bool,
        ignore_merges: bool,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if byte_level {
            if ignore_merges {
                let encoded: String = word.bytes().map(bpe::byte_to_char).collect();
                if let Some(id) = self.lookup(&encoded) {
                    out.push(id);
                    return;
                }
            }
            let initial: Vec<(Option<u32>, usize, usize)> = word
                .bytes()
                .enumerate()
                .map(|(i, b)| (self.byte_tokens[b as usize], i, i + 1))
                .collect();
            bpe::merge_word(&initial, merges, out, |s, e, out| {
                out.extend(
                    word.as_bytes()[s..e]
                        .iter()
                        .filter_map(|&b| self.byte_tokens[b as usize]),
                );
            });
        } else {
            if ignore_merges || word.bytes().all(|b| b == b'\n') {
                if let Some(id) = self.lookup(word) {
                    out.push(id);
                    return;
                }
            }
            let initial: Vec<(Option<u32>, usize, usize)> = word
                .char_indices()
                .map(|(i, c)| (self.lookup(&word[i..i + c.len_utf8()]), i, i + c.len_utf8()))
                .collect();
            bpe::merge_word(&initial, merges, out, |s, e, out| {
                out.extend(word.as_bytes()[s..e].iter().map(|&b| self.byte_fallback(b)));
            });
        }
    }

    /// Appends the bytes token `id` stands for. Control and unknown tokens give nothing unless `specials`.
    pub fn piece_bytes(&self, id: u32, specials: bool, out: &mut Vec<u8>) {
        let Some(text) = self.texts.get(id) else {
            return;
        };
        match self.types[id as usize] {
            TokenType::Control | TokenType::Unknown => {
                if specials {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            TokenType::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenType::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            // Unused slots have no text of their own (llama.cpp prints nothing for them either).
            TokenType::Unused => {}
            TokenType::Normal => match &self.algorithm {
                Algorithm::Bpe {
                    byte_level: true, ..
                } => {
                    for c in text.chars() {
                        match bpe::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                }
                _ => {
                    for c in text.chars() {
                        if c == '\u{2581}' {
                            out.push(b' ');
                        } else {
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                    }
                }
            },
        }
    }

    /// Decodes `ids` to bytes. Like Hugging Face's SentencePiece decoders, the space that encoding put in front
    /// of the text (`add_space_prefix`) is removed once at the start.
    pub fn decode_bytes(&self, ids: &[u32], specials: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.piece_bytes(id, specials, &mut out);
        }
        if self.add_space_prefix && out.first() == Some(&b' ') {
            out.remove(0);
        }
        out
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Reads `tokenizer.ggml.merges` ("left right" strings, in rank order) into an id-pair table. A merge whose
/// parts or result are not tokens can never apply and is dropped.
fn read_merges(g: &GgufFile, texts: &TextTable) -> Result<Merges> {
    let path = g.path.as_path();
    let list = g
        .get("tokenizer.ggml.merges")
        .filter(|v| v.array_len().is_some())
        .ok_or_else(|| Error::format(path, "BPE vocabulary without tokenizer.ggml.merges"))?;
    let n = list.array_len().unwrap_or(0);
    let mut merges: Merges = HashMap::with_capacity_and_hasher(n, IdHasher::default());
    let mut joined = String::new();
    for rank in 0..n {
        let Some(s) = list.str_at(rank) else {
            return Err(Error::format(
                path,
                format!("tokenizer.ggml.merges[{rank}] is not a string"),
            ));
        };
        // The separator is the first space after the first character (a part may itself start with a space).
        let first = s.chars().next().map_or(0, char::len_utf8);
        let Some(pos) = s[first..].find(' ').map(|p| p + first) else {
            continue;
        };
        let (left, right) = (&s[..pos], &s[pos + 1..]);
        let (Some(l), Some(r)) = (texts.lookup(left), texts.lookup(right)) else {
            continue;
        };
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        if let Some(m) = texts.lookup(joined.as_str()) {
            merges.entry((l, r)).or_insert((rank as u32, m));
        }
    }
    Ok(merges)
}
