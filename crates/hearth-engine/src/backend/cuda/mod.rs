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

mod blocks;
mod dqmm;
mod matmul;
mod memory;
pub mod nvrtc;
pub mod profile;
mod split_sums;
mod step;

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use crate::backend::Act;
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::kv_cache::PagedKv;
use crate::models::weights::Weights;
use crate::tensor::DType;
pub use matmul::DevMat;
use memory::{drv, DevBuf};
pub use step::{DevStep, DeviceKv};

/// The CUDA C sources, concatenated into one translation unit per module (NVRTC has no include path here).
const QUANT_CUH: &str = include_str!("kernels/quant.cuh");
const COMMON_CUH: &str = include_str!("kernels/common.cuh");
const DECODE_FAST_CUH: &str = include_str!("kernels/decode_fast.cuh");
const WEIGHTS_CU: &str = include_str!("kernels/weights.cu");
const DQMM_CU: &str = include_str!("kernels/dqmm.cu");

/// The weight module's translation unit (the weight type is chosen by `-D` defines).
fn weights_source() -> String {
    format!("{QUANT_CUH}\n{COMMON_CUH}\n{DECODE_FAST_CUH}\n{WEIGHTS_CU}\n{DQMM_CU}")
}
const OPS_CU: &str = include_str!("kernels/ops.cu");
const ATTN_DECODE_CU: &str = include_str!("kernels/attn_decode.cu");
const FLASH_CU: &str = include_str!("kernels/flash.cu");

/// The ops module's translation unit (head size and GQA group are `-D` defines).
fn ops_source() -> String {
    format!("{QUANT_CUH}\n{COMMON_CUH}\n{OPS_CU}\n{ATTN_DECODE_CU}\n{FLASH_CU}")
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

/// Starts or stops an attached profiler's collection (cuProfilerStart/Stop; no-ops when none is attached).
/// The current thread must have a context, so this is called between steps of an open model.
pub(crate) fn profiler_range(start: bool) {
    // SAFETY: plain driver calls with no arguments; an error (no current context) is ignored.
    let _ = unsafe {
        if start {
            sys::cuProfilerStart()
        } else {
            sys::cuProfilerStop()
        }
    };
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

/// The kernels built on decode_fast.cuh's 8-bit unit decoder, in the modules of the types that have it
/// ([`has_q8_path`]): the integer matvec kernels `mvq8_N` and `gluq8_N` (N = 1, 2, 4, 8) against 8-bit
/// activations, and the tensor-core product `dqmm_f16`/`dqmm_bf16` (and `dqmm2_*`, two products of one
/// input) with its split-K sums (dqmm.cu).
const Q8_KERNELS: [&str; 14] = [
    "mvq8_1",
    "mvq8_2",
    "mvq8_4",
    "mvq8_8",
    "gluq8_1",
    "gluq8_2",
    "gluq8_4",
    "gluq8_8",
    "dqmm_f16",
    "dqmm_bf16",
    "dqmm2_f16",
    "dqmm2_bf16",
    "dqmm_sum",
    "dqmm_sum3",
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

const OPS_KERNELS: [&str; 14] = [
    "rmsnorm_rows",
    "qkv_finish",
    "attn_decode",
    "attn_decode_mma",
    "act_mul",
    "to_half",
    "gather_rows",
    "softcap_inplace",
    "scale_inplace",
    "flash_prefill",
    "quantize_q8",
    "act_mul_half",
    "logit_bias_rows",
    "argmax_rows",
];

/// Weight rows one matrix-vector block streams together (weights.cu's MV_NR): 2, which measured faster than
/// 4 for bf16, Q8_0 and Q4_K_M decode on an H200 (fewer registers, more blocks resident). `HEARTH_CUDA_NR=4`
/// overrides, for benchmarks.
pub(super) fn mv_rows() -> usize {
    static NR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *NR.get_or_init(|| match std::env::var("HEARTH_CUDA_NR").as_deref() {
        Ok("4") => 4,
        _ => 2,
    })
}

/// Whether the matrix-vector kernels for `dtype` prefetch their rows into L2 before waiting for the previous
/// kernel (weights.cu's MV_PREFETCH): for types under 8 bits a weight, whose integer kernels are bound by
/// latency more than by bandwidth (on an H200: Q4_K_M decode +7%; bf16 and Q8_0 lost 10% and 4% to it).
/// `HEARTH_CUDA_PREFETCH=0|1` overrides, for benchmarks.
fn mv_prefetch(dtype: DType) -> bool {
    match std::env::var("HEARTH_CUDA_PREFETCH").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => dtype.block_bytes() < dtype.block_elems(),
    }
}

/// A number from the environment (`var`), else `default` (also when it does not parse): knobs for benchmarks
/// (the matrix-vector kernels' `-D` values, dqmm's limits).
pub(super) fn env_knob<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A knob for one weight type: `{var}_{TYPE}` (say HEARTH_CUDA_MIN_BLOCKS_Q6_K), else `var`, else `default`.
fn type_knob<T: std::str::FromStr>(var: &str, dtype: DType, default: T) -> T {
    let own = format!("{var}_{dtype:?}");
    match std::env::var(&own).ok().and_then(|v| v.parse().ok()) {
        Some(v) => v,
        None => env_knob(var, default),
    }
}

/// Whether the one-row 8-bit matrix-vector products of `dtype` decode their first weights after the wait for
/// the previous kernel (weights.cu's MV_LATE_DECODE), so a block's weight and activation loads overlap; the
/// weights are loaded before it either way. On for every type: on an H200, Q4_K_M decode after 2,048 tokens
/// 403-406 tok/s against 384-389 (Q6_K early and Q4_K late: 396), Q8_0 unchanged.
/// `HEARTH_CUDA_MV_LATE[_TYPE]=0|1` overrides, for benchmarks.
fn mv_late_decode(dtype: DType) -> bool {
    type_knob("HEARTH_CUDA_MV_LATE", dtype, 1u32) != 0
}

/// The one-row matrix-vector kernels' register cap, in blocks a multiprocessor must fit (0: none; weights.cu's
/// MV_MIN_BLOCKS). 10 for Q4_K and Q8_0, whose late decode (see [`mv_late_decode`]) fits 48 registers
/// without spilling: on an H200, Q4_K_M decode after 2,048 tokens 412-415 tok/s against 406, Q8_0 369
/// against 363-368. Q6_K spills under it, and one block more (48 to 40 registers) spills Q4_K: 211 tok/s.
/// `HEARTH_CUDA_MIN_BLOCKS[_TYPE]` overrides, for benchmarks.
fn mv_min_blocks(dtype: DType) -> u32 {
    let default = match dtype {
        DType::Q4_K | DType::Q8_0 => 10,
        _ => 0,
    };
    type_knob("HEARTH_CUDA_MIN_BLOCKS", dtype, default).min(16)
}

/// The `-D` defines that select a weight type in `quant.cuh`, and the matrix-vector kernels' shape.
fn weight_defines(dtype: DType) -> Result<Vec<String>> {
    let mut d = type_defines(dtype);
    d.push(format!("MV_NR={}", mv_rows()));
    d.push(format!("MV_PREFETCH={}", mv_prefetch(dtype) as u8));
    // Units per thread and row in flight (HEARTH_CUDA_UPT). One unit measured best on an H200 (Q4_K_M decode
    // 339 tok/s against 310 with two; Q8_0 279 against 277): fewer registers, more blocks resident.
    d.push(format!(
        "MV_UPT={}",
        env_knob("HEARTH_CUDA_UPT", 1u32).clamp(1, 4)
    ));
    d.push(format!("MV_LATE_DECODE={}", mv_late_decode(dtype) as u8));
    d.push(format!("MV_MIN_BLOCKS={}", mv_min_blocks(dtype)));
    if has_q8_path(dtype) {
        // dqmm's shared memory as the host launches it: the kernel asserts at compile time that its layout
        // is the same size, so the two cannot drift apart unnoticed (every build compiles the modules).
        d.push(format!("DQ_SMEM_HOST={}", dqmm::dqmm_smem_bytes(dtype)));
    }
    Ok(d)
}

/// The `-D` defines that select a weight type in `quant.cuh`.
fn type_defines(dtype: DType) -> Vec<String> {
    use crate::tensor::mlx::{MlxFloat, MlxMode};
    match dtype {
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
    }
}

/// Threads of a decode attention block (attn_decode.cu's ATTN_THREADS): 128. On an H200, 256-thread blocks (shorter
/// dependent chains per warp, half the blocks resident) made the 8B model's decode slower: Q4_K_M 320 against
/// 338 tok/s, bf16 205 against 210. `HEARTH_CUDA_ATTN_THREADS=256` selects them for heads of a multiple of
/// 64 (the loops must divide evenly), for benchmarks.
fn attention_threads(head_dim: usize) -> u32 {
    match std::env::var("HEARTH_CUDA_ATTN_THREADS").as_deref() {
        Ok("256") if head_dim.is_multiple_of(64) => 256,
        _ => 128,
    }
}

/// Whether decode attention runs on the tensor cores: sm_80+, heads of a multiple of 16 up to 128 wide, GQA
/// groups of at most 4 (half of an mma's 8 columns; the other half carries the f16 remainders), 128-thread
/// blocks (four warps of 16 keys make a 64-key tile); the same conditions as attn_decode.cu's ATTN_MMA_OK.
/// HEARTH_CUDA_ATTN_MMA=0 keeps the CUDA-core kernel.
fn attention_on_mma(arch: (i32, i32), head_dim: usize, gqa: usize, attn_threads: u32) -> bool {
    arch.0 >= 8
        && head_dim.is_multiple_of(16)
        && head_dim <= 128
        && gqa <= 4
        && attn_threads == 128
        && env_knob("HEARTH_CUDA_ATTN_MMA", 1u32) != 0
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
    /// Threads of an attention block (attn_decode.cu's ATTN_THREADS).
    attn_threads: u32,
    /// Whether decode attention runs on the tensor cores (attn_decode_mma; see [`attention_on_mma`]).
    attn_mma: bool,
    /// Attention blocks a multiprocessor that decode steps aim for (their split count; see
    /// `DevStep::splits`): 2 for the tensor-core kernel, whose splits are short, 4 for the CUDA-core one
    /// (measured best at 1, 16 and 64 rows on an H200: attn_bench.rs); HEARTH_CUDA_ATTN_BLOCKS_PER_SM for
    /// benchmarks.
    attn_blocks_per_sm: usize,
    /// Whether kernels are launched with programmatic dependent launch (sm_90+; HEARTH_CUDA_PDL=0 turns it
    /// off).
    pdl: bool,
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
        let attn_threads = attention_threads(head_dim);
        let attn_mma = attention_on_mma(arch, head_dim, gqa, attn_threads);
        let defines = vec![
            format!("HEAD_DIM={head_dim}"),
            format!("GQA={gqa}"),
            format!("ATTN_THREADS={attn_threads}"),
            // Blocks a multiprocessor the tensor-core attention must fit: its register cap (4: 128
            // registers, no spill; 13.1 us at 64 rows on an H200 against 13.7 at 5 and 20.0 uncapped;
            // HEARTH_CUDA_ATTN_MMA_BLOCKS for benchmarks).
            format!(
                "ATTN_MMA_MIN_BLOCKS={}",
                env_knob("HEARTH_CUDA_ATTN_MMA_BLOCKS", 4u32).clamp(1, 16)
            ),
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
            attn_threads,
            attn_mma,
            attn_blocks_per_sm: env_knob(
                "HEARTH_CUDA_ATTN_BLOCKS_PER_SM",
                if attn_mma { 2 } else { 4 },
            )
            .max(1),
            pdl: arch.0 >= 9 && std::env::var("HEARTH_CUDA_PDL").map_or(true, |v| v != "0"),
            _workspace: workspace,
        }))
    }

    /// The decode attention kernel this GPU and head shape use.
    fn attn_kernel(&self) -> &'static str {
        if self.attn_mma {
            "attn_decode_mma"
        } else {
            "attn_decode"
        }
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
        if has_q8_path(dtype) && self.arch.0 >= 8 {
            // dqmm's shared tiles pass the 48 KiB default.
            let bytes = dqmm::dqmm_smem_bytes(dtype);
            for name in ["dqmm_f16", "dqmm_bf16", "dqmm2_f16", "dqmm2_bf16"] {
                // SAFETY: a function of the module just loaded; the attribute is a size in bytes.
                drv("dqmm shared memory", unsafe {
                    result::function::set_function_attribute(
                        m.f(name).f,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        bytes as i32,
                    )
                })?;
            }
        }
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
        if profile::skipped(k.name) {
            return;
        }
        let mut go = || memory::launch(k.f, self.cu_stream(), grid, block, smem, args, self.pdl);
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

/// Threads of a norm kernel's block: enough that each keeps at most 16 of the row's values (ops.cu's NORM_V4
/// float4s): a 4096-wide row takes 256 threads, whose fewer warps make the block's sum a shorter chain.
fn norm_threads(dim: usize) -> u32 {
    (dim.div_ceil(16).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Whether a norm kernel can also quantize its output row (every value held in registers: see ops.cu's
/// rmsnorm_rows).
fn norm_can_quantize(dim: usize) -> bool {
    dim.is_multiple_of(32) && dim <= 16 * norm_threads(dim) as usize
}

#[cfg(test)]
mod attn_bench;
#[cfg(test)]
mod tests;
