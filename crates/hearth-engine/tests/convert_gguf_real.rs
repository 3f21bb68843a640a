//! `convert::to_gguf` on the real models (SmolLM2-135M: llama, byte-level BPE; Gemma 3 270M: gemma3,
//! SentencePiece-style vocabulary of 262,144 tokens), through a round trip: each GGUF in HEARTH_MODELS_DIR is
//! written out here as a Hugging Face folder (f32 safetensors of its dequantized weights, q/k rows and Gemma
//! norms undone, a tokenizer.json made from its vocabulary the way Hugging Face lays such files out), and
//! hearth converts that folder back to GGUF. Checked:
//!
//! - f32: every tensor equals the original's dequantized values bit for bit (Gemma norm gains, stored `w - 1`
//!   in the folder and `+ 1` again on the way back, within 2 ulp);
//! - tokenizer: the converted file's tokenizer, the original GGUF's and the tokenizer.json agree on ppl.txt
//!   and 320 varied strings;
//! - perplexity of tests/fixtures/real/ppl.txt (transformers' token ids) against transformers' on the original
//!   weights (tests/fixtures/real/*.json): f32 within 0.1% (the same weights; float order only), q8_0 within 1%
//!   (the real-model tests' bound), q4_k within 5%: a Q4_K_M re-quantization of weights already quantized
//!   once moves SmolLM2's by 3.7% (hearth's file is byte-identical to llama-quantize's Q4_K_M of the same f32
//!   file, so this is llama.cpp's own loss, not a converter error).
//!
//! Needs HEARTH_MODELS_DIR (scripts/fetch_models.sh), like tests/real_models.rs. Also prints the conversion
//! speed. With HEARTH_KEEP_CONVERTED set, the folder and the converted files are kept (path printed), e.g. to
//! load them in llama.cpp.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_engine::convert::to_gguf::{hf_to_gguf, GgufOptions, OutType};
use hearth_engine::generate::score_sequence;
use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::models::Model;
use hearth_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};

fn models_dir() -> PathBuf {
    match std::env::var_os("HEARTH_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh"),
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-convert-real-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Hugging Face name of a GGUF tensor name.
fn hf_name(gguf: &str, gemma: bool) -> String {
    match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (l, rest) = rest.split_once('.').unwrap();
    let (m, kind) = rest.split_once('.').unwrap();
    let module = match m {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => panic!("unmapped {other}"),
    };
    format!("model.layers.{l}.{module}.{kind}")
}

/// Writes `g`'s tensors as one f32 safetensors file, one tensor at a time.
fn write_weights(g: &GgufFile, path: &Path, gemma: bool) {
    let u = |k: &str| {
        g.get_u64(&format!("{}.{k}", g.architecture().unwrap()))
            .unwrap() as usize
    };
    let (heads, kv_heads) = (u("attention.head_count"), u("attention.head_count_kv"));
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for t in &g.tensors {
        let n = t.numel() * 4;
        header.insert(
            hf_name(&t.name, gemma),
            json!({"dtype": "F32", "shape": t.shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    for t in &g.tensors {
        let mut v = t.to_f32();
        let m = t.name.rsplit('.').nth(1).unwrap_or("");
        if !gemma && (m == "attn_q" || m == "attn_k") {
            // Interleaved row 2i + j of a head came from rotate-half row j * hd/2 + i.
            let h = if m == "attn_q" { heads } else { kv_heads };
            let (rows, cols) = (t.shape[0], t.cols());
            let hd = rows / h;
            let src = v.clone();
            for o in 0..rows {
                let (head, r) = (o / hd, o % hd);
                let s = head * hd + (r % 2) * (hd / 2) + r / 2;
                v[s * cols..(s + 1) * cols].copy_from_slice(&src[o * cols..(o + 1) * cols]);
            }
        }
        if gemma && t.name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x -= 1.0);
        }
        for x in v {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
    f.flush().unwrap();
}

/// A tokenizer.json (and tokenizer_config.json) for `g`'s vocabulary, laid out as Hugging Face writes them:
/// byte-level BPE with merges for "gpt2" vocabularies; for "llama" (SentencePiece) ones, BPE with byte
/// fallback, `▁` escaping and every split of every piece as a merge, ranked by the merged piece's score.
fn write_tokenizer(g: &GgufFile, dir: &Path) {
    let toks = g.get("tokenizer.ggml.tokens").unwrap();
    let n = toks.array_len().unwrap();
    let text = |i: usize| toks.str_at(i).unwrap().to_string();
    let types = g.get("tokenizer.ggml.token_type").unwrap();
    let ty = |i: usize| types.i64_at(i).unwrap();
    let spm = g.get_str("tokenizer.ggml.model") == Some("llama");
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for i in 0..n {
        vocab.insert(text(i), json!(i));
        if ty(i) == 3 || ty(i) == 4 {
            added.push(
                json!({"id": i, "content": text(i), "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty(i) == 3}),
            );
        }
    }
    let (model, normalizer, pre, decoder) = if spm {
        let scores = g.get("tokenizer.ggml.scores").unwrap();
        let index: std::collections::HashMap<String, usize> = (0..n)
            .filter(|&i| ty(i) == 1)
            .map(|i| (text(i), i))
            .collect();
        let mut merges: Vec<(f64, usize, usize, String, String)> = Vec::new();
        for i in (0..n).filter(|&i| ty(i) == 1) {
            let t = text(i);
            for (p, _) in t.char_indices().skip(1) {
                let (l, r) = (&t[..p], &t[p..]);
                if index.contains_key(l) && index.contains_key(r) {
                    merges.push((
                        -scores.f64_at(i).unwrap(),
                        i,
                        p,
                        l.to_string(),
                        r.to_string(),
                    ));
                }
            }
        }
        merges.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let merges: Vec<Value> = merges.into_iter().map(|m| json!([m.3, m.4])).collect();
        (
            json!({"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges}),
            json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            Value::Null,
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]}),
        )
    } else {
        let pre = match g.get_str("tokenizer.ggml.pre") {
            Some("smollm") => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}),
            other => panic!("pre-tokenizer {other:?}"),
        };
        let m = g.get("tokenizer.ggml.merges").unwrap();
        let merges: Vec<Value> = (0..m.array_len().unwrap())
            .map(|i| json!(m.str_at(i).unwrap()))
            .collect();
        (
            json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges}),
            Value::Null,
            pre,
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        )
    };
    let tj = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": null, "decoder": decoder,
        "model": model});
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let id_text = |k: &str| g.get_u64(k).map(|i| text(i as usize));
    let cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": id_text("tokenizer.ggml.bos_token_id"),
        "eos_token": id_text("tokenizer.ggml.eos_token_id"),
        "pad_token": id_text("tokenizer.ggml.padding_token_id"),
        "add_bos_token": g.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()),
        "chat_template": g.get_str("tokenizer.chat_template"),
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

fn write_config(g: &GgufFile, dir: &Path) {
    let arch = g.architecture().unwrap();
    let u = |k: &str| g.get_u64(&format!("{arch}.{k}"));
    let f = |k: &str| g.get_f64(&format!("{arch}.{k}"));
    let vocab = g.get("tokenizer.ggml.tokens").unwrap().array_len().unwrap();
    let mut c = json!({
        "hidden_size": u("embedding_length"), "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"), "num_attention_heads": u("attention.head_count"),
        "num_key_value_heads": u("attention.head_count_kv"), "max_position_embeddings": u("context_length"),
        "vocab_size": vocab, "rms_norm_eps": f("attention.layer_norm_rms_epsilon"),
        "rope_theta": f("rope.freq_base"),
        "tie_word_embeddings": !g.tensors.iter().any(|t| t.name == "output.weight"),
    });
    if arch == "gemma3" {
        let hd = u("attention.key_length").unwrap();
        c["architectures"] = json!(["Gemma3ForCausalLM"]);
        c["model_type"] = json!("gemma3_text");
        c["head_dim"] = json!(hd);
        c["query_pre_attn_scalar"] = json!(hd);
        c["sliding_window"] = json!(u("attention.sliding_window"));
        c["sliding_window_pattern"] = json!(6);
        c["rope_local_base_freq"] = json!(10000.0);
    } else {
        c["architectures"] = json!(["LlamaForCausalLM"]);
        c["model_type"] = json!("llama");
    }
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
}

fn test_strings() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("real/ppl.txt")).unwrap();
    let mut out: Vec<String> = text.lines().map(str::to_string).collect();
    out.push(text.clone());
    for extra in [
        "  two  spaces\tand a tab\n\n\nthree newlines",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<start_of_turn>model\nFour<end_of_turn>",
        "naïve café — Привет мир 你好世界 こんにちは 🙂👍🏽",
        "def f(x):\n    return x ** 2  # square\n",
        "1234567890 3.14159 1,000,000",
        "",
        " ",
    ] {
        out.push(extra.to_string());
    }
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let mut x = 99u32;
    while out.len() < 320 {
        let mut s = String::new();
        for _ in 0..1 + (x % 7) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            s.push_str(&words[(x >> 8) as usize % words.len()]);
            s.push_str([" ", "  ", "\n", ", ", "\t"][(x >> 20) as usize % 5]);
        }
        out.push(s);
    }
    out
}

fn ppl(model: &Model, ids: &[u32]) -> f64 {
    let (nll, n) = score_sequence(model, ids, |_| {}).unwrap();
    (nll / n as f64).exp()
}

fn round_trip(file: &str, fixture: &str) {
    let g = GgufFile::open(&models_dir().join(file)).unwrap();
    let gemma = g.architecture() == Some("gemma3");
    let tmp = tmp_dir(fixture);
    let hf = tmp.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    write_weights(&g, &hf.join("model.safetensors"), gemma);
    write_tokenizer(&g, &hf);
    write_config(&g, &hf);

    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("real").join(fixture)).unwrap(),
    )
    .unwrap();
    let ids: Vec<u32> = reference["ppl_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want_ppl = reference["ppl"].as_f64().unwrap();

    for (ty, bound) in [("f32", 0.001), ("q8_0", 0.01), ("q4_k", 0.05)] {
        let out = tmp.join(format!("{ty}.gguf"));
        let opts = GgufOptions {
            outtype: OutType::from_name(ty).unwrap(),
            force: false,
            name: None,
        };
        let t0 = Instant::now();
        hf_to_gguf(&hf, &out, &opts, &mut |_, _| {}).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let mb = std::fs::metadata(hf.join("model.safetensors"))
            .unwrap()
            .len() as f64
            / 1e6;
        let c = GgufFile::open(&out).unwrap();
        if ty == "f32" {
            for t in &g.tensors {
                let u = c.tensors.iter().find(|u| u.name == t.name).unwrap();
                let (a, b) = (t.to_f32(), u.to_f32());
                let close = |x: f32, y: f32| {
                    x.to_bits() == y.to_bits()
                        || (gemma
                            && t.name.ends_with("norm.weight")
                            && (x - y).abs() <= 2.0 * f32::EPSILON * x.abs().max(1.0))
                };
                let bad = a.iter().zip(&b).position(|(x, y)| !close(*x, *y));
                assert!(bad.is_none(), "{file} {}: value {bad:?} differs", t.name);
            }
            assert_eq!(g.tensors.len(), c.tensors.len());
            check_tokenizers(&g, &c, &hf);
        }
        let model = Model::open(&out).unwrap();
        let p = ppl(&model, &ids);
        let rel = (p - want_ppl).abs() / want_ppl;
        eprintln!(
            "{file} -> {ty}: {mb:.0} MB of f32 converted in {secs:.1} s ({:.0} MB/s); perplexity {p:.4}, transformers {want_ppl:.4} ({:.3}%)",
            mb / secs,
            rel * 100.0
        );
        assert!(rel < bound, "{file} {ty}: perplexity {p} vs {want_ppl}");
    }
    if std::env::var_os("HEARTH_KEEP_CONVERTED").is_some() {
        eprintln!("kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

fn check_tokenizers(orig: &GgufFile, conv: &GgufFile, hf_dir: &Path) {
    let a = Tokenizer::from_gguf(orig).unwrap();
    let b = Tokenizer::from_gguf(conv).unwrap();
    let h = Tokenizer::from_hf_dir(hf_dir).unwrap();
    assert_eq!((a.bos_id(), a.add_bos()), (b.bos_id(), b.add_bos()));
    let (ta, tb) = (
        orig.get("tokenizer.ggml.token_type").unwrap(),
        conv.get("tokenizer.ggml.token_type").unwrap(),
    );
    let n = ta.array_len().unwrap();
    assert_eq!(tb.array_len(), Some(n));
    let differing = (0..n).filter(|&i| ta.i64_at(i) != tb.i64_at(i)).count();
    assert_eq!(differing, 0, "token types differ for {differing} tokens");
    let strings = test_strings();
    for s in &strings {
        for special in [false, true] {
            let x = a.encode(s, special).unwrap();
            assert_eq!(x, b.encode(s, special).unwrap(), "converted GGUF: {s:?}");
            assert_eq!(x, h.encode(s, special).unwrap(), "tokenizer.json: {s:?}");
        }
    }
    eprintln!(
        "{} strings tokenize identically in the three tokenizers",
        strings.len()
    );
}

#[test]
fn smollm2_round_trip() {
    round_trip("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2.json");
}

#[test]
fn gemma3_round_trip() {
    round_trip("gemma-3-270m-q4_k_m.gguf", "gemma3.json");
}
