//! MLX-quantized checkpoints (as the mlx-community publishes them and `mlx_lm.convert` writes them): the
//! `quantization` section of config.json and the repacking of each quantized module's three arrays into
//! hearth's block layout (`tensor::mlx_blocks`).
//!
//! config.json holds `quantization` (and the same object again as `quantization_config`, for Hugging Face
//! tools): the default `group_size`, `bits` and `mode`, plus optional per-module entries keyed by module path
//! (`"model.layers.3.mlp.down_proj": {"group_size": 64, "bits": 6}`), or `false` for a module kept in float.
//! As in mlx-lm's loader, a module is quantized exactly when its `.scales` tensor exists; its parameters are
//! its own entry, else the defaults. A quantized module `P` stores:
//!
//! ```text
//! P.weight  U32   [out, in * bits / 32]   codes, a little-endian bitstream per row
//! P.scales  F16/BF16/F32 (affine) or U8 (E8M0/E4M3, fp modes)   [out, in / group_size]
//! P.biases  same dtype as the scales (affine only)              [out, in / group_size]
//! ```
//!
//! Every shape and dtype is checked against the parameters before a byte is read. The repacked weight is
//! one owned tensor of `DType::Mlx`, `[out, in]`; the three source arrays' pages are released from the
//! process (they are never read again), so the resident size stays about one copy of the model.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::loader::safetensors::{RawTensor, SafetensorsFile};
use crate::tensor::mlx::{MlxFloat, MlxMode, MlxQuant};
use crate::tensor::mlx_blocks::MlxBlocks;
use crate::tensor::{DType, Storage, Tensor};

/// The `quantization` section of an MLX config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    /// The parameters of modules without their own entry.
    pub default: MlxQuant,
    /// Per-module entries: `Some` parameters, or `None` for a module the config keeps in float.
    pub modules: HashMap<String, Option<MlxQuant>>,
}

impl QuantConfig {
    /// Reads `quantization` (or, failing that, `quantization_config`) from a config.json root; `None` when
    /// the model is not MLX-quantized. A `quantization_config` of another tool (it has a `quant_method`,
    /// e.g. GPTQ or AWQ) is not MLX's and is refused rather than misread.
    pub fn from_config(path: &Path, root: &Value) -> Result<Option<QuantConfig>> {
        let section = match (root.get("quantization"), root.get("quantization_config")) {
            (Some(q), _) => q,
            (None, Some(q)) => {
                if let Some(m) = q.get("quant_method").and_then(Value::as_str) {
                    return Err(Error::unsupported(
                        path,
                        format!("quantization method {m:?} (hearth reads MLX's and GGUF's)"),
                    ));
                }
                q
            }
            (None, None) => return Ok(None),
        };
        let obj = section
            .as_object()
            .ok_or_else(|| Error::format(path, "`quantization` is not an object"))?;
        let default = parse_params(path, "quantization", section, None)?;
        let mut modules = HashMap::new();
        for (key, v) in obj {
            match v {
                Value::Object(_) => {
                    let q = parse_params(path, key, v, Some(default.mode()))?;
                    modules.insert(key.clone(), Some(q));
                }
                Value::Bool(false) => {
                    modules.insert(key.clone(), None);
                }
                _ => {} // group_size, bits, mode and keys hearth has no use for
            }
        }
        Ok(Some(QuantConfig { default, modules }))
    }

    /// The parameters of the module at `module` (a tensor name without `.weight`): its own entry or the
    /// default; None when the config lists the module as not quantized.
    pub fn module(&self, module: &str) -> Option<MlxQuant> {
        match self.modules.get(module) {
            Some(q) => *q,
            None => Some(self.default),
        }
    }
}

/// `{"group_size": g, "bits": b, "mode": m}` with mlx's per-mode defaults for what is missing; a per-module
/// entry without a mode inherits the default section's.
fn parse_params(
    path: &Path,
    what: &str,
    v: &Value,
    inherit_mode: Option<MlxMode>,
) -> Result<MlxQuant> {
    let bad = |m: String| Error::format(path, format!("{what}: {m}"));
    let mode = match v.get("mode").and_then(Value::as_str) {
        Some(m) => MlxMode::from_name(m).map_err(|e| bad(e.to_string()))?,
        None => inherit_mode.unwrap_or(MlxMode::Affine),
    };
    let int = |k: &str| -> Result<Option<u64>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("{k} is not a positive integer"))),
        }
    };
    let bits = int("bits")?.map(|b| b.min(255) as u8);
    let group = int("group_size")?.map(|g| g as usize);
    MlxQuant::with_defaults(mode, bits, group).map_err(|e| bad(e.to_string()))
}

/// The tensors of a checkpoint with Hugging Face names, and the (name, dtype) of integer tensors left over.
pub type Combined = (Vec<Tensor>, Vec<(String, String)>);

/// Turns the tensors of an MLX checkpoint into hearth tensors with Hugging Face names: every quantized
/// module's `weight`/`scales`/`biases` become one `DType::Mlx` tensor named `P.weight`; float tensors pass
/// through. Returns the tensors and the names (with dtypes) of integer tensors left over.
pub fn combine(dir: &Path, config: &QuantConfig, files: Vec<SafetensorsFile>) -> Result<Combined> {
    let mut floats: HashMap<String, Tensor> = HashMap::new();
    let mut raws: HashMap<String, RawTensor> = HashMap::new();
    for f in files {
        for t in f.tensors {
            floats.insert(t.name.clone(), t);
        }
        for r in f.raw {
            raws.insert(r.name.clone(), r);
        }
    }
    let scale_names: Vec<String> = floats
        .keys()
        .chain(raws.keys())
        .filter(|n| n.ends_with(".scales"))
        .cloned()
        .collect();
    let mut out = Vec::new();
    for scales_name in scale_names {
        let module = scales_name.trim_end_matches(".scales").to_string();
        let quant = config.module(&module).ok_or_else(|| {
            Error::tensor(
                dir,
                &scales_name,
                "has scales, but config.json lists the module as not quantized",
            )
        })?;
        let weight_name = format!("{module}.weight");
        let weight = raws.remove(&weight_name).ok_or_else(|| {
            Error::tensor(
                dir,
                &weight_name,
                "missing or not U32: a quantized module needs its packed codes",
            )
        })?;
        let scales = take_any(&mut floats, &mut raws, &scales_name).expect("listed above");
        let biases = take_any(&mut floats, &mut raws, &format!("{module}.biases"));
        out.push(repack(dir, &module, quant, weight, scales, biases)?);
    }
    let leftover = raws
        .values()
        .map(|r| (r.name.clone(), r.dtype.clone()))
        .collect();
    out.extend(floats.into_values());
    Ok((out, leftover))
}

/// One of a module's arrays, whichever list it is in (float scales and biases, or U8 fp scales).
enum Part {
    Float(Tensor),
    Raw(RawTensor),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Float(t) => t.bytes(),
            Part::Raw(r) => r.bytes(),
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Part::Float(t) => &t.shape,
            Part::Raw(r) => &r.shape,
        }
    }
    fn dtype_name(&self) -> &str {
        match self {
            Part::Float(t) => t.dtype.name(),
            Part::Raw(r) => &r.dtype,
        }
    }
    fn storage(&self) -> &Storage {
        match self {
            Part::Float(t) => &t.storage,
            Part::Raw(r) => &r.storage,
        }
    }
}

fn take_any(
    floats: &mut HashMap<String, Tensor>,
    raws: &mut HashMap<String, RawTensor>,
    name: &str,
) -> Option<Part> {
    floats
        .remove(name)
        .map(Part::Float)
        .or_else(|| raws.remove(name).map(Part::Raw))
}

/// Checks one quantized module's arrays against `quant` and repacks them into blocks.
fn repack(
    dir: &Path,
    module: &str,
    quant: MlxQuant,
    weight: RawTensor,
    scales: Part,
    biases: Option<Part>,
) -> Result<Tensor> {
    let name = format!("{module}.weight");
    let err = |m: String| Error::tensor(dir, &name, m);
    if weight.dtype != "U32" || weight.shape.len() != 2 {
        return Err(err(format!(
            "packed codes must be a 2-D U32 tensor, found {} {:?}",
            weight.dtype, weight.shape
        )));
    }
    let (rows, words) = (weight.shape[0], weight.shape[1]);
    let cols = words * 32 / quant.bits() as usize;
    quant.check_row(cols).map_err(|e| err(e.to_string()))?;
    let float = match (quant.has_biases(), scales.dtype_name()) {
        (true, "F32") => MlxFloat::F32,
        (true, "F16") => MlxFloat::F16,
        (true, "BF16") => MlxFloat::BF16,
        (false, "U8") => MlxFloat::F32,
        (_, other) => {
            return Err(err(format!(
                "{} scales of dtype {other} do not fit the {} mode",
                module,
                quant.mode().name()
            )))
        }
    };
    let groups = cols / quant.group_size();
    if scales.shape() != [rows, groups] {
        return Err(err(format!(
            "scales have shape {:?}, {} bits in groups of {} imply [{rows}, {groups}]",
            scales.shape(),
            quant.bits(),
            quant.group_size()
        )));
    }
    match (&biases, quant.has_biases()) {
        (Some(b), true) if b.shape() == [rows, groups] && b.dtype_name() == scales.dtype_name() => {
        }
        (Some(b), true) => {
            return Err(err(format!(
                "biases are {} {:?}, expected {} [{rows}, {groups}]",
                b.dtype_name(),
                b.shape(),
                scales.dtype_name()
            )))
        }
        (None, true) => return Err(err("affine mode needs biases; none found".into())),
        (Some(_), false) => {
            return Err(err(format!(
                "has biases, which the {} mode does not use",
                quant.mode().name()
            )))
        }
        (None, false) => {}
    }
    let blocks = MlxBlocks::new(quant, float);
    let (pw, sw) = (
        4 * words,
        quant
            .scale_bytes_per_row(cols, float)
            .map_err(|e| err(e.to_string()))?,
    );
    let row_bytes = groups * blocks.block_bytes();
    let mut data = vec![0u8; rows * row_bytes];
    let (wb, sb) = (weight.bytes(), scales.bytes());
    let bb = biases.as_ref().map(|b| b.bytes());
    for (r, dst) in data.chunks_exact_mut(row_bytes).enumerate() {
        blocks.repack_row(
            &wb[r * pw..(r + 1) * pw],
            &sb[r * sw..(r + 1) * sw],
            bb.map(|b| &b[r * sw..(r + 1) * sw]),
            dst,
        );
    }
    release(&weight.storage);
    release(scales.storage());
    if let Some(b) = &biases {
        release(b.storage());
    }
    Ok(Tensor {
        name,
        dtype: DType::Mlx(blocks),
        shape: vec![rows, cols],
        storage: Storage::Owned(Arc::new(data)),
    })
}

/// Tells the kernel that a mapped range's pages will not be read again, so they leave the process's resident
/// set now instead of whenever memory runs short (the repacked copy replaced them).
fn release(storage: &Storage) {
    if let Storage::Mapped { map, range } = storage {
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end / PAGE * PAGE;
        if end > start {
            // SAFETY: the map is a read-only private file mapping: dropping its pages only means a later read
            // (there is none) would fetch them from the file again; no data can be lost.
            #[cfg(unix)]
            unsafe {
                let _ = map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                );
            }
            #[cfg(not(unix))]
            let _ = map;
        }
    }
}
