//! The `tokenizer.*` GGUF metadata of a Hugging Face folder, as llama.cpp's converter writes it.
//!
//! Two families of `tokenizer.json` (model type BPE):
//! - byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen 2, ... style): `tokenizer.ggml.model = "gpt2"` with tokens,
//!   token types, merges and the llama.cpp pre-tokenizer name whose split rules equal the file's
//!   `pre_tokenizer` (see [`pre_tokenizer_name`]).
//! - SentencePiece-style BPE (byte fallback over `▁`-escaped text: Llama 2, Mistral v0.1, Gemma):
//!   `tokenizer.ggml.model = "llama"` with tokens, scores and types, and `add_space_prefix`. llama.cpp takes
//!   the scores from `tokenizer.model`; from a `tokenizer.json` they are derived from the merge ranks (a token's
//!   score is minus the rank of the first merge that makes it), which orders merges exactly as the file does
//!   when, as in every tokenizer.json made from a SentencePiece model, the merge list holds every split of
//!   every token ordered by the merged token's rank.
//!
//! Special ids, `add_bos_token` and the chat template come from hearth's own Hugging Face tokenizer
//! ([`Tokenizer::from_hf_dir`]), so the GGUF tokenizer reproduces exactly what hearth does with the folder.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::loader::gguf::MetaValue;
use crate::loader::gguf_write::GgufHeader;
use crate::tokenizer::Tokenizer;

/// GGUF token types (`tokenizer.ggml.token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// GPT-2's split regex as Hugging Face's `ByteLevel(use_regex=true)` applies it.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// `Split` regexes of known tokenizers and the llama.cpp pre-tokenizer name that applies the same one.
const SPLIT_REGEXES: &[(&str, &str)] = &[
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "llama-bpe",
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2",
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen35",
    ),
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "tekken",
    ),
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "gpt-4o",
    ),
];

/// The steps of a `pre_tokenizer` (a `Sequence` flattened).
fn pre_steps(v: &Value) -> Vec<&Value> {
    match v.get("type").and_then(Value::as_str) {
        Some("Sequence") => v
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().flat_map(pre_steps).collect())
            .unwrap_or_default(),
        Some(_) => vec![v],
        None => Vec::new(),
    }
}

/// The llama.cpp `tokenizer.ggml.pre` name whose split rules equal this byte-level `pre_tokenizer` (hearth's
/// GGUF tokenizer and llama.cpp both map the name back to those rules). None for an unknown combination.
///
/// - `ByteLevel(use_regex)` alone: GPT-2's regex, `"gpt-2"`.
/// - `Digits(individual)` then `ByteLevel(use_regex)`: digits split, then GPT-2's regex, `"smollm"`.
/// - `Split(regex R)` then `ByteLevel(no regex)`: the name of R (Llama 3, Qwen 2, Tekken, GPT-4o ...).
/// - `Split(\p{N})`, `Split(GPT-2's regex)`, then `ByteLevel(no regex)`: `"smollm"` again, as `hearth convert
///   --to hf` writes it.
pub(crate) fn pre_tokenizer_name(pre: &Value) -> Option<&'static str> {
    let steps = pre_steps(pre);
    fn ty(v: &Value) -> &str {
        v.get("type").and_then(Value::as_str).unwrap_or("")
    }
    let flag =
        |v: &Value, k: &str, default: bool| v.get(k).and_then(Value::as_bool).unwrap_or(default);
    let byte_level_ok = |v: &Value, regex: bool| {
        ty(v) == "ByteLevel"
            && flag(v, "use_regex", true) == regex
            && !flag(v, "add_prefix_space", false)
    };
    match steps.as_slice() {
        [b] if byte_level_ok(b, true) => Some("gpt-2"),
        [d, b]
            if ty(d) == "Digits"
                && flag(d, "individual_digits", false)
                && byte_level_ok(b, true) =>
        {
            Some("smollm")
        }
        [s, b] if ty(s) == "Split" && byte_level_ok(b, false) => {
            let pattern = s.get("pattern")?;
            let regex = pattern
                .get("Regex")
                .and_then(Value::as_str)
                .or_else(|| pattern.get("String").and_then(Value::as_str))?;
            if regex == GPT2_REGEX {
                return Some("gpt-2");
            }
            SPLIT_REGEXES
                .iter()
                .find(|(r, _)| *r == regex)
                .map(|(_, name)| *name)
        }
        // Several regex splits, then the bytes (how `hearth convert --to hf` writes llama.cpp's multi-regex
        // pre-tokenizers): digits one by one, then GPT-2's regex, is SmolLM's.
        [d, s, b] if ty(d) == "Split" && ty(s) == "Split" && byte_level_ok(b, false) => {
            let regex = |v: &Value| {
                v.get("pattern")
                    .and_then(|p| p.get("Regex"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let isolated =
                |v: &Value| v.get("behavior").and_then(Value::as_str) == Some("Isolated");
            (isolated(d)
                && isolated(s)
                && regex(d)?.as_str() == r"\p{N}"
                && regex(s)?.as_str() == GPT2_REGEX)
                .then_some("smollm")
        }
        _ => None,
    }
}

/// Which kind of vocabulary a tokenizer.json holds.
enum Family {
    /// Byte-level BPE with this llama.cpp pre-tokenizer name.
    ByteLevel(&'static str),
    /// SentencePiece-style BPE; `add_space_prefix`: a `▁` is put before the text.
    SentencePiece { add_space_prefix: bool },
}

fn is_byte_token(t: &str) -> bool {
    t.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && t[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

/// For a SentencePiece-style tokenizer.json (BPE with byte fallback whose text is `▁`-escaped whole, by a
/// `Replace(" ", "▁")` normalizer or an unsplit `Metaspace` pre-tokenizer): whether a `▁` is prepended.
/// None when the file is not of that kind.
fn spm_style(tj: &Value) -> Option<bool> {
    let model = tj.get("model")?;
    if model.get("byte_fallback").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let steps = |v: Option<&Value>| -> Vec<Value> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Vec::new();
        };
        match v.get("type").and_then(Value::as_str) {
            Some("Sequence") => v
                .get("normalizers")
                .or_else(|| v.get("pretokenizers"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => vec![v.clone()],
        }
    };
    let norm = steps(tj.get("normalizer"));
    let pre = steps(tj.get("pre_tokenizer"));
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    let mut escapes = false;
    let mut prefix = false;
    for n in &norm {
        match ty(n).as_deref() {
            Some("Replace") => {
                let from = n
                    .get("pattern")
                    .and_then(|p| p.get("String"))
                    .and_then(Value::as_str);
                let to = n.get("content").and_then(Value::as_str);
                if from == Some(" ") && to == Some("\u{2581}") {
                    escapes = true;
                } else {
                    return None;
                }
            }
            Some("Prepend") if n.get("prepend").and_then(Value::as_str) == Some("\u{2581}") => {
                prefix = true
            }
            Some("NFKC") | Some("NFC") => {}
            _ => return None,
        }
    }
    for p in &pre {
        match ty(p).as_deref() {
            Some("Metaspace") if p.get("split").and_then(Value::as_bool) != Some(true) => {
                escapes = true;
                let scheme = p.get("prepend_scheme").and_then(Value::as_str);
                let legacy = p.get("add_prefix_space").and_then(Value::as_bool);
                prefix |= matches!(scheme, Some("always") | Some("first")) || legacy == Some(true);
            }
            _ => return None,
        }
    }
    escapes.then_some(prefix)
}

/// Tokens llama.cpp's converter treats as control tokens by their look even when not marked special.
fn looks_special(s: &str) -> bool {
    (s.starts_with("<|") && s.ends_with("|>") && s.len() > 4)
        || matches!(s, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
}

/// Adds the tokenizer keys of the folder `dir` to `h`. `vocab_size` is the model's embedding row count: the
/// token list is padded to it with `[PAD{id}]` (type unused), as llama.cpp does.
pub(crate) fn add_tokenizer(h: &mut GgufHeader, dir: &Path, vocab_size: usize) -> Result<()> {
    let tj_path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj_path).map_err(|e| Error::io(&tj_path, e))?;
    let tj: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&tj_path, format!("not valid JSON: {e}")))?;
    let model = tj
        .get("model")
        .ok_or_else(|| Error::format(&tj_path, "no model section"))?;
    let mtype = model.get("type").and_then(Value::as_str).unwrap_or("");
    if mtype != "BPE" {
        return Err(Error::unsupported(
            &tj_path,
            format!(
                "tokenizer model {mtype:?} (hearth converts byte-level BPE tokenizers to GGUF)"
            ),
        ));
    }
    let pre = tj.get("pre_tokenizer").unwrap_or(&Value::Null);
    let family = match pre_tokenizer_name(pre) {
        Some(n) => Family::ByteLevel(n),
        None => match spm_style(&tj) {
            Some(add_space_prefix) => Family::SentencePiece { add_space_prefix },
            None => {
                return Err(Error::unsupported(
                    &tj_path,
                    format!(
                        "pre-tokenizer {pre} / normalizer {} has no llama.cpp equivalent that hearth knows",
                        tj.get("normalizer").unwrap_or(&Value::Null)
                    ),
                ))
            }
        },
    };

    // Tokens by id: the model vocabulary, then added tokens (which may repeat vocabulary entries).
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::format(&tj_path, "model.vocab is not an object"))?;
    let mut by_id: BTreeMap<usize, String> = BTreeMap::new();
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| Error::format(&tj_path, format!("vocab[{tok:?}] is not an id")))?;
        by_id.insert(id as usize, tok.clone());
    }
    // id -> (special, normalized); Hugging Face's default for `normalized` is "not special".
    let mut added: HashMap<usize, (bool, bool)> = HashMap::new();
    for t in tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            t.get("id").and_then(Value::as_u64),
            t.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        by_id.insert(id as usize, content.to_string());
        let special = t.get("special").and_then(Value::as_bool) == Some(true);
        let normalized = t
            .get("normalized")
            .and_then(Value::as_bool)
            .unwrap_or(!special);
        added.insert(id as usize, (special, normalized));
    }
    let unk = model.get("unk_token").and_then(Value::as_str);
    let n = vocab_size.max(by_id.keys().next_back().map_or(0, |&m| m + 1));
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n {
        match by_id.get(&id) {
            None => {
                tokens.push(MetaValue::String(format!("[PAD{id}]")));
                types.push(MetaValue::I32(UNUSED));
            }
            Some(tok) => {
                let spm = matches!(family, Family::SentencePiece { .. });
                let mut text = tok.clone();
                let ty = match added.get(&id) {
                    Some(&(special, _)) if special || looks_special(tok) => CONTROL,
                    Some(&(_, normalized)) => {
                        // GGUF matches user-defined tokens in the raw text, before `▁` escaping; one that
                        // Hugging Face matches after normalization is written with spaces (as llama.cpp does).
                        if spm && normalized {
                            text = text.replace('\u{2581}', " ");
                        }
                        USER_DEFINED
                    }
                    None if spm && Some(tok.as_str()) == unk => UNKNOWN,
                    None if spm && is_byte_token(tok) => BYTE,
                    None => NORMAL,
                };
                tokens.push(MetaValue::String(text));
                types.push(MetaValue::I32(ty));
            }
        }
    }
    // Merges as (left, right) pairs, in rank order.
    let merges: Vec<(String, String)> = model
        .get("merges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => {
                // "left right": the separator is the first space after the first character.
                let first = s.chars().next()?.len_utf8();
                let pos = s[first..].find(' ')? + first;
                Some((s[..pos].to_string(), s[pos + 1..].to_string()))
            }
            Value::Array(p) if p.len() == 2 => {
                Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string()))
            }
            _ => None,
        })
        .collect();

    let tok = Tokenizer::from_hf_dir(dir)?;
    match family {
        Family::ByteLevel(pre_name) => {
            h.set("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
            h.set("tokenizer.ggml.pre", MetaValue::String(pre_name.into()));
            h.set("tokenizer.ggml.tokens", MetaValue::Array(tokens));
            h.set("tokenizer.ggml.token_type", MetaValue::Array(types));
            let merges = merges
                .into_iter()
                .map(|(l, r)| MetaValue::String(format!("{l} {r}")))
                .collect();
            h.set("tokenizer.ggml.merges", MetaValue::Array(merges));
        }
        Family::SentencePiece { add_space_prefix } => {
            // A token's score: minus the rank of the first merge that makes it (0 for the rest).
            let index: HashMap<&str, usize> = vocab
                .iter()
                .filter_map(|(t, id)| Some((t.as_str(), id.as_u64()? as usize)))
                .collect();
            let mut scores = vec![0f32; n];
            let mut scored = vec![false; n];
            for (rank, (l, r)) in merges.iter().enumerate() {
                if let Some(&id) = index.get(format!("{l}{r}").as_str()) {
                    if id < n && !scored[id] {
                        scores[id] = -(rank as f32) - 1.0;
                        scored[id] = true;
                    }
                }
            }
            h.set("tokenizer.ggml.model", MetaValue::String("llama".into()));
            h.set("tokenizer.ggml.tokens", MetaValue::Array(tokens));
            h.set(
                "tokenizer.ggml.scores",
                MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
            );
            h.set("tokenizer.ggml.token_type", MetaValue::Array(types));
            h.set(
                "tokenizer.ggml.add_space_prefix",
                MetaValue::Bool(add_space_prefix),
            );
        }
    }

    let cfg = read_json(&dir.join("tokenizer_config.json"))?;
    let model_cfg = read_json(&dir.join("config.json"))?;
    let token_field = |key: &str| -> Option<u32> {
        let v = cfg.as_ref()?.get(key)?;
        let s = match v {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("content")?.as_str()?,
            _ => return None,
        };
        tok.token_id(s)
    };
    let config_id = |key: &str| -> Option<u32> {
        let c = model_cfg.as_ref()?;
        let v = c.get(key).or_else(|| c.get("text_config")?.get(key))?;
        match v {
            Value::Number(n) => n.as_u64().map(|x| x as u32),
            Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
            _ => None,
        }
    };
    let eos = tok
        .eos_token()
        .and_then(|t| tok.token_id(t))
        .or_else(|| tok.eos_ids().first().copied());
    let ids = [
        ("tokenizer.ggml.bos_token_id", tok.bos_id()),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.unknown_token_id", token_field("unk_token")),
        (
            "tokenizer.ggml.padding_token_id",
            token_field("pad_token").or_else(|| config_id("pad_token_id")),
        ),
    ];
    for (key, id) in ids {
        if let Some(id) = id.filter(|&i| (i as usize) < n) {
            h.set(key, MetaValue::U32(id));
        }
    }
    h.set(
        "tokenizer.ggml.add_bos_token",
        MetaValue::Bool(tok.add_bos()),
    );
    if let Some(add_eos) = cfg
        .as_ref()
        .and_then(|c| c.get("add_eos_token"))
        .and_then(Value::as_bool)
    {
        h.set("tokenizer.ggml.add_eos_token", MetaValue::Bool(add_eos));
    }
    if let Some(t) = tok.chat_template() {
        h.set("tokenizer.chat_template", MetaValue::String(t.to_string()));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizer_names() {
        let bl = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": regex});
        assert_eq!(pre_tokenizer_name(&bl(true)), Some("gpt-2"));
        let smol = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, bl(true)]});
        assert_eq!(pre_tokenizer_name(&smol), Some("smollm"));
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_REGEXES[0].0}, "behavior": "Isolated", "invert": false},
            bl(false)]});
        assert_eq!(pre_tokenizer_name(&llama3), Some("llama-bpe"));
        let unknown = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "x+"}}, bl(false)]});
        assert_eq!(pre_tokenizer_name(&unknown), None);
        assert_eq!(pre_tokenizer_name(&json!({"type": "Metaspace"})), None);
    }
}
