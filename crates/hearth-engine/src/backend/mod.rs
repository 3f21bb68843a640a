//! Compute backends: the seam between a model's forward pass and the hardware that runs it.
//!
//! An architecture file (`models/llama.rs`, `models/gemma3.rs`) writes its forward pass once, against the
//! [`Backend`] trait: embed, norms, an attention block, an MLP block, logits. Each backend decides how to run
//! a block: the CPU backend runs the plain loops and SIMD kernels of [`cpu`]; the CUDA backend ([`cuda`]) runs
//! fused kernels on the GPU. The operations are deliberately as coarse as a transformer block, because what a
//! backend fuses (bias + norm + rope + KV write in one kernel, say) differs, and the model file should not
//! care.
//!
//! Weights become a backend's own types once, at load ([`Backend::mat`], [`Backend::vector`]): the CPU
//! borrows the memory map, a GPU uploads.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;

use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::KvStorage;
use crate::models::layers::{Attention, Mlp};
use crate::tensor::Tensor;
use cpu::ops::SeqSpan;

pub use device::Device;

/// The activation buffers of a step, `[n, hidden]` each, named by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// The residual stream.
    X,
    /// A block's normed input.
    Xb,
    /// A block's output.
    Xb2,
}

/// Logit biases of a step's output rows, for [`Backend::greedy`]: row `r`'s `(token id, bias)` pairs are
/// `pairs[starts[r]..starts[r + 1]]`, added in that order.
#[derive(Clone, Debug, Default)]
pub struct RowBias {
    pub starts: Vec<u32>,
    pub pairs: Vec<(u32, f32)>,
}

impl RowBias {
    /// No rows.
    pub fn clear(&mut self) {
        self.starts.clear();
        self.starts.push(0);
        self.pairs.clear();
    }

    /// Appends the next row's biases.
    pub fn push_row(&mut self, pairs: &[(u32, f32)]) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.pairs.extend_from_slice(pairs);
        self.starts.push(self.pairs.len() as u32);
    }

    /// Row `r`'s pairs (none for a row never pushed).
    pub fn row(&self, r: usize) -> &[(u32, f32)] {
        match (self.starts.get(r), self.starts.get(r + 1)) {
            (Some(&a), Some(&b)) => &self.pairs[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// The rows of one batched step, as the model laid them out (see `Model::forward_batch`).
pub struct StepRows<'a> {
    /// Every sequence's tokens of the step, concatenated: `[n]`.
    pub tokens: &'a [u32],
    /// Which of `seqs` each row belongs to: `[n]`.
    pub token_seq: &'a [u32],
    /// Each row's position in its sequence: `[n]`.
    pub positions: &'a [usize],
    /// The sequences: their rows, first position and block table.
    pub seqs: &'a [SeqSpan<'a>],
    /// Rows whose logits are wanted, in output order.
    pub out_rows: &'a [usize],
}

/// The operations a transformer forward pass needs, at block granularity. One value of the implementing
/// type is a device (the CPU, one GPU); `Step` and `Kv` are a batch's activations and a model's paged KV
/// storage on that device.
pub trait Backend: Sized {
    /// A weight matrix `[out, in]` as the backend holds it.
    type Mat;
    /// An f32 vector: a norm gain or a bias.
    type Vec;
    /// Activations and per-step data of a batch of up to `max_tokens` rows.
    type Step: Send + 'static;
    /// Paged keys and values of every layer.
    type Kv: KvStorage;

    /// Makes `t` the backend's own (the CPU borrows it; a GPU uploads it).
    fn mat(&self, t: &Tensor) -> Result<Self::Mat>;
    /// Makes an f32 vector the backend's own.
    fn vector(&self, v: Vec<f32>) -> Result<Self::Vec>;

    /// Prepares a step: records the rows' positions and sequences, builds rope tables (`inv_freq` for global
    /// and sliding-window layers). Called once before the layers run.
    fn begin(
        &self,
        s: &mut Self::Step,
        c: &ModelConfig,
        rows: &StepRows,
        inv_freq: (&[f32], &[f32]),
    ) -> Result<()>;
    /// `X = table[tokens]`, times `scale` when given (Gemma scales embeddings by sqrt(hidden)).
    fn embed(&self, s: &mut Self::Step, rows: &StepRows, table: &Self::Mat, scale: Option<f32>);
    /// `dst = rmsnorm(src) * gain` per row (`src == dst` normalizes in place).
    fn rmsnorm(&self, s: &mut Self::Step, n: usize, src: Act, gain: &Self::Vec, eps: f32, dst: Act);
    /// `X += src; dst = rmsnorm(X) * gain`: a residual add and the next block's input norm, which a GPU
    /// fuses into one pass.
    fn add_rmsnorm(
        &self,
        s: &mut Self::Step,
        n: usize,
        src: Act,
        gain: &Self::Vec,
        eps: f32,
        dst: Act,
    );
    /// `Xb2 = Attn(Xb)` for every row, storing each row's key and value in its sequence's KV slots.
    fn attention(
        &self,
        s: &mut Self::Step,
        kv: &mut Self::Kv,
        rows: &StepRows,
        a: &Attention<Self>,
        c: &ModelConfig,
    );
    /// `Xb2 = MLP(Xb)` for the step's `n` rows.
    fn mlp(&self, s: &mut Self::Step, n: usize, m: &Mlp<Self>, c: &ModelConfig);
    /// Projects the wanted rows of `Xb` (final hidden states, normed) to logits `[out_rows, vocab]` through
    /// `w`, soft-capped when asked; [`Backend::logits`] hands them over.
    fn project(&self, s: &mut Self::Step, rows: &StepRows, w: &Self::Mat, softcap: Option<f32>);
    /// The step's logits in host memory, once the step has finished; reports any failure of the step.
    fn logits<'s>(&self, s: &'s mut Self::Step, rows: &StepRows) -> Result<&'s [f32]>;

    /// Instead of [`Backend::logits`]: each output row's greedy token, `argmax_biased` of its logits with
    /// the biases `bias` gives it, into `out` (one id a row). A GPU finds them on the device, so a step of
    /// many streams copies one id a row instead of a vocabulary of logits and the CPU does not scan them;
    /// the default scans the host logits.
    fn greedy(
        &self,
        s: &mut Self::Step,
        rows: &StepRows,
        bias: &RowBias,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let logits = self.logits(s, rows)?;
        out.clear();
        if logits.is_empty() {
            return Ok(());
        }
        let vocab = logits.len() / rows.out_rows.len();
        for (r, row) in logits.chunks_exact(vocab).enumerate() {
            out.push(crate::sample::argmax_biased(row, bias.row(r)));
        }
        Ok(())
    }

    /// Runs a step's `body` (every layer and the projection). A backend may record the work once and replay
    /// it for later steps of the same shape (CUDA graphs for decode steps); the default just runs it.
    fn run_step(
        &self,
        s: &mut Self::Step,
        kv: &mut Self::Kv,
        rows: &StepRows,
        body: &mut dyn FnMut(&mut Self::Step, &mut Self::Kv),
    ) -> Result<()> {
        let _ = rows;
        body(s, kv);
        Ok(())
    }
}
