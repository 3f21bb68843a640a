//! The CUDA backend's block operations: a transformer layer's attention and MLP, norms, the output
//! projection, and the recording of decode steps as CUDA graphs.

use cudarc::driver::{result, sys};

use super::memory::{self, arg, drv, DevBuf};
use super::split_sums::GroupSums;
use super::step::GraphExec;
use super::{flash_smem_bytes, profile, Cuda, DevMat, DevStep, DeviceKv, Gpu};
use crate::backend::{Act, Backend, RowBias, StepRows};
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::layers::{Activation, Attention, Mlp};
use crate::tensor::{DType, Tensor};

impl Cuda {
    /// Where a norm writing `dst` should also put its output quantized to 8 bits: the step's Xb buffers when
    /// `dst` is Xb, 8-bit activations are on and the row fits (the next products read it instead of
    /// quantizing again); (0, 0) otherwise. Records whether Xb's quantization is current.
    fn xb_quantization(s: &mut DevStep, dst: Act, dim: usize) -> (u64, u64) {
        if dst != Act::Xb {
            return (0, 0);
        }
        s.xb_q8 = super::matmul::q8_activations() && super::norm_can_quantize(dim);
        if s.xb_q8 {
            (s.xbq.ptr, s.xbd.ptr)
        } else {
            (0, 0)
        }
    }

    /// `dst = rmsnorm(x (+ add, written back to x when add is not 0)) * gain` over `n` rows (ops.cu's
    /// rmsnorm_rows), quantized to 8 bits too when `dst` is Xb and the integer path wants it, and written in
    /// half precision into the step's GEMM input buffer when `dst` is Xb and the step has more rows than the
    /// smallest matrix-vector limit (the products after it then skip their to_half launch: see
    /// `DevStep::act_half`). One block per row; enough threads that each keeps at most 16 of the row's values
    /// in registers (see `norm_threads`). When the product that wrote `add` left its split-K partial sums
    /// pending (`DevStep::pending_sum`), the kernel adds them itself (`add` itself is then not written);
    /// other pending sums are settled first.
    #[allow(clippy::too_many_arguments)]
    fn norm_launch(
        &self,
        s: &mut DevStep,
        n: usize,
        x: u64,
        add: u64,
        gain: &DevBuf,
        eps: f32,
        dst: Act,
    ) {
        let (mut add, mut add_splits, mut add_stride) = (add, 1i32, 0i64);
        match s.pending_sum.get() {
            Some(p) if add != 0 && p.y == add => {
                s.pending_sum.set(None);
                (add, add_splits, add_stride) = p.slices();
            }
            _ => s.settle_sum(),
        }
        let (g, o) = (gain.ptr, Self::act_ptr(s, dst));
        let dim = (gain.bytes / 4) as i32;
        let (q, d) = Self::xb_quantization(s, dst, dim as usize);
        let (h, hb) = s.half_copy(&self.gpu, o, n, dst == Act::Xb);
        self.gpu.run(
            self.gpu.ops.f("rmsnorm_rows"),
            (n as u32, 1, 1),
            (super::norm_threads(dim as usize), 1, 1),
            &mut [
                arg(&x),
                arg(&add),
                arg(&add_splits),
                arg(&add_stride),
                arg(&g),
                arg(&o),
                arg(&dim),
                arg(&eps),
                arg(&q),
                arg(&d),
                arg(&h),
                arg(&hb),
            ],
        );
    }
}

impl Backend for Cuda {
    type Mat = DevMat;
    type Vec = DevBuf;
    type Step = DevStep;
    type Kv = DeviceKv;

    fn mat(&self, t: &Tensor) -> Result<DevMat> {
        DevMat::upload(self, t)
    }

    fn vector(&self, v: Vec<f32>) -> Result<DevBuf> {
        let buf = DevBuf::alloc(&self.gpu.ctx, v.len() * 4)?;
        memory::upload(self.gpu.cu_stream(), buf.ptr, &v)?;
        Ok(buf)
    }

    fn begin(
        &self,
        s: &mut DevStep,
        _c: &ModelConfig,
        rows: &StepRows,
        inv_freq: (&[f32], &[f32]),
    ) -> Result<()> {
        self.gpu.take_err()?;
        s.begin(rows, inv_freq)
    }

    fn embed(&self, s: &mut DevStep, rows: &StepRows, table: &DevMat, scale: Option<f32>) {
        s.settle_sum();
        let n = rows.tokens.len();
        table.embed(&self.gpu, s.tokens, n, s.x.ptr, scale);
    }

    fn rmsnorm(&self, s: &mut DevStep, n: usize, src: Act, gain: &DevBuf, eps: f32, dst: Act) {
        let x = Self::act_ptr(s, src);
        self.norm_launch(s, n, x, 0, gain, eps, dst);
    }

    fn add_rmsnorm(&self, s: &mut DevStep, n: usize, src: Act, gain: &DevBuf, eps: f32, dst: Act) {
        let (x, add) = (s.x.ptr, Self::act_ptr(s, src));
        self.norm_launch(s, n, x, add, gain, eps, dst);
    }

    fn attention(
        &self,
        s: &mut DevStep,
        kv: &mut DeviceKv,
        rows: &StepRows,
        a: &Attention<Cuda>,
        c: &ModelConfig,
    ) {
        s.settle_sum();
        let n = rows.tokens.len();
        let gpu = &self.gpu;
        // q, k, v = xb · Wqᵀ, Wkᵀ, Wvᵀ: [n, qdim], [n, kv_dim] x2; split-K partial sums are added by
        // qkv_finish as it reads them.
        let sums = DevMat::matmul_group_unsummed(
            self,
            s,
            s.xb.ptr,
            n,
            &[(&a.wq, s.q.ptr), (&a.wk, s.k.ptr), (&a.wv, s.v.ptr)],
        );
        let [(qp, qs, qst), (kp, ks, kst), (vp, vs, vst)] =
            GroupSums::take_each(sums, gpu, [s.q.ptr, s.k.ptr, s.v.ptr]);
        // Biases, q/k norms, rope; k and v into the cache slots.
        let opt = |v: &Option<DevBuf>| v.as_ref().map_or(0u64, |b| b.ptr);
        let (bq, bk, bv, qn, kn) = (
            opt(&a.bq),
            opt(&a.bk),
            opt(&a.bv),
            opt(&a.q_norm),
            opt(&a.k_norm),
        );
        let inv = if a.sliding {
            s.inv_local.ptr
        } else {
            s.inv_global.ptr
        };
        let rope_half = (c.rope_dim / 2) as i32;
        let neox = (c.rope_style == crate::models::config::RopeStyle::Neox) as i32;
        let (kc, vc) = kv.layer(a.layer);
        let (q, pos) = (s.q.ptr, s.positions);
        let (rs, toff, tabs, bs) = (s.row_seq, s.table_off, s.tables, kv.block_size as i32);
        let (nh, nkv, eps) = (c.n_heads as i32, c.n_kv_heads as i32, c.rms_eps);
        let threads = c.head_dim.div_ceil(32) as u32 * 32;
        gpu.run(
            gpu.ops.f("qkv_finish"),
            (n as u32, (c.n_heads + c.n_kv_heads) as u32, 1),
            (threads, 1, 1),
            &mut [
                arg(&q),
                arg(&qp),
                arg(&qs),
                arg(&qst),
                arg(&kp),
                arg(&ks),
                arg(&kst),
                arg(&vp),
                arg(&vs),
                arg(&vst),
                arg(&bq),
                arg(&bk),
                arg(&bv),
                arg(&qn),
                arg(&kn),
                arg(&inv),
                arg(&rope_half),
                arg(&neox),
                arg(&pos),
                arg(&rs),
                arg(&toff),
                arg(&tabs),
                arg(&bs),
                arg(&kc),
                arg(&vc),
                arg(&nh),
                arg(&nkv),
                arg(&eps),
            ],
        );
        // Attention over each row's keys, split along them, then the splits merged.
        let window = if a.sliding {
            c.sliding_window.unwrap_or(0) as i32
        } else {
            0
        };
        let n_splits = s.splits(n, c.n_kv_heads, gpu.sms, gpu.attn_blocks_per_sm);
        let (part, att, done, ml, fr, fp) = (
            s.part.ptr,
            s.att.ptr,
            s.attn_done.ptr,
            s.max_len_dev,
            s.flash_rows,
            s.first_pos,
        );
        let (scale, softcap) = (c.attn_scale, c.attn_logit_softcap.unwrap_or(0.0));
        let ns = n_splits as i32;
        // The output in 8 bits too, for the output projection's integer kernel (when it takes the matvec
        // path), when every row's attention runs here (attn_decode.cu: whole warps of 32-value blocks).
        s.att_q8 = super::matmul::q8_activations()
            && att_q8_enabled()
            && super::has_q8_path(a.wo.dtype)
            && n <= super::matmul::matvec_max(&self.gpu, a.wo.dtype)
            && s.flash_tiles == 0
            && c.head_dim.is_multiple_of(32)
            && (c.n_heads / c.n_kv_heads * c.head_dim / 4).is_multiple_of(32);
        let (aq, ad) = if s.att_q8 {
            (s.attq.ptr, s.attd.ptr)
        } else {
            (0, 0)
        };
        // (Not launched when every row's attention runs in flash_prefill: its blocks would all return.)
        if s.flash_row_count < n {
            // And in half precision, for the output projection's GEMM, when it has every row.
            let (ah, ahb) = s.half_copy(gpu, att, n, s.flash_tiles == 0);
            AttnDecodeArgs {
                q,
                kc,
                vc,
                positions: pos,
                row_seq: rs,
                table_off: toff,
                tables: tabs,
                part,
                out: att,
                done,
                n_kv: nkv,
                block_size: bs,
                window,
                scale,
                softcap,
                max_len: ml,
                n_splits: ns,
                flash_rows: fr,
                first_pos: fp,
                xq: aq,
                xd: ad,
                xh: ah,
                xh_bf16: ahb,
            }
            .run(gpu, gpu.attn_kernel(), n);
        }
        // Rows of sequences with many rows this step (prompt chunks): the tensor-core kernel.
        if s.flash_tiles > 0 {
            let tl = s.flash_tile_list;
            // When it has every row, its output in half precision too, for the output projection's GEMM.
            let (h, hb) = s.half_copy(gpu, att, n, s.flash_row_count == n);
            gpu.run_smem(
                gpu.ops.f("flash_prefill"),
                (s.flash_tiles as u32, c.n_heads as u32, 1),
                (128, 1, 1),
                flash_smem_bytes(c.head_dim) as u32,
                &mut [
                    arg(&q),
                    arg(&kc),
                    arg(&vc),
                    arg(&att),
                    arg(&tl),
                    arg(&pos),
                    arg(&rs),
                    arg(&toff),
                    arg(&tabs),
                    arg(&nh),
                    arg(&nkv),
                    arg(&bs),
                    arg(&window),
                    arg(&scale),
                    arg(&softcap),
                    arg(&h),
                    arg(&hb),
                ],
            );
        }
        // out = att · Woᵀ: [n, hidden] (split-K sums left for the add_rmsnorm that follows)
        s.defer_sum.set(true);
        a.wo.matmul(self, s, s.att.ptr, n, s.xb2.ptr);
        s.defer_sum.set(false);
    }

    fn mlp(&self, s: &mut DevStep, n: usize, m: &Mlp<Cuda>, c: &ModelConfig) {
        s.settle_sum();
        let act = match m.act {
            Activation::Silu => 0i32,
            Activation::GeluTanh => 1,
        };
        // gate = act(xb · Wgᵀ) * (xb · Wuᵀ): one fused pass for decode-sized steps, else two products
        // and the activation.
        if !DevMat::glu(self, s, &m.gate, &m.up, s.xb.ptr, n, s.gate.ptr, act) {
            let (g, u) = (s.gate.ptr, s.up.ptr);
            let count = (n * c.ffn) as i64;
            // When the down product takes a half-precision path (cuBLAS or dqmm), its input is written
            // here in half precision directly.
            let half = match m.down.dtype {
                DType::F32 => None,
                DType::F16 => Some(false),
                DType::BF16 => Some(true),
                _ => Some(s.gemm_bf16),
            }
            .filter(|_| n > super::matmul::matvec_max(&self.gpu, m.down.dtype));
            let outs = [(&m.gate, g), (&m.up, u)];
            if let Some(bf16) = half {
                // act_mul_half adds the products' split-K partial sums as it reads them (dqmm_sum3's order).
                let sums = DevMat::matmul_group_unsummed(self, s, s.xb.ptr, n, &outs);
                let [(gp, gs, gst), (up, us, ust)] = GroupSums::take_each(sums, &self.gpu, [g, u]);
                let (h, b) = (s.h16.ptr, bf16 as i32);
                self.elementwise(
                    "act_mul_half",
                    n * c.ffn,
                    &mut [
                        arg(&gp),
                        arg(&gs),
                        arg(&gst),
                        arg(&up),
                        arg(&us),
                        arg(&ust),
                        arg(&h),
                        arg(&count),
                        arg(&act),
                        arg(&b),
                    ],
                );
                s.act_half.set(Some((g, bf16)));
            } else {
                DevMat::matmul_group(self, s, s.xb.ptr, n, &outs);
                self.elementwise(
                    "act_mul",
                    n * c.ffn,
                    &mut [arg(&g), arg(&u), arg(&count), arg(&act)],
                );
            }
        }
        s.defer_sum.set(true);
        m.down.matmul(self, s, s.gate.ptr, n, s.xb2.ptr);
        s.defer_sum.set(false);
        s.act_half.set(None);
    }

    fn project(&self, s: &mut DevStep, rows: &StepRows, w: &DevMat, softcap: Option<f32>) {
        s.settle_sum();
        let n_out = rows.out_rows.len();
        let (hidden, vocab) = (w.cols, w.rows);
        if n_out == 0 {
            return;
        }
        let (src, rws, out, dim) = (s.xb.ptr, s.out_rows, s.out_x.ptr, hidden as i32);
        self.gpu.run(
            self.gpu.ops.f("gather_rows"),
            (n_out as u32, 1, 1),
            (256, 1, 1),
            &mut [arg(&src), arg(&rws), arg(&out), arg(&dim)],
        );
        w.matmul(self, s, s.out_x.ptr, n_out, s.logits_dev.ptr);
        if let Some(cap) = softcap {
            let (l, count) = (s.logits_dev.ptr, (n_out * vocab) as i64);
            self.elementwise(
                "softcap_inplace",
                n_out * vocab,
                &mut [arg(&l), arg(&count), arg(&cap)],
            );
        }
    }

    fn logits<'s>(&self, s: &'s mut DevStep, rows: &StepRows) -> Result<&'s [f32]> {
        self.gpu.take_err()?;
        let count = rows.out_rows.len() * s.vocab();
        if profile::enabled() {
            drv("synchronize", self.gpu.stream.synchronize())?;
            profile::collect();
        }
        self.gpu.take_err()?;
        if count == 0 {
            return Ok(&[]);
        }
        s.download_logits(count)
    }

    fn greedy(
        &self,
        s: &mut DevStep,
        rows: &StepRows,
        bias: &RowBias,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.gpu.take_err()?;
        s.pick_greedy(rows.out_rows.len(), bias, out)?;
        if profile::enabled() {
            profile::collect();
        }
        Ok(())
    }

    /// Decode steps (one token per sequence, up to [`MAX_GRAPH_ROWS`] sequences) are recorded as a CUDA graph
    /// the first time a shape is seen and replayed after: one launch instead of hundreds, which is most of a
    /// small model's step time. Everything a step reads that changes between steps (tokens, positions, block
    /// tables, the longest key range) is in device buffers the graph points at, filled by `begin`.
    fn run_step(
        &self,
        s: &mut DevStep,
        kv: &mut DeviceKv,
        rows: &StepRows,
        body: &mut dyn FnMut(&mut DevStep, &mut DeviceKv),
    ) -> Result<()> {
        let n = rows.tokens.len();
        let decode = n == rows.seqs.len() && n <= MAX_GRAPH_ROWS;
        if !decode || s.graphs_off || !graphs_enabled() {
            body(s, kv);
            return Ok(());
        }
        let key = s.graph_key(rows, kv);
        let stream = self.gpu.cu_stream();
        if let Some(g) = s.graphs.get(&key) {
            // SAFETY: the graph was recorded on this stream over buffers that are still allocated (the key
            // changes whenever one of them is reallocated).
            return drv("graph launch", unsafe {
                result::graph::launch(g.0, stream)
            });
        }
        // SAFETY: capture of this thread's work on the model's stream; ended below on every path.
        drv("begin capture", unsafe {
            result::stream::begin_capture(
                stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        })?;
        body(s, kv);
        // SAFETY: ends the capture begun above.
        let graph = unsafe { result::stream::end_capture(stream) };
        let launched = graph
            .map_err(|e| Error::Other(format!("CUDA graph capture: {e}")))
            .and_then(|g| {
                self.gpu.take_err()?;
                // SAFETY: `g` was just captured; it is destroyed once instantiated (the executable graph
                // is independent of it).
                let exec = unsafe {
                    let e = result::graph::instantiate(g, sys::CUgraphInstantiate_flags(0));
                    let _ = result::graph::destroy(g);
                    drv("graph instantiate", e)?
                };
                let exec = GraphExec(exec);
                // SAFETY: as for a replay.
                drv("graph launch", unsafe {
                    result::graph::launch(exec.0, stream)
                })?;
                s.graphs.insert(key, exec);
                Ok(())
            });
        if let Err(e) = launched {
            // Recording failed (a driver without support, an operation that cannot be captured): run this
            // batch's steps directly from now on. The captured work did not run, so run it now.
            eprintln!("warning: CUDA graph capture failed ({e}); running steps without graphs");
            s.graphs_off = true;
            body(s, kv);
        }
        Ok(())
    }
}

/// Most sequences a recorded decode step holds; larger decode batches are launched directly (their
/// kernels are large enough to hide the launch cost).
const MAX_GRAPH_ROWS: usize = 256;

/// CUDA graphs are on unless HEARTH_CUDA_GRAPHS=0 (for benchmarks and debugging).
fn graphs_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("HEARTH_CUDA_GRAPHS").map_or(true, |v| v != "0") && !profile::enabled()
    })
}

/// Whether the attention kernel may write its output in 8 bits as well (HEARTH_CUDA_ATT_Q8=0 makes the
/// output projection quantize it separately instead: the same bytes, for checking the fused path).
fn att_q8_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("HEARTH_CUDA_ATT_Q8").map_or(true, |v| v != "0"))
}

/// The arguments of attn_decode and attn_decode_mma (attn_decode.cu's ATTN_DECODE_PARAMS, in its order):
/// addresses of the query, the layer's cache, the step layout, the split records and the outputs, and the
/// shape. One launch covers `rows` query rows of `n_kv` KV heads in `n_splits` splits; the kernel tests and
/// attn_bench.rs launch it the same way.
pub(super) struct AttnDecodeArgs {
    pub q: u64,
    pub kc: u64,
    pub vc: u64,
    pub positions: u64,
    pub row_seq: u64,
    pub table_off: u64,
    pub tables: u64,
    pub part: u64,
    pub out: u64,
    pub done: u64,
    pub n_kv: i32,
    pub block_size: i32,
    pub window: i32,
    pub scale: f32,
    pub softcap: f32,
    pub max_len: u64,
    pub n_splits: i32,
    pub flash_rows: u64,
    pub first_pos: u64,
    /// The 8-bit copy of the output and its factors (0: none).
    pub xq: u64,
    pub xd: u64,
    /// The half-precision copy of the output (0: none), bf16 when `xh_bf16` is 1.
    pub xh: u64,
    pub xh_bf16: i32,
}

impl AttnDecodeArgs {
    /// Launches `kernel` (attn_decode or attn_decode_mma) over `rows` query rows.
    pub(super) fn run(&self, gpu: &Gpu, kernel: &str, rows: usize) {
        gpu.run(
            gpu.ops.f(kernel),
            (rows as u32 * self.n_kv as u32, self.n_splits as u32, 1),
            (gpu.attn_threads, 1, 1),
            &mut [
                arg(&self.q),
                arg(&self.kc),
                arg(&self.vc),
                arg(&self.positions),
                arg(&self.row_seq),
                arg(&self.table_off),
                arg(&self.tables),
                arg(&self.part),
                arg(&self.out),
                arg(&self.done),
                arg(&self.n_kv),
                arg(&self.block_size),
                arg(&self.window),
                arg(&self.scale),
                arg(&self.softcap),
                arg(&self.max_len),
                arg(&self.n_splits),
                arg(&self.flash_rows),
                arg(&self.first_pos),
                arg(&self.xq),
                arg(&self.xd),
                arg(&self.xh),
                arg(&self.xh_bf16),
            ],
        );
    }
}
