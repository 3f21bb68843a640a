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
pub mod profile;
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
use step::GraphExec;
pub use step::{DevStep, DeviceKv};

/// The CUDA C sources, concatenated into one translation unit per module (NVRTC has no include path here).
const QUANT_CUH: &str = include_str!("kernels/quant.cuh");
const DECODE_FAST_CUH: &str = include_str!("kernels/decode_fast.cuh");
const WEIGHTS_CU: &str = include_str!("kernels/weights.cu");

/// The weight module's translation unit (the weight type is chosen by `-D` defines).
fn weights_source() -> String {
    format!("{QUANT_CUH}\n{DECODE_FAST_CUH}\n{WEIGHTS_CU}")
}
const OPS_CU: &str = include_str!("kernels/ops.cu");
const FLASH_CU: &str = include_str!("kernels/flash.cu");

/// The ops module's translation unit (head size and GQA group are `-D` defines).
fn ops_source() -> String {
    format!("{QUANT_CUH}\n{OPS_CU}\n{FLASH_CU}")
}

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
    // bf16 conversions and the tensor-core attention kernel (mma.m16n8k16) need Ampere or newer.
    if major < 8 {
        return Err(format!(
            "{name} has compute capability {major}.{minor}; hearth's CUDA backend needs 8.0 (Ampere) or newer"
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

/// Device-to-device copy bandwidth of CUDA device `n` in bytes/s, counting bytes read plus bytes written:
/// the median of ten copies of a 2 GiB buffer (less when memory is short). The decode roofline of a GPU is
/// this over the bytes a token reads.
pub fn copy_bandwidth(n: usize) -> Result<f64> {
    probe(n).map_err(Error::Other)?;
    let ctx = drv("open device", CudaContext::new(n))?;
    let stream = drv("stream", ctx.new_stream())?;
    let (free, _) = drv("memory info", ctx.mem_get_info())?;
    let bytes = (2usize << 30).min(free / 4).max(1 << 20);
    let (a, b) = (DevBuf::alloc(&ctx, bytes)?, DevBuf::alloc(&ctx, bytes)?);
    let s = stream.cu_stream();
    let mut times = Vec::new();
    // SAFETY: both buffers hold `bytes`; events are created, used on this stream and destroyed here.
    unsafe {
        drv("memset", result::memset_d8_async(a.ptr, 1, bytes, s))?;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let (e0, e1) = (
            drv("event", result::event::create(flags))?,
            drv("event", result::event::create(flags))?,
        );
        for _ in 0..11 {
            drv("event", result::event::record(e0, s))?;
            drv("copy", result::memcpy_dtod_async(b.ptr, a.ptr, bytes, s))?;
            drv("event", result::event::record(e1, s))?;
            drv("event", result::event::synchronize(e1))?;
            times.push(drv("event", result::event::elapsed(e0, e1))?);
        }
        let _ = result::event::destroy(e0);
        let _ = result::event::destroy(e1);
    }
    times.remove(0); // the first copy warms up
    times.sort_by(|x, y| x.total_cmp(y));
    let ms = times[times.len() / 2] as f64;
    Ok(2.0 * bytes as f64 / (ms / 1e3))
}

/// A kernel: its function handle and its name (for errors and the profiler).
#[derive(Clone, Copy)]
pub struct Kernel {
    f: sys::CUfunction,
    name: &'static str,
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

    fn f(&self, name: &str) -> Kernel {
        let (&name, &f) = self
            .functions
            .get_key_value(name)
            .unwrap_or_else(|| panic!("kernel {name} was not loaded"));
        Kernel { f, name }
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded once, unloaded once; nothing runs from it after its owner is dropped.
        let _ = unsafe { result::module::unload(self.module) };
    }
}

/// The weight kernels' names in every weight module: `matvec_N` and `glu_N` for N = 1, 2, 4, 8 activation
/// rows (see [`matvec_kernel`]).
const WEIGHT_KERNELS: [&str; 11] = [
    "matvec_1",
    "matvec_2",
    "matvec_4",
    "matvec_8",
    "glu_1",
    "glu_2",
    "glu_4",
    "glu_8",
    "dequant_rows",
    "embed_rows",
    "deq_compare",
];

/// The integer (8-bit activation) matvec kernels, in the modules of the types that have them
/// ([`has_q8_path`]): `mvq8_N` and `gluq8_N` for N = 1, 2, 4, 8.
const Q8_KERNELS: [&str; 8] = [
    "mvq8_1", "mvq8_2", "mvq8_4", "mvq8_8", "gluq8_1", "gluq8_2", "gluq8_4", "gluq8_8",
];

/// Whether `dtype` has integer dot-product kernels against 8-bit activations (decode_fast.cuh's `unit_q8`).
fn has_q8_path(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_K | DType::Q6_K)
}

/// The largest compiled activation-row count not above `n` (1, 2, 4 or 8), and the matvec (false) or glu
/// (true) kernel's name for it.
fn matvec_kernel(n: usize, glu: bool) -> (usize, &'static str) {
    let (nc, i) = match n {
        0 | 1 => (1, 0),
        2 | 3 => (2, 1),
        4..=7 => (4, 2),
        _ => (8, 3),
    };
    (nc, WEIGHT_KERNELS[i + if glu { 4 } else { 0 }])
}

/// [`matvec_kernel`] for the integer kernels.
fn matvec_q8_kernel(n: usize, glu: bool) -> (usize, &'static str) {
    let (nc, _) = matvec_kernel(n, glu);
    let i = nc.trailing_zeros() as usize;
    (nc, Q8_KERNELS[i + if glu { 4 } else { 0 }])
}

/// Dynamic shared memory of `flash_prefill`: Q, K and V tiles of 64 rows of `head_dim + 8` halves.
fn flash_smem_bytes(head_dim: usize) -> usize {
    3 * 64 * (head_dim + 8) * 2
}

const OPS_KERNELS: [&str; 12] = [
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
    "flash_prefill",
    "quantize_q8",
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
    _workspace: DevBuf,
}

/// cuBLAS's workspace: 32 MiB, what NVIDIA recommends for Hopper.
const CUBLAS_WORKSPACE: usize = 32 << 20;

impl Gpu {
    /// Opens device `n` and compiles the ops module for heads of `head_dim` in GQA groups of `gqa`.
    fn open(n: usize, head_dim: usize, gqa: usize) -> Result<Arc<Gpu>> {
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
        let defines = vec![
            format!("HEAD_DIM={head_dim}"),
            format!("GQA={gqa}"),
            "WT_F32".into(),
        ];
        let cubin = nvrtc::compile("ops", &ops_source(), &defines, arch)?;
        let ops = Module::load(&ctx, &cubin, &OPS_KERNELS)?;
        // The flash kernel's shared tiles (Q, K, V: 64 rows each) pass the 48 KiB default for large heads.
        let flash_smem = flash_smem_bytes(head_dim);
        // SAFETY: a function of the module just loaded; the attribute is a size in bytes.
        drv("flash kernel shared memory", unsafe {
            result::function::set_function_attribute(
                ops.f("flash_prefill").f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                flash_smem as i32,
            )
        })?;
        // cuBLAS gets its workspace up front: inside a CUDA graph capture it may not allocate.
        let workspace = DevBuf::alloc(&ctx, CUBLAS_WORKSPACE)?;
        // SAFETY: the handle is live; the workspace outlives it (both are fields of the Gpu, the handle
        // declared first so it is destroyed first).
        unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *blas.handle(),
                workspace.ptr as *mut c_void,
                CUBLAS_WORKSPACE,
            )
        }
        .result()
        .map_err(|e| Error::Other(format!("cuBLAS workspace: {e:?}")))?;
        Ok(Arc::new(Gpu {
            ctx,
            stream,
            blas,
            arch,
            name,
            sms,
            weight_modules: Mutex::new(HashMap::new()),
            ops,
            err: Mutex::new(None),
            _workspace: workspace,
        }))
    }

    fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// The weight module for `dtype`, compiled (or read from the cache) on first use.
    fn weights_module(&self, dtype: DType) -> Result<Arc<Module>> {
        let mut mods = self.weight_modules.lock().expect("module cache");
        if let Some(m) = mods.get(&dtype) {
            return Ok(m.clone());
        }
        let cubin = nvrtc::compile(
            "weights",
            &weights_source(),
            &weight_defines(dtype)?,
            self.arch,
        )?;
        let mut names = WEIGHT_KERNELS.to_vec();
        if has_q8_path(dtype) {
            names.extend(Q8_KERNELS);
        }
        let m = Arc::new(Module::load(&self.ctx, &cubin, &names)?);
        mods.insert(dtype, m.clone());
        Ok(m)
    }

    /// Launches and remembers the first failure.
    fn run(
        &self,
        k: Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &mut [*mut c_void],
    ) {
        self.run_smem(k, grid, block, 0, args)
    }

    /// [`Gpu::run`] with `smem` bytes of dynamic shared memory.
    fn run_smem(
        &self,
        k: Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        smem: u32,
        args: &mut [*mut c_void],
    ) {
        let mut go = || memory::launch(k.f, self.cu_stream(), grid, block, smem, args);
        let r = if profile::enabled() {
            profile::timed(k.name, self.cu_stream(), go)
        } else {
            go()
        };
        self.note(r.map_err(|e| Error::Other(format!("{}: {e}", k.name))));
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
        if !c.head_dim.is_multiple_of(16) {
            return Err(Error::unsupported(
                &weights.path,
                format!(
                    "the CUDA backend needs heads of a multiple of 16 dimensions; this model's are {}",
                    c.head_dim
                ),
            ));
        }
        if c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
            return Err(Error::Other(format!(
                "{} query heads do not group evenly over {} KV heads",
                c.n_heads, c.n_kv_heads
            )));
        }
        let gpu = Gpu::open(n, c.head_dim, c.n_heads / c.n_kv_heads)?;
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

    /// One block per row; enough threads that each keeps at most 4 of the row's values (8 fit in its
    /// registers), so a single decode row still spreads over a whole block.
    fn norm_launch(&self, name: &str, n: usize, dim: usize, args: &mut [*mut c_void]) {
        let threads = (dim.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32;
        self.gpu.run(
            self.gpu.ops.f(name),
            (n as u32, 1, 1),
            (threads, 1, 1),
            args,
        );
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
            dim as usize,
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
            dim as usize,
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
        DevMat::matmul_group(
            self,
            s,
            s.xb.ptr,
            n,
            &[(&a.wq, s.q.ptr), (&a.wk, s.k.ptr), (&a.wv, s.v.ptr)],
        );
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
        let n_splits = s.splits(n, c.n_kv_heads, gpu.sms);
        let (part, att, ml, fr) = (s.part.ptr, s.att.ptr, s.max_len_dev, s.flash_rows);
        let nh = c.n_heads as i32;
        let (scale, softcap) = (c.attn_scale, c.attn_logit_softcap.unwrap_or(0.0));
        let ns = n_splits as i32;
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
                arg(&ml),
                arg(&ns),
                arg(&fr),
            ],
        );
        gpu.run(
            gpu.ops.f("attn_combine"),
            ((n * c.n_heads) as u32, 1, 1),
            (threads.min(256), 1, 1),
            &mut [arg(&part), arg(&att), arg(&ns), arg(&fr), arg(&nh)],
        );
        // Rows of sequences with many rows this step (prompt chunks): the tensor-core kernel.
        if s.flash_tiles > 0 {
            let tl = s.flash_tile_list;
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
                ],
            );
        }
        // out = att · Woᵀ: [n, hidden]
        a.wo.matmul(self, s, s.att.ptr, n, s.xb2.ptr);
    }

    fn mlp(&self, s: &mut DevStep, n: usize, m: &Mlp<Cuda>, c: &ModelConfig) {
        let act = match m.act {
            Activation::Silu => 0i32,
            Activation::GeluTanh => 1,
        };
        // gate = act(xb · Wgᵀ) * (xb · Wuᵀ): one fused pass for decode-sized steps, else two products
        // and the activation.
        if !DevMat::glu(self, s, &m.gate, &m.up, s.xb.ptr, n, s.gate.ptr, act) {
            DevMat::matmul_group(
                self,
                s,
                s.xb.ptr,
                n,
                &[(&m.gate, s.gate.ptr), (&m.up, s.up.ptr)],
            );
            let (g, u) = (s.gate.ptr, s.up.ptr);
            let count = (n * c.ffn) as i64;
            self.elementwise(
                "act_mul",
                n * c.ffn,
                &mut [arg(&g), arg(&u), arg(&count), arg(&act)],
            );
        }
        m.down.matmul(self, s, s.gate.ptr, n, s.xb2.ptr);
    }

    fn project(&self, s: &mut DevStep, rows: &StepRows, w: &DevMat, softcap: Option<f32>) {
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
        s.logits_host.resize(count, 0.0);
        if count > 0 {
            s.download_logits(count)?;
        }
        if profile::enabled() {
            drv("synchronize", self.gpu.stream.synchronize())?;
            profile::collect();
        }
        self.gpu.take_err()?;
        Ok(&s.logits_host[..count])
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
        let src = weights_source();
        for t in types {
            let mut opts = vec!["--gpu-architecture=sm_90".to_string(), "--std=c++17".into()];
            opts.extend(weight_defines(t).unwrap().iter().map(|d| format!("-D{d}")));
            let bin = nvrtc::compile_uncached("weights", &src, &opts)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(bin.len() > 1000, "{t}: a CUBIN of {} bytes", bin.len());
        }
    }

    /// On a GPU: the fast decoders (decode_fast.cuh) give the reference decoders' bits on random blocks of
    /// every weight type. Skipped without a GPU unless HEARTH_REQUIRE_CUDA is set.
    #[test]
    fn fast_decoders_equal_reference_on_gpu() {
        if let Err(e) = probe(0) {
            assert!(
                std::env::var_os("HEARTH_REQUIRE_CUDA").is_none(),
                "HEARTH_REQUIRE_CUDA is set but {e}"
            );
            eprintln!("skipped: {e}");
            return;
        }
        let gpu = Gpu::open(0, 64, 1).unwrap();
        let mut rng = crate::sample::Rng::seed_from_u64(7);
        let mut types: Vec<DType> = crate::tensor::dtype::ALL_DTYPES.to_vec();
        let q = MlxQuant::new(MlxMode::Affine, 4, 64).unwrap();
        types.push(DType::Mlx(MlxBlocks::new(q, MlxFloat::F16)));
        for t in types {
            let k = 2048;
            let bytes = t.bytes_for(k).unwrap();
            let row: Vec<u8> = (0..bytes).map(|_| (rng.next_u64() >> 56) as u8).collect();
            let dev = DevBuf::alloc(&gpu.ctx, bytes).unwrap();
            memory::upload(gpu.cu_stream(), dev.ptr, &row).unwrap();
            let count = DevBuf::alloc(&gpu.ctx, 4).unwrap();
            memory::upload(gpu.cu_stream(), count.ptr, &[0u32]).unwrap();
            let m = gpu.weights_module(t).unwrap();
            let (p, units, c) = (dev.ptr, (k / 32) as i32, count.ptr);
            gpu.run(
                m.f("deq_compare"),
                (1, 1, 1),
                (64, 1, 1),
                &mut [arg(&p), arg(&units), arg(&c)],
            );
            gpu.take_err().unwrap();
            let mut out = [0u32];
            // SAFETY: a 4-byte buffer read into a 4-byte array, then the stream is synchronized.
            unsafe {
                result::memcpy_dtoh_async(&mut out[..], c, gpu.cu_stream()).unwrap();
                result::stream::synchronize(gpu.cu_stream()).unwrap();
            }
            assert_eq!(
                out[0], 0,
                "{t}: {} weights differ between the decoders",
                out[0]
            );
        }
    }

    #[test]
    fn ops_module_compiles_for_every_head_shape() {
        if !nvrtc_or_skip() {
            return;
        }
        let src = ops_source();
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
