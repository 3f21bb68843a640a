//! GGUF reader (versions 2 and 3), memory-mapped.
//!
//! Layout: magic `GGUF`, version u32, tensor count u64, metadata count u64; then metadata key/value pairs
//! (key: u64 length + UTF-8 bytes; value: u32 type + payload, arrays nested), then tensor infos (name, rank u32,
//! dims u64 fastest-first, GGML type u32, offset u64 relative to the data section), then padding to
//! `general.alignment` (default 32) and the data section. Every length, count and offset is checked against the
//! file size before it is used, so a truncated or corrupt file is an error, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value, with GGUF's types kept so that a writer could round-trip them.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    /// A long array of scalars or strings (a vocabulary), kept as its encoded bytes: a 262,144-entry
    /// vocabulary as tagged values took about 34 MB beside the tokenizer's own tables. Read it with
    /// [`MetaValue::array_len`], [`MetaValue::str_at`], [`MetaValue::i64_at`], [`MetaValue::f64_at`].
    Packed(PackedArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// Arrays longer than this (of a scalar or string type) are parsed into a [`PackedArray`].
const PACK_MIN: usize = 1024;

/// An array of one GGUF scalar or string type, stored compactly: scalars as their little-endian bytes,
/// strings as their concatenated UTF-8 text (validated when parsed) with each one's end offset.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedArray {
    /// The GGUF type id of the elements (0-7 and 10-12 scalars, 8 strings).
    elem_ty: u32,
    len: usize,
    /// Scalars: `len` elements of their width. Strings: the texts one after another.
    bytes: Vec<u8>,
    /// Strings only: where each text ends in `bytes`.
    ends: Vec<u32>,
}

impl PackedArray {
    /// Element `i` as a [`MetaValue`] (a string element is copied).
    pub fn get(&self, i: usize) -> Option<MetaValue> {
        if i >= self.len {
            return None;
        }
        if self.elem_ty == 8 {
            return self.str_at(i).map(|s| MetaValue::String(s.to_string()));
        }
        let w = scalar_width(self.elem_ty)?;
        let b = &self.bytes[i * w..(i + 1) * w];
        let mut le = [0u8; 8];
        le[..w].copy_from_slice(b);
        let v = u64::from_le_bytes(le);
        Some(match self.elem_ty {
            0 => MetaValue::U8(v as u8),
            1 => MetaValue::I8(v as u8 as i8),
            2 => MetaValue::U16(v as u16),
            3 => MetaValue::I16(v as u16 as i16),
            4 => MetaValue::U32(v as u32),
            5 => MetaValue::I32(v as u32 as i32),
            6 => MetaValue::F32(f32::from_bits(v as u32)),
            7 => MetaValue::Bool(v != 0),
            10 => MetaValue::U64(v),
            11 => MetaValue::I64(v as i64),
            12 => MetaValue::F64(f64::from_bits(v)),
            _ => return None,
        })
    }

    /// String element `i`, without copying.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        if self.elem_ty != 8 || i >= self.len {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        std::str::from_utf8(&self.bytes[start..self.ends[i] as usize]).ok()
    }
}

/// Bytes of one scalar of GGUF type `ty` (None for strings and arrays).
fn scalar_width(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

impl MetaValue {
    /// Any integer type as u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            MetaValue::Bool(v) => Some(v as u64),
            _ => None,
        }
    }
    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Any number as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// A short array's items (long ones are [`MetaValue::Packed`]: use the `*_at` accessors, which read
    /// both kinds).
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The length of an array of either kind.
    pub fn array_len(&self) -> Option<usize> {
        match self {
            MetaValue::Array(a) => Some(a.len()),
            MetaValue::Packed(p) => Some(p.len),
            _ => None,
        }
    }
    /// String item `i` of an array of either kind.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        match self {
            MetaValue::Array(a) => a.get(i)?.as_str(),
            MetaValue::Packed(p) => p.str_at(i),
            _ => None,
        }
    }
    /// Integer item `i` of an array of either kind.
    pub fn i64_at(&self, i: usize) -> Option<i64> {
        match self {
            MetaValue::Array(a) => a.get(i)?.as_i64(),
            MetaValue::Packed(p) => p.get(i)?.as_i64(),
            _ => None,
        }
    }
    /// Numeric item `i` of an array of either kind.
    pub fn f64_at(&self, i: usize) -> Option<f64> {
        match self {
            MetaValue::Array(a) => a.get(i)?.as_f64(),
            MetaValue::Packed(p) => p.get(i)?.as_f64(),
            _ => None,
        }
    }
}

/// A parsed GGUF file: its metadata and its tensors, whose bytes stay in the memory map.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order, shapes in row-major (outermost-first) order.
    pub tensors: Vec<Tensor>,
    /// Tensors whose GGML type hearth does not run: name and type name. Reported when a model needs one.
    pub unsupported: Vec<(String, String)>,
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; hearth never writes model files while they are mapped, and a file
        // truncated under us by another process is outside what any mmap-based loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        parse(path, Arc::new(map))
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }
    /// The `general.architecture` key.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

/// A bounds-checked little-endian reader over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::format(
                    self.path,
                    format!(
                    "truncated file: {what} needs {n} bytes at offset {} but the file has {} bytes",
                    self.pos,
                    self.buf.len()
                ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A count that must fit in the rest of the file at `min_item_bytes` each (so a corrupt count cannot make
    /// us allocate terabytes).
    fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > left {
            return Err(Error::format(
                self.path,
                format!(
                    "corrupt {what}: {n} items cannot fit in the {left} bytes left in the file"
                ),
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::format(
                self.path,
                format!("{what} is not valid UTF-8 (offset {})", self.pos - n),
            )
        })
    }
    /// `n` elements of scalar or string type `elem_ty` into a [`PackedArray`] (strings validated as UTF-8).
    fn packed(&mut self, elem_ty: u32, n: usize, key: &str) -> Result<MetaValue> {
        let (bytes, ends) = if elem_ty == 8 {
            let mut bytes = Vec::new();
            let mut ends = Vec::with_capacity(n);
            for i in 0..n {
                let len = self.count(1, key)?;
                let text = self.take(len, key)?;
                if std::str::from_utf8(text).is_err() {
                    return Err(Error::format(
                        self.path,
                        format!("{key}[{i}] is not valid UTF-8 (offset {})", self.pos - len),
                    ));
                }
                bytes.extend_from_slice(text);
                let end = u32::try_from(bytes.len()).map_err(|_| {
                    Error::format(self.path, format!("{key}: more than 4 GiB of text"))
                })?;
                ends.push(end);
            }
            (bytes, ends)
        } else {
            let w = scalar_width(elem_ty).expect("checked by the caller");
            let raw = self.take(n * w, key)?;
            if elem_ty == 7 {
                if let Some(b) = raw.iter().find(|&&b| b > 1) {
                    return Err(Error::format(
                        self.path,
                        format!("metadata {key}: bool byte {b}"),
                    ));
                }
            }
            (raw.to_vec(), Vec::new())
        };
        Ok(MetaValue::Packed(PackedArray {
            elem_ty,
            len: n,
            bytes,
            ends,
        }))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8(key)?),
            1 => MetaValue::I8(self.u8(key)? as i8),
            2 => MetaValue::U16(self.u16(key)?),
            3 => MetaValue::I16(self.u16(key)? as i16),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(Error::format(
                        self.path,
                        format!("metadata {key}: bool byte {b}"),
                    ))
                }
            },
            8 => MetaValue::String(self.string(key)?),
            9 => {
                if depth > 4 {
                    return Err(Error::format(
                        self.path,
                        format!("metadata {key}: arrays nested too deep"),
                    ));
                }
                let elem_ty = self.u32(key)?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(Error::format(
                            self.path,
                            format!("metadata {key}: unknown array type {t}"),
                        ))
                    }
                };
                let n = self.count(min, key)?;
                if n > PACK_MIN && elem_ty != 9 {
                    return self.packed(elem_ty, n, key);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            t => {
                return Err(Error::format(
                    self.path,
                    format!("metadata {key}: unknown value type {t}"),
                ))
            }
        })
    }
}

fn parse(path: &Path, map: Arc<memmap2::Mmap>) -> Result<GgufFile> {
    let buf: &[u8] = &map;
    let mut c = Cursor { buf, pos: 0, path };
    let magic = c.take(4, "magic")?;
    if magic != MAGIC {
        return Err(Error::format(
            path,
            format!("bad magic {magic:02x?}: not a GGUF file"),
        ));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::unsupported(
            path,
            format!("GGUF version {version} (hearth reads 2 and 3)"),
        ));
    }
    let n_tensors = c.count(24, "tensor count")?;
    let n_kv = c.count(13, "metadata count")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(Error::format(
                    path,
                    format!("general.alignment {v:?} is not a power of two"),
                ))
            }
        },
    };

    struct Info {
        name: String,
        dims: Vec<u64>,
        ty: u32,
        offset: u64,
    }
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let rank = c.u32(&name)? as usize;
        if rank > 4 {
            return Err(Error::tensor(
                path,
                &name,
                format!("rank {rank} (GGUF allows at most 4)"),
            ));
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(c.u64(&name)?);
        }
        let ty = c.u32(&name)?;
        let offset = c.u64(&name)?;
        infos.push(Info {
            name,
            dims,
            ty,
            offset,
        });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    let mut unsupported = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for info in infos {
        if !seen.insert(info.name.clone()) {
            return Err(Error::tensor(path, &info.name, "appears twice"));
        }
        let Some(dtype) = DType::from_ggml_id(info.ty) else {
            // Its size is unknown to hearth, but its start must still lie in the file.
            if data_start.saturating_add(info.offset) > file_len {
                return Err(Error::tensor(
                    path,
                    &info.name,
                    "tensor data starts past the end of the file (truncated?)",
                ));
            }
            unsupported.push((info.name, DType::ggml_id_name(info.ty)));
            continue;
        };
        let numel = info.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let cols = info.dims.first().copied().unwrap_or(1);
        let bad = |msg: String| Error::tensor(path, &info.name, msg);
        let numel = numel.ok_or_else(|| bad(format!("dimensions {:?} overflow", info.dims)))?;
        if cols % dtype.block_elems() as u64 != 0 {
            return Err(bad(format!(
                "row of {cols} elements is not a whole number of {dtype} blocks of {}",
                dtype.block_elems()
            )));
        }
        let nbytes = (numel / dtype.block_elems() as u64)
            .checked_mul(dtype.block_bytes() as u64)
            .ok_or_else(|| bad("size overflows".into()))?;
        if info.offset % alignment != 0 {
            return Err(bad(format!(
                "offset {} is not aligned to {alignment}",
                info.offset
            )));
        }
        let start = data_start
            .checked_add(info.offset)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let end = start
            .checked_add(nbytes)
            .ok_or_else(|| bad("offset overflows".into()))?;
        if end > file_len {
            return Err(bad(format!(
                "tensor data [{start}, {end}) is out of bounds: the file has {file_len} bytes (truncated?)"
            )));
        }
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        tensors.push(Tensor {
            name: info.name,
            dtype,
            shape,
            storage: Storage::Mapped {
                map: map.clone(),
                range: start as usize..end as usize,
            },
        });
    }
    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        metadata,
        tensors,
        unsupported,
    })
}
