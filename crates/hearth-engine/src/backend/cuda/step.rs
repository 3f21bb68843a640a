//! A batch's device buffers (activations, the step's row layout) and the model's KV cache in device memory.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::{result, sys};

use super::memory::{arg, drv, DevBuf};
use super::split_sums::PendingSum;
use super::Gpu;
use crate::backend::{RowBias, StepRows};
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::kv_cache::KvStorage;

/// ops.cu's ARGMAX_THREADS: the block size argmax_rows is compiled for.
const ARGMAX_THREADS: u32 = 512;

/// Keys and values per split-K attention work item: `part` holds this many (row, split) pairs per head.
const PART_ROW_SPLITS: usize = 4096;
/// Largest dequantized weight slab for the GEMM path, in elements (64 MiB as f16).
const WBUF_ELEMS: usize = 32 << 20;

/// Device buffers for steps of up to `max` rows, allocated once per batch.
pub struct DevStep {
    gpu: Arc<Gpu>,
    max: usize,
    pub x: DevBuf,    // [max, hidden] f32 residual stream
    pub xb: DevBuf,   // [max, hidden] normed block input
    pub xb2: DevBuf,  // [max, hidden] block output
    pub q: DevBuf,    // [max, n_heads*head_dim]
    pub k: DevBuf,    // [max, kv_dim]
    pub v: DevBuf,    // [max, kv_dim]
    pub att: DevBuf,  // [max, n_heads*head_dim]
    pub gate: DevBuf, // [max, ffn]
    pub up: DevBuf,   // [max, ffn]
    /// Activations as f16/bf16 for a GEMM: [max, max(hidden, ffn, qdim)].
    pub h16: DevBuf,
    /// Set when a kernel has just written activations `.0` to `h16` in half precision as well (`.1`: bf16):
    /// the MLP's act_mul_half; for a step of many rows, a norm writing Xb and the attention kernels (see
    /// [`DevStep::half_copy`]). The GEMM path then skips its own conversion. Cleared once taken, when h16 is
    /// overwritten (`to_half`), when `.0` is rewritten without a half copy, and at each step's start.
    pub act_half: std::cell::Cell<Option<(u64, bool)>>,
    /// Set around a product whose output the next add_rmsnorm adds into the residual stream (a layer's
    /// output and down products, into Xb2): dqmm then leaves its split-K partial sums in `pending_sum` for
    /// that norm to add, one launch fewer (see [`DevStep::settle_sum`]).
    pub defer_sum: std::cell::Cell<bool>,
    /// Partial sums a product left for the next add_rmsnorm; anything else that may read their output adds
    /// them first ([`DevStep::settle_sum`]).
    pub pending_sum: std::cell::Cell<Option<PendingSum>>,
    /// A slab of dequantized weights for a GEMM (f16/bf16).
    pub wbuf: DevBuf,
    /// Activations quantized to 8 bits for the integer matvec kernels: [max, widest] bytes, and per 32-value
    /// block (d, d * sum q) as two floats.
    pub xq: DevBuf,
    pub xd: DevBuf,
    /// Xb quantized the same way by the norm that wrote it, and whether that is current.
    pub xbq: DevBuf,
    pub xbd: DevBuf,
    pub xb_q8: bool,
    /// The attention output quantized the same way by the attention kernel, and whether that is current.
    pub attq: DevBuf,
    pub attd: DevBuf,
    pub att_q8: bool,
    /// Split-K attention partials: [PART_ROW_SPLITS, n_heads, head_dim + 4] f32 (see attn_decode.cu's PART_STRIDE).
    pub part: DevBuf,
    /// Per (row, KV head): how many of its attention splits have finished this step ([max, n_kv] i32, zeroed
    /// once; the last split resets its count).
    pub attn_done: DevBuf,
    pub out_x: DevBuf, // [max, hidden] the wanted rows' final hidden states
    pub logits_dev: DevBuf,
    /// The step's logits on the host, in page-locked memory (grown as steps need): a batch of 64 rows of a
    /// 128k vocabulary is 33 MB a step, which a copy from device to pageable memory moves at a fraction of
    /// the bus's speed through the driver's staging buffers.
    logits_host: Option<cudarc::driver::PinnedHostSlice<f32>>,
    /// Greedy picks on the device: each row's token id, then the step's logit biases (row starts, ids,
    /// value bits), grown as needed; the biases' host copy.
    greedy_dev: DevBuf,
    greedy_host: Vec<u32>,
    /// The step's layout, uploaded by `begin`: i32 arrays at fixed offsets of one buffer (the addresses
    /// below point into it).
    meta: DevBuf,
    meta_host: Vec<i32>,
    pub tokens: u64,
    pub positions: u64,
    pub row_seq: u64,
    pub out_rows: u64,
    pub table_off: u64,
    pub tables: u64,
    /// Per row: its sequence's first position this step. Keys before it were cached by earlier steps, so
    /// attention may read them before the kernels of this step that write the cache have finished.
    pub first_pos: u64,
    /// The step's longest key range (an i32), read by attention to size its splits.
    pub max_len_dev: u64,
    /// Per row: 1 when the row's attention runs in the tensor-core kernel (its sequence has many rows).
    pub flash_rows: u64,
    /// The tensor-core kernel's tiles: (first row, rows) pairs, `flash_tiles` of them.
    pub flash_tile_list: u64,
    pub flash_tiles: usize,
    /// Rows whose attention runs in the tensor-core kernel: when all of them do, the decode kernel is not
    /// launched.
    pub flash_row_count: usize,
    /// Whether the device runs the tensor-core attention kernel (sm_80 and later).
    flash: bool,
    pub inv_global: DevBuf,
    pub inv_local: DevBuf,
    inv_ready: bool,
    /// Longest key range of any row this step (its position + 1).
    max_len: usize,
    n_heads: usize,
    head_dim: usize,
    /// Whether quantized weights meet activations as bf16 (else f16) in GEMMs.
    pub gemm_bf16: bool,
    vocab: usize,
    /// Bumped whenever a buffer a recorded graph points at is reallocated.
    epoch: u64,
    /// Recorded decode steps by shape (see `Cuda::run_step`).
    pub graphs: HashMap<GraphKey, GraphExec>,
    /// Set after a capture failed: this batch runs its steps directly from then on.
    pub graphs_off: bool,
}

/// What a recorded step depends on besides its buffers' contents: its shape, the step's buffers and the KV
/// storage it read and wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphKey {
    pub rows: usize,
    pub out_rows: usize,
    pub step_epoch: u64,
    pub kv_id: u64,
}

/// An instantiated CUDA graph, destroyed on drop.
pub struct GraphExec(pub sys::CUgraphExec);

// SAFETY: an executable graph is a driver handle; it is launched only on its model's stream, by the thread
// running that model's steps.
unsafe impl Send for GraphExec {}

impl Drop for GraphExec {
    fn drop(&mut self) {
        // SAFETY: instantiated once, destroyed once.
        let _ = unsafe { result::graph::exec_destroy(self.0) };
    }
}

impl DevStep {
    pub fn new(gpu: Arc<Gpu>, c: &ModelConfig, max: usize, gemm_bf16: bool) -> Result<DevStep> {
        let ctx = &gpu.ctx;
        let f = |n: usize| DevBuf::alloc(ctx, n * 4);
        let qdim = c.n_heads * c.head_dim;
        let kvdim = c.n_kv_heads * c.head_dim;
        let widest = c.hidden.max(c.ffn).max(qdim);
        let largest = (c.ffn.max(c.vocab).max(qdim)) * widest;
        Ok(DevStep {
            max,
            x: f(max * c.hidden)?,
            xb: f(max * c.hidden)?,
            xb2: f(max * c.hidden)?,
            q: f(max * qdim)?,
            k: f(max * kvdim)?,
            v: f(max * kvdim)?,
            att: f(max * qdim)?,
            gate: f(max * c.ffn)?,
            up: f(max * c.ffn)?,
            h16: DevBuf::alloc(ctx, max * widest * 2)?,
            act_half: std::cell::Cell::new(None),
            defer_sum: std::cell::Cell::new(false),
            pending_sum: std::cell::Cell::new(None),
            wbuf: DevBuf::alloc(ctx, largest.min(WBUF_ELEMS) * 2)?,
            xq: DevBuf::alloc(ctx, max * widest)?,
            xd: DevBuf::alloc(ctx, max * widest.div_ceil(32) * 8)?,
            xbq: DevBuf::alloc(ctx, max * c.hidden)?,
            xbd: DevBuf::alloc(ctx, max * c.hidden.div_ceil(32) * 8)?,
            xb_q8: false,
            attq: DevBuf::alloc(ctx, max * qdim)?,
            attd: DevBuf::alloc(ctx, max * qdim.div_ceil(32) * 8)?,
            att_q8: false,
            part: f(PART_ROW_SPLITS.max(max) * c.n_heads * (c.head_dim + 4))?,
            attn_done: DevBuf::zeroed(ctx, max * c.n_kv_heads * 4)?,
            out_x: f(max * c.hidden)?,
            logits_dev: f(c.vocab)?,
            logits_host: None,
            greedy_dev: DevBuf::alloc(ctx, 4096)?,
            greedy_host: Vec::new(),
            meta: DevBuf::alloc(ctx, 4)?,
            meta_host: Vec::new(),
            tokens: 0,
            positions: 0,
            row_seq: 0,
            out_rows: 0,
            table_off: 0,
            tables: 0,
            first_pos: 0,
            max_len_dev: 0,
            flash_rows: 0,
            flash_tile_list: 0,
            flash_tiles: 0,
            flash_row_count: 0,
            flash: flash_enabled(),
            inv_global: f(c.rope_dim / 2)?,
            inv_local: f(c.rope_dim / 2)?,
            inv_ready: false,
            max_len: 0,
            n_heads: c.n_heads,
            head_dim: c.head_dim,
            gemm_bf16,
            vocab: c.vocab,
            epoch: 0,
            graphs: HashMap::new(),
            graphs_off: false,
            gpu,
        })
    }

    /// Adds a product's pending split-K partial sums into its output (dqmm_sum), if any are pending: before
    /// anything but the add_rmsnorm they were left for reads that output.
    pub fn settle_sum(&self) {
        if let Some(p) = self.pending_sum.take() {
            p.run(&self.gpu);
        }
    }

    /// Uploads the step's layout: tokens, positions, each row's sequence, the wanted rows, and every
    /// sequence's block table (concatenated, with offsets).
    pub fn begin(&mut self, rows: &StepRows, (inv_g, inv_l): (&[f32], &[f32])) -> Result<()> {
        // The step may run on another thread than the one that opened the model (a server's worker): make
        // the context current here, once per step, for every launch that follows.
        drv("context", self.gpu.ctx.bind_to_thread())?;
        self.act_half.set(None);
        self.settle_sum();
        let stream = self.gpu.cu_stream();
        if !self.inv_ready {
            super::memory::upload(stream, self.inv_global.ptr, inv_g)?;
            super::memory::upload(stream, self.inv_local.ptr, inv_l)?;
            self.inv_ready = true;
        }
        let n = rows.tokens.len();
        let table_len: usize = rows.seqs.iter().map(|s| s.table.len()).sum();
        // Layout (i32): tokens | positions | row_seq | out_rows | table_off | flash_row | first_pos, each `max`
        // long; then max_len and three words of padding; then the flash tiles (two words each, at most `max` of them);
        // then the block tables.
        let m = self.max;
        let tiles_at = 7 * m + 4;
        let tables_at = tiles_at + 2 * m;
        let need = tables_at + table_len.max(1);
        self.meta_host.clear();
        self.meta_host.resize(need, 0);
        let h = &mut self.meta_host;
        for (i, &t) in rows.tokens.iter().enumerate() {
            h[i] = t as i32;
        }
        for (i, &p) in rows.positions.iter().enumerate() {
            h[m + i] = p as i32;
        }
        for (i, &s) in rows.token_seq.iter().enumerate() {
            h[2 * m + i] = s as i32;
        }
        for (i, &r) in rows.out_rows.iter().enumerate() {
            h[3 * m + i] = r as i32;
        }
        let mut off = 0;
        self.flash_tiles = 0;
        self.flash_row_count = 0;
        for (i, s) in rows.seqs.iter().enumerate() {
            h[4 * m + i] = off as i32;
            for (j, &b) in s.table.iter().enumerate() {
                h[tables_at + off + j] = b as i32;
            }
            off += s.table.len();
            // Keys below the sequence's first position this step were written by earlier steps.
            if let Some(&first) = rows.positions.get(s.tokens.start) {
                for r in s.tokens.clone() {
                    h[6 * m + r] = first as i32;
                }
            }
            // Sequences with many rows this step (prompt chunks) take the tensor-core kernel, in tiles of 64.
            let len = s.tokens.len();
            if self.flash && len >= FLASH_MIN_ROWS {
                for r in s.tokens.clone() {
                    h[5 * m + r] = 1;
                }
                self.flash_row_count += len;
                for t0 in (0..len).step_by(64) {
                    h[tiles_at + 2 * self.flash_tiles] = (s.tokens.start + t0) as i32;
                    h[tiles_at + 2 * self.flash_tiles + 1] = (len - t0).min(64) as i32;
                    self.flash_tiles += 1;
                }
            }
        }
        self.max_len = rows.positions[..n]
            .iter()
            .map(|&p| p + 1)
            .max()
            .unwrap_or(1);
        h[7 * m] = self.max_len as i32;
        if self.meta.bytes < need * 4 {
            // Room for growth, so a batch whose tables lengthen reallocates rarely.
            self.meta = DevBuf::alloc(&self.gpu.ctx, need * 4 * 3 / 2)?;
            self.epoch += 1;
        }
        // The logits buffer is sized here, outside any recorded step.
        self.ensure_logits(rows.out_rows.len() * self.vocab)?;
        let base = self.meta.ptr;
        let at = |i: usize| base + (i * m * 4) as u64;
        // SAFETY: the copy reads meta_host, which stays untouched until the next `begin`, after this step's
        // kernels (ordered on the same stream) have run.
        unsafe {
            drv(
                "copy step layout",
                result::memcpy_htod_async(base, &self.meta_host[..need], stream),
            )?;
        }
        self.tokens = at(0);
        self.positions = at(1);
        self.row_seq = at(2);
        self.out_rows = at(3);
        self.table_off = at(4);
        self.flash_rows = at(5);
        self.first_pos = at(6);
        self.max_len_dev = at(7);
        self.flash_tile_list = base + (tiles_at * 4) as u64;
        self.tables = base + (tables_at * 4) as u64;
        Ok(())
    }

    /// How many splits attention cuts each row's keys into: about `per_sm` blocks a multiprocessor when the
    /// rows alone do not make that many (the nearest count, at least one), never more than `part` holds. It
    /// depends on the row count only, so a recorded decode step stays valid as its sequences grow; the kernel
    /// sizes the splits from the step's longest key range (`max_len_dev`), and splits past a row's keys end at
    /// once. (A split costs its partial record and the merge: at 64 rows of 40-170 keys one split is 17 us
    /// and two 20 us on an H200 for the CUDA-core kernel; attn_bench.rs.)
    pub fn splits(&self, n_rows: usize, n_kv: usize, sms: usize, per_sm: usize) -> usize {
        let cap = (PART_ROW_SPLITS.max(self.max) / n_rows).max(1);
        let items = n_rows * n_kv;
        // 64: MAX_SPLITS in attn_decode.cu.
        ((per_sm * sms + items / 2) / items).clamp(1, 64).min(cap)
    }

    /// The key for a recorded step of this shape over `kv`.
    pub fn graph_key(&self, rows: &StepRows, kv: &DeviceKv) -> GraphKey {
        GraphKey {
            rows: rows.tokens.len(),
            out_rows: rows.out_rows.len(),
            step_epoch: self.epoch,
            kv_id: kv.id,
        }
    }

    /// Converts `count` f32 activations at `x` to f16/bf16 in the step's GEMM buffer; returns its address.
    /// The half-precision copy a kernel writing activations `x` for this step's `n` rows makes as well, when
    /// `wanted` and the step has more rows than the smallest matrix-vector limit (so the products after it
    /// take the GEMM path): the kernel's (h16, bf16) arguments, recorded in `act_half`. Otherwise (0, 0), and
    /// `act_half` forgets `x`, which the kernel rewrites without a copy.
    pub fn half_copy(&self, gpu: &Gpu, x: u64, n: usize, wanted: bool) -> (u64, i32) {
        if wanted && n > super::matmul::matvec_max(gpu, crate::tensor::DType::F16) {
            self.act_half.set(Some((x, self.gemm_bf16)));
            (self.h16.ptr, self.gemm_bf16 as i32)
        } else {
            if self.act_half.get().is_some_and(|(p, _)| p == x) {
                self.act_half.set(None);
            }
            (0, 0)
        }
    }

    pub fn to_half(&self, gpu: &Gpu, x: u64, count: usize, bf16: bool) -> u64 {
        self.act_half.set(None); // h16 no longer holds what act_half named
        let (out, n, b) = (self.h16.ptr, count as i64, bf16 as i32);
        gpu.run(
            gpu.ops.f("to_half"),
            (count.div_ceil(256) as u32, 1, 1),
            (256, 1, 1),
            &mut [arg(&x), arg(&out), arg(&n), arg(&b)],
        );
        self.h16.ptr
    }

    /// Quantizes `count` activations at `x` (whole 32-value blocks) into the step's 8-bit buffers; returns
    /// (values, block factors).
    pub fn quantize_q8(&self, gpu: &Gpu, x: u64, count: usize) -> (u64, u64) {
        let (q, d, blocks) = (self.xq.ptr, self.xd.ptr, (count / 32) as i32);
        gpu.run(
            gpu.ops.f("quantize_q8"),
            ((count / 32).div_ceil(8) as u32, 1, 1),
            (256, 1, 1),
            &mut [arg(&x), arg(&q), arg(&d), arg(&blocks)],
        );
        (q, d)
    }

    /// The 8-bit form of `count` activations at `x`: the norm's own quantization when `x` is Xb and it is
    /// current (the attention kernel's for its output), else a fresh one ([`DevStep::quantize_q8`]).
    pub fn q8_of(&self, gpu: &Gpu, x: u64, count: usize) -> (u64, u64) {
        if x == self.xb.ptr && self.xb_q8 {
            (self.xbq.ptr, self.xbd.ptr)
        } else if x == self.att.ptr && self.att_q8 {
            (self.attq.ptr, self.attd.ptr)
        } else {
            self.quantize_q8(gpu, x, count)
        }
    }

    /// Makes the device logits buffer hold `count` floats.
    pub fn ensure_logits(&mut self, count: usize) -> Result<()> {
        if self.logits_dev.bytes < count * 4 {
            self.logits_dev = DevBuf::alloc(&self.gpu.ctx, count * 4)?;
            self.epoch += 1;
        }
        Ok(())
    }

    /// Copies `count` logits to the host, waits for the step to finish, and returns them.
    pub fn download_logits(&mut self, count: usize) -> Result<&[f32]> {
        if self.logits_host.as_ref().is_none_or(|h| h.len() < count) {
            // Room for a little growth, so that a batch one row larger does not reallocate.
            let len = count.max(self.vocab) + count / 4;
            // SAFETY: the memory is written by the copy below before any of it is read (only [..count] is
            // handed out). Flags 0: ordinary cached memory (not write-combined), which the CPU reads fast.
            self.logits_host = Some(drv("pinned logits buffer", unsafe {
                self.gpu.ctx.alloc_pinned_with_flags::<f32>(len, 0)
            })?);
        }
        let host = self.logits_host.as_mut().expect("allocated above");
        let stream = self.gpu.cu_stream();
        let dst = &mut drv("pinned logits buffer", host.as_mut_slice())?[..count];
        // SAFETY: dst holds `count` floats and logits_dev at least as many; the stream is synchronized before
        // the host buffer is read.
        unsafe {
            drv(
                "copy logits",
                result::memcpy_dtoh_async(dst, self.logits_dev.ptr, stream),
            )?;
            drv("synchronize", result::stream::synchronize(stream))?;
        }
        Ok(&drv("pinned logits buffer", host.as_slice())?[..count])
    }

    /// Each of the step's `rows` output rows' greedy token (ops.cu's logit_bias_rows, then argmax_rows on
    /// the device logits), into `out`; waits for the step to finish.
    pub fn pick_greedy(&mut self, rows: usize, bias: &RowBias, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        if rows == 0 {
            return Ok(());
        }
        let gpu = self.gpu.clone();
        let stream = gpu.cu_stream();
        let pairs = bias.pairs.len();
        let biased = pairs > 0;
        // [ids: rows][starts: rows + 1][bias ids: pairs][bias values: pairs], as u32 words.
        let words = rows + if biased { rows + 1 + 2 * pairs } else { 0 };
        if self.greedy_dev.bytes < words * 4 {
            self.greedy_dev = DevBuf::alloc(&gpu.ctx, words * 8)?;
        }
        let ids = self.greedy_dev.ptr;
        let (logits, vocab, n) = (self.logits_dev.ptr, self.vocab as i32, rows as i32);
        if biased {
            let h = &mut self.greedy_host;
            h.clear();
            h.extend((0..=rows).map(|r| bias.starts.get(r).copied().unwrap_or(pairs as u32)));
            h.extend(bias.pairs.iter().map(|p| p.0));
            h.extend(bias.pairs.iter().map(|p| p.1.to_bits()));
            let starts = ids + (rows * 4) as u64;
            let (bid, bval) = (
                starts + ((rows + 1) * 4) as u64,
                starts + ((rows + 1 + pairs) * 4) as u64,
            );
            // SAFETY: greedy_dev holds `words` u32; greedy_host is not touched again before the stream is
            // synchronized below.
            unsafe {
                drv(
                    "copy logit biases",
                    result::memcpy_htod_async(starts, &h[..], stream),
                )?;
            }
            gpu.run(
                gpu.ops.f("logit_bias_rows"),
                (rows.div_ceil(64) as u32, 1, 1),
                (64, 1, 1),
                &mut [
                    arg(&logits),
                    arg(&n),
                    arg(&vocab),
                    arg(&starts),
                    arg(&bid),
                    arg(&bval),
                ],
            );
        }
        gpu.run(
            gpu.ops.f("argmax_rows"),
            (rows as u32, 1, 1),
            (ARGMAX_THREADS, 1, 1),
            &mut [arg(&logits), arg(&vocab), arg(&ids)],
        );
        gpu.take_err()?;
        out.resize(rows, 0);
        // SAFETY: `ids` holds `rows` u32 written by argmax_rows; the stream is synchronized before `out` is
        // read.
        unsafe {
            drv(
                "copy greedy ids",
                result::memcpy_dtoh_async(&mut out[..], ids, stream),
            )?;
            drv("synchronize", result::stream::synchronize(stream))?;
        }
        Ok(())
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
}

static KV_IDS: AtomicU64 = AtomicU64::new(1);

/// Rows a sequence must have in a step for its attention to run in the tensor-core (flash) kernel.
const FLASH_MIN_ROWS: usize = 16;

/// The flash kernel is on unless HEARTH_CUDA_FLASH=0 (to compare against the split-K kernel).
fn flash_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("HEARTH_CUDA_FLASH").map_or(true, |v| v != "0"))
}

/// Keys and values of every layer in device memory, f16: `[n_blocks * block_size, kv_dim]` per layer each.
pub struct DeviceKv {
    gpu: Arc<Gpu>,
    /// Unique per allocation of the layers' storage (a recorded step is valid only for the storage it used).
    pub id: u64,
    layers: Vec<(DevBuf, DevBuf)>,
    n_layers: usize,
    kv_dim: usize,
    pub block_size: usize,
    n_blocks: usize,
}

impl DeviceKv {
    pub fn new(gpu: Arc<Gpu>, n_layers: usize, kv_dim: usize, block_size: usize) -> DeviceKv {
        DeviceKv {
            gpu,
            id: KV_IDS.fetch_add(1, Ordering::Relaxed),
            layers: Vec::new(),
            n_layers,
            kv_dim,
            block_size: block_size.max(1),
            n_blocks: 0,
        }
    }

    /// Layer `l`'s key and value storage addresses.
    pub fn layer(&self, l: usize) -> (u64, u64) {
        let (k, v) = &self.layers[l];
        (k.ptr, v.ptr)
    }

    fn block_bytes(&self) -> usize {
        self.block_size * self.kv_dim * 2
    }
}

impl KvStorage for DeviceKv {
    fn grow(&mut self, n_blocks: usize) -> Result<()> {
        if n_blocks <= self.n_blocks && !self.layers.is_empty() {
            return Ok(());
        }
        let bytes = n_blocks * self.block_bytes();
        drv("context", self.gpu.ctx.bind_to_thread())?;
        let stream = self.gpu.cu_stream();
        let mut fresh = Vec::with_capacity(self.n_layers);
        for l in 0..self.n_layers {
            let (k, v) = (
                DevBuf::alloc(&self.gpu.ctx, bytes)?,
                DevBuf::alloc(&self.gpu.ctx, bytes)?,
            );
            let old = self.n_blocks * self.block_bytes();
            // SAFETY: both buffers hold at least `bytes`; the old ones are kept alive until the stream has
            // finished copying (synchronized below, before they drop).
            unsafe {
                drv("clear KV", result::memset_d8_async(k.ptr, 0, bytes, stream))?;
                drv("clear KV", result::memset_d8_async(v.ptr, 0, bytes, stream))?;
                if let Some((ok, ov)) = self.layers.get(l) {
                    drv(
                        "copy KV",
                        result::memcpy_dtod_async(k.ptr, ok.ptr, old, stream),
                    )?;
                    drv(
                        "copy KV",
                        result::memcpy_dtod_async(v.ptr, ov.ptr, old, stream),
                    )?;
                }
            }
            fresh.push((k, v));
        }
        // SAFETY: waits for the copies before the old buffers are freed.
        drv("synchronize", unsafe {
            result::stream::synchronize(stream)
        })?;
        self.layers = fresh;
        self.n_blocks = n_blocks;
        self.id = KV_IDS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn copy_block(&mut self, src: u32, dst: u32) {
        let bb = self.block_bytes();
        let stream = self.gpu.cu_stream();
        self.gpu.note(drv("context", self.gpu.ctx.bind_to_thread()));
        for (k, v) in &self.layers {
            // SAFETY: block ids come from the scheduler's block manager, below n_blocks.
            let r = unsafe {
                result::memcpy_dtod_async(
                    k.at(dst as usize * bb),
                    k.at(src as usize * bb),
                    bb,
                    stream,
                )
                .and_then(|_| {
                    result::memcpy_dtod_async(
                        v.at(dst as usize * bb),
                        v.at(src as usize * bb),
                        bb,
                        stream,
                    )
                })
            };
            self.gpu.note(drv("copy KV block", r));
        }
    }

    fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| k.bytes + v.bytes).sum()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
