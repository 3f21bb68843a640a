//! tokenizer.json (and tokenizer_config.json) rebuilt from a GGUF vocabulary, so a converted folder tokenizes
//! as the GGUF does in hearth and llama.cpp.
//!
//! - `gpt2` vocabularies (byte-level BPE): the token list and merge list carry over as they are; the
//!   pre-tokenizer regexes, which GGUF names only by `tokenizer.ggml.pre`, come from the same table hearth's
//!   GGUF tokenizer uses; Llama 3-style vocabularies keep `ignore_merges`. Control tokens become special
//!   added tokens, user-defined ones plain added tokens.
//! - `llama` vocabularies (SentencePiece, e.g. Gemma 3): transformers turns a SentencePiece model into a BPE
//!   with byte fallback whose merges are every split of a piece into two pieces, ranked by the merged piece's
//!   score; the same construction is done here from the GGUF scores. Spaces become `▁` in a normalizer (with a
//!   leading `▁` when `add_space_prefix` is on), and the decoder undoes it.
//!
//! BOS/EOS: a TemplateProcessing post-processor adds BOS (and EOS) as `tokenizer.ggml.add_bos_token` /
//! `add_eos_token` say, and tokenizer_config.json repeats the settings with the chat template.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::tokenizer::bpe::PreTokenizer;
use crate::tokenizer::Tokenizer;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// The GPT-2 regex, which `ByteLevel` with `use_regex` applies itself.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

struct Vocab {
    tokens: Vec<String>,
    types: Vec<i64>,
    scores: Vec<f64>,
}

fn read_vocab(g: &GgufFile) -> Result<Vocab> {
    let path = &g.path;
    let list = g
        .get("tokenizer.ggml.tokens")
        .filter(|v| v.array_len().is_some())
        .ok_or_else(|| {
            Error::format(path, "no tokenizer.ggml.tokens: the file has no vocabulary")
        })?;
    let n = list.array_len().unwrap_or(0);
    let tokens = (0..n)
        .map(|i| {
            list.str_at(i).map(str::to_string).ok_or_else(|| {
                Error::format(path, format!("tokenizer.ggml.tokens[{i}] is not a string"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(a) => (0..n).map(|i| a.i64_at(i).unwrap_or(1)).collect(),
        None => vec![1; n],
    };
    let scores = match g.get("tokenizer.ggml.scores") {
        Some(a) => (0..n).map(|i| a.f64_at(i).unwrap_or(0.0)).collect(),
        None => vec![0.0; n],
    };
    Ok(Vocab {
        tokens,
        types,
        scores,
    })
}

fn added_tokens(v: &Vocab) -> Vec<Value> {
    v.types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED || t == TYPE_UNKNOWN)
        .map(|(id, &t)| {
            json!({
                "id": id,
                "content": v.tokens[id],
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": t != TYPE_USER_DEFINED,
            })
        })
        .collect()
}

/// A TemplateProcessing that puts BOS before (and EOS after) each sequence, as the GGUF flags ask.
fn post_processor(tok: &Tokenizer, add_bos: bool, add_eos: bool) -> Value {
    let bos = tok.bos_id().zip(tok.bos_token().map(str::to_string));
    let eos = tok
        .eos_ids()
        .first()
        .copied()
        .zip(tok.eos_token().map(str::to_string));
    let mut specials = Map::new();
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    for (type_id, s) in [(0, "A"), (1, "B")] {
        let out = if type_id == 0 { &mut single } else { &mut pair };
        let mut one = Vec::new();
        if let (true, Some((id, text))) = (add_bos, &bos) {
            one.push(special(text, type_id));
            specials.insert(
                text.clone(),
                json!({"id": text, "ids": [id], "tokens": [text]}),
            );
        }
        one.push(seq(s, type_id));
        if let (true, Some((id, text))) = (add_eos, &eos) {
            one.push(special(text, type_id));
            specials.insert(
                text.clone(),
                json!({"id": text, "ids": [id], "tokens": [text]}),
            );
        }
        out.extend(one);
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// tokenizer.json for the GGUF `g` (whose hearth tokenizer is `tok`).
pub fn tokenizer_json(g: &GgufFile, tok: &Tokenizer) -> Result<Value> {
    let path = &g.path;
    let v = read_vocab(g)?;
    let model = g.get_str("tokenizer.ggml.model").unwrap_or("");
    let mut vocab = Map::new();
    for (i, t) in v.tokens.iter().enumerate() {
        if !vocab.contains_key(t) {
            vocab.insert(t.clone(), json!(i));
        }
    }
    let add_bos = tok.add_bos();
    let add_eos = g
        .get("tokenizer.ggml.add_eos_token")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let root = match model {
        "gpt2" => {
            let pre_name = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
            let pre = PreTokenizer::by_name(pre_name).ok_or_else(|| {
                Error::unsupported(path, format!("pre-tokenizer {pre_name:?} (tokenizer.ggml.pre)"))
            })?;
            let merges = g.get("tokenizer.ggml.merges");
            let n = merges.and_then(|m| m.array_len()).unwrap_or(0);
            let merges: Vec<Value> = (0..n)
                .map(|i| {
                    let m = merges.and_then(|m| m.str_at(i)).unwrap_or("");
                    let (a, b) = m.split_once(' ').ok_or_else(|| {
                        Error::format(path, format!("merge {i} {m:?} is not two tokens"))
                    })?;
                    Ok(json!([a, b]))
                })
                .collect::<Result<_>>()?;
            let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": pre.regexes == [GPT2_REGEX]});
            let pre_tokenizer = if pre.regexes == [GPT2_REGEX] {
                byte_level
            } else {
                let mut seq: Vec<Value> = pre
                    .regexes
                    .iter()
                    .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
                    .collect();
                seq.push(byte_level);
                json!({"type": "Sequence", "pretokenizers": seq})
            };
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens(&v),
                "normalizer": null,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": post_processor(tok, add_bos, add_eos),
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": pre.ignore_merges, "vocab": vocab, "merges": merges,
                },
            })
        }
        "llama" => {
            let space_prefix = g
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|b| b.as_bool())
                .unwrap_or(true);
            let merges = spm_merges(&v);
            let unk = g
                .get_u64("tokenizer.ggml.unknown_token_id")
                .and_then(|id| v.tokens.get(id as usize))
                .cloned();
            let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
            let normalizer = if space_prefix {
                json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
            } else {
                replace
            };
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added_tokens(&v),
                "normalizer": normalizer,
                "pre_tokenizer": null,
                "post_processor": post_processor(tok, add_bos, add_eos),
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                    "ignore_merges": false, "vocab": vocab, "merges": merges,
                },
            })
        }
        other => {
            return Err(Error::unsupported(
                path,
                format!("tokenizer model {other:?}: hearth rebuilds tokenizer.json for \"gpt2\" and \"llama\" vocabularies"),
            ))
        }
    };
    Ok(root)
}

/// SentencePiece → BPE merges: every split of a normal piece into two pieces of the vocabulary, ordered by the
/// merged piece's score (highest first), then by the longer left and right parts, then by the order the
/// pieces and splits were found in (id order of the merged piece, then of the parts).
fn spm_merges(v: &Vocab) -> Vec<Value> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(v.tokens.len());
    for (i, t) in v.tokens.iter().enumerate() {
        if v.types[i] != TYPE_CONTROL {
            ids.entry(t.as_str()).or_insert(i);
        }
    }
    // (score, left chars, right chars, found order, left, right)
    let mut found: Vec<(f64, usize, usize, usize, &str, &str)> = Vec::new();
    for (i, piece) in v.tokens.iter().enumerate() {
        if v.types[i] == TYPE_CONTROL || ids.get(piece.as_str()) != Some(&i) {
            continue;
        }
        let mut local: Vec<(usize, usize, &str, &str)> = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&a), Some(&b)) = (ids.get(l), ids.get(r)) {
                local.push((a, b, l, r));
            }
        }
        local.sort_by_key(|x| (x.0, x.1));
        for (_, _, l, r) in local {
            let n = found.len();
            found.push((v.scores[i], l.chars().count(), r.chars().count(), n, l, r));
        }
    }
    // Descending on (score, left length, right length); equal keys keep their found order (a stable sort, as
    // Python's reverse sort is).
    found.sort_by(|x, y| {
        y.0.partial_cmp(&x.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(y.1.cmp(&x.1))
            .then(y.2.cmp(&x.2))
            .then(x.3.cmp(&y.3))
    });
    found.into_iter().map(|x| json!([x.4, x.5])).collect()
}

/// tokenizer_config.json: the special tokens, BOS/EOS behaviour and the chat template.
pub fn tokenizer_config(g: &GgufFile, tok: &Tokenizer) -> Value {
    let mut m = Map::new();
    m.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    if let Some(b) = tok.bos_token() {
        m.insert("bos_token".into(), json!(b));
    }
    if let Some(e) = tok.eos_token() {
        m.insert("eos_token".into(), json!(e));
    }
    let text = |key: &str| {
        g.get_u64(key)
            .and_then(|id| tok.token_str(id as u32))
            .map(|s| json!(s))
    };
    if let Some(p) = text("tokenizer.ggml.padding_token_id") {
        m.insert("pad_token".into(), p);
    }
    if let Some(u) = text("tokenizer.ggml.unknown_token_id") {
        m.insert("unk_token".into(), u);
    }
    m.insert("add_bos_token".into(), json!(tok.add_bos()));
    m.insert(
        "add_eos_token".into(),
        json!(g
            .get("tokenizer.ggml.add_eos_token")
            .and_then(|b| b.as_bool())
            .unwrap_or(false)),
    );
    m.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(ctx) = g
        .architecture()
        .and_then(|a| g.get_u64(&format!("{a}.context_length")))
    {
        m.insert("model_max_length".into(), json!(ctx));
    }
    if let Some(t) = tok.chat_template() {
        m.insert("chat_template".into(), json!(t));
    }
    Value::Object(m)
}
