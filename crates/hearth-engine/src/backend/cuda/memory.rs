//! Device memory and kernel launches at the driver level.
//!
//! hearth keeps its own thin layer over cudarc's `result` functions instead of cudarc's safe slices: a step
//! launches hundreds of kernels, and the safe layer's per-argument event tracking (made for many streams) costs
//! time on every launch and gets in the way of graph capture. One model uses one stream, so ordering is the
//! stream's, and a buffer is just a device address with an owner that frees it.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext};

use crate::error::{Error, Result};

/// Turns a driver error into an engine error that says what was being done.
pub fn drv<T>(what: &str, r: std::result::Result<T, result::DriverError>) -> Result<T> {
    r.map_err(|e| Error::Other(format!("CUDA {what}: {e}")))
}

/// An allocation of device memory, freed on drop.
pub struct DevBuf {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: a device address is plain data; the context it belongs to is thread-safe, and every use of the
// memory goes through the owning model's one stream.
unsafe impl Send for DevBuf {}
unsafe impl Sync for DevBuf {}

impl DevBuf {
    /// `bytes` of uninitialized device memory (at least one byte, so every buffer has an address).
    pub fn alloc(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DevBuf> {
        drv("context", ctx.bind_to_thread())?;
        // SAFETY: a plain allocation; the pointer is owned by the returned value.
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| {
            let (free, total) = result::mem_get_info().unwrap_or((0, 0));
            Error::OutOfMemory(format!(
                "out of GPU memory: cannot allocate {:.1} MiB ({:.1} of {:.1} GiB free): {e}",
                bytes as f64 / (1 << 20) as f64,
                free as f64 / (1u64 << 30) as f64,
                total as f64 / (1u64 << 30) as f64
            ))
        })?;
        Ok(DevBuf {
            ptr,
            bytes,
            ctx: ctx.clone(),
        })
    }

    /// `bytes` of device memory set to zero (counters that kernels keep across steps).
    pub fn zeroed(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DevBuf> {
        let b = DevBuf::alloc(ctx, bytes)?;
        // SAFETY: the buffer holds at least `bytes.max(1)` bytes.
        drv("memset", unsafe {
            result::memset_d8_sync(b.ptr, 0, bytes.max(1))
        })?;
        Ok(b)
    }

    /// The address `off` bytes in.
    #[inline]
    pub fn at(&self, off: usize) -> u64 {
        debug_assert!(off <= self.bytes);
        self.ptr + off as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from malloc_sync and is freed once, here. Errors (a context already torn down
            // at exit) leave nothing to recover.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// Copies host data to device memory on `stream` and waits (the source may be a memory map about to be
/// released, so the copy must be done before returning).
pub fn upload<T>(stream: sys::CUstream, dst: u64, src: &[T]) -> Result<()> {
    // SAFETY: `dst` addresses at least size_of_val(src) bytes (callers allocate it so); the copy completes
    // before `src` can go away because the stream is synchronized.
    unsafe {
        drv(
            "copy to device",
            result::memcpy_htod_async(dst, src, stream),
        )?;
        drv("synchronize", result::stream::synchronize(stream))
    }
}

/// A kernel argument as the driver wants it: a pointer to the value.
pub fn arg<T>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

/// Launches `f` on `stream`: `args` are pointers to each argument value (see [`arg`]), which must outlive
/// the call (the driver copies them at launch). With `pdl`, the kernel may start while the previous one in
/// the stream finishes (programmatic dependent launch, sm_90+): every kernel of hearth waits for its
/// predecessor at its start (common.cuh's PDL_PROLOGUE), so only launch latency and weight prefetches overlap.
pub fn launch(
    f: sys::CUfunction,
    stream: sys::CUstream,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    smem: u32,
    args: &mut [*mut c_void],
    pdl: bool,
) -> Result<()> {
    if !pdl {
        // SAFETY: `f` is a function of a loaded module; the caller passes arguments matching its signature,
        // all device pointers owned by live buffers.
        return unsafe {
            drv(
                "kernel launch",
                result::launch_kernel(f, grid, block, smem, stream, args),
            )
        };
    }
    // SAFETY: a zeroed attribute is a valid plain-data value; the id and the union member set match.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block.0,
        blockDimY: block.1,
        blockDimZ: block.2,
        sharedMemBytes: smem,
        hStream: stream,
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: as above; `config` and `attr` live across the call.
    let r = unsafe {
        sys::cuLaunchKernelEx(&config, f, args.as_mut_ptr(), std::ptr::null_mut()).result()
    };
    drv("kernel launch", r)
}
