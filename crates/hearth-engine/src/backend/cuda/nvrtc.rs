//! Kernels compiled at run time by NVRTC for the device's own architecture, and cached on disk.
//!
//! Compiling at run time lets a kernel be specialised for the model at hand (head size, GQA group, weight
//! type as compile-time constants) and for the exact GPU, with no CUDA toolkit at build time. NVRTC emits a
//! CUBIN for `sm_XY` directly, so the driver has no PTX to JIT. A compile takes a second or so; the CUBIN is
//! kept under the cache directory keyed by a hash of (source, options, architecture, NVRTC version), so
//! the second start of the same model loads in milliseconds.

use std::ffi::{c_char, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result, sys};

use crate::error::{Error, Result};

/// Where compiled kernels are kept: `$HEARTH_CUDA_CACHE`, else `$XDG_CACHE_HOME/hearth/cuda`, else
/// `~/.cache/hearth/cuda`; None when none of these can be named (compiling still works, uncached).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HEARTH_CUDA_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("hearth").join("cuda"))
}

/// NVRTC's version, (major, minor); fails when libnvrtc cannot be loaded.
pub fn version() -> Result<(i32, i32)> {
    // SAFETY: probing for the library first, so the dynamic loader's panic on a missing library is never hit.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Other(
            "libnvrtc (CUDA 13) was not found; install the CUDA runtime libraries or add them to \
             LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::Other(format!("NVRTC: {e:?}")))?;
    Ok((major, minor))
}

/// Two 64-bit FNV-1a hashes with different offsets: a 128-bit cache key (collisions are not a security
/// concern here, only an accident to avoid).
fn key(parts: &[&[u8]]) -> String {
    let mut h = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4u64];
    for p in parts {
        for (i, hv) in h.iter_mut().enumerate() {
            for &b in p.iter().chain(&[0xffu8]) {
                *hv = (*hv ^ (b as u64 + i as u64)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{:016x}{:016x}", h[0], h[1])
}

/// Compiles `src` (one translation unit, no includes) for compute capability `arch` with `defines`
/// (`NAME=VALUE` or `NAME`) and returns the CUBIN, from the cache when it holds one.
pub fn compile(name: &str, src: &str, defines: &[String], arch: (i32, i32)) -> Result<Vec<u8>> {
    let ver = version()?;
    let mut opts = vec![
        format!("--gpu-architecture=sm_{}{}", arch.0, arch.1),
        "--std=c++17".to_string(),
        "-lineinfo".to_string(),
    ];
    opts.extend(defines.iter().map(|d| format!("-D{d}")));
    let opt_text = opts.join(" ");
    let k = key(&[
        src.as_bytes(),
        opt_text.as_bytes(),
        format!("{ver:?}").as_bytes(),
    ]);
    let cached = cache_dir().map(|d| d.join(format!("{name}-{k}.cubin")));
    if let Some(p) = &cached {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let cubin = compile_uncached(name, src, &opts)?;
    if let Some(p) = &cached {
        // Best effort: a read-only home still runs, it just compiles every time.
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(cubin)
}

/// One NVRTC compilation; the log comes back in the error.
pub fn compile_uncached(name: &str, src: &str, opts: &[String]) -> Result<Vec<u8>> {
    let fail = |what: &str, log: String| {
        Error::Other(format!(
            "NVRTC could not compile the `{name}` kernels ({what}):\n{log}"
        ))
    };
    let csrc = CString::new(src).map_err(|_| fail("source has a NUL byte", String::new()))?;
    let cname = CString::new(format!("{name}.cu")).expect("no NUL in kernel names");
    let prog = result::create_program(&csrc, Some(&cname))
        .map_err(|e| fail("create", format!("{e:?}")))?;
    // SAFETY: `prog` is a live program until destroy_program below; `csrc` and `cname` outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, opts);
        let log = result::get_program_log(prog)
            .map(|l| c_chars_to_string(&l))
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(fail(&format!("{e:?}"), log)),
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(fail(&format!("{e:?}"), log)),
                    Ok(()) => {
                        let mut bin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut c_char)
                            .result()
                            .map(|_| bin)
                            .map_err(|e| fail(&format!("{e:?}"), log))
                    }
                }
            }
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

#[allow(clippy::unnecessary_cast)] // c_char is i8 on x86_64, u8 on aarch64
fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_differ_by_every_part() {
        let a = key(&[b"src", b"-DX=1"]);
        assert_eq!(a, key(&[b"src", b"-DX=1"]));
        assert_ne!(a, key(&[b"src", b"-DX=2"]));
        assert_ne!(a, key(&[b"src2", b"-DX=1"]));
        // Part boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(a.len(), 32);
    }
}
