//! safetensors reader (single file or sharded with `model.safetensors.index.json`), memory-mapped.
//!
//! Layout: u64 little-endian header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}}`
//! (offsets relative to the end of the header; an optional `__metadata__` entry), then the data. Offsets, sizes
//! and dtypes are checked against the file before any tensor is handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};

/// Most a header may take: real headers are a few MB; this bounds memory on a corrupt length field.
const MAX_HEADER: u64 = 256 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// A tensor of a dtype hearth does not compute with directly (integers): MLX's packed codes (`U32`) and fp
/// scales (`U8`) are read through these and repacked by `loader::mlx`.
#[derive(Clone)]
pub struct RawTensor {
    pub name: String,
    /// The safetensors dtype name (`U32`, `U8`, `I64`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
}

impl RawTensor {
    /// The tensor's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, range } => &map[range.clone()],
            Storage::Owned(v) => v,
        }
    }
}

/// Every tensor of one safetensors file, in name order. Integer tensors are an error only when a model asks
/// for them, so they are listed in `unsupported` (and kept, with their bytes, in `raw`).
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub tensors: Vec<Tensor>,
    pub unsupported: Vec<(String, String)>,
    pub raw: Vec<RawTensor>,
}

/// Bytes per element of the integer and 8-bit float dtypes safetensors names, for the size check of raw
/// tensors.
fn raw_elem_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" => 2,
        "U32" | "I32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map of a model file that hearth never writes while mapped.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        let len = map.len() as u64;
        if len < 8 {
            return Err(Error::format(
                path,
                format!("truncated file: {len} bytes, no safetensors header"),
            ));
        }
        let hlen = u64::from_le_bytes(map[..8].try_into().unwrap());
        if hlen > MAX_HEADER || 8 + hlen > len {
            return Err(Error::format(
                path,
                format!("bad safetensors header length {hlen} for a file of {len} bytes (truncated or not safetensors)"),
            ));
        }
        let header = &map[8..8 + hlen as usize];
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| {
                Error::format(path, format!("safetensors header is not valid JSON: {e}"))
            })?;
        let data_start = 8 + hlen as usize;
        let data_len = map.len() - data_start;
        let mut tensors = Vec::new();
        let mut unsupported = Vec::new();
        let mut raw = Vec::new();
        for (name, v) in entries {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(v)
                .map_err(|err| Error::tensor(path, &name, format!("bad header entry: {err}")))?;
            let dtype = match e.dtype.as_str() {
                "F32" => Some(DType::F32),
                "F16" => Some(DType::F16),
                "BF16" => Some(DType::BF16),
                _ => None,
            };
            let numel = e
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| Error::tensor(path, &name, "shape overflows"))?;
            let elem = match dtype {
                Some(d) => d.block_bytes(),
                None => match raw_elem_bytes(&e.dtype) {
                    Some(b) => b,
                    None => {
                        unsupported.push((name, e.dtype));
                        continue;
                    }
                },
            };
            let nbytes = numel
                .checked_mul(elem)
                .ok_or_else(|| Error::tensor(path, &name, "shape overflows"))?;
            let [b, end] = e.data_offsets;
            if b > end || end > data_len {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("data [{b}, {end}) out of bounds: the data section has {data_len} bytes (truncated?)"),
                ));
            }
            if end - b != nbytes {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!(
                        "holds {} bytes but {:?} {} needs {nbytes}",
                        end - b,
                        e.shape,
                        e.dtype
                    ),
                ));
            }
            let storage = Storage::Mapped {
                map: map.clone(),
                range: data_start + b..data_start + end,
            };
            match dtype {
                Some(dtype) => tensors.push(Tensor {
                    name,
                    dtype,
                    shape: e.shape,
                    storage,
                }),
                None => {
                    unsupported.push((name.clone(), e.dtype.clone()));
                    raw.push(RawTensor {
                        name,
                        dtype: e.dtype,
                        shape: e.shape,
                        storage,
                    });
                }
            }
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            tensors,
            unsupported,
            raw,
        })
    }
}

/// Opens the safetensors of a Hugging Face folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (each shard opened once).
pub fn open_folder(dir: &Path) -> Result<Vec<SafetensorsFile>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index, "no weight_map object"))?;
        let mut shards: Vec<String> = Vec::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                Error::format(&index, format!("weight_map[{tensor}] is not a file name"))
            })?;
            if shard.contains('/') || shard.contains('\\') || shard.contains("..") {
                return Err(Error::format(
                    &index,
                    format!("shard name {shard:?} leaves the folder"),
                ));
            }
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        shards.sort();
        let files = shards
            .iter()
            .map(|s| SafetensorsFile::open(&dir.join(s)))
            .collect::<Result<Vec<_>>>()?;
        // Every tensor the index names must be in the shard it names.
        for (tensor, shard) in map {
            let f = files
                .iter()
                .find(|f| f.path.file_name().and_then(|n| n.to_str()) == shard.as_str());
            let found = f.is_some_and(|f| {
                f.tensors.iter().any(|t| &t.name == tensor)
                    || f.unsupported.iter().any(|(n, _)| n == tensor)
            });
            if !found {
                return Err(Error::tensor(
                    &index,
                    tensor,
                    format!("listed in the index but missing from {shard}"),
                ));
            }
        }
        Ok(files)
    } else if single.exists() {
        Ok(vec![SafetensorsFile::open(&single)?])
    } else {
        Err(Error::format(
            dir,
            "no model.safetensors or model.safetensors.index.json in this folder",
        ))
    }
}
