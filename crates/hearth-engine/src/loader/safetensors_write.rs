//! safetensors writer: one file or shards with a `model.safetensors.index.json`, written tensor by tensor.
//!
//! A conversion knows every output tensor's name, dtype and shape before it computes any of them, so the plan
//! is given up front ([`ShardedWriter::new`]): shards are cut from it, and each shard's header (with every
//! offset) is written before its first tensor's bytes. Tensors are then handed over one at a time in plan
//! order ([`ShardedWriter::write`]), so a model is never held in memory whole.
//!
//! Header: u64 little-endian length, then JSON `{"__metadata__": {...}, name: {dtype, shape, data_offsets}}`
//! padded with spaces to a multiple of 8 bytes (the format allows trailing spaces), so the data section
//! starts 8-byte aligned. Data offsets follow plan order; header keys are sorted, as mlx and the
//! `safetensors` package write them.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Element types a converted model stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StDtype {
    F32,
    F16,
    BF16,
    /// MLX's packed quantization codes.
    U32,
    /// MLX's E8M0 / E4M3 scales of the fp modes.
    U8,
}

impl StDtype {
    /// The dtype string of a safetensors header.
    pub fn name(self) -> &'static str {
        match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::U32 => "U32",
            StDtype::U8 => "U8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDtype::F32 | StDtype::U32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            StDtype::U8 => 1,
        }
    }
}

/// One planned output tensor.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: StDtype, shape: Vec<usize>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// Bytes of the tensor's data.
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// How the files are named and described.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `__metadata__.format`: `"mlx"` as mlx-lm writes, `"pt"` as transformers writes.
    pub format: &'static str,
    /// Most bytes of tensor data in one shard; a tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
    /// Write `model.safetensors.index.json` even for a single `model.safetensors` (mlx-lm does; transformers
    /// writes an index only for shards).
    pub always_index: bool,
    /// Extra entries of the index's `metadata` besides `total_size` (mlx-lm adds `total_parameters`).
    pub index_metadata: Map<String, Value>,
}

/// mlx-lm's and transformers' default shard limit: 5 GiB (mlx-lm) / 5 GB (transformers); 5 GiB here.
pub const DEFAULT_MAX_SHARD: u64 = 5 << 30;

struct Shard {
    file_name: String,
    /// Indices into the plan, in write order.
    tensors: Vec<usize>,
}

/// Writes a planned set of tensors into one or more safetensors files inside a folder.
pub struct ShardedWriter {
    dir: PathBuf,
    plan: Vec<TensorSpec>,
    shards: Vec<Shard>,
    opts: WriteOptions,
    /// Next plan index to be written.
    next: usize,
    /// Which shard is open and its writer.
    current: Option<(usize, BufWriter<std::fs::File>, PathBuf)>,
}

impl ShardedWriter {
    /// Plans shards over `plan` (cut in plan order, as mlx-lm's `make_shards` does: a new shard starts when
    /// the next tensor would push the current one past the limit). Nothing is written yet.
    pub fn new(dir: &Path, plan: Vec<TensorSpec>, opts: WriteOptions) -> Result<ShardedWriter> {
        let mut seen = std::collections::HashSet::new();
        for t in &plan {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::tensor(dir, &t.name, "planned twice"));
            }
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut size = 0u64;
        for (i, t) in plan.iter().enumerate() {
            let n = t.nbytes() as u64;
            if groups.is_empty() || size + n > opts.max_shard_bytes {
                groups.push(Vec::new());
                size = 0;
            }
            groups.last_mut().expect("pushed").push(i);
            size += n;
        }
        let count = groups.len();
        let shards = groups
            .into_iter()
            .enumerate()
            .map(|(i, tensors)| Shard {
                file_name: if count == 1 {
                    "model.safetensors".to_string()
                } else {
                    format!("model-{:05}-of-{count:05}.safetensors", i + 1)
                },
                tensors,
            })
            .collect();
        Ok(ShardedWriter {
            dir: dir.to_path_buf(),
            plan,
            shards,
            opts,
            next: 0,
            current: None,
        })
    }

    /// The plan, in the order [`ShardedWriter::write`] expects tensors.
    pub fn plan(&self) -> &[TensorSpec] {
        &self.plan
    }

    /// Writes the next planned tensor; `name` and the byte count must match the plan.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(spec) = self.plan.get(self.next) else {
            return Err(Error::tensor(&self.dir, name, "written beyond the plan"));
        };
        if spec.name != name || spec.nbytes() != bytes.len() {
            return Err(Error::Other(format!(
                "safetensors writer: expected {} ({} bytes) next, got {name} ({} bytes)",
                spec.name,
                spec.nbytes(),
                bytes.len()
            )));
        }
        let shard = self
            .shards
            .iter()
            .position(|s| s.tensors.contains(&self.next))
            .expect("every planned tensor is in a shard");
        if self.current.as_ref().map(|c| c.0) != Some(shard) {
            self.close_current()?;
            let path = self.dir.join(&self.shards[shard].file_name);
            let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let header = self.header(shard);
            w.write_all(&(header.len() as u64).to_le_bytes())
                .and_then(|_| w.write_all(&header))
                .map_err(|e| Error::io(&path, e))?;
            self.current = Some((shard, w, path));
        }
        let (_, w, path) = self.current.as_mut().expect("opened above");
        w.write_all(bytes).map_err(|e| Error::io(&*path, e))?;
        self.next += 1;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((_, mut w, path)) = self.current.take() {
            w.flush().map_err(|e| Error::io(&path, e))?;
            w.into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?
                .sync_all()
                .map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// The JSON header of shard `s`, padded with spaces to a multiple of 8 bytes.
    fn header(&self, s: usize) -> Vec<u8> {
        let mut entries: BTreeMap<&str, Value> = BTreeMap::new();
        let mut offset = 0usize;
        for &i in &self.shards[s].tensors {
            let t = &self.plan[i];
            let end = offset + t.nbytes();
            entries.insert(
                &t.name,
                json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut root = Map::new();
        root.insert("__metadata__".into(), json!({"format": self.opts.format}));
        for (k, v) in entries {
            root.insert(k.to_string(), v);
        }
        let mut bytes = serde_json::to_vec(&Value::Object(root)).expect("JSON of plain values");
        while !bytes.len().is_multiple_of(8) {
            bytes.push(b' ');
        }
        bytes
    }

    /// Checks that every planned tensor was written, closes the last shard and writes the index (when sharded
    /// or `always_index`). Returns the files written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        if self.next != self.plan.len() {
            return Err(Error::tensor(
                &self.dir,
                &self.plan[self.next].name,
                "planned but never written",
            ));
        }
        self.close_current()?;
        let mut files: Vec<PathBuf> = self
            .shards
            .iter()
            .map(|s| self.dir.join(&s.file_name))
            .collect();
        if self.shards.len() > 1 || self.opts.always_index {
            let mut map: BTreeMap<&str, &str> = BTreeMap::new();
            for s in &self.shards {
                for &i in &s.tensors {
                    map.insert(&self.plan[i].name, &s.file_name);
                }
            }
            let total: usize = self.plan.iter().map(TensorSpec::nbytes).sum();
            let mut meta = Map::new();
            meta.insert("total_size".into(), json!(total));
            for (k, v) in &self.opts.index_metadata {
                meta.insert(k.clone(), v.clone());
            }
            let index = json!({"metadata": meta, "weight_map": map});
            let path = self.dir.join("model.safetensors.index.json");
            write_json(&path, &index)?;
            files.push(path);
        }
        Ok(files)
    }
}

/// Writes `v` as JSON indented by 4 spaces (the layout mlx-lm and transformers use for config files).
pub fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).map_err(|e| Error::Other(e.to_string()))?;
    out.push(b'\n');
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::safetensors::open_folder;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-stw-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn shards_round_trip_through_the_reader() {
        let d = tmp("shards");
        let plan = vec![
            TensorSpec::new("b", StDtype::F32, vec![2, 3]),
            TensorSpec::new("a", StDtype::F32, vec![4]),
            TensorSpec::new("c", StDtype::F32, vec![3]),
        ];
        let opts = WriteOptions {
            format: "pt",
            max_shard_bytes: 30,
            always_index: false,
            index_metadata: Map::new(),
        };
        let mut w = ShardedWriter::new(&d, plan, opts).unwrap();
        w.write("b", &f32_bytes(&[1., 2., 3., 4., 5., 6.])).unwrap();
        assert!(w.write("c", &f32_bytes(&[0.; 3])).is_err(), "out of order");
        w.write("a", &f32_bytes(&[7., 8., 9., 10.])).unwrap();
        w.write("c", &f32_bytes(&[11., 12., 13.])).unwrap();
        let files = w.finish().unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(d.join("model-00001-of-00002.safetensors").exists());
        let read = open_folder(&d).unwrap();
        let mut all: Vec<(String, Vec<f32>)> = read
            .iter()
            .flat_map(|f| f.tensors.iter().map(|t| (t.name.clone(), t.to_f32())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all[0], ("a".into(), vec![7., 8., 9., 10.]));
        assert_eq!(all[1].1, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(all[2].1, vec![11., 12., 13.]);
        let raw = std::fs::read(d.join("model-00001-of-00002.safetensors")).unwrap();
        let hlen = u64::from_le_bytes(raw[..8].try_into().unwrap());
        assert_eq!(hlen % 8, 0);
    }

    #[test]
    fn missing_tensor_is_an_error() {
        let d = tmp("missing");
        let plan = vec![TensorSpec::new("a", StDtype::U8, vec![1])];
        let opts = WriteOptions {
            format: "mlx",
            max_shard_bytes: DEFAULT_MAX_SHARD,
            always_index: true,
            index_metadata: Map::new(),
        };
        let w = ShardedWriter::new(&d, plan, opts).unwrap();
        assert!(w.finish().is_err());
    }
}
