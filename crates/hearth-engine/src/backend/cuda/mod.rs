//! The CUDA backend: the same forward pass on an NVIDIA GPU.
//!
//! - Weights are uploaded once, as the file stores them (every GGML block type, f16/bf16/f32, MLX blocks);
//!   kernels decode blocks on the fly (`kernels/quant.cuh`), so a 4-bit model takes 4.5 bits per weight of
//!   GPU memory and decode reads exactly the file's bytes per token.
//! - Decode (a few rows per step) runs matrix-vector kernels over the quantized blocks; larger steps (prefill,
//!   big batches) dequantize slabs of a weight matrix to f16/bf16 and multiply on the tensor cores through
//!   cuBLAS (`matmul.rs`).
//! - Kernels are CUDA C compiled at run time by NVRTC for the device and model (`nvrtc.rs`), cached on disk.
//! - Keys and values live in f16 paged blocks in device memory (`step.rs`); attention reads them through the
//!   block tables, split along the keys (flash-decoding).
//!
//! Everything a model does runs on one stream in order, so no kernel waits on another except through it.

mod matmul;
mod memory;
pub mod nvrtc;
mod step;

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use crate::backend::{Act, Backend, StepRows};
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::kv_cache::PagedKv;
use crate::models::layers::{Activation, Attention, Mlp};
use crate::models::weights::Weights;
use crate::tensor::{DType, Tensor};
pub use matmul::DevMat;
use memory::{arg, drv, DevBuf};
pub use step::{DevStep, DeviceKv};

/// The CUDA C sources, concatenated into one translation unit per module (NVRTC has no include path here).
const QUANT_CUH: &str = include_str!("kernels/quant.cuh");
const WEIGHTS_CU: &str = include_str!("kernels/weights.cu");
const OPS_CU: &str = include_str!("kernels/ops.cu");

/// Says whether CUDA device `n` can be used, and its name; never panics when the driver is missing.
pub fn probe(n: usize) -> std::result::Result<String, String> {
    // SAFETY: checks whether libcuda can be loaded before any driver call.
    if !unsafe { sys::is_culib_present() } {
        return Err("the NVIDIA driver (libcuda) is not installed".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("cannot query devices: {e}"))?;
    if n >= count.max(0) as usize {
        return Err(if count <= 0 {
            "no CUDA device is present".into()
        } else {
            format!("there is no cuda:{n} ({count} device(s))")
        });
    }
    let ctx = CudaContext::new(n).map_err(|e| format!("cannot open cuda:{n}: {e}"))?;
    let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
    let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
    if major < 7 {
        return Err(format!(
            "{name} has compute capability {major}.{minor}; hearth needs 7.0 or newer"
        ));
    }
    nvrtc::version().map_err(|e| e.to_string())?;
    Ok(format!("{name}, compute capability {major}.{minor}"))
}

/// (free, total) bytes of memory of CUDA device `n`.
pub fn memory_info(n: usize) -> Result<(usize, usize)> {
    probe(n).map_err(Error::Other)?;
    let ctx = drv("open device", CudaContext::new(n))?;
    drv("memory info", ctx.mem_get_info())
}

/// A loaded CUDA module and the functions taken from it.
struct Module {
    module: sys::CUmodule,
    functions: HashMap<&'static str, sys::CUfunction>,
}

// SAFETY: module and function handles are plain driver handles, valid in any thread that has the context
// current (every call binds it first).
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    fn load(ctx: &Arc<CudaContext>, cubin: &[u8], names: &[&'static str]) -> Result<Module> {
        drv("context", ctx.bind_to_thread())?;
        // SAFETY: `cubin` is an image NVRTC produced for this device's architecture.
        let module = drv("load module", unsafe {
            result::module::load_data(cubin.as_ptr() as *const c_void)
        })?;
        let mut functions = HashMap::new();
        for &n in names {
            let cn = CString::new(n).expect("kernel names have no NUL");
            // SAFETY: `module` was just loaded.
            let f = drv(&format!("kernel {n}"), unsafe {
                result::module::get_function(module, cn)
            })?;
            functions.insert(n, f);
        }
        Ok(Module { module, functions })
    }

    fn f(&self, name: &str) -> sys::CUfunction {
        self.functions[name]
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded once, unloaded once; nothing runs from it after its owner is dropped.
        let _ = unsafe { result::module::unload(self.module) };
    }
}

/// The weight kernels' names in every weight module.
const WEIGHT_KERNELS: [&str; 10] = [
    "matvec_1",
    "matvec_2",
    "matvec_3",
    "matvec_4",
    "matvec_5",
    "matvec_6",
    "matvec_7",
    "matvec_8",
    "dequant_rows",
    "embed_rows",
];

const OPS_KERNELS: [&str; 10] = [
    "rmsnorm_rows",
    "add_rmsnorm_rows",
    "qkv_finish",
    "attn_partial",
    "attn_combine",
    "act_mul",
    "to_half",
    "gather_rows",
    "softcap_inplace",
    "scale_inplace",
];

/// The `-D` defines that select a weight type in `quant.cuh`.
fn weight_defines(dtype: DType) -> Result<Vec<String>> {
    use crate::tensor::mlx::{MlxFloat, MlxMode};
    Ok(match dtype {
        DType::Mlx(m) => {
            let mode = match m.quant.mode() {
                MlxMode::Affine => 0,
                MlxMode::Mxfp4 => 1,
                MlxMode::Nvfp4 => 2,
                MlxMode::Mxfp8 => 3,
            };
            let float = match m.float {
                MlxFloat::F32 => 0,
                MlxFloat::F16 => 1,
                MlxFloat::BF16 => 2,
            };
            vec![
                "WT_MLX".into(),
                format!("MLX_MODE={mode}"),
                format!("MLX_BITS={}", m.quant.bits()),
                format!("MLX_GROUP={}", m.quant.group_size()),
                format!("MLX_FLOAT={float}"),
            ]
        }
        other => vec![format!("WT_{other:?}")],
    })
}

/// One GPU as a model uses it: context, stream, cuBLAS, compiled modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: cudarc::cublas::CudaBlas,
    arch: (i32, i32),
    pub name: String,
    /// Multiprocessors, to size split-K attention.
    sms: usize,
    weight_modules: Mutex<HashMap<DType, Arc<Module>>>,
    ops: Module,
    /// The first error of a step's launches (the trait's block operations return nothing; the step's
    /// `logits` reports it).
    err: Mutex<Option<Error>>,
}

impl Gpu {
    fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// The weight module for `dtype`, compiled (or read from the cache) on first use.
    fn weights_module(&self, dtype: DType) -> Result<Arc<Module>> {
        let mut mods = self.weight_modules.lock().expect("module cache");
        if let Some(m) = mods.get(&dtype) {
            return Ok(m.clone());
        }
        let src = format!("{QUANT_CUH}\n{WEIGHTS_CU}");
        let cubin = nvrtc::compile("weights", &src, &weight_defines(dtype)?, self.arch)?;
        let m = Arc::new(Module::load(&self.ctx, &cubin, &WEIGHT_KERNELS)?);
        mods.insert(dtype, m.clone());
        Ok(m)
    }

    /// Launches and remembers the first failure.
    fn run(
        &self,
        f: sys::CUfunction,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &mut [*mut c_void],
    ) {
        let r = memory::launch(f, self.cu_stream(), grid, block, args);
        self.note(r);
    }

    fn note(&self, r: Result<()>) {
        if let Err(e) = r {
            let mut slot = self.err.lock().expect("error slot");
            slot.get_or_insert(e);
        }
    }

    fn take_err(&self) -> Result<()> {
        match self.err.lock().expect("error slot").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The CUDA backend for one model on one device.
pub struct Cuda {
    gpu: Arc<Gpu>,
    /// Uploaded tensors by name: a tied embedding/output matrix is uploaded once.
    uploaded: Mutex<HashMap<String, Arc<DevBuf>>>,
    /// (bytes uploaded so far, bytes to upload), for the progress callback.
    progress: Mutex<(usize, usize)>,
    on_progress: Option<ProgressFn>,
    /// The GEMM operand type for dequantized weights: bf16 where f16 could overflow (Gemma's activations,
    /// bf16 checkpoints), else f16 (three more mantissa bits).
    gemm_bf16: bool,
}

/// Hears (bytes uploaded, bytes in all) as weights go to the GPU.
pub type ProgressFn = Arc<dyn Fn(usize, usize) + Send + Sync>;

impl Cuda {
    /// Opens device `n` for a model with `weights`, compiling the model's kernels; checks that the weights
    /// fit in the device's free memory before uploading any.
    pub fn open(
        n: usize,
        c: &ModelConfig,
        weights: &Weights,
        progress: Option<ProgressFn>,
    ) -> Result<Cuda> {
        probe(n).map_err(Error::Other)?;
        let ctx = drv("open device", CudaContext::new(n))?;
        let stream = drv("stream", ctx.new_stream())?;
        let blas = cudarc::cublas::CudaBlas::new(stream.clone())
            .map_err(|e| Error::Other(format!("cuBLAS: {e}")))?;
        let arch = drv("compute capability", ctx.compute_capability())?;
        let name = ctx.name().unwrap_or_default();
        let sms = drv(
            "multiprocessor count",
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        )? as usize;
        if c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
            return Err(Error::Other(format!(
                "{} query heads do not group evenly over {} KV heads",
                c.n_heads, c.n_kv_heads
            )));
        }
        let defines = vec![
            format!("HEAD_DIM={}", c.head_dim),
            format!("GQA={}", c.n_heads / c.n_kv_heads),
            "WT_F32".into(),
        ];
        let src = format!("{QUANT_CUH}\n{OPS_CU}");
        let cubin = nvrtc::compile("ops", &src, &defines, arch)?;
        let ops = Module::load(&ctx, &cubin, &OPS_KERNELS)?;
        let gpu = Arc::new(Gpu {
            ctx,
            stream,
            blas,
            arch,
            name,
            sms,
            weight_modules: Mutex::new(HashMap::new()),
            ops,
            err: Mutex::new(None),
        });
        // Everything the model will upload (tied matrices once); the file's bytes, as stored.
        let total: usize = weights.tensors.values().map(|t| t.bytes().len()).sum();
        let (free, dev_total) = drv("memory info", result::mem_get_info())?;
        // Room beyond the weights for activations, cuBLAS and the KV cache of a first sequence.
        let reserve = 512usize << 20;
        if total + reserve > free {
            return Err(Error::OutOfMemory(format!(
                "the model needs {:.2} GiB of GPU memory for its weights (plus {:.1} GiB working room) but \
                 {} has {:.2} of {:.2} GiB free",
                total as f64 / GIB,
                reserve as f64 / GIB,
                gpu.name,
                free as f64 / GIB,
                dev_total as f64 / GIB
            )));
        }
        let gemm_bf16 = c.arch == crate::models::config::Arch::Gemma3
            || weights.tensors.values().any(|t| t.dtype == DType::BF16);
        Ok(Cuda {
            gpu,
            uploaded: Mutex::new(HashMap::new()),
            progress: Mutex::new((0, total)),
            on_progress: progress,
            gemm_bf16,
        })
    }

    /// Ends the upload: waits for the copies, reports 100% and forgets the progress callback.
    pub fn finish_upload(&mut self) -> Result<()> {
        drv("synchronize", self.gpu.stream.synchronize())?;
        if let Some(p) = self.on_progress.take() {
            let (_, total) = *self.progress.lock().expect("progress");
            p(total, total);
        }
        Ok(())
    }

    /// Bytes of device memory the weights take.
    pub fn weight_bytes(&self) -> usize {
        self.uploaded
            .lock()
            .expect("uploads")
            .values()
            .map(|b| b.bytes)
            .sum()
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// A KV cache with no blocks yet (a single sequence's, grown as it goes).
    pub fn empty_kv(&self, c: &ModelConfig, block_size: usize) -> PagedKv {
        let kv_dim = c.n_kv_heads * c.head_dim;
        let store = DeviceKv::new(self.gpu.clone(), c.n_layers, kv_dim, block_size);
        PagedKv::with_storage(kv_dim, block_size, 0, Box::new(store))
    }

    /// A KV cache of `n_blocks` blocks in device memory.
    pub fn new_kv(&self, c: &ModelConfig, block_size: usize, n_blocks: usize) -> Result<PagedKv> {
        let mut kv = self.empty_kv(c, block_size);
        kv.grow(n_blocks)?;
        Ok(kv)
    }

    /// Step buffers for up to `max_tokens` rows.
    pub fn new_step(&self, c: &ModelConfig, max_tokens: usize) -> Result<DevStep> {
        DevStep::new(self.gpu.clone(), c, max_tokens, self.gemm_bf16)
    }

    fn act_ptr(s: &DevStep, a: Act) -> u64 {
        match a {
            Act::X => s.x.ptr,
            Act::Xb => s.xb.ptr,
            Act::Xb2 => s.xb2.ptr,
        }
    }

    fn norm_launch(&self, name: &str, n: usize, args: &mut [*mut c_void]) {
        self.gpu
            .run(self.gpu.ops.f(name), (n as u32, 1, 1), (256, 1, 1), args);
    }

    fn elementwise(&self, name: &str, n: usize, args: &mut [*mut c_void]) {
        let blocks = n.div_ceil(256) as u32;
        self.gpu.run(
            self.gpu.ops.f(name),
            (blocks.max(1), 1, 1),
            (256, 1, 1),
            args,
        );
    }
}

const GIB: f64 = (1u64 << 30) as f64;

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
        let n = rows.tokens.len();
        table.embed(&self.gpu, s.tokens, n, s.x.ptr, scale);
    }

    fn rmsnorm(&self, s: &mut DevStep, n: usize, src: Act, gain: &DevBuf, eps: f32, dst: Act) {
        let (x, g, o) = (Self::act_ptr(s, src), gain.ptr, Self::act_ptr(s, dst));
        let dim = (gain.bytes / 4) as i32;
        self.norm_launch(
            "rmsnorm_rows",
            n,
            &mut [arg(&x), arg(&g), arg(&o), arg(&dim), arg(&eps)],
        );
    }

    fn add_rmsnorm(&self, s: &mut DevStep, n: usize, src: Act, gain: &DevBuf, eps: f32, dst: Act) {
        let (x, a, g, o) = (
            s.x.ptr,
            Self::act_ptr(s, src),
            gain.ptr,
            Self::act_ptr(s, dst),
        );
        let dim = (gain.bytes / 4) as i32;
        self.norm_launch(
            "add_rmsnorm_rows",
            n,
            &mut [arg(&x), arg(&a), arg(&g), arg(&o), arg(&dim), arg(&eps)],
        );
    }

    fn attention(
        &self,
        s: &mut DevStep,
        kv: &mut DeviceKv,
        rows: &StepRows,
        a: &Attention<Cuda>,
        c: &ModelConfig,
    ) {
        let n = rows.tokens.len();
        let gpu = &self.gpu;
        // q, k, v = xb · Wqᵀ, Wkᵀ, Wvᵀ: [n, qdim], [n, kv_dim] x2.
        a.wq.matmul(self, s, s.xb.ptr, n, s.q.ptr);
        a.wk.matmul(self, s, s.xb.ptr, n, s.k.ptr);
        a.wv.matmul(self, s, s.xb.ptr, n, s.v.ptr);
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
        let (q, k, v, pos) = (s.q.ptr, s.k.ptr, s.v.ptr, s.positions);
        let (rs, toff, tabs, bs) = (s.row_seq, s.table_off, s.tables, kv.block_size as i32);
        let (nh, nkv, eps) = (c.n_heads as i32, c.n_kv_heads as i32, c.rms_eps);
        let threads = c.head_dim.div_ceil(32) as u32 * 32;
        gpu.run(
            gpu.ops.f("qkv_finish"),
            (n as u32, (c.n_heads + c.n_kv_heads) as u32, 1),
            (threads, 1, 1),
            &mut [
                arg(&q),
                arg(&k),
                arg(&v),
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
        let (split_len, n_splits) = s.splits(n, c.n_kv_heads, gpu.sms);
        let (part, att) = (s.part.ptr, s.att.ptr);
        let (scale, softcap) = (c.attn_scale, c.attn_logit_softcap.unwrap_or(0.0));
        let (sl, ns) = (split_len as i32, n_splits as i32);
        gpu.run(
            gpu.ops.f("attn_partial"),
            ((n * c.n_kv_heads) as u32, n_splits as u32, 1),
            (128, 1, 1),
            &mut [
                arg(&q),
                arg(&kc),
                arg(&vc),
                arg(&pos),
                arg(&rs),
                arg(&toff),
                arg(&tabs),
                arg(&part),
                arg(&nkv),
                arg(&bs),
                arg(&window),
                arg(&scale),
                arg(&softcap),
                arg(&sl),
                arg(&ns),
            ],
        );
        gpu.run(
            gpu.ops.f("attn_combine"),
            ((n * c.n_heads) as u32, 1, 1),
            (threads.min(256), 1, 1),
            &mut [arg(&part), arg(&att), arg(&ns)],
        );
        // out = att · Woᵀ: [n, hidden]
        a.wo.matmul(self, s, s.att.ptr, n, s.xb2.ptr);
    }

    fn mlp(&self, s: &mut DevStep, n: usize, m: &Mlp<Cuda>, c: &ModelConfig) {
        m.gate.matmul(self, s, s.xb.ptr, n, s.gate.ptr);
        m.up.matmul(self, s, s.xb.ptr, n, s.up.ptr);
        let (g, u) = (s.gate.ptr, s.up.ptr);
        let count = (n * c.ffn) as i64;
        let act = match m.act {
            Activation::Silu => 0i32,
            Activation::GeluTanh => 1,
        };
        self.elementwise(
            "act_mul",
            n * c.ffn,
            &mut [arg(&g), arg(&u), arg(&count), arg(&act)],
        );
        m.down.matmul(self, s, s.gate.ptr, n, s.xb2.ptr);
    }

    fn logits<'s>(
        &self,
        s: &'s mut DevStep,
        rows: &StepRows,
        w: &DevMat,
        softcap: Option<f32>,
    ) -> Result<&'s [f32]> {
        let n_out = rows.out_rows.len();
        let (hidden, vocab) = (w.cols, w.rows);
        s.logits_host.resize(n_out * vocab, 0.0);
        if n_out > 0 {
            let (src, rws, out, dim) = (s.xb.ptr, s.out_rows, s.out_x.ptr, hidden as i32);
            self.gpu.run(
                self.gpu.ops.f("gather_rows"),
                (n_out as u32, 1, 1),
                (256, 1, 1),
                &mut [arg(&src), arg(&rws), arg(&out), arg(&dim)],
            );
            s.ensure_logits(n_out * vocab)?;
            w.matmul(self, s, s.out_x.ptr, n_out, s.logits_dev.ptr);
            if let Some(cap) = softcap {
                let (l, count) = (s.logits_dev.ptr, (n_out * vocab) as i64);
                self.elementwise(
                    "softcap_inplace",
                    n_out * vocab,
                    &mut [arg(&l), arg(&count), arg(&cap)],
                );
            }
            self.gpu.take_err()?;
            s.download_logits(n_out * vocab)?;
        }
        self.gpu.take_err()?;
        Ok(&s.logits_host[..n_out * vocab])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::mlx::{MlxFloat, MlxMode, MlxQuant};
    use crate::tensor::mlx_blocks::MlxBlocks;

    /// NVRTC is a host library: every kernel module can be compiled on a machine without a GPU. CI installs
    /// libnvrtc and sets HEARTH_REQUIRE_NVRTC=1, so a kernel that does not compile fails there; elsewhere the
    /// test says it skipped.
    fn nvrtc_or_skip() -> bool {
        match nvrtc::version() {
            Ok(_) => true,
            Err(e) if std::env::var_os("HEARTH_REQUIRE_NVRTC").is_some() => {
                panic!("HEARTH_REQUIRE_NVRTC is set but NVRTC cannot be loaded: {e}")
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                false
            }
        }
    }

    #[test]
    fn every_weight_module_compiles() {
        if !nvrtc_or_skip() {
            return;
        }
        let mut types: Vec<DType> = crate::tensor::dtype::ALL_DTYPES.to_vec();
        for (mode, bits, group) in [
            (MlxMode::Affine, 4, 64),
            (MlxMode::Affine, 8, 32),
            (MlxMode::Affine, 3, 128),
            (MlxMode::Mxfp4, 4, 32),
            (MlxMode::Nvfp4, 4, 16),
            (MlxMode::Mxfp8, 8, 32),
        ] {
            let q = MlxQuant::new(mode, bits, group).unwrap();
            types.push(DType::Mlx(MlxBlocks::new(q, MlxFloat::BF16)));
        }
        let src = format!("{QUANT_CUH}\n{WEIGHTS_CU}");
        for t in types {
            let mut opts = vec!["--gpu-architecture=sm_90".to_string(), "--std=c++17".into()];
            opts.extend(weight_defines(t).unwrap().iter().map(|d| format!("-D{d}")));
            let bin = nvrtc::compile_uncached("weights", &src, &opts)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(bin.len() > 1000, "{t}: a CUBIN of {} bytes", bin.len());
        }
    }

    #[test]
    fn ops_module_compiles_for_every_head_shape() {
        if !nvrtc_or_skip() {
            return;
        }
        let src = format!("{QUANT_CUH}\n{OPS_CU}");
        // Head sizes and GQA groups of the supported families (and the tiny test models' 16).
        for (hd, gqa) in [
            (16, 2),
            (64, 3),
            (128, 4),
            (128, 8),
            (256, 4),
            (256, 1),
            (80, 5),
        ] {
            for arch in ["sm_80", "sm_90"] {
                let opts = vec![
                    format!("--gpu-architecture={arch}"),
                    "--std=c++17".into(),
                    format!("-DHEAD_DIM={hd}"),
                    format!("-DGQA={gqa}"),
                    "-DWT_F32".into(),
                ];
                nvrtc::compile_uncached("ops", &src, &opts)
                    .unwrap_or_else(|e| panic!("head_dim {hd}, gqa {gqa}, {arch}: {e}"));
            }
        }
    }
}
