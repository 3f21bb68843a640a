//! Shared by the CUDA test binaries (cuda_backend, cuda_q8, greedy_picks): whether a GPU is usable, and a
//! model opened on it.

use std::path::Path;

use hearth_engine::backend::Device;
use hearth_engine::models::{Model, OpenOptions};

/// Whether CUDA device 0 is usable. Without one the test says it skipped, unless HEARTH_REQUIRE_CUDA is set
/// (the device check script sets it), which makes a missing GPU a failure instead of a silent pass.
pub fn have_cuda() -> bool {
    match hearth_engine::backend::device::choose(Device::Cuda(0)) {
        Ok(_) => true,
        Err(e) if std::env::var_os("HEARTH_REQUIRE_CUDA").is_some() => {
            panic!("HEARTH_REQUIRE_CUDA is set but no CUDA device is usable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// The model at `p` on CUDA device 0.
pub fn open_gpu(p: &Path) -> Model {
    let opts = OpenOptions {
        device: Device::Cuda(0),
        progress: None,
    };
    Model::open_with(p, &opts).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
