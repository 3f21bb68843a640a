//! Tensors as the engine sees them: a dtype, a row-major shape and bytes that are either borrowed from a
//! memory-mapped model file or owned (when a loader had to convert them once, e.g. a norm weight).
//!
//! Shapes are written in the Hugging Face / PyTorch order: a linear layer's weight is `[out, in]`, stored as
//! `out` rows of `in` elements each. GGUF lists dimensions fastest-first; the GGUF loader reverses them.

pub mod dtype;
pub mod mlx;
pub mod mlx_blocks;
pub mod quants;

use std::ops::Range;
use std::sync::Arc;

pub use dtype::DType;

/// Where a tensor's bytes live.
#[derive(Clone)]
pub enum Storage {
    /// A byte range of a memory-mapped file; nothing is copied.
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    },
    /// Bytes owned by the tensor.
    Owned(Arc<Vec<u8>>),
}

/// A weight tensor: type, shape and bytes. Cheap to clone.
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    /// Row-major shape, outermost first (`[rows, cols]` for a matrix).
    pub shape: Vec<usize>,
    pub storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {} {:?})", self.name, self.dtype, self.shape)
    }
}

impl Tensor {
    /// The tensor's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, range } => &map[range.clone()],
            Storage::Owned(v) => v,
        }
    }

    /// Total element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row (the last dimension).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Number of rows (the product of every dimension but the last).
    pub fn rows(&self) -> usize {
        let n = self.shape.len();
        if n == 0 {
            1
        } else {
            self.shape[..n - 1].iter().product()
        }
    }

    /// Bytes in one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype
            .bytes_for(self.cols())
            .expect("row is whole blocks (checked at load)")
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[i * rb..(i + 1) * rb]
    }

    /// A tensor owning f32 values, for weights computed at load time.
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Tensor {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Tensor {
            name: name.into(),
            dtype: DType::F32,
            shape,
            storage: Storage::Owned(Arc::new(bytes)),
        }
    }

    /// All values dequantized to f32 (allocates; for load-time work and tests, never per token).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        let cols = self.cols();
        for (r, chunk) in out.chunks_mut(cols.max(1)).enumerate() {
            quants::dequantize_row(self.dtype, self.row(r), chunk);
        }
        out
    }
}
