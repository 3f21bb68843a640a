//! Hugging Face folder → one GGUF file, as llama.cpp's `convert_hf_to_gguf.py` (plus `llama-quantize` for the
//! K-quant mixture) would write it, so that llama.cpp and hearth both load the result.
//!
//! What is written, per tensor (names via [`hf_to_gguf_name`]):
//! - llama/mistral `attn_q`/`attn_k` weights and biases: rows permuted within each head so that rotary pairs are
//!   adjacent (llama.cpp runs llama-arch files with interleaved rope; hearth's GGUF path does the same).
//! - Gemma 3 norm gains: `1 + w` stored (Hugging Face stores `w` and adds 1 at run time).
//! - Tied embeddings: no `output.weight`.
//! - Types ([`tensor_type`]): 1-D tensors, `*_norm.weight` and anything not a `.weight` stay F32; matrices take
//!   the target type, or a fallback when their rows are not whole blocks of it.
//!
//! Measured (tests/convert_gguf.rs, tests/convert_gguf_real.rs, scripts/compare_q4_k_m.py): f32, f16, bf16,
//! q8_0, q5_0, q4_0 and q4_1 files hold the same tensor bytes as gguf-py writes from the same weights (the
//! converter's own code path); q4_k and q6_k files equal `llama-quantize`'s Q4_K_M / Q6_K of the same weights
//! tensor for tensor, types included (SmolLM2-135M, Gemma 3 270M, the tiny llama256).
//!
//! Streaming: tensors are converted one at a time, each in slices of rows (about 16 MB of f32 at once),
//! quantized on all cores, and written straight to the output through [`GgufWriter`]; the header is written
//! first with precomputed offsets. Output goes through [`Staged`] (atomic rename, `--force`).

mod vocab;

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::output::{Kind, Staged};
use super::Progress;
use crate::error::{Error, Result};
use crate::loader::gguf::MetaValue;
use crate::loader::gguf_write::{GgufHeader, GgufWriter, TensorInfo};
use crate::loader::safetensors;
use crate::models::config::{Arch, ModelConfig};
use crate::models::weights::hf_to_gguf_name;
use crate::tensor::quants::{dequantize_row, quantize::quantize_row};
use crate::tensor::{DType, Tensor};

/// The `--outtype` of a GGUF conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q5_0,
    Q4_0,
    Q4_1,
    /// llama.cpp's Q4_K_M mixture: Q4_K matrices; Q6_K for the output matrix (or the tied embedding) and for
    /// `attn_v`/`ffn_down` in the layers llama.cpp gives more bits ([`use_more_bits`]).
    Q4KM,
    Q6K,
}

impl OutType {
    /// Parses an `--outtype` name: f32, f16, bf16, q8_0, q5_0, q4_0, q4_1, q4_k (= q4_k_m), q6_k.
    pub fn from_name(s: &str) -> Option<OutType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "q5_0" => OutType::Q5_0,
            "q4_0" => OutType::Q4_0,
            "q4_1" => OutType::Q4_1,
            "q4_k" | "q4_k_m" => OutType::Q4KM,
            "q6_k" => OutType::Q6K,
            _ => return None,
        })
    }

    /// Every accepted name, for help texts.
    pub const NAMES: &'static str = "f32, f16, bf16, q8_0, q5_0, q4_0, q4_1, q4_k (q4_k_m), q6_k";

    /// The type most matrices get.
    pub fn base(self) -> DType {
        match self {
            OutType::F32 => DType::F32,
            OutType::F16 => DType::F16,
            OutType::BF16 => DType::BF16,
            OutType::Q8_0 => DType::Q8_0,
            OutType::Q5_0 => DType::Q5_0,
            OutType::Q4_0 => DType::Q4_0,
            OutType::Q4_1 => DType::Q4_1,
            OutType::Q4KM => DType::Q4_K,
            OutType::Q6K => DType::Q6_K,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q4_0 => 2,
            OutType::Q4_1 => 3,
            OutType::Q8_0 => 7,
            OutType::Q5_0 => 8,
            OutType::Q4KM => 15,
            OutType::Q6K => 18,
            OutType::BF16 => 32,
        }
    }
}

/// Options of [`hf_to_gguf`].
#[derive(Clone, Debug)]
pub struct GgufOptions {
    pub outtype: OutType,
    /// Replace an existing output.
    pub force: bool,
    /// `general.name`; defaults to the source folder's name.
    pub name: Option<String>,
}

/// llama.cpp's rule for which layers of a Q4_K_M file keep `attn_v` and `ffn_down` at Q6_K: the first and
/// last eighth of the layers and every third layer between.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

/// The type a tensor gets in a file of `outtype`. `name` is its GGUF name, `shape` row-major, `tied` whether
/// `token_embd.weight` doubles as the output matrix.
///
/// Fallbacks for rows that are not whole blocks, as llama.cpp chooses them: F16 for the 32-weight types (as
/// `convert_hf_to_gguf.py` does); for the 256-weight K-quants `llama-quantize`'s Q5_0 in place of Q4_K and
/// Q8_0 in place of Q6_K (and F16 if rows are not even whole 32-weight blocks). Small models hit this often:
/// Gemma 3 270M's 640-wide rows, SmolLM2's 576.
pub fn tensor_type(
    outtype: OutType,
    name: &str,
    shape: &[usize],
    n_layers: usize,
    tied: bool,
) -> DType {
    if shape.len() < 2 || name.ends_with("_norm.weight") || !name.ends_with(".weight") {
        return DType::F32;
    }
    let mut ty = outtype.base();
    if outtype == OutType::Q4KM {
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok());
        let is_output = name == "output.weight" || (tied && name == "token_embd.weight");
        let more = |l: Option<usize>| l.is_some_and(|l| use_more_bits(l, n_layers));
        if is_output
            || ((name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight"))
                && more(layer))
        {
            ty = DType::Q6_K;
        }
    }
    let cols = shape[shape.len() - 1];
    if ty.bytes_for(cols).is_none() {
        ty = match ty {
            DType::Q4_K => DType::Q5_0,
            DType::Q6_K => DType::Q8_0,
            _ => DType::F16,
        };
        if ty.bytes_for(cols).is_none() {
            ty = DType::F16;
        }
    }
    ty
}

/// Converts the Hugging Face folder `src` (config.json, model.safetensors or shards, tokenizer files; float or
/// MLX-quantized, whose weights are dequantized first) to the GGUF file `dst`. Progress is reported in output
/// bytes.
pub fn hf_to_gguf(
    src: &Path,
    dst: &Path,
    opts: &GgufOptions,
    progress: Progress,
) -> Result<PathBuf> {
    let cfg_path = src.join("config.json");
    let (cfg, root) = read_config(&cfg_path)?;
    let arch = cfg.arch;
    // An MLX folder: quantized modules come back as one dequantizable tensor each.
    if let Some(q) = crate::loader::mlx::QuantConfig::from_config(&cfg_path, &root)? {
        let (tensors, leftover) =
            crate::loader::mlx::combine(src, &q, safetensors::open_folder(src)?)?;
        if let Some((name, ty)) = leftover
            .iter()
            .find(|(n, _)| hf_to_gguf_name(arch, n).is_some())
        {
            return Err(Error::unsupported(
                src,
                format!("tensor {name} has type {ty}"),
            ));
        }
        return tensors_to_gguf(src, tensors, dst, opts, progress);
    }
    let mut tensors = Vec::new();
    for f in safetensors::open_folder(src)? {
        // A tensor of a type hearth cannot read is an error only if the model needs it.
        if let Some((name, ty)) = f
            .unsupported
            .iter()
            .find(|(n, _)| hf_to_gguf_name(arch, n).is_some())
        {
            return Err(Error::unsupported(
                &f.path,
                format!("tensor {name} has type {ty}"),
            ));
        }
        tensors.extend(f.tensors);
    }
    tensors_to_gguf(src, tensors, dst, opts, progress)
}

/// Adds the `tokenizer.*` metadata of the Hugging Face folder `dir` to `h` (see the `vocab` module's notes for
/// the two tokenizer families); the token list is padded to `vocab_size` entries. Public so that a
/// vocabulary can be converted and checked on its own.
pub fn add_tokenizer_metadata(h: &mut GgufHeader, dir: &Path, vocab_size: usize) -> Result<()> {
    vocab::add_tokenizer(h, dir, vocab_size)
}

/// Transform applied to a tensor's rows on the way out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transform {
    None,
    /// Permute rows within each of `n` heads from rotate-half to interleaved order.
    RopePermute(usize),
    /// Add 1 to every value (Gemma norm gains).
    PlusOne,
}

struct Planned {
    src: Tensor,
    info: TensorInfo,
    transform: Transform,
}

/// The converter over already-opened tensors with Hugging Face names (float safetensors, or MLX modules
/// combined by `loader::mlx`), with `dir` holding config.json and the tokenizer files. Each tensor must
/// dequantize row by row ([`dequantize_row`]).
pub fn tensors_to_gguf(
    dir: &Path,
    tensors: Vec<Tensor>,
    dst: &Path,
    opts: &GgufOptions,
    progress: Progress,
) -> Result<PathBuf> {
    let (cfg, root) = read_config(&dir.join("config.json"))?;
    // Refuse an existing output (without --force) before any real work.
    let staged = Staged::new(dst, Kind::File, opts.force)?;

    let mut header = GgufHeader::new();
    let name = opts.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    });
    add_model_metadata(&mut header, &cfg, &root, &name, opts.outtype);
    vocab::add_tokenizer(&mut header, dir, cfg.vocab)?;

    let plan = plan_tensors(dir, &cfg, &root, tensors, opts.outtype)?;
    for p in &plan {
        header.add_tensor(p.info.clone())?;
    }
    let (_, total) = header.data_layout();

    let file = std::fs::File::create(staged.path()).map_err(|e| Error::io(staged.path(), e))?;
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut w = header.write(out, staged.path())?;
    let mut done = 0u64;
    progress(0, total);
    for p in &plan {
        write_tensor(p, &mut w, &mut |n| {
            done += n;
            progress(done.min(total), total);
        })?;
    }
    let out = w.finish()?;
    out.into_inner()
        .map_err(|e| Error::io(staged.path(), e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io(staged.path(), e))?;
    progress(total, total);
    staged.commit()
}

/// config.json as hearth's model config and as JSON (for the keys GGUF writes beyond it).
fn read_config(path: &Path) -> Result<(ModelConfig, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
    Ok((ModelConfig::from_hf_config(path, &root)?, root))
}

/// The GGUF architecture name llama.cpp uses (Mistral checkpoints convert to `llama`).
fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
        Arch::Gemma3 => "gemma3",
    }
}

/// The text model's section of config.json (Gemma 3 multimodal configs nest it under `text_config`).
fn text_config(root: &Value) -> &Value {
    match root.get("model_type").and_then(Value::as_str) {
        Some("gemma3") => root.get("text_config").unwrap_or(root),
        _ => root,
    }
}

fn add_model_metadata(
    h: &mut GgufHeader,
    cfg: &ModelConfig,
    root: &Value,
    name: &str,
    outtype: OutType,
) {
    let arch = gguf_arch(cfg.arch);
    let c = text_config(root);
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let key = |k: &str| format!("{arch}.{k}");
    h.set("general.architecture", MetaValue::String(arch.into()));
    h.set("general.type", MetaValue::String("model".into()));
    h.set("general.name", MetaValue::String(name.into()));
    h.set("general.quantization_version", MetaValue::U32(2));
    h.set("general.file_type", MetaValue::U32(outtype.file_type()));
    h.set(key("context_length"), u32v(cfg.context_len));
    h.set(key("embedding_length"), u32v(cfg.hidden));
    h.set(key("block_count"), u32v(cfg.n_layers));
    h.set(key("feed_forward_length"), u32v(cfg.ffn));
    h.set(key("attention.head_count"), u32v(cfg.n_heads));
    h.set(key("attention.head_count_kv"), u32v(cfg.n_kv_heads));
    h.set(key("rope.freq_base"), MetaValue::F32(cfg.rope_theta));
    h.set(
        key("attention.layer_norm_rms_epsilon"),
        MetaValue::F32(cfg.rms_eps),
    );
    if c.get("head_dim").is_some_and(|v| v.is_u64()) || cfg.head_dim != cfg.hidden / cfg.n_heads {
        h.set(key("attention.key_length"), u32v(cfg.head_dim));
        h.set(key("attention.value_length"), u32v(cfg.head_dim));
    }
    if arch == "llama" {
        h.set(key("vocab_size"), u32v(cfg.vocab));
        h.set(key("rope.dimension_count"), u32v(cfg.rope_dim));
    }
    if let Some(w) = cfg.sliding_window {
        h.set(key("attention.sliding_window"), u32v(w));
    }
    if cfg.arch == Arch::Gemma3 {
        // llama.cpp hard-codes Gemma 3's layer pattern (every sixth layer global); write it only if the
        // config says otherwise, so that hearth reads the model's own pattern.
        if let Some(p) = sliding_pattern(&cfg.sliding_layers).filter(|&p| p != 6) {
            h.set(key("attention.sliding_window_pattern"), u32v(p));
        }
    }
    if cfg.rope_linear_factor != 1.0 {
        h.set(key("rope.scaling.type"), MetaValue::String("linear".into()));
        h.set(
            key("rope.scaling.factor"),
            MetaValue::F32(cfg.rope_linear_factor),
        );
    }
    for (k, v) in [
        ("attn_logit_softcapping", cfg.attn_logit_softcap),
        ("final_logit_softcapping", cfg.final_logit_softcap),
    ] {
        if let Some(v) = v {
            h.set(key(k), MetaValue::F32(v));
        }
    }
}

/// `p` when layer `i` is global exactly when `(i + 1) % p == 0`.
fn sliding_pattern(sliding: &[bool]) -> Option<usize> {
    let first_global = sliding.iter().position(|&s| !s)? + 1;
    let ok = sliding
        .iter()
        .enumerate()
        .all(|(i, &s)| s != (i + 1).is_multiple_of(first_global));
    ok.then_some(first_global)
}

fn plan_tensors(
    dir: &Path,
    cfg: &ModelConfig,
    root: &Value,
    tensors: Vec<Tensor>,
    outtype: OutType,
) -> Result<Vec<Planned>> {
    let has_lm_head = tensors
        .iter()
        .any(|t| hf_to_gguf_name(cfg.arch, &t.name).as_deref() == Some("output.weight"));
    let tie_flag = text_config(root)
        .get("tie_word_embeddings")
        .or(root.get("tie_word_embeddings"))
        .and_then(Value::as_bool);
    // Tied when the config says so, or when there is no separate output matrix at all.
    let tied = tie_flag.unwrap_or(!has_lm_head) || !has_lm_head;
    let permute = matches!(cfg.arch, Arch::Llama | Arch::Mistral);
    let mut plan = Vec::new();
    for t in tensors {
        let Some(name) = hf_to_gguf_name(cfg.arch, &t.name) else {
            continue;
        };
        if name == "output.weight" && tied {
            continue;
        }
        if plan.iter().any(|p: &Planned| p.info.name == name) {
            return Err(Error::tensor(
                dir,
                &t.name,
                format!("maps to {name}, which appears twice"),
            ));
        }
        let transform = if permute && name.contains(".attn_q.") {
            Transform::RopePermute(cfg.n_heads)
        } else if permute && name.contains(".attn_k.") {
            Transform::RopePermute(cfg.n_kv_heads)
        } else if cfg.arch == Arch::Gemma3 && name.ends_with("norm.weight") {
            Transform::PlusOne
        } else {
            Transform::None
        };
        if let Transform::RopePermute(n) = transform {
            if t.shape[0] % (2 * n) != 0 {
                return Err(Error::tensor(
                    dir,
                    &t.name,
                    format!("{} rows do not split into {n} heads of pairs", t.shape[0]),
                ));
            }
        }
        if t.shape.is_empty() {
            return Err(Error::tensor(dir, &t.name, "scalar tensor"));
        }
        let dtype = tensor_type(outtype, &name, &t.shape, cfg.n_layers, tied);
        plan.push(Planned {
            info: TensorInfo {
                name,
                dtype,
                shape: t.shape.clone(),
            },
            src: t,
            transform,
        });
    }
    if plan.is_empty() {
        return Err(Error::format(dir, "no language-model tensors found"));
    }
    plan.push(rope_freqs(cfg));
    plan.retain(|p| !p.info.shape.is_empty() && p.info.shape[0] > 0);
    // token_embd, the layers in numeric order, then output_norm and output.
    let rank = |n: &str| -> (usize, usize, String) {
        if n == "token_embd.weight" {
            return (0, 0, String::new());
        }
        if let Some(rest) = n.strip_prefix("blk.") {
            let (l, s) = rest.split_once('.').unwrap_or((rest, ""));
            return (1, l.parse().unwrap_or(usize::MAX), s.to_string());
        }
        (2, 0, n.to_string())
    };
    plan.sort_by_key(|p| rank(&p.info.name));
    Ok(plan)
}

/// Llama 3 rope scaling as llama.cpp stores it: a `rope_freqs.weight` of per-frequency divisors `[rope_dim/2]`
/// (an empty placeholder, dropped by the caller, for models without it).
fn rope_freqs(cfg: &ModelConfig) -> Planned {
    let mut divisors = Vec::new();
    if cfg.llama3_rope.is_some() {
        let scaled = cfg.rope_inv_freq(false);
        let mut plain = cfg.clone();
        plain.llama3_rope = None;
        plain.rope_linear_factor = 1.0;
        let base = plain.rope_inv_freq(false);
        divisors = base.iter().zip(&scaled).map(|(b, s)| b / s).collect();
    }
    let n = divisors.len();
    Planned {
        src: Tensor::from_f32("rope_freqs.weight", vec![n], &divisors),
        info: TensorInfo {
            name: "rope_freqs.weight".into(),
            dtype: DType::F32,
            shape: vec![n],
        },
        transform: Transform::None,
    }
}

/// Output row `o` of a rope-permuted matrix with `heads` heads of `rows / heads` rows: within a head, output
/// row `2i + j` is source row `j * half + i` (the two halves interleaved).
fn permuted_source_row(o: usize, rows: usize, heads: usize) -> usize {
    let hd = rows / heads;
    let half = hd / 2;
    let (h, r) = (o / hd, o % hd);
    h * hd + (r % 2) * half + r / 2
}

/// Converts and writes one tensor in slices of rows; `advance` is told the bytes written.
fn write_tensor<W: std::io::Write>(
    p: &Planned,
    w: &mut GgufWriter<W>,
    advance: &mut dyn FnMut(u64),
) -> Result<()> {
    let t = &p.src;
    let cols = t.cols();
    let rows = t.rows();
    let out_ty = p.info.dtype;
    let out_row = out_ty
        .bytes_for(cols)
        .expect("tensor_type only picks types the rows fit");
    // A 1-D tensor is one row; permuting it means permuting its elements.
    let (rows, cols, elementwise) = if t.shape.len() == 1 {
        (1, cols, true)
    } else {
        (rows, cols, false)
    };
    if elementwise {
        let mut v = t.to_f32();
        match p.transform {
            Transform::PlusOne => v.iter_mut().for_each(|x| *x += 1.0),
            Transform::RopePermute(heads) => {
                let src = v.clone();
                let n = v.len();
                for (o, x) in v.iter_mut().enumerate() {
                    *x = src[permuted_source_row(o, n, heads)];
                }
            }
            Transform::None => {}
        }
        let mut bytes = vec![0u8; out_row];
        quantize_row(out_ty, &v, &mut bytes);
        w.write_data(&bytes)?;
        advance(bytes.len() as u64);
        return Ok(());
    }
    let chunk_rows = ((16 << 20) / 4 / cols.max(1)).clamp(1, rows);
    let mut vals = vec![0f32; chunk_rows * cols];
    let mut bytes = vec![0u8; chunk_rows * out_row];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk_rows.min(rows - r0);
        for (i, dst) in vals[..n * cols].chunks_mut(cols).enumerate() {
            let o = r0 + i;
            let s = match p.transform {
                Transform::RopePermute(heads) => permuted_source_row(o, rows, heads),
                _ => o,
            };
            dequantize_row(t.dtype, t.row(s), dst);
            if p.transform == Transform::PlusOne {
                dst.iter_mut().for_each(|x| *x += 1.0);
            }
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|sc| {
            for (v, b) in vals[..n * cols]
                .chunks(per * cols)
                .zip(bytes[..n * out_row].chunks_mut(per * out_row))
            {
                sc.spawn(move || {
                    for (x, y) in v.chunks(cols).zip(b.chunks_mut(out_row)) {
                        quantize_row(out_ty, x, y);
                    }
                });
            }
        });
        w.write_data(&bytes[..n * out_row])?;
        advance((n * out_row) as u64);
        r0 += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_halves() {
        // One head of 8 rows: halves [0..4] and [4..8] interleave as 0,4,1,5,2,6,3,7.
        let got: Vec<usize> = (0..8).map(|o| permuted_source_row(o, 8, 1)).collect();
        assert_eq!(got, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        let got: Vec<usize> = (0..8).map(|o| permuted_source_row(o, 8, 2)).collect();
        assert_eq!(got, vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn q4_k_m_more_bits_layers() {
        // llama.cpp's choice for 2 and 32 layers.
        assert!(!use_more_bits(0, 2) && use_more_bits(1, 2));
        let picked: Vec<usize> = (0..32).filter(|&l| use_more_bits(l, 32)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn types_and_fallbacks() {
        let t = |o, n: &str, s: &[usize]| tensor_type(o, n, s, 2, false);
        assert_eq!(
            t(OutType::Q4_0, "blk.0.attn_norm.weight", &[64]),
            DType::F32
        );
        assert_eq!(t(OutType::Q4_0, "blk.0.attn_q.bias", &[64]), DType::F32);
        assert_eq!(
            t(OutType::Q4_0, "blk.0.attn_q.weight", &[64, 64]),
            DType::Q4_0
        );
        assert_eq!(
            t(OutType::Q8_0, "blk.0.attn_q.weight", &[64, 48]),
            DType::F16
        );
        assert_eq!(
            t(OutType::Q4KM, "blk.0.attn_q.weight", &[64, 64]),
            DType::Q5_0
        );
        assert_eq!(
            t(OutType::Q4KM, "blk.1.attn_v.weight", &[64, 64]),
            DType::Q8_0
        );
        assert_eq!(
            t(OutType::Q6K, "blk.0.attn_q.weight", &[64, 48]),
            DType::F16
        );
        assert_eq!(
            t(OutType::Q4KM, "blk.0.attn_q.weight", &[64, 256]),
            DType::Q4_K
        );
        assert_eq!(
            t(OutType::Q4KM, "blk.1.attn_v.weight", &[64, 256]),
            DType::Q6_K
        );
        assert_eq!(t(OutType::Q4KM, "output.weight", &[64, 256]), DType::Q6_K);
        assert_eq!(
            t(OutType::Q4KM, "token_embd.weight", &[64, 256]),
            DType::Q4_K
        );
        assert_eq!(
            tensor_type(OutType::Q4KM, "token_embd.weight", &[64, 256], 2, true),
            DType::Q6_K
        );
        assert_eq!(
            sliding_pattern(&[true, true, false, true, true, false]),
            Some(3)
        );
        assert_eq!(sliding_pattern(&[true, false, false]), None);
    }
}
