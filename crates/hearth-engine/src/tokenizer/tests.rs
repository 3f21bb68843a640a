//! Loading Hugging Face tokenizer folders: a tiny byte-level BPE `tokenizer.json` is written to a temporary
//! folder together with the config files whose combinations decide BOS, EOS and the chat template.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::bpe::byte_to_char;
use super::*;

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("hearth-tok-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, v: &Value) {
        std::fs::write(self.0.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Byte-level BPE over all 256 bytes plus a few merges; ids 0..3 are `<s>`, `</s>`, `<|im_end|>`.
fn tokenizer_json(bos_post_processor: bool) -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<s>", "</s>", "<|im_end|>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..=255u8 {
        let n = vocab.len();
        vocab.insert(byte_to_char(b).to_string(), json!(n));
    }
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    ];
    for m in merges {
        let n = vocab.len();
        vocab.insert(m.replace(' ', ""), json!(n));
    }
    let added = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let post = if bos_post_processor {
        json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
        })
    } else {
        Value::Null
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(0, "<s>"), added(1, "</s>"), added(2, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

fn folder(post_bos: bool, config: Value) -> TempDir {
    let d = TempDir::new("hf");
    d.write("tokenizer.json", &tokenizer_json(post_bos));
    d.write("tokenizer_config.json", &config);
    d
}

#[test]
fn round_trip_bos_and_eos_list() {
    let d = folder(
        true,
        json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}, "add_bos_token": true}),
    );
    d.write(
        "generation_config.json",
        &json!({"bos_token_id": 0, "eos_token_id": [1, 2]}),
    );
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert_eq!(tok.bos_id(), Some(0));
    assert!(tok.add_bos());
    assert_eq!(tok.eos_ids(), &[1, 2]);
    assert!(tok.is_eos(2) && !tok.is_eos(0));
    assert_eq!(tok.bos_token(), Some("<s>"));
    assert_eq!(tok.eos_token(), Some("</s>"));
    assert_eq!(tok.vocab_size(), 3 + 256 + 9);

    let hello = tok.token_id("hello").unwrap();
    let world = tok.token_id("Ġworld").unwrap();
    assert_eq!(
        tok.encode("hello world", true).unwrap(),
        vec![0, hello, world]
    );
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        vec![hello, world]
    );
    // A BOS written in the text is not doubled.
    assert_eq!(
        tok.encode("<s>hello world", true).unwrap(),
        vec![0, hello, world]
    );
    // Special tokens in text are recognized; decoding skips them.
    let ids = tok.encode("hello<|im_end|>", false).unwrap();
    assert_eq!(ids, vec![hello, 2]);
    assert_eq!(tok.decode(&ids).unwrap(), "hello");
    assert_eq!(tok.decode_with(&ids, false).unwrap(), "hello<|im_end|>");

    let text = "héllo wörld ✓ 🦙";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let mut d = Detokenizer::new(&tok);
    let streamed: String = ids
        .iter()
        .map(|&id| d.push(id).unwrap())
        .collect::<String>()
        + &d.flush().unwrap();
    assert_eq!(streamed, text);
}

#[test]
fn add_bos_token_overrides_post_processor() {
    // The post-processor adds BOS but tokenizer_config says not to.
    let d = folder(
        true,
        json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false}),
    );
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert!(!tok.add_bos());
    assert_eq!(
        tok.encode("hello", true).unwrap(),
        vec![tok.token_id("hello").unwrap()]
    );
    // EOS, then the special token that ends a chat turn.
    assert_eq!(tok.eos_ids(), &[1, 2]);

    // No post-processor, but tokenizer_config asks for BOS: hearth adds it.
    let d = folder(
        false,
        json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}),
    );
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert!(tok.add_bos());
    assert_eq!(
        tok.encode("hello", true).unwrap(),
        vec![0, tok.token_id("hello").unwrap()]
    );
    assert_eq!(
        tok.encode("<s>hello", true).unwrap(),
        vec![0, tok.token_id("hello").unwrap()]
    );

    // Neither says anything: no BOS.
    let d = folder(false, json!({"eos_token": "</s>"}));
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert!(!tok.add_bos());
    assert_eq!(tok.bos_id(), None);
}

#[test]
fn eos_from_config_json_and_template_precedence() {
    let d = folder(
        false,
        json!({"eos_token": "</s>", "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"}
        ]}),
    );
    // Gemma 3 style: ids under text_config.
    d.write(
        "config.json",
        &json!({"text_config": {"eos_token_id": [2, 1], "bos_token_id": 0}}),
    );
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert_eq!(tok.eos_ids(), &[2, 1]);
    assert_eq!(tok.bos_id(), Some(0));
    let msgs = [ChatMessage::new("user", "hi")];
    assert_eq!(
        tok.apply_chat_template(&msgs, false, None).unwrap(),
        "[user]hi"
    );

    // chat_template.json beats tokenizer_config.json; chat_template.jinja beats both.
    d.write(
        "chat_template.json",
        &json!({"chat_template": "json:{{ messages[0].content }}"}),
    );
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert_eq!(
        tok.apply_chat_template(&msgs, false, None).unwrap(),
        "json:hi"
    );
    std::fs::write(
        d.path().join("chat_template.jinja"),
        "jinja:{{ messages[0].content }}\n",
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    assert_eq!(
        tok.apply_chat_template(&msgs, false, None).unwrap(),
        "jinja:hi"
    );
}

#[test]
fn missing_template_is_a_bad_request() {
    let d = folder(false, json!({"eos_token": "</s>"}));
    let tok = Tokenizer::from_hf_dir(d.path()).unwrap();
    match tok.apply_chat_template(&[ChatMessage::new("user", "hi")], true, None) {
        Err(Error::BadRequest(msg)) => assert!(msg.contains("no chat template"), "{msg}"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(Tokenizer::from_hf_dir(Path::new("/nonexistent/hearth")).is_err());
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
    shareable::<ChatTemplate>();
    shareable::<Detokenizer<std::sync::Arc<Tokenizer>>>();
}
