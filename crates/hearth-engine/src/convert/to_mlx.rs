//! Hugging Face folder (or GGUF file) → MLX folder, laid out as `mlx_lm.convert` lays it out, so that mlx-lm
//! loads hearth's output and hearth's output equals mlx-lm's tensor for tensor.
//!
//! What mlx-lm 0.32 does, and so what this does:
//! - Unquantized tensors keep their dtype, unless a dtype is asked for (`--dtype`) or config.json names one as
//!   `torch_dtype` (or `text_config.dtype`): then every float tensor is cast to it first. (mlx-lm does not
//!   read transformers 5's top-level `dtype`, so such a config keeps the stored dtypes.)
//! - Quantized are the modules mlx can quantize (linear layers and embeddings: every 2-D `.weight` of the
//!   supported architectures) whose input dimension is a multiple of the group size; the rest stay float.
//!   A quantized `X.weight` `[out, in]` becomes `X.weight` u32 `[out, in*bits/32]`, `X.scales` `[out,
//!   in/group]` (the weight's float dtype in affine mode, u8 E8M0/E4M3 in the fp modes) and, in affine mode,
//!   `X.biases` like the scales. Scales are computed in the weight's (possibly cast) dtype.
//! - config.json gains `quantization` = `quantization_config` = `{group_size, bits, mode}`; a mixed recipe
//!   adds one entry per quantized module (`"model.layers.0.mlp.down_proj": {group_size, bits, mode}`).
//!   Top-level keys are sorted; JSON is indented by four spaces.
//! - Tied embeddings: llama, mistral, qwen2 and qwen3 configs that say (or, in mlx-lm's llama/qwen2 model
//!   classes, default to) `tie_word_embeddings` drop `lm_head.weight`; Gemma 3 is tied exactly when the
//!   checkpoint has no `lm_head.weight`. Rotary `inv_freq` buffers are dropped.
//! - Weights go to `model.safetensors` (or 5 GiB shards `model-0000N-of-0000M.safetensors`) with
//!   `__metadata__ {"format": "mlx"}`, and `model.safetensors.index.json` is written even for one file, its
//!   metadata holding `total_size` (bytes) and `total_parameters` (elements before quantization).
//! - Tokenizer files, the chat template and generation_config.json are copied. (mlx-lm re-saves the
//!   tokenizer through transformers and writes a README model card; hearth copies the originals, which load
//!   the same, and writes no card.)

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::convert::output::{Kind, Staged};
use crate::convert::repack;
use crate::convert::source::{par_row_chunks, parse_float, sort_model_order, st_dtype, HfTensor};
use crate::convert::Progress;
use crate::error::{Error, Result};
use crate::loader::safetensors;
use crate::loader::safetensors_write::{
    write_json, ShardedWriter, StDtype, TensorSpec, WriteOptions, DEFAULT_MAX_SHARD,
};
use crate::models::config::ModelConfig;
use crate::tensor::mlx::{quantize_row, MlxFloat, MlxMode, MlxQuant};

/// mlx-lm's mixed-precision recipes: most layers at the low width, the value projections and down
/// projections of the first and last eighth of the layers (and every third layer between) plus the output
/// head at the high width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Mixed2_6,
    Mixed3_4,
    Mixed3_6,
    Mixed4_6,
}

impl Recipe {
    /// Parses mlx-lm's recipe name (`mixed_3_6`, ...).
    pub fn from_name(s: &str) -> Option<Recipe> {
        Some(match s {
            "mixed_2_6" => Recipe::Mixed2_6,
            "mixed_3_4" => Recipe::Mixed3_4,
            "mixed_3_6" => Recipe::Mixed3_6,
            "mixed_4_6" => Recipe::Mixed4_6,
            _ => return None,
        })
    }

    /// `(low, high)` bits.
    pub fn bits(self) -> (u8, u8) {
        match self {
            Recipe::Mixed2_6 => (2, 6),
            Recipe::Mixed3_4 => (3, 4),
            Recipe::Mixed3_6 => (3, 6),
            Recipe::Mixed4_6 => (4, 6),
        }
    }
}

/// What `hearth convert --to mlx` was asked for.
#[derive(Clone, Debug)]
pub struct MlxOptions {
    /// Quantize (`-q`); without it only the dtype changes.
    pub quantize: bool,
    /// Bits per weight (default: the mode's, 4 for affine).
    pub bits: Option<u8>,
    /// Weights per scale (default: the mode's, 64 for affine).
    pub group_size: Option<usize>,
    pub mode: MlxMode,
    /// A mixed-precision recipe (affine only).
    pub recipe: Option<Recipe>,
    /// Dtype of the unquantized tensors and affine scales (default: config.json's `torch_dtype`, else each
    /// tensor's own).
    pub dtype: Option<MlxFloat>,
    /// GGUF sources: carry weights whose GGML type is an MLX affine format (`convert::repack`) over exactly,
    /// as groups of 32 with their own scales, instead of dequantizing them; the others follow `quantize`.
    pub keep_quant: bool,
}

impl Default for MlxOptions {
    fn default() -> Self {
        MlxOptions {
            quantize: true,
            bits: None,
            group_size: None,
            mode: MlxMode::Affine,
            recipe: None,
            dtype: None,
            keep_quant: false,
        }
    }
}

/// Files of a Hugging Face folder that describe the tokenizer and generation settings, copied as they are.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// The [`TOKENIZER_FILES`] present in `src`, as `(name, bytes)`, for copying into a converted folder.
pub(crate) fn read_tokenizer_files(src: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let p = src.join(name);
        if p.is_file() {
            files.push((
                name.to_string(),
                std::fs::read(&p).map_err(|e| Error::io(&p, e))?,
            ));
        }
    }
    Ok(files)
}

/// Converts the Hugging Face folder `src` into an MLX folder at `dst` (replaced only with `force`).
pub fn hf_to_mlx(
    src: &Path,
    dst: &Path,
    opts: &MlxOptions,
    force: bool,
    progress: Progress,
) -> Result<PathBuf> {
    let cfg_path = src.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
    if config.get("quantization").is_some() {
        return Err(Error::unsupported(
            src,
            "already an MLX-quantized folder (config.json has `quantization`)",
        ));
    }
    ModelConfig::from_hf_config(&cfg_path, &config)?;
    if config.get("model_type").and_then(|v| v.as_str()) == Some("gemma3") {
        // mlx-lm nests the text model under `language_model` and drops the vision tower; hearth does not
        // rebuild that layout yet.
        return Err(Error::unsupported(
            src,
            "multimodal Gemma 3 (model_type gemma3) → MLX is not supported yet; convert a gemma3_text checkpoint",
        ));
    }
    let mut tensors = Vec::new();
    for f in safetensors::open_folder(src)? {
        if let Some((name, ty)) = f.unsupported.first() {
            return Err(Error::unsupported(
                &f.path,
                format!("tensor {name} has dtype {ty} (hearth converts F32, F16 and BF16)"),
            ));
        }
        for t in f.tensors {
            tensors.push(HfTensor::plain(t.name.clone(), t)?);
        }
    }
    let staged = Staged::new(dst, Kind::Folder, force)?;
    let default_dtype = config
        .get("torch_dtype")
        .or_else(|| config.get("text_config").and_then(|c| c.get("dtype")))
        .and_then(|v| v.as_str())
        .and_then(parse_float);
    let dtype = opts.dtype.or(default_dtype);
    let files = read_tokenizer_files(src)?;
    write_mlx(
        staged.path(),
        config,
        tensors,
        dtype,
        opts,
        &files,
        progress,
    )?;
    staged.commit()
}

/// Drops what mlx-lm's model classes drop when they load a checkpoint (see the module docs).
fn sanitize(config: &Value, tensors: &mut Vec<HfTensor>) {
    tensors.retain(|t| !t.name.contains("rotary_emb.inv_freq"));
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let tie = config.get("tie_word_embeddings").and_then(|v| v.as_bool());
    let tied = match model_type {
        // mlx-lm's llama (also mistral) and qwen2 classes default to tied embeddings.
        "llama" | "mistral" | "qwen2" => tie.unwrap_or(true),
        "qwen3" => tie.unwrap_or(false),
        _ => false,
    };
    if tied {
        tensors.retain(|t| t.name != "lm_head.weight");
    }
}

/// One module's quantization, or None to keep it float.
fn module_quant(
    t: &HfTensor,
    opts: &MlxOptions,
    base: &MlxQuant,
    recipe: Option<&RecipeCtx>,
) -> Result<Option<MlxQuant>> {
    if !opts.quantize || t.shape.len() != 2 || !t.name.ends_with(".weight") {
        return Ok(None);
    }
    if !t.cols().is_multiple_of(base.group_size()) {
        return Ok(None);
    }
    let path = t.name.trim_end_matches(".weight");
    let Some(ctx) = recipe else {
        return Ok(Some(*base));
    };
    let bits = ctx.bits_for(path);
    MlxQuant::affine(bits, base.group_size())
        .map(Some)
        .map_err(|e| Error::Other(format!("{path}: {e}")))
}

/// What a mixed recipe needs to know about the model to choose a module's bits.
struct RecipeCtx {
    recipe: Recipe,
    n_layers: usize,
    /// Which dot-separated component of a module path holds the layer number.
    layer_location: usize,
}

impl RecipeCtx {
    fn new(recipe: Recipe, n_layers: usize, tensors: &[HfTensor]) -> Result<RecipeCtx> {
        let down = tensors
            .iter()
            .find(|t| t.name.contains("down_proj"))
            .ok_or_else(|| {
                Error::Other("mixed recipes need a model with down_proj layers".into())
            })?;
        let layer_location = down
            .name
            .split('.')
            .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or(0);
        Ok(RecipeCtx {
            recipe,
            n_layers,
            layer_location,
        })
    }

    /// mlx-lm's rule (its recipes follow llama.cpp's Q4_K_M choices): a module is "important" in the first and
    /// last eighth of the layers and every third layer between; important value and down projections and
    /// the output head get the high width, everything else the low one.
    fn bits_for(&self, path: &str) -> u8 {
        let parts: Vec<&str> = path.split('.').collect();
        let index: i64 = parts
            .get(self.layer_location)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let n = self.n_layers as i64;
        let more = index < n / 8 || index >= 7 * n / 8 || (index - n / 8).rem_euclid(3) == 2;
        let (low, high) = self.recipe.bits();
        let v = ["v_proj", "v_a_proj", "v_b_proj"]
            .iter()
            .any(|k| path.contains(k));
        let important = v || path.contains("down_proj");
        if (important && more) || path.contains("lm_head") {
            high
        } else {
            low
        }
    }
}

fn quant_json(q: &MlxQuant) -> Value {
    json!({"group_size": q.group_size(), "bits": q.bits(), "mode": q.mode().name()})
}

/// Writes an MLX folder into `dir` (an empty staging folder): the weights, config.json and `files`
/// (tokenizer and generation files, `(name, bytes)`). `dtype` is the cast applied to every float tensor,
/// if any. Shared by the Hugging Face and GGUF sources.
pub(crate) fn write_mlx(
    dir: &Path,
    mut config: Value,
    mut tensors: Vec<HfTensor>,
    dtype: Option<MlxFloat>,
    opts: &MlxOptions,
    files: &[(String, Vec<u8>)],
    progress: Progress,
) -> Result<()> {
    sanitize(&config, &mut tensors);
    sort_model_order(&mut tensors);
    if let Some(d) = dtype {
        tensors = tensors.into_iter().map(|t| t.cast(d)).collect();
    }
    let (def_bits, def_group) = opts.mode.defaults();
    let base = MlxQuant::new(
        opts.mode,
        opts.bits.unwrap_or(def_bits),
        opts.group_size.unwrap_or(def_group),
    )
    .map_err(|e| Error::BadRequest(e.to_string()))?;
    let recipe = match opts.recipe {
        Some(_) if opts.mode != MlxMode::Affine => {
            return Err(Error::BadRequest(
                "mixed recipes quantize in affine mode only".into(),
            ))
        }
        Some(r) if opts.quantize => {
            let cfg = ModelConfig::from_hf_config(&dir.join("config.json"), &config)?;
            Some(RecipeCtx::new(r, cfg.n_layers, &tensors)?)
        }
        _ => None,
    };

    // Plan every output tensor (so headers can be written first), and the config's quantization section.
    let mut plan = Vec::new();
    let mut quants = Vec::with_capacity(tensors.len());
    let mut qsection = Map::new();
    if let Value::Object(base_json) = quant_json(&base) {
        qsection = base_json;
    }
    let mut carried: Vec<Option<(MlxQuant, MlxFloat)>> = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let carry = carried_form(t, opts);
        carried.push(carry);
        if let Some((q, float)) = carry {
            let module = t.name.trim_end_matches(".weight");
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let words = q.packed_words_per_row(cols).expect("whole blocks");
            let groups = q.groups_per_row(cols).expect("whole blocks");
            plan.push(TensorSpec::new(&t.name, StDtype::U32, vec![rows, words]));
            for part in ["scales", "biases"] {
                plan.push(TensorSpec::new(
                    format!("{module}.{part}"),
                    st_dtype(float),
                    vec![rows, groups],
                ));
            }
            qsection.insert(module.to_string(), quant_json(&q));
            quants.push(None);
            continue;
        }
        let q = module_quant(t, opts, &base, recipe.as_ref())?;
        match &q {
            None => plan.push(TensorSpec::new(&t.name, st_dtype(t.dtype), t.shape.clone())),
            Some(q) => {
                let module = t.name.trim_end_matches(".weight");
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let words = q.packed_words_per_row(cols).expect("group checked");
                let groups = q.groups_per_row(cols).expect("group checked");
                plan.push(TensorSpec::new(&t.name, StDtype::U32, vec![rows, words]));
                let sdt = if q.has_biases() {
                    st_dtype(t.dtype)
                } else {
                    StDtype::U8
                };
                plan.push(TensorSpec::new(
                    format!("{module}.scales"),
                    sdt,
                    vec![rows, groups],
                ));
                if q.has_biases() {
                    plan.push(TensorSpec::new(
                        format!("{module}.biases"),
                        sdt,
                        vec![rows, groups],
                    ));
                }
                if recipe.is_some() {
                    qsection.insert(module.to_string(), quant_json(q));
                }
            }
        }
        quants.push(q);
    }

    if opts.quantize || carried.iter().any(Option::is_some) {
        let obj = config
            .as_object_mut()
            .ok_or_else(|| Error::Other("config.json is not an object".into()))?;
        obj.insert("quantization".into(), Value::Object(qsection.clone()));
        obj.insert("quantization_config".into(), Value::Object(qsection));
    }
    let mut sorted: Vec<(String, Value)> = config
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    write_json(
        &dir.join("config.json"),
        &Value::Object(sorted.into_iter().collect()),
    )?;

    let total_parameters: usize = tensors.iter().map(HfTensor::numel).sum();
    let mut index_metadata = Map::new();
    index_metadata.insert("total_parameters".into(), json!(total_parameters));
    let wopts = WriteOptions {
        format: "mlx",
        max_shard_bytes: DEFAULT_MAX_SHARD,
        always_index: true,
        index_metadata,
    };
    let mut w = ShardedWriter::new(dir, plan, wopts)?;
    let total = tensors.len() as u64;
    for (i, (t, q)) in tensors.iter().zip(&quants).enumerate() {
        if let Some((q, float)) = carried[i] {
            let (packed, scales, biases) = repack_tensor(t, &q, float);
            let module = t.name.trim_end_matches(".weight");
            w.write(&t.name, &packed)?;
            w.write(&format!("{module}.scales"), &scales)?;
            w.write(&format!("{module}.biases"), &biases)?;
            progress(i as u64 + 1, total);
            continue;
        }
        match q {
            None => w.write(&t.name, &t.to_bytes())?,
            Some(q) => {
                let (packed, scales, biases) = quantize_tensor(t, q)?;
                let module = t.name.trim_end_matches(".weight");
                w.write(&t.name, &packed)?;
                w.write(&format!("{module}.scales"), &scales)?;
                if let Some(b) = biases {
                    w.write(&format!("{module}.biases"), &b)?;
                }
            }
        }
        progress(i as u64 + 1, total);
    }
    w.finish()?;
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// The exact MLX form of `t` when `--keep-quant` carries it over: a 2-D weight stored in a GGML type that
/// `convert::repack` maps, with the scale dtype that holds every scale and bias of this tensor exactly (the
/// form's own, or f32 when an f16 `-128 * d` would overflow).
fn carried_form(t: &HfTensor, opts: &MlxOptions) -> Option<(MlxQuant, MlxFloat)> {
    if !opts.keep_quant || t.shape.len() != 2 || !t.name.ends_with(".weight") {
        return None;
    }
    let (dtype, _) = t.stored_row(0)?;
    let (q, float) = repack::mlx_form(dtype)?;
    let exact = (0..t.rows()).all(|r| {
        let (dt, row) = t.stored_row(r).expect("stored");
        repack::exact_in(dt, row, float)
    });
    Some((q, if exact { float } else { MlxFloat::F32 }))
}

/// A carried weight's packed words, scales and biases, row by row in Hugging Face order.
fn repack_tensor(t: &HfTensor, q: &MlxQuant, float: MlxFloat) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (rows, cols) = (t.rows(), t.cols());
    let pb = 4 * q.packed_words_per_row(cols).expect("whole blocks");
    let sb = q.scale_bytes_per_row(cols, float).expect("whole blocks");
    let (mut packed, mut scales, mut biases) = (
        vec![0u8; rows * pb],
        vec![0u8; rows * sb],
        vec![0u8; rows * sb],
    );
    for r in 0..rows {
        let (dt, row) = t.stored_row(r).expect("stored");
        let exact = repack::repack_row(
            dt,
            row,
            float,
            &mut packed[r * pb..(r + 1) * pb],
            &mut scales[r * sb..(r + 1) * sb],
            &mut biases[r * sb..(r + 1) * sb],
        );
        debug_assert!(exact, "carried_form chose a dtype that holds every scale");
    }
    (packed, scales, biases)
}

/// One quantized weight's three tensors as bytes: packed words, scales, biases (affine only).
type QuantizedBytes = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Quantizes every row of `t` (chunks of rows in parallel).
fn quantize_tensor(t: &HfTensor, q: &MlxQuant) -> Result<QuantizedBytes> {
    let (rows, cols) = (t.rows(), t.cols());
    let err = |e: crate::tensor::mlx::MlxQuantError| Error::Other(format!("{}: {e}", t.name));
    let pb = 4 * q.packed_words_per_row(cols).map_err(err)?;
    let sb = q.scale_bytes_per_row(cols, t.dtype).map_err(err)?;
    let bb = q.bias_bytes_per_row(cols, t.dtype).map_err(err)?;
    let parts = par_row_chunks(rows, cols, |range| {
        let n = range.len();
        let mut packed = vec![0u8; n * pb];
        let mut scales = vec![0u8; n * sb];
        let mut biases = vec![0u8; n * bb];
        let mut row = vec![0f32; cols];
        for (i, r) in range.enumerate() {
            t.read_row(r, &mut row);
            let b = q.has_biases().then(|| &mut biases[i * bb..(i + 1) * bb]);
            quantize_row(
                q,
                t.dtype,
                &row,
                &mut packed[i * pb..(i + 1) * pb],
                &mut scales[i * sb..(i + 1) * sb],
                b,
            )
            .map_err(err)?;
        }
        Ok((packed, scales, biases))
    });
    let (mut packed, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
    for part in parts {
        let (p, s, b) = part?;
        packed.extend_from_slice(&p);
        scales.extend_from_slice(&s);
        biases.extend_from_slice(&b);
    }
    Ok((packed, scales, q.has_biases().then_some(biases)))
}
