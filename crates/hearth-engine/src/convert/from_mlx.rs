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

use serde_json::Value;

use crate::convert::output::{Kind, Staged};
use crate::convert::source::{parse_float, sort_model_order, HfTensor, MlxWeight};
use crate::convert::to_hf::write_hf_folder;
use crate::convert::to_mlx::read_tokenizer_files;
use crate::convert::Progress;
use crate::error::{Error, Result};
use crate::loader::mlx::QuantConfig;
use crate::loader::safetensors;
use crate::tensor::mlx::MlxFloat;
use crate::tensor::{DType, Storage, Tensor};

/// One tensor of a safetensors file, any dtype, as stored.
struct Raw {
    dtype: String,
    shape: Vec<usize>,
    storage: Storage,
}

/// Every tensor of an MLX folder (model.safetensors or the shards its index names), as stored: read by the
/// engine's safetensors loader, which checks every offset and size.
fn read_raw(dir: &Path) -> Result<BTreeMap<String, Raw>> {
    let mut out = BTreeMap::new();
    for f in safetensors::open_folder(dir)? {
        for t in f.tensors {
            let dtype = t.dtype.name().to_string();
            out.insert(
                t.name,
                Raw {
                    dtype,
                    shape: t.shape,
                    storage: t.storage,
                },
            );
        }
        for r in f.raw {
            out.insert(
                r.name,
                Raw {
                    dtype: r.dtype,
                    shape: r.shape,
                    storage: r.storage,
                },
            );
        }
        if let Some((name, ty)) = f.unsupported.iter().find(|(n, _)| !out.contains_key(n)) {
            return Err(Error::format(
                &f.path,
                format!("tensor {name}: dtype {ty:?} is not converted"),
            ));
        }
    }
    Ok(out)
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
    let section = QuantConfig::from_config(&cfg_path, &config)?.ok_or_else(|| {
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
        let q = section.module(&module).ok_or_else(|| {
            Error::format(
                src,
                format!("{module} has scales, but config.json lists it as not quantized"),
            )
        })?;
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
    let files = read_tokenizer_files(src)?;
    let staged = Staged::new(dst, Kind::Folder, force)?;
    write_hf_folder(staged.path(), &config, &tensors, &files, progress)?;
    staged.commit()
}
