//! `convert::to_gguf`: the committed tiny Hugging Face models (tests/fixtures/tiny) converted to GGUF in a temp
//! folder, then checked three ways:
//!
//! 1. Bytes: every tensor hearth writes equals the same tensor of the committed llama.cpp-converter-style GGUF
//!    of that type (`model-{f32,f16,bf16,q8_0,q4_0,q4_1}.gguf`, written by gguf-py from the same f32 weights).
//!    For K-quants the reference is llama.cpp's own `llama-quantize` of the F16 llama256 model
//!    (tests/fixtures/quants/llama_cpp): hearth's q4_k (Q4_K_M mixture) and q6_k files must hold the same
//!    types and bytes, tensor for tensor.
//! 2. Logits: hearth runs the converted file; every logit must be within 1e-4 of the logits transformers
//!    computed for the committed GGUF of that type (identical tensors, so only float summation order differs;
//!    the same bound tiny_models.rs uses). From the f32 folder to an f32 GGUF, also within 1e-4 of
//!    transformers on the Hugging Face model itself (except Gemma 3, whose GGUF form has no key for its
//!    query_pre_attn_scalar of 32 and so, like llama.cpp, uses 1/sqrt(head_dim)).
//! 3. Tokenizer: hearth's GGUF tokenizer built from the written metadata gives the same ids as its
//!    tokenizer.json tokenizer on 300+ varied strings, with and without special tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_engine::convert::to_gguf::{add_tokenizer_metadata, hf_to_gguf, GgufOptions, OutType};
use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::loader::gguf_write::GgufHeader;
use hearth_engine::models::{Logits, Model};
use hearth_engine::tensor::DType;
use hearth_engine::tokenizer::Tokenizer;

const TOL: f32 = 1e-4;
/// The types with a committed converter-style GGUF to compare with.
const FIXTURE_TYPES: [&str; 7] = ["f32", "f16", "bf16", "q8_0", "q5_0", "q4_0", "q4_1"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-convert-gguf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn reference(arch: &str) -> serde_json::Value {
    let p = fixtures().join("tiny").join(arch).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ref_tokens(arch: &str) -> Vec<u32> {
    reference(arch)["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn convert(src: &Path, dst: &Path, outtype: &str) {
    let opts = GgufOptions {
        outtype: OutType::from_name(outtype).unwrap(),
        force: false,
        name: None,
    };
    let mut last = (0, 0);
    hf_to_gguf(src, dst, &opts, &mut |d, t| last = (d, t))
        .unwrap_or_else(|e| panic!("{} -> {outtype}: {e}", src.display()));
    assert!(last.1 > 0 && last.0 == last.1, "progress ended at {last:?}");
}

/// Largest |a - b| and where.
fn worst(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len());
    let mut w = (0f32, 0);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        if d.is_nan() || d > w.0 {
            w = (if d.is_nan() { f32::INFINITY } else { d }, i);
        }
    }
    w
}

fn logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let model = Model::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut st = model.new_state(tokens.len());
    model
        .forward(&mut st, tokens, Logits::All)
        .unwrap()
        .to_vec()
}

/// Every tensor of `ours` has the same type, shape and bytes as in `theirs`, and both have the same set.
fn assert_same_tensors(ours: &Path, theirs: &Path) {
    let a = GgufFile::open(ours).unwrap();
    let b = GgufFile::open(theirs).unwrap();
    let names = |g: &GgufFile| {
        let mut v: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&a),
        names(&b),
        "{}: tensor sets differ",
        ours.display()
    );
    for t in &a.tensors {
        let u = b.tensors.iter().find(|u| u.name == t.name).unwrap();
        assert_eq!(
            (t.dtype, &t.shape),
            (u.dtype, &u.shape),
            "{} {}",
            ours.display(),
            t.name
        );
        if t.bytes() != u.bytes() {
            let i = t
                .bytes()
                .iter()
                .zip(u.bytes())
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{} {} ({}): bytes differ from {} first at byte {i}",
                ours.display(),
                t.name,
                t.dtype,
                theirs.display()
            );
        }
    }
}

fn check_arch(arch: &str) {
    let dir = fixtures().join("tiny").join(arch);
    let tmp = tmp_dir(arch);
    let tokens = ref_tokens(arch);
    for ty in FIXTURE_TYPES {
        let out = tmp.join(format!("{ty}.gguf"));
        convert(&dir.join("hf-f32"), &out, ty);
        assert_same_tensors(&out, &dir.join(format!("model-{ty}.gguf")));
        let (d, at) = worst(
            &logits(&out, &tokens),
            &read_f32(&dir.join(format!("logits-gguf-{ty}.f32"))),
        );
        assert!(d <= TOL, "{arch} {ty}: logit {at} off by {d}");
        eprintln!(
            "{arch} hf-f32 -> {ty}: tensors identical to model-{ty}.gguf, logits within {d:e}"
        );
    }
    // q4_k: 64-wide rows fit no 256-weight block, so matrices fall back as llama-quantize's do: Q4_K to
    // Q5_0, Q6_K (output, tied embedding, attn_v/ffn_down of layer 1) to Q8_0; each equals that fixture.
    let out = tmp.join("q4_k.gguf");
    convert(&dir.join("hf-f32"), &out, "q4_k");
    let q5 = GgufFile::open(&dir.join("model-q5_0.gguf")).unwrap();
    let q8 = GgufFile::open(&dir.join("model-q8_0.gguf")).unwrap();
    let ours = GgufFile::open(&out).unwrap();
    let mut by_type = BTreeMap::new();
    for t in &ours.tensors {
        let want = match t.dtype {
            DType::Q5_0 => &q5,
            DType::Q8_0 => &q8,
            DType::F32 => &q8,
            other => panic!("{arch} q4_k: {} is {other}", t.name),
        };
        let u = want.tensors.iter().find(|u| u.name == t.name).unwrap();
        assert_eq!(
            (u.dtype, u.bytes()),
            (t.dtype, t.bytes()),
            "{arch} q4_k {}",
            t.name
        );
        *by_type.entry(t.dtype.name()).or_insert(0) += 1;
    }
    assert!(
        by_type.contains_key("Q5_0") && by_type.contains_key("Q8_0"),
        "{by_type:?}"
    );
    // f32 GGUF against transformers on the Hugging Face model.
    if arch != "gemma3" {
        let (d, at) = worst(
            &logits(&tmp.join("f32.gguf"), &tokens),
            &read_f32(&dir.join("logits-hf-f32.f32")),
        );
        assert!(
            d <= TOL,
            "{arch}: f32 GGUF vs transformers: logit {at} off by {d}"
        );
        // bf16 weights survive bf16 -> f32 -> bf16 unchanged.
        let out = tmp.join("from-bf16.gguf");
        convert(&dir.join("hf-bf16"), &out, "bf16");
        let (d, at) = worst(
            &logits(&out, &tokens),
            &read_f32(&dir.join("logits-hf-bf16.f32")),
        );
        assert!(
            d <= TOL,
            "{arch}: bf16 GGUF vs transformers bf16: logit {at} off by {d}"
        );
    }
    check_tokenizer(&dir.join("hf-f32"), &tmp.join("f32.gguf"));
    check_metadata(arch, &tmp.join("f32.gguf"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The config hearth reads back equals the one it reads from config.json, where GGUF can say it.
fn check_metadata(arch: &str, gguf: &Path) {
    let g = GgufFile::open(gguf).unwrap();
    let want = if matches!(arch, "llama" | "mistral") {
        "llama"
    } else {
        arch
    };
    assert_eq!(g.architecture(), Some(want));
    assert_eq!(g.get_u64("general.quantization_version"), Some(2));
    assert_eq!(g.get_u64("general.file_type"), Some(0));
    let hf = Model::open(&fixtures().join("tiny").join(arch).join("hf-f32")).unwrap();
    let gm = Model::open(gguf).unwrap();
    let (a, b) = (&hf.config, &gm.config);
    assert_eq!(
        (
            a.hidden,
            a.n_layers,
            a.n_heads,
            a.n_kv_heads,
            a.head_dim,
            a.ffn,
            a.vocab,
            a.context_len
        ),
        (
            b.hidden,
            b.n_layers,
            b.n_heads,
            b.n_kv_heads,
            b.head_dim,
            b.ffn,
            b.vocab,
            b.context_len
        ),
        "{arch}"
    );
    assert_eq!(
        (a.rms_eps, a.rope_theta, a.rope_local_theta),
        (b.rms_eps, b.rope_theta, b.rope_local_theta)
    );
    assert_eq!(
        (a.sliding_window, &a.sliding_layers),
        (b.sliding_window, &b.sliding_layers)
    );
}

/// Strings that exercise the pre-tokenizer: words, digits, punctuation, whitespace runs, code, non-Latin
/// scripts, emoji and the special tokens written inline.
fn test_strings() -> Vec<String> {
    let base = [
        "The quick brown fox jumps over the lazy dog.",
        "When you bake bread at home, the hardest part is waiting.",
        "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i, add(i, i))\n",
        "Questions and answers: What is the capital of France? The capital of France is Paris.",
        "  leading spaces",
        "trailing spaces   ",
        "tabs\tand\nnewlines\r\n\r\nend",
        "",
        "1234567890 3.14159 1,000,000 2024-06-11",
        "I'm you're we've they'll she'd it's DON'T",
        "naïve café résumé Ωmega Привет мир 你好，世界 こんにちは 안녕하세요 مرحبا",
        "emoji 🙂👍🏽 and symbols ©®™ ∑∫√ ←→",
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
        "<|bos|>text after bos<|eos|>",
        "a<|pad|>b",
        "<|im_end|><|im_end|>",
        "!!!???...,,,;;;:::",
        "mixedCASE camelCaseWords snake_case_words kebab-case-words",
        "https://example.com/path?query=1&x=y#frag",
        "email@example.com",
        "    indented\n        more\n",
        "\n\n\n",
        " ",
        "a",
        "Ġ",
        "ĠĠ weird glyphs Ċ",
    ];
    let words: Vec<&str> = base.iter().flat_map(|s| s.split(' ')).collect();
    let mut out: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    let mut x = 12345u32;
    while out.len() < 320 {
        let mut s = String::new();
        let n = 1 + (x % 9) as usize;
        for _ in 0..n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let w = words[(x >> 8) as usize % words.len()];
            let sep = [" ", "  ", "\n", "", "\t", " ", " "][(x >> 20) as usize % 7];
            s.push_str(w);
            s.push_str(sep);
        }
        out.push(s);
    }
    out
}

fn check_tokenizer(hf_dir: &Path, gguf: &Path) {
    let hf = Tokenizer::from_hf_dir(hf_dir).unwrap();
    let g = Tokenizer::from_gguf(&GgufFile::open(gguf).unwrap()).unwrap();
    assert_eq!(hf.bos_id(), g.bos_id());
    assert_eq!(hf.add_bos(), g.add_bos());
    assert_eq!(hf.chat_template(), g.chat_template());
    assert_eq!(hf.vocab_size(), g.vocab_size());
    let strings = test_strings();
    for s in &strings {
        for special in [false, true] {
            let a = hf.encode(s, special).unwrap();
            let b = g.encode(s, special).unwrap();
            assert_eq!(a, b, "{}: {s:?} (add_special {special})", hf_dir.display());
            assert_eq!(hf.decode(&a).unwrap(), g.decode(&b).unwrap(), "{s:?}");
        }
    }
    eprintln!(
        "{}: {} strings tokenize identically",
        hf_dir.display(),
        strings.len()
    );
}

#[test]
fn llama() {
    check_arch("llama");
}

#[test]
fn mistral() {
    check_arch("mistral");
}

#[test]
fn qwen2() {
    check_arch("qwen2");
}

#[test]
fn qwen3() {
    check_arch("qwen3");
}

#[test]
fn gemma3() {
    check_arch("gemma3");
}

/// A minimal safetensors writer: `(name, dtype name, shape, bytes)` in order.
fn write_safetensors(path: &Path, tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dt, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    for (_, _, _, b) in tensors {
        out.extend_from_slice(b);
    }
    std::fs::write(path, out).unwrap();
}

/// The committed F16 llama256 GGUF turned back into a Hugging Face folder (names mapped back, q/k rows
/// un-permuted, F16 kept), with the tiny llama's tokenizer files.
fn llama256_hf_folder(dir: &Path) {
    let g = GgufFile::open(&fixtures().join("tiny/llama256/model-f16.gguf")).unwrap();
    let u = |k: &str| g.get_u64(&format!("llama.{k}")).unwrap() as usize;
    let (heads, kv_heads) = (u("attention.head_count"), u("attention.head_count_kv"));
    let inverse: BTreeMap<&str, &str> = [
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    for t in &g.tensors {
        let name = match t.name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            "output.weight" => "lm_head.weight".to_string(),
            n => {
                let rest = n.strip_prefix("blk.").unwrap();
                let (l, rest) = rest.split_once('.').unwrap();
                let (m, kind) = rest.split_once('.').unwrap();
                format!("model.layers.{l}.{}.{kind}", inverse[m])
            }
        };
        let rb = t.row_bytes();
        let bytes = match t.name.rsplit('.').nth(1) {
            Some(m @ ("attn_q" | "attn_k")) if t.shape.len() == 2 => {
                let h = if m == "attn_q" { heads } else { kv_heads };
                let (rows, hd) = (t.shape[0], t.shape[0] / h);
                let mut v = vec![0u8; t.bytes().len()];
                // Interleaved row 2i + j of a head came from rotate-half row j * hd/2 + i.
                for o in 0..rows {
                    let (head, r) = (o / hd, o % hd);
                    let src_row = head * hd + (r % 2) * (hd / 2) + r / 2;
                    v[src_row * rb..(src_row + 1) * rb].copy_from_slice(t.row(o));
                }
                v
            }
            _ => t.bytes().to_vec(),
        };
        let dt = match t.dtype {
            DType::F16 => "F16",
            DType::F32 => "F32",
            other => panic!("{other}"),
        };
        out.push((name, dt, t.shape.clone(), bytes));
    }
    write_safetensors(&dir.join("model.safetensors"), &out);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": u("embedding_length"), "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"), "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "max_position_embeddings": u("context_length"),
        "vocab_size": u("vocab_size"), "rms_norm_eps": g.get_f64("llama.attention.layer_norm_rms_epsilon").unwrap(),
        "rope_theta": g.get_f64("llama.rope.freq_base").unwrap(), "tie_word_embeddings": false,
        "bos_token_id": 0, "eos_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixtures().join("tiny/llama/hf-f32").join(f), dir.join(f)).unwrap();
    }
}

/// K-quants: hearth's q4_k (Q4_K_M mixture) and q6_k files of the F16 llama256 model equal llama.cpp's
/// `llama-quantize` output tensor for tensor (types and bytes); logits stay within the bound the fixture's own
/// plain Q4_K / Q6_K encoders reached against f32 (reference.json: 1.05 and 0.247), which llama.cpp's
/// error-minimizing scheme must not exceed.
#[test]
fn llama256_k_quants_equal_llama_cpp() {
    let tmp = tmp_dir("llama256");
    let src = tmp.join("hf");
    std::fs::create_dir_all(&src).unwrap();
    llama256_hf_folder(&src);
    let tokens = ref_tokens("llama256");
    let f16_logits = read_f32(&fixtures().join("tiny/llama256/logits-gguf-f16.f32"));
    // The round trip through the folder is lossless: an f16 conversion equals the committed F16 file.
    let f16 = tmp.join("f16.gguf");
    convert(&src, &f16, "f16");
    assert_same_tensors(&f16, &fixtures().join("tiny/llama256/model-f16.gguf"));
    for (ty, theirs, bound) in [
        ("q4_k", "llama256-q4_k_m.gguf", 1.05f32),
        ("q6_k", "llama256-q6_k.gguf", 0.247),
    ] {
        let out = tmp.join(format!("{ty}.gguf"));
        convert(&src, &out, ty);
        assert_same_tensors(&out, &fixtures().join("quants/llama_cpp").join(theirs));
        let (d, at) = worst(&logits(&out, &tokens), &f16_logits);
        eprintln!(
            "llama256 {ty}: tensors identical to llama.cpp's {theirs}; max logit diff vs F16 {d}"
        );
        assert!(
            d <= bound,
            "llama256 {ty}: logit {at} off by {d} (bound {bound})"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn existing_output_needs_force() {
    let tmp = tmp_dir("force");
    let src = fixtures().join("tiny/qwen3/hf-f32");
    let dst = tmp.join("m.gguf");
    std::fs::write(&dst, b"old").unwrap();
    let mut opts = GgufOptions {
        outtype: OutType::Q8_0,
        force: false,
        name: Some("tiny".into()),
    };
    let err = hf_to_gguf(&src, &dst, &opts, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&dst).unwrap(), b"old");
    opts.force = true;
    hf_to_gguf(&src, &dst, &opts, &mut |_, _| {}).unwrap();
    let g = GgufFile::open(&dst).unwrap();
    assert_eq!(g.get_str("general.name"), Some("tiny"));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A copy of a tiny model's f32 folder with config.json edited by `edit` and, when `add_biases`, random q/k/v
/// projection biases added to the weights.
fn variant_folder(
    arch: &str,
    dir: &Path,
    add_biases: bool,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let src = fixtures().join("tiny").join(arch).join("hf-f32");
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    if add_biases {
        let files = hearth_engine::loader::safetensors::open_folder(dir).unwrap();
        let mut out = Vec::new();
        let mut x = 7u32;
        for t in files.into_iter().flat_map(|f| f.tensors) {
            if let Some(prefix) = t.name.strip_suffix("_proj.weight") {
                if [".q", ".k", ".v"].iter().any(|p| prefix.ends_with(p)) {
                    let b: Vec<u8> = (0..t.shape[0])
                        .flat_map(|_| {
                            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                            (((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.4).to_le_bytes()
                        })
                        .collect();
                    out.push((format!("{prefix}_proj.bias"), "F32", vec![t.shape[0]], b));
                }
            }
            out.push((t.name.clone(), "F32", t.shape.clone(), t.bytes().to_vec()));
        }
        let _ = std::fs::remove_file(dir.join("model.safetensors.index.json"));
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                std::fs::remove_file(p).unwrap();
            }
        }
        write_safetensors(&dir.join("model.safetensors"), &out);
    }
}

/// Settings the fixtures do not cover, checked as "hearth on the Hugging Face folder equals hearth on the
/// converted f32 GGUF" (every logit within 1e-4): Llama 3 rope scaling (written as `rope_freqs.weight`), linear
/// rope scaling, q/k/v biases on a llama (the q and k biases must be permuted like their rows), a Mistral
/// sliding window shorter than the sequence, and Gemma 3 with linear rope scaling (query_pre_attn_scalar set
/// to head_dim, the only value GGUF can express).
#[test]
fn config_variants_keep_hearths_logits() {
    let tmp = tmp_dir("variants");
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let variants: Vec<(&str, &str, bool, Edit)> = vec![
        (
            "llama3-rope",
            "llama",
            false,
            Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
            }),
        ),
        (
            "linear-rope",
            "llama",
            false,
            Box::new(|c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0})),
        ),
        (
            "llama-bias",
            "llama",
            true,
            Box::new(|c| c["attention_bias"] = serde_json::json!(true)),
        ),
        (
            "mistral-window",
            "mistral",
            false,
            Box::new(|c| c["sliding_window"] = serde_json::json!(8)),
        ),
        (
            "gemma3-linear",
            "gemma3",
            false,
            Box::new(|c| {
                c["query_pre_attn_scalar"] = serde_json::json!(16);
                c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 4.0});
            }),
        ),
    ];
    for (name, arch, biases, edit) in variants {
        let dir = tmp.join(name);
        variant_folder(arch, &dir, biases, edit);
        let out = tmp.join(format!("{name}.gguf"));
        convert(&dir, &out, "f32");
        let tokens = ref_tokens(arch);
        let want = logits(&dir, &tokens);
        let base = read_f32(&fixtures().join("tiny").join(arch).join("logits-hf-f32.f32"));
        let (changed, _) = worst(&want, &base);
        assert!(
            changed > 1e-3,
            "{name}: the edit did not change the model ({changed})"
        );
        let (d, at) = worst(&logits(&out, &tokens), &want);
        eprintln!("{name}: converted GGUF within {d:e} of the folder (the edit moved logits by {changed})");
        assert!(d <= TOL, "{name}: logit {at} off by {d}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A SentencePiece-style tokenizer.json (tests/fixtures/tokenizer/spm-bpe, made by
/// scripts/make_spm_tokenizer_fixture.py: byte fallback, `▁` escaping, a prepended `▁`, added specials) becomes
/// a `"llama"` GGUF vocabulary with scores, whose tokenizer encodes the test strings exactly as the file does.
#[test]
fn sentencepiece_style_vocabulary() {
    let dir = fixtures().join("tokenizer/spm-bpe");
    let tmp = tmp_dir("spm");
    let path = tmp.join("vocab.gguf");
    let mut h = GgufHeader::new();
    h.set(
        "general.architecture",
        hearth_engine::loader::gguf::MetaValue::String("llama".into()),
    );
    add_tokenizer_metadata(&mut h, &dir, 0).unwrap();
    let w = h
        .write(std::fs::File::create(&path).unwrap(), &path)
        .unwrap();
    w.finish().unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(
        g.get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    let types = g.get("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.i64_at(0), Some(2), "<unk> is UNKNOWN");
    assert_eq!(types.i64_at(3 + 0x41), Some(6), "<0x41> is BYTE");
    check_tokenizer(&dir, &path);
    let _ = std::fs::remove_dir_all(&tmp);
}
