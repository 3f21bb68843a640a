//! The host side of dqmm.cu: products of a few dozen activation rows with quantized weights on the tensor
//! cores. Which products take it ([`dqmm_applies`]), how K is split so that the GPU fills
//! ([`dqmm_splits`]), and the launches: one product, a product of a group whose split-K sums are added later
//! ([`DevMat::dqmm_grouped`]), and two products of one input in one launch ([`DevMat::dqmm_pair_grouped`]).

use super::matmul::DevMat;
use super::memory::arg;
use super::split_sums::{GroupSums, PendingSum};
use super::{profile, DevStep, Gpu};
use crate::tensor::DType;

/// dqmm.cu's DQ_BM and DQ_BN: weight rows and activation rows of a dqmm block.
const DQ_BM: usize = 128;
const DQ_BN: usize = 64;

/// dqmm.cu's DQ_UK: 32-weight units a dqmm block takes a step.
const DQ_UK: usize = 4;

/// dqmm.cu's DQ_THREADS.
const DQ_THREADS: u32 = 256;

/// dqmm.cu's DQ_XSTRIDE: bytes a half-precision activation row of a dqmm step takes in shared memory.
const DQ_XSTRIDE: usize = DQ_UK * 64 + 32;

/// Bytes of dynamic shared memory dqmm takes for `dtype` weights (dqmm.cu's DQ_SMEM, which the kernel checks
/// its launch against): two buffers each of a step's raw weight bytes (DQ_BM rows of the 16-byte chunks
/// covering DQ_UK units, or the one 256-weight block they lie in, an odd number of chunks a row) and of
/// half-precision activations, and 16 spare bytes.
pub(super) fn dqmm_smem_bytes(dtype: DType) -> usize {
    let span = if dtype.block_elems() == 32 {
        DQ_UK * dtype.block_bytes()
    } else {
        dtype.block_bytes()
    };
    // Q4_K is copied compactly: a step's header and half of the code bytes, five chunks.
    let chunks = if dtype == DType::Q4_K {
        5
    } else {
        ((span + 30) / 16) | 1
    };
    2 * DQ_BM * chunks * 16 + 2 * DQ_BN * DQ_XSTRIDE + 16
}

/// Most activation rows dqmm takes: two block columns. Prefill speed on an H200 (llama-8B-shaped Q8_0 /
/// Q4_K_M, tokens/s, dqmm against dequantize-and-cuBLAS): 100 rows 7,002 / 6,491 against 5,387 / 5,397;
/// 160 rows 7,401 / 6,871 against 7,462 / 7,521; 256 rows 10,079 / 9,341 against 11,095 / 11,145. Every
/// block column decodes the weights again, while cuBLAS's larger tiles pay the f16 round trip once.
const DQMM_MAX_ROWS: usize = 2 * DQ_BN;

/// Whether a product of `n` activation rows (more than the matvec path takes) with `dtype` weights runs as
/// dqmm instead of dequantize-to-memory and cuBLAS: types with the 8-bit unit decoder, sm_80 or later, up to
/// [`DQMM_MAX_ROWS`] rows (HEARTH_CUDA_DQMM_ROWS sets another limit, for measuring where the two paths
/// cross); HEARTH_CUDA_DQMM=0 turns it off (for A/B measurements).
pub(super) fn dqmm_applies(gpu: &Gpu, dtype: DType, n: usize) -> bool {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let rows = *ROWS.get_or_init(|| match std::env::var("HEARTH_CUDA_DQMM") {
        Ok(v) if v == "0" => 0,
        _ => super::env_knob("HEARTH_CUDA_DQMM_ROWS", DQMM_MAX_ROWS),
    });
    gpu.arch.0 >= 8 && super::has_q8_path(dtype) && n <= rows
}

/// Blocks a multiprocessor dqmm's split-K aims for with `n` activation rows: more splits fill the GPU and let
/// a block that waits on its copies be overlapped by the next wave's; fewer give each block more steps to
/// hide its first copy behind and leave fewer partial sums to write and add. Below a whole activation block
/// (HEARTH_CUDA_DQMM_WAVES, default 4: two waves of the two blocks that fit one multiprocessor at once) the
/// first; from DQ_BN rows on (HEARTH_CUDA_DQMM_WAVES_FULL, default 2), where a block's steps are longest and
/// its partial sums largest, the second. On an H200 (session 9, call 5, the loop of that session): 64
/// streams with 2 waves against 4 +4.8% (Q4_K_M) and +3.9% (Q8_0), 16 streams -9% on Q8_0 with 2, the
/// first token of a 100-token prompt within 0.25 ms either way.
fn dqmm_waves(n: usize) -> usize {
    static W: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    let (part, full) = *W.get_or_init(|| {
        (
            super::env_knob("HEARTH_CUDA_DQMM_WAVES", 4).clamp(1, 32),
            super::env_knob("HEARTH_CUDA_DQMM_WAVES_FULL", 2).clamp(1, 32),
        )
    });
    if n >= DQ_BN {
        full
    } else {
        part
    }
}

/// Whether two dqmm products of one group with the same type and width share a launch (dqmm2; on unless
/// HEARTH_CUDA_DQMM_PAIR=0, for A/B measurements).
pub(super) fn dqmm_pairs_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::env_knob("HEARTH_CUDA_DQMM_PAIR", 1) != 0)
}

/// Fewest steps (of DQ_UK units) a dqmm split takes (HEARTH_CUDA_DQMM_MIN_STEPS, default 2): a block's first
/// copy is not hidden behind anything, so a split of one step spends most of its time waiting; two let the
/// 4096-wide products of a 100-token prompt split finer (see [`dqmm_waves`]).
fn dqmm_min_steps() -> usize {
    static S: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *S.get_or_init(|| super::env_knob("HEARTH_CUDA_DQMM_MIN_STEPS", 2).max(1))
}

/// How dqmm splits K for a product of `tiles` (row block, activation block) pairs over `units` 32-weight
/// units: (splits, units a split), enough splits for `want` blocks in all, whole steps of DQ_UK units each,
/// at least `min_steps` steps a split where K has them, no empty split, and at most `room` splits (the
/// partial sums' buffer).
pub(super) fn dqmm_splits(
    tiles: usize,
    units: usize,
    want: usize,
    min_steps: usize,
    room: usize,
) -> (usize, usize) {
    let steps = units.div_ceil(DQ_UK);
    let most = (steps / min_steps.max(1)).max(1);
    let splits = want.div_ceil(tiles.max(1)).clamp(1, most).min(room.max(1));
    let split_units = steps.div_ceil(splits) * DQ_UK;
    (units.div_ceil(split_units), split_units)
}

impl DevMat {
    /// `y[n, rows] = x · Wᵀ` for half-precision `x` ([n, cols], bf16 if `bf16`) by dqmm.cu's dqmm. Split
    /// along K (partial sums in the step's weight slab, which this path does not use otherwise) when the row
    /// and activation blocks alone would not give every multiprocessor [`dqmm_waves`] blocks.
    /// With `s.defer_sum` set, a split product's sums are left in `s.pending_sum` instead of added here.
    pub fn dqmm(&self, gpu: &Gpu, s: &DevStep, x: u64, n: usize, y: u64, bf16: bool) {
        let splits = self.dqmm_plan(gpu, n, s.wbuf.bytes);
        let sum = !s.defer_sum.get();
        if let Some(p) = self.dqmm_launch(gpu, x, n, y, bf16, splits, s.wbuf.ptr, sum) {
            s.pending_sum.set(Some(p));
        }
    }

    /// dqmm's split-K plan for `n` activation rows with `room` bytes for the partial sums.
    fn dqmm_plan(&self, gpu: &Gpu, n: usize, room: usize) -> (usize, usize) {
        let tiles = self.rows.div_ceil(DQ_BM) * n.div_ceil(DQ_BN);
        // dqmm_sum adds float4s: rows not a multiple of 4 (no model seen so far) run unsplit.
        let room = if self.rows.is_multiple_of(4) {
            room / (n * self.rows * 4)
        } else {
            1
        };
        let want = dqmm_waves(n) * gpu.sms;
        dqmm_splits(tiles, self.cols / 32, want, dqmm_min_steps(), room)
    }

    /// [`DevMat::dqmm`] as one product of a group with the same input: its partial sums take the next part
    /// of `g`'s slab and are added by [`GroupSums::flush`] with the group's others, in one launch.
    pub(super) fn dqmm_grouped(
        &self,
        gpu: &Gpu,
        x: u64,
        n: usize,
        y: u64,
        bf16: bool,
        g: &mut GroupSums,
    ) {
        let splits = self.dqmm_plan(gpu, n, (g.end - g.at) as usize);
        if let Some(p) = self.dqmm_launch(gpu, x, n, y, bf16, splits, g.at, false) {
            g.push(p, &self.module);
        } // else one split: y written
    }

    /// dqmm.cu copies Q4_K steps in 16-byte chunks from the block's start: each matrix is its own allocation
    /// (256-byte aligned) and a Q4_K row is a multiple of 16 bytes (144 a block).
    fn assert_dqmm_aligned(&self) {
        assert!(
            self.dtype != DType::Q4_K || self.buf.ptr.is_multiple_of(16),
            "Q4_K weights must start on 16 bytes"
        );
    }

    /// The partial sums `splits` splits of this product over `n` activation rows leave at `part` for `y`.
    fn split_sums(&self, part: u64, y: u64, n: usize, splits: usize) -> PendingSum {
        assert_eq!(self.rows % 4, 0, "dqmm_sum adds float4s");
        PendingSum {
            sum: self.module.f("dqmm_sum"),
            part,
            y,
            count4: (n * self.rows / 4) as i32,
            splits: splits as i32,
        }
    }

    /// `a` and `b` (the same type and width, both taking dqmm) as two products of one group's input `x`, in one
    /// dqmm2 launch with one split plan over both (`dqmm2_f16`/`dqmm2_bf16`); their partial sums take the
    /// next two parts of `g`'s slab, as [`DevMat::dqmm_grouped`]'s do. False (nothing launched) where the
    /// pair cannot share a launch: rows not a multiple of 4 (the sums add float4s) or too little slab.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dqmm_pair_grouped(
        gpu: &Gpu,
        (a, ya): (&DevMat, u64),
        (b, yb): (&DevMat, u64),
        x: u64,
        n: usize,
        bf16: bool,
        g: &mut GroupSums,
    ) -> bool {
        debug_assert!(a.dtype == b.dtype && a.cols == b.cols);
        if !a.rows.is_multiple_of(4) || !b.rows.is_multiple_of(4) {
            return false;
        }
        let (ta, tb) = (a.rows.div_ceil(DQ_BM), b.rows.div_ceil(DQ_BM));
        let tiles = (ta + tb) * n.div_ceil(DQ_BN);
        // Each product's part starts 256-byte aligned: one split of both, plus the alignment, must fit.
        let room = ((g.end - g.at) as usize).saturating_sub(256) / (n * (a.rows + b.rows) * 4);
        if room == 0 {
            return false;
        }
        let want = dqmm_waves(n) * gpu.sms;
        let (splits, split_units) = dqmm_splits(tiles, a.cols / 32, want, dqmm_min_steps(), room);
        let (pa, pb) = (g.at, g.at + GroupSums::part_bytes(splits, n * a.rows));
        let (oa, ob) = if splits > 1 { (pa, pb) } else { (ya, yb) };
        a.assert_dqmm_aligned();
        b.assert_dqmm_aligned();
        let f = a.module.f(if bf16 { "dqmm2_bf16" } else { "dqmm2_f16" });
        profile::weight_bytes(f.name, a.buf.bytes + b.buf.bytes);
        let (wa, ma, wb, mb) = (a.buf.ptr, a.rows as i32, b.buf.ptr, b.rows as i32);
        let (k, nn, su) = (a.cols as i32, n as i32, split_units as i32);
        gpu.run_smem(
            f,
            ((ta + tb) as u32, n.div_ceil(DQ_BN) as u32, splits as u32),
            (DQ_THREADS, 1, 1),
            dqmm_smem_bytes(a.dtype) as u32,
            &mut [
                arg(&wa),
                arg(&oa),
                arg(&ma),
                arg(&wb),
                arg(&ob),
                arg(&mb),
                arg(&x),
                arg(&k),
                arg(&nn),
                arg(&su),
            ],
        );
        if splits > 1 {
            g.push(a.split_sums(pa, ya, n, splits), &a.module);
            g.push(b.split_sums(pb, yb, n, splits), &b.module);
        }
        true
    }

    /// One dqmm launch with `splits.0` splits of `splits.1` units each, the partial sums in `part` when there
    /// is more than one: with `sum`, dqmm_sum adds them into `y`; without, they are returned, not yet added.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dqmm_launch(
        &self,
        gpu: &Gpu,
        x: u64,
        n: usize,
        y: u64,
        bf16: bool,
        (splits, split_units): (usize, usize),
        part: u64,
        sum: bool,
    ) -> Option<PendingSum> {
        let out = if splits > 1 { part } else { y };
        let (w, m, k, nn, su) = (
            self.buf.ptr,
            self.rows as i32,
            self.cols as i32,
            n as i32,
            split_units as i32,
        );
        self.assert_dqmm_aligned();
        let f = self.module.f(if bf16 { "dqmm_bf16" } else { "dqmm_f16" });
        profile::weight_bytes(f.name, self.buf.bytes);
        gpu.run_smem(
            f,
            (
                self.rows.div_ceil(DQ_BM) as u32,
                n.div_ceil(DQ_BN) as u32,
                splits as u32,
            ),
            (DQ_THREADS, 1, 1),
            dqmm_smem_bytes(self.dtype) as u32,
            &mut [
                arg(&w),
                arg(&x),
                arg(&out),
                arg(&m),
                arg(&k),
                arg(&nn),
                arg(&su),
            ],
        );
        if splits == 1 {
            return None;
        }
        let sums = self.split_sums(part, y, n, splits);
        if !sum {
            return Some(sums);
        }
        sums.run(gpu);
        None
    }
}
