//! GGUF v3 writer, streaming: the header (metadata and tensor infos with precomputed offsets) is written
//! first, then each tensor's bytes in order, so a converter holds one tensor (or one slice of one) at a time.
//!
//! Layout written (the same one [`super::gguf`] reads): magic `GGUF`, version 3, tensor count u64, metadata
//! count u64, metadata key/values in insertion order, tensor infos (name, rank, dims fastest-first, GGML type
//! id, offset from the data section), zero padding to the alignment, then every tensor's bytes, each padded with
//! zeros to the alignment (32 unless `general.alignment` says otherwise). All integers are little-endian.
//!
//! Usage: build a [`GgufHeader`] (`set` metadata, `add_tensor` infos), call [`GgufHeader::write`] to get a
//! [`GgufWriter`], feed it every tensor's bytes with [`GgufWriter::write_data`] (in pieces if wanted), then
//! [`GgufWriter::finish`]. The writer checks that exactly the promised bytes arrive, in order.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::gguf::MetaValue;
use crate::error::{Error, Result};
use crate::tensor::DType;

const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's entry in the header. `shape` is hearth's row-major order (`[rows, cols]`); GGUF stores it
/// reversed (fastest dimension first), which [`GgufHeader::write`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Bytes of this tensor's data (rows are whole blocks, checked by [`GgufHeader::add_tensor`]).
    pub fn nbytes(&self) -> u64 {
        let rows: usize = self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product();
        let cols = self.shape.last().copied().unwrap_or(1);
        (rows as u64) * self.dtype.bytes_for(cols).unwrap_or(0) as u64
    }
}

/// Everything that goes before the tensor data: metadata and tensor infos.
#[derive(Clone, Debug, Default)]
pub struct GgufHeader {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
}

fn align_up(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

impl GgufHeader {
    pub fn new() -> GgufHeader {
        GgufHeader::default()
    }

    /// Sets a metadata key (replacing an earlier value, keeping its position).
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// A metadata value set earlier.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Metadata in insertion order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// Tensors in the order their data must be written.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Declares a tensor. Its rows must be whole blocks of its type, its rank 1 to 4, its name new.
    pub fn add_tensor(&mut self, info: TensorInfo) -> Result<()> {
        let bad = |m: String| Err(Error::tensor(PathBuf::from("<gguf writer>"), &info.name, m));
        if info.shape.is_empty() || info.shape.len() > 4 {
            return bad(format!("rank {} (GGUF allows 1 to 4)", info.shape.len()));
        }
        let cols = *info.shape.last().unwrap();
        if info.dtype.bytes_for(cols).is_none() {
            return bad(format!(
                "row of {cols} is not whole {} blocks of {}",
                info.dtype,
                info.dtype.block_elems()
            ));
        }
        if self.tensors.iter().any(|t| t.name == info.name) {
            return bad("declared twice".into());
        }
        self.tensors.push(info);
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.get("general.alignment")
            .and_then(|v| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Each tensor's offset from the start of the data section, and the section's total size (padded).
    pub fn data_layout(&self) -> (Vec<u64>, u64) {
        let a = self.alignment();
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut pos = 0u64;
        for t in &self.tensors {
            offsets.push(pos);
            pos = align_up(pos + t.nbytes(), a);
        }
        (offsets, pos)
    }

    /// Writes the header (and its padding) to `out` and returns the writer that takes the tensor data.
    /// `path` only names the destination in errors.
    pub fn write<W: Write>(self, mut out: W, path: &Path) -> Result<GgufWriter<W>> {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(b"GGUF");
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut buf, k);
            let ty =
                value_type(v).map_err(|m| Error::format(path, format!("metadata {k}: {m}")))?;
            buf.extend_from_slice(&ty.to_le_bytes());
            put_value(&mut buf, v)
                .map_err(|m| Error::format(path, format!("metadata {k}: {m}")))?;
        }
        let (offsets, _) = self.data_layout();
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                buf.extend_from_slice(&(d as u64).to_le_bytes());
            }
            let id = t.dtype.ggml_id().ok_or_else(|| {
                Error::format(
                    path,
                    format!("tensor {}: GGUF cannot hold {} weights", t.name, t.dtype),
                )
            })?;
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&off.to_le_bytes());
        }
        let a = self.alignment();
        buf.resize(align_up(buf.len() as u64, a) as usize, 0);
        out.write_all(&buf).map_err(|e| Error::io(path, e))?;
        Ok(GgufWriter {
            out,
            path: path.to_path_buf(),
            alignment: a,
            tensors: self.tensors,
            current: 0,
            written: 0,
        })
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// GGUF's type id of a value (arrays: 9).
fn value_type(v: &MetaValue) -> std::result::Result<u32, String> {
    Ok(match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) | MetaValue::Packed(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    })
}

fn put_value(buf: &mut Vec<u8>, v: &MetaValue) -> std::result::Result<(), String> {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.push(*x as u8),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(*x as u8),
        MetaValue::String(s) => put_str(buf, s),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(items) => {
            // An empty array's element type is not recoverable; u32 reads back as an empty array anyway.
            let elem = match items.first() {
                Some(first) => value_type(first)?,
                None => 4,
            };
            buf.extend_from_slice(&elem.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                if value_type(it)? != elem {
                    return Err("array items of different types".into());
                }
                // A nested array's item is its own element type, count and items: what put_value writes.
                put_value(buf, it)?;
            }
        }
        MetaValue::Packed(_) => {
            let n = v.array_len().unwrap_or(0);
            let items: Vec<MetaValue> = (0..n)
                .map(|i| match v {
                    MetaValue::Packed(p) => p.get(i).ok_or("packed array item"),
                    _ => unreachable!(),
                })
                .collect::<std::result::Result<_, _>>()?;
            put_value(buf, &MetaValue::Array(items))?;
        }
    }
    Ok(())
}

/// Takes the tensor data after [`GgufHeader::write`], in declaration order, and pads between tensors.
pub struct GgufWriter<W: Write> {
    out: W,
    path: PathBuf,
    alignment: u64,
    tensors: Vec<TensorInfo>,
    /// Index of the tensor being written.
    current: usize,
    /// Bytes of it written so far.
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// The tensor whose bytes come next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.current)
    }

    /// Appends `bytes` to the current tensor; a tensor may arrive in any number of pieces. When its last byte
    /// arrives, the padding follows and the next tensor becomes current. Bytes beyond the tensor are an error.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(Error::format(
                &self.path,
                "tensor data written after the last tensor",
            ));
        };
        let need = t.nbytes();
        if self.written + bytes.len() as u64 > need {
            return Err(Error::tensor(
                &self.path,
                &t.name,
                format!(
                    "{} bytes written but the header promised {need}",
                    self.written + bytes.len() as u64
                ),
            ));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += bytes.len() as u64;
        if self.written == need {
            let pad = align_up(need, self.alignment) - need;
            self.out
                .write_all(&vec![0u8; pad as usize])
                .map_err(|e| Error::io(&self.path, e))?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks every tensor was written in full, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        // A zero-byte tensor is complete without any write.
        while self
            .tensors
            .get(self.current)
            .is_some_and(|t| t.nbytes() == 0)
        {
            self.current += 1;
        }
        if let Some(t) = self.tensors.get(self.current) {
            return Err(Error::tensor(
                &self.path,
                &t.name,
                format!("only {} of {} bytes written", self.written, t.nbytes()),
            ));
        }
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::gguf::GgufFile;

    fn all_values() -> Vec<(&'static str, MetaValue)> {
        let strings: Vec<MetaValue> = (0..1500)
            .map(|i| MetaValue::String(format!("tok{i}é")))
            .collect();
        let ints: Vec<MetaValue> = (0..2000).map(MetaValue::I32).collect();
        vec![
            ("u8", MetaValue::U8(200)),
            ("i8", MetaValue::I8(-100)),
            ("u16", MetaValue::U16(60000)),
            ("i16", MetaValue::I16(-30000)),
            ("u32", MetaValue::U32(4_000_000_000)),
            ("i32", MetaValue::I32(-2_000_000_000)),
            ("f32", MetaValue::F32(1.5e-6)),
            ("bool", MetaValue::Bool(true)),
            ("string", MetaValue::String("héllo\nworld".into())),
            ("u64", MetaValue::U64(u64::MAX - 1)),
            ("i64", MetaValue::I64(i64::MIN + 1)),
            ("f64", MetaValue::F64(std::f64::consts::PI)),
            (
                "short.strings",
                MetaValue::Array(vec![
                    MetaValue::String("a b".into()),
                    MetaValue::String(String::new()),
                ]),
            ),
            (
                "short.floats",
                MetaValue::Array(vec![MetaValue::F32(1.0), MetaValue::F32(-2.5)]),
            ),
            (
                "nested",
                MetaValue::Array(vec![
                    MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
                    MetaValue::Array(vec![MetaValue::U8(3)]),
                ]),
            ),
            ("long.strings", MetaValue::Array(strings)),
            ("long.ints", MetaValue::Array(ints)),
        ]
    }

    #[test]
    fn round_trips_through_hearths_reader() {
        let dir = std::env::temp_dir().join(format!("hearth-gguf-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rt.gguf");
        let mut h = GgufHeader::new();
        for (k, v) in all_values() {
            h.set(k, v);
        }
        h.set("u8", MetaValue::U8(201)); // replaced in place
                                         // [3, 5] f32 (60 bytes: padded), [2, 64] Q8_0 (136 bytes), [7] f16 (14 bytes), [2, 3, 32] Q4_0.
        let specs = [
            ("a", DType::F32, vec![3, 5]),
            ("b", DType::Q8_0, vec![2, 64]),
            ("c", DType::F16, vec![7]),
            ("d", DType::Q4_0, vec![2, 3, 32]),
        ];
        let mut datas = Vec::new();
        for (i, (n, dt, shape)) in specs.iter().enumerate() {
            let info = TensorInfo {
                name: n.to_string(),
                dtype: *dt,
                shape: shape.clone(),
            };
            datas.push(
                (0..info.nbytes())
                    .map(|b| (b as u8).wrapping_mul(7).wrapping_add(i as u8))
                    .collect::<Vec<u8>>(),
            );
            h.add_tensor(info).unwrap();
        }
        assert!(h
            .add_tensor(TensorInfo {
                name: "a".into(),
                dtype: DType::F32,
                shape: vec![1]
            })
            .is_err());
        assert!(h
            .add_tensor(TensorInfo {
                name: "odd".into(),
                dtype: DType::Q8_0,
                shape: vec![2, 33]
            })
            .is_err());
        let file = std::fs::File::create(&path).unwrap();
        let mut w = h.write(std::io::BufWriter::new(file), &path).unwrap();
        for d in &datas {
            // In two pieces, to exercise partial writes.
            let (x, y) = d.split_at(d.len() / 3);
            w.write_data(x).unwrap();
            w.write_data(y).unwrap();
        }
        assert!(w.write_data(&[0]).is_err());
        w.finish().unwrap();

        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.version, 3);
        let mut want = all_values();
        want[0].1 = MetaValue::U8(201);
        assert_eq!(g.metadata.len(), want.len());
        for (k, v) in &want {
            let got = g.get(k).unwrap_or_else(|| panic!("{k} missing"));
            match v {
                MetaValue::Array(items) => {
                    assert_eq!(got.array_len(), Some(items.len()), "{k}");
                    for (i, it) in items.iter().enumerate() {
                        match it {
                            MetaValue::String(s) => assert_eq!(got.str_at(i), Some(s.as_str())),
                            MetaValue::Array(_) => assert_eq!(&got.as_array().unwrap()[i], it),
                            _ => assert_eq!(got.f64_at(i), it.as_f64(), "{k}[{i}]"),
                        }
                    }
                }
                _ => assert_eq!(got, v, "{k}"),
            }
        }
        for ((n, dt, shape), d) in specs.iter().zip(&datas) {
            let t = g.tensors.iter().find(|t| t.name == *n).unwrap();
            assert_eq!((t.dtype, &t.shape), (*dt, shape));
            assert_eq!(t.bytes(), &d[..], "{n}");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len() % 32, 0);

        // A file read back and written again is byte-identical (packed arrays included).
        let mut h2 = GgufHeader::new();
        for (k, _) in all_values() {
            h2.set(k, g.get(k).unwrap().clone());
        }
        for t in &g.tensors {
            h2.add_tensor(TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .unwrap();
        }
        let mut w2 = h2.write(Vec::new(), &path).unwrap();
        for t in &g.tensors {
            w2.write_data(t.bytes()).unwrap();
        }
        let again = w2.finish().unwrap();
        assert_eq!(again, std::fs::read(&path).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_data_is_an_error() {
        let mut h = GgufHeader::new();
        h.add_tensor(TensorInfo {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![4],
        })
        .unwrap();
        let mut w = h.write(Vec::new(), Path::new("mem")).unwrap();
        w.write_data(&[0; 8]).unwrap();
        let err = w.finish().err().unwrap().to_string();
        assert!(err.contains("only 8 of 16"), "{err}");
    }
}
