//! A model's tensors as Hugging Face names and lays them out, read one row at a time from wherever they live.
//!
//! Both writers of Hugging Face-style folders (plain safetensors and MLX) take their input in this one form,
//! so a GGUF file is converted by describing how each of its tensors maps back (a new name, llama.cpp's q/k
//! row order undone, Gemma's `1 + w` norm gains shifted back) rather than by materializing a Hugging Face
//! copy first. Rows are dequantized on demand from the memory map: a tensor never sits in memory as f32.

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::loader::safetensors_write::StDtype;
use crate::tensor::mlx::{dequantize_row, MlxFloat, MlxQuant};
use crate::tensor::{quants, DType, Storage, Tensor};

/// How the rows of the stored tensor map onto the Hugging Face rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOrder {
    /// Row `r` is stored row `r`.
    Same,
    /// llama.cpp's converter reorders each head's q/k rows so that rotary pairs are adjacent: within a head of
    /// `d` rows, Hugging Face row `s * d/2 + i` (half `s`, index `i`) is stored at row `2 * i + s`. This is
    /// the inverse, for `heads` heads.
    Unpermute { heads: usize },
}

/// One output tensor: its Hugging Face name, shape and float dtype, and where its values come from.
#[derive(Clone, Debug)]
pub struct HfTensor {
    pub name: String,
    /// Row-major Hugging Face shape (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    /// The dtype the tensor has in the output; every value read is exact in it.
    pub dtype: MlxFloat,
    src: Src,
    rows: RowOrder,
    /// Added to every value (Gemma's GGUF norm gains hold `1 + w`; Hugging Face holds `w`).
    offset: f32,
}

/// Where a tensor's values are stored.
#[derive(Clone, Debug)]
enum Src {
    /// A tensor of a type hearth reads (floats, GGML blocks).
    Stored(Tensor),
    /// An MLX-quantized weight: its packed words, scales and biases.
    Mlx(std::sync::Arc<MlxWeight>),
}

/// The three parts of an MLX-quantized `[rows, cols]` weight, as stored bytes.
pub struct MlxWeight {
    pub quant: MlxQuant,
    /// The dtype of affine scales and biases (and of the dequantized values).
    pub float: MlxFloat,
    /// `rows * cols * bits / 32` u32 words, little-endian.
    pub packed: Storage,
    pub scales: Storage,
    pub biases: Option<Storage>,
}

impl std::fmt::Debug for MlxWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MlxWeight({:?}, {:?})", self.quant, self.float)
    }
}

fn storage_bytes(s: &Storage) -> &[u8] {
    match s {
        Storage::Mapped { map, range } => &map[range.clone()],
        Storage::Owned(v) => v,
    }
}

/// The float dtype of a plain tensor, or None for block-quantized types.
pub fn float_of(dtype: DType) -> Option<MlxFloat> {
    match dtype {
        DType::F32 => Some(MlxFloat::F32),
        DType::F16 => Some(MlxFloat::F16),
        DType::BF16 => Some(MlxFloat::BF16),
        _ => None,
    }
}

/// The safetensors dtype of a float dtype.
pub fn st_dtype(f: MlxFloat) -> StDtype {
    match f {
        MlxFloat::F32 => StDtype::F32,
        MlxFloat::F16 => StDtype::F16,
        MlxFloat::BF16 => StDtype::BF16,
    }
}

/// Parses `f32`/`float32`, `f16`/`float16`, `bf16`/`bfloat16` (CLI flags and config.json spellings).
pub fn parse_float(name: &str) -> Option<MlxFloat> {
    match name {
        "f32" | "float32" | "F32" => Some(MlxFloat::F32),
        "f16" | "float16" | "F16" => Some(MlxFloat::F16),
        "bf16" | "bfloat16" | "BF16" => Some(MlxFloat::BF16),
        _ => None,
    }
}

/// transformers' name of a float dtype (`torch_dtype` / `dtype` in config.json).
pub fn torch_name(f: MlxFloat) -> &'static str {
    match f {
        MlxFloat::F32 => "float32",
        MlxFloat::F16 => "float16",
        MlxFloat::BF16 => "bfloat16",
    }
}

/// Appends `values` (exact in `f`, or rounded to nearest even) as little-endian `f` bytes.
pub fn push_floats(f: MlxFloat, values: &[f32], out: &mut Vec<u8>) {
    match f {
        MlxFloat::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        MlxFloat::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        MlxFloat::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
    }
}

impl HfTensor {
    /// A tensor read as it is stored (a Hugging Face safetensors tensor), keeping its float dtype.
    pub fn plain(name: impl Into<String>, src: Tensor) -> Result<HfTensor> {
        let name = name.into();
        let dtype = float_of(src.dtype).ok_or_else(|| {
            Error::Other(format!(
                "tensor {name}: {} is not a float type; only F32, F16 and BF16 convert",
                src.dtype
            ))
        })?;
        Ok(HfTensor {
            name,
            shape: src.shape.clone(),
            dtype,
            src: Src::Stored(src),
            rows: RowOrder::Same,
            offset: 0.0,
        })
    }

    /// An MLX-quantized weight of Hugging Face shape `[rows, cols]`, dequantized as `mx.dequantize` does
    /// (into `w.float` for affine mode) and output in `dtype`. The byte sizes are checked here.
    pub fn mlx(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        w: MlxWeight,
        dtype: MlxFloat,
    ) -> Result<HfTensor> {
        let name = name.into();
        let q = &w.quant;
        let bad = |what: &str, got: usize, want: usize| {
            Error::Other(format!(
                "tensor {name}: {what} holds {got} bytes, {rows}x{cols} at {q:?} needs {want}"
            ))
        };
        let err =
            |e: crate::tensor::mlx::MlxQuantError| Error::Other(format!("tensor {name}: {e}"));
        let pb = 4 * q.packed_words_per_row(cols).map_err(err)?;
        let sb = q.scale_bytes_per_row(cols, w.float).map_err(err)?;
        let bb = q.bias_bytes_per_row(cols, w.float).map_err(err)?;
        let check = |what: &str, s: &Storage, per: usize| {
            let got = storage_bytes(s).len();
            if got == rows * per {
                Ok(())
            } else {
                Err(bad(what, got, rows * per))
            }
        };
        check("weight", &w.packed, pb)?;
        check("scales", &w.scales, sb)?;
        match (&w.biases, q.has_biases()) {
            (Some(b), true) => check("biases", b, bb)?,
            (None, false) => {}
            _ => {
                return Err(Error::Other(format!(
                    "tensor {name}: biases {} for {} mode",
                    if w.biases.is_some() {
                        "present"
                    } else {
                        "missing"
                    },
                    q.mode().name()
                )))
            }
        }
        Ok(HfTensor {
            name,
            shape: vec![rows, cols],
            dtype,
            src: Src::Mlx(std::sync::Arc::new(w)),
            rows: RowOrder::Same,
            offset: 0.0,
        })
    }

    /// A tensor of any stored type (GGUF block types are dequantized), mapped back by `rows` and `offset`,
    /// output in `dtype`.
    pub fn mapped(
        name: impl Into<String>,
        src: Tensor,
        rows: RowOrder,
        offset: f32,
        dtype: MlxFloat,
    ) -> Result<HfTensor> {
        let name = name.into();
        if let RowOrder::Unpermute { heads } = rows {
            let n = src.shape.first().copied().unwrap_or(0);
            if heads == 0 || n % heads != 0 || (n / heads) % 2 != 0 {
                return Err(Error::Other(format!(
                    "tensor {name}: {n} rows do not split into {heads} heads of an even size"
                )));
            }
        }
        Ok(HfTensor {
            name,
            shape: src.shape.clone(),
            dtype,
            src: Src::Stored(src),
            rows,
            offset,
        })
    }

    /// The same tensor converted to `dtype` (values rounded to nearest even, as `astype` does).
    pub fn cast(mut self, dtype: MlxFloat) -> HfTensor {
        self.dtype = dtype;
        self
    }

    /// Elements per row (the last dimension).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Rows (the product of the other dimensions).
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The stored GGML block bytes of Hugging Face row `r` and their type: for a 2-D tensor kept in a GGUF
    /// block type (None for floats and MLX sources), so that `convert::repack` can carry the blocks over.
    pub fn stored_row(&self, r: usize) -> Option<(DType, &[u8])> {
        match &self.src {
            Src::Stored(t)
                if t.shape.len() == 2 && float_of(t.dtype).is_none() && !t.dtype.is_mlx() =>
            {
                Some((t.dtype, t.row(self.stored_index(t, r))))
            }
            _ => None,
        }
    }

    /// The stored row holding Hugging Face row `r` (llama.cpp's q/k rows are permuted per head).
    fn stored_index(&self, src: &Tensor, r: usize) -> usize {
        match self.rows {
            RowOrder::Same => r,
            RowOrder::Unpermute { heads } => {
                let d = src.shape[0] / heads;
                let (h, j) = (r / d, r % d);
                let (s, i) = (j / (d / 2), j % (d / 2));
                h * d + 2 * i + s
            }
        }
    }

    /// Hugging Face row `r` into `out` (`cols()` values), each exact in `self.dtype`.
    pub fn read_row(&self, r: usize, out: &mut [f32]) {
        let src = match &self.src {
            Src::Stored(t) => t,
            Src::Mlx(w) => {
                let cols = out.len();
                let q = &w.quant;
                let pb = 4 * q
                    .packed_words_per_row(cols)
                    .expect("checked in HfTensor::mlx");
                let sb = q.scale_bytes_per_row(cols, w.float).expect("checked");
                let bb = q.bias_bytes_per_row(cols, w.float).expect("checked");
                let biases = w
                    .biases
                    .as_ref()
                    .map(|b| &storage_bytes(b)[r * bb..(r + 1) * bb]);
                dequantize_row(
                    q,
                    w.float,
                    &storage_bytes(&w.packed)[r * pb..(r + 1) * pb],
                    &storage_bytes(&w.scales)[r * sb..(r + 1) * sb],
                    biases,
                    out,
                )
                .expect("sizes checked in HfTensor::mlx");
                for v in out.iter_mut() {
                    *v = self.dtype.round(*v);
                }
                return;
            }
        };
        // The permutation acts on dimension 0; a 1-D tensor (a bias) is one row of values instead.
        let stored = if src.shape.len() == 1 {
            r
        } else {
            self.stored_index(src, r)
        };
        if src.shape.len() == 1 && matches!(self.rows, RowOrder::Unpermute { .. }) {
            let all = src.to_f32();
            let heads = match self.rows {
                RowOrder::Unpermute { heads } => heads,
                RowOrder::Same => 1,
            };
            let d = all.len() / heads;
            for (k, o) in out.iter_mut().enumerate() {
                let (h, j) = (k / d, k % d);
                let (s, i) = (j / (d / 2), j % (d / 2));
                *o = all[h * d + 2 * i + s];
            }
        } else {
            quants::dequantize_row(src.dtype, src.row(stored), out);
        }
        for v in out.iter_mut() {
            *v = self.dtype.round(*v + self.offset);
        }
    }

    /// The whole tensor as little-endian bytes of `self.dtype` (rows converted in parallel).
    pub fn to_bytes(&self) -> Vec<u8> {
        let cols = self.cols();
        let parts = par_row_chunks(self.rows(), cols, |range| {
            let mut row = vec![0f32; cols];
            let mut out = Vec::with_capacity(range.len() * cols * self.dtype.size());
            for r in range {
                self.read_row(r, &mut row);
                push_floats(self.dtype, &row, &mut out);
            }
            out
        });
        parts.concat()
    }
}

/// Runs `f` over consecutive ranges of `rows` (each about 1M values of `cols`-wide rows) on hearth's kernel
/// pool and returns the results in row order: a conversion dequantizes and quantizes every weight once, which
/// is worth all cores on a large model.
pub(crate) fn par_row_chunks<T: Send>(
    rows: usize,
    cols: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let per = ((1usize << 20) / cols.max(1)).clamp(1, rows.max(1));
    let n = rows.div_ceil(per);
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    crate::backend::cpu::pool::parallel_for(n, |i| {
        let v = f(i * per..((i + 1) * per).min(rows));
        *slots[i].lock().expect("no task panics while holding it") = Some(v);
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no task panics while holding it")
                .expect("every chunk ran")
        })
        .collect()
}

/// Sorts tensors into the order mlx-lm and transformers list a decoder's parameters: embeddings, then each
/// layer in numeric order, then the rest (final norm, output head); by name within each.
pub fn sort_model_order(tensors: &mut [HfTensor]) {
    fn key(name: &str) -> (u8, usize, String) {
        let parts: Vec<&str> = name.split('.').collect();
        if let Some(p) = parts.iter().position(|p| *p == "layers") {
            if let Some(n) = parts.get(p + 1).and_then(|s| s.parse::<usize>().ok()) {
                return (1, n, name.to_string());
            }
        }
        let group = if name.contains("embed_tokens") { 0 } else { 2 };
        (group, 0, name.to_string())
    }
    tensors.sort_by_key(|t| key(&t.name));
}
