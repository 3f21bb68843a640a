//! MLX folder → Hugging Face folder: every quantized weight dequantized as `mlx_lm.convert -d` does, the
//! `quantization` sections dropped from config.json, tokenizer files copied.
//!
//! mlx-lm writes the Hugging Face tensor names, so only the quantized modules change: `X.weight` (u32
//! words), `X.scales` and (affine) `X.biases` become one float `X.weight`, decoded bit-exactly with mlx's own
//! arithmetic ([`crate::tensor::mlx::dequantize_row`]) into the scales' dtype in affine mode and bfloat16 in
//! the fp modes (mlx's defaults), unless a dtype is asked for. Each module's format comes from its entry in
//! config.json's `quantization` (mixed recipes) or the section's defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::convert::output::{Kind, Staged};
use crate::convert::source::{parse_float, sort_model_order, HfTensor, MlxWeight};
use crate::convert::to_hf::write_hf_folder;
use crate::convert::to_mlx::TOKENIZER_FILES;
use crate::convert::Progress;
use crate::error::{Error, Result};
use crate::tensor::mlx::{MlxFloat, MlxMode, MlxQuant};
use crate::tensor::{DType, Storage, Tensor};

/// One tensor of a safetensors file, any dtype, as stored.
struct Raw {
    dtype: String,
    shape: Vec<usize>,
    storage: Storage,
}

fn dtype_size(d: &str) -> Option<usize> {
    Some(match d {
        "F32" | "U32" | "I32" => 4,
        "F16" | "BF16" => 2,
        "U8" | "I8" => 1,
        _ => return None,
    })
}

/// Every tensor of an MLX folder (`model*.safetensors`, as mlx-lm loads them), with offsets checked.
fn read_raw(dir: &Path) -> Result<BTreeMap<String, Raw>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("model") && n.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::format(dir, "no model*.safetensors in this folder"));
    }
    let mut out = BTreeMap::new();
    for path in files {
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: a read-only map of a model file that nothing writes while it is converted.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?);
        let bad = |m: String| Error::format(&path, m);
        if map.len() < 8 {
            return Err(bad("truncated: no safetensors header".into()));
        }
        let hlen = u64::from_le_bytes(map[..8].try_into().expect("8 bytes")) as usize;
        if hlen > map.len() - 8 {
            return Err(bad(format!(
                "header length {hlen} past the end of the file"
            )));
        }
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&map[8..8 + hlen])
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let start = 8 + hlen;
        for (name, e) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = e["dtype"].as_str().unwrap_or("").to_string();
            let shape: Vec<usize> = e["shape"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default();
            let off: Vec<usize> = e["data_offsets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default();
            let size = dtype_size(&dtype)
                .ok_or_else(|| bad(format!("tensor {name}: dtype {dtype:?} is not converted")))?;
            let need = shape.iter().product::<usize>() * size;
            if off.len() != 2
                || off[1] < off[0]
                || off[1] - off[0] != need
                || start + off[1] > map.len()
            {
                return Err(bad(format!(
                    "tensor {name}: offsets {off:?} do not hold {shape:?} {dtype} in the file (truncated?)"
                )));
            }
            let storage = Storage::Mapped {
                map: map.clone(),
                range: start + off[0]..start + off[1],
            };
            out.insert(
                name,
                Raw {
                    dtype,
                    shape,
                    storage,
                },
            );
        }
    }
    Ok(out)
}

/// The format of module `module`: its own entry in the `quantization` section, else the section's defaults.
fn module_quant(section: &Value, module: &str) -> Result<MlxQuant> {
    let entry = section
        .get(module)
        .filter(|v| v.is_object())
        .unwrap_or(section);
    let mode = entry
        .get("mode")
        .and_then(|v| v.as_str())
        .map(MlxMode::from_name)
        .transpose()
        .map_err(|e| Error::Other(format!("{module}: {e}")))?
        .unwrap_or(MlxMode::Affine);
    let bits = entry.get("bits").and_then(|v| v.as_u64()).map(|b| b as u8);
    let group = entry
        .get("group_size")
        .and_then(|v| v.as_u64())
        .map(|g| g as usize);
    MlxQuant::with_defaults(mode, bits, group).map_err(|e| Error::Other(format!("{module}: {e}")))
}

fn float_named(d: &str) -> Option<MlxFloat> {
    parse_float(d)
}

/// Converts the MLX folder `src` into a Hugging Face folder at `dst`, dequantizing every quantized weight;
/// every tensor is cast to `dtype` when one is given.
pub fn mlx_to_hf(
    src: &Path,
    dst: &Path,
    dtype: Option<MlxFloat>,
    force: bool,
    progress: Progress,
) -> Result<PathBuf> {
    let cfg_path = src.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
    let section = config.get("quantization").cloned().ok_or_else(|| {
        Error::format(
            &cfg_path,
            "no `quantization` section: not an MLX-quantized folder",
        )
    })?;
    crate::models::config::ModelConfig::from_hf_config(&cfg_path, &config)?;
    let mut raw = read_raw(src)?;
    let modules: Vec<String> = raw
        .keys()
        .filter_map(|n| n.strip_suffix(".scales").map(str::to_string))
        .collect();
    let mut tensors = Vec::new();
    for module in modules {
        let q = module_quant(&section, &module)?;
        let take =
            |raw: &mut BTreeMap<String, Raw>, part: &str| raw.remove(&format!("{module}.{part}"));
        let (Some(w), Some(s)) = (take(&mut raw, "weight"), take(&mut raw, "scales")) else {
            return Err(Error::format(
                src,
                format!("{module}: scales without a weight"),
            ));
        };
        let b = take(&mut raw, "biases");
        if w.dtype != "U32" || w.shape.len() != 2 {
            return Err(Error::format(
                src,
                format!(
                    "{module}.weight is {} {:?}, not packed u32 words",
                    w.dtype, w.shape
                ),
            ));
        }
        let (rows, cols) = (w.shape[0], w.shape[1] * 32 / q.bits() as usize);
        let float = if q.has_biases() {
            float_named(&s.dtype).ok_or_else(|| {
                Error::format(src, format!("{module}.scales has dtype {}", s.dtype))
            })?
        } else {
            MlxFloat::BF16
        };
        let weight = MlxWeight {
            quant: q,
            float,
            packed: w.storage,
            scales: s.storage,
            biases: b.map(|b| b.storage),
        };
        let t = HfTensor::mlx(format!("{module}.weight"), rows, cols, weight, float)?;
        tensors.push(match dtype {
            Some(d) => t.cast(d),
            None => t,
        });
    }
    for (name, r) in raw {
        let dt = match r.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(Error::format(
                    src,
                    format!("tensor {name} has dtype {other} and no scales"),
                ))
            }
        };
        let t = Tensor {
            name: name.clone(),
            dtype: dt,
            shape: r.shape,
            storage: r.storage,
        };
        let t = HfTensor::plain(name, t)?;
        tensors.push(match dtype {
            Some(d) => t.cast(d),
            None => t,
        });
    }
    sort_model_order(&mut tensors);
    if let Some(obj) = config.as_object_mut() {
        obj.remove("quantization");
        obj.remove("quantization_config");
        if let Some(d) = dtype {
            obj.insert(
                "torch_dtype".into(),
                Value::from(crate::convert::source::torch_name(d)),
            );
        }
    }
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
    let staged = Staged::new(dst, Kind::Folder, force)?;
    write_hf_folder(staged.path(), &config, &tensors, &files, progress)?;
    staged.commit()
}
