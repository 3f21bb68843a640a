//! Which device runs a model: `--device auto|cpu|cuda|cuda:N`.
//!
//! `auto` (the default) takes the first CUDA GPU when the driver and a device are present and the CPU
//! otherwise; the choice and its reason are reported so a user who expected a GPU learns why they got the CPU.

use std::fmt;
use std::str::FromStr;

/// A device as the user asked for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA device number N.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Device::Cuda)
                    .map_err(|_| format!("`{s}`: the CUDA device number must be a whole number")),
                None => Err(format!(
                    "unknown device `{s}` (expected auto, cpu, cuda or cuda:N)"
                )),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => write!(f, "auto"),
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// (free, total) bytes of device memory of `device`, when it is a GPU that can be asked.
pub fn gpu_memory(device: Device) -> Option<(usize, usize)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => super::cuda::memory_info(n).ok(),
        _ => None,
    }
}

/// Memory bandwidth of a GPU in bytes/s (a device-to-device copy, read plus written bytes), for rooflines;
/// None for the CPU (measured by the caller) or when it cannot be measured.
pub fn gpu_copy_bandwidth(device: Device) -> Option<f64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => super::cuda::copy_bandwidth(n).ok(),
        _ => None,
    }
}

/// The GPU kernel-time breakdown gathered since the last call, when HEARTH_CUDA_PROFILE=1 (see
/// `backend::cuda::profile`); None otherwise.
pub fn profile_report() -> Option<String> {
    #[cfg(feature = "cuda")]
    if super::cuda::profile::enabled() {
        return Some(super::cuda::profile::report());
    }
    None
}

/// Marks the start (`true`) or end of the span an external GPU profiler records, when HEARTH_PROFILER_RANGE=1:
/// `ncu --profile-from-start off` then sees only that span (say, the decode steps of a benchmark), not the
/// model's upload and prefill. Without the variable, or without a GPU, it does nothing.
pub fn profiler_range(start: bool) {
    #[cfg(feature = "cuda")]
    if std::env::var("HEARTH_PROFILER_RANGE").is_ok_and(|v| v == "1") {
        super::cuda::profiler_range(start);
    }
    let _ = start;
}

/// The device a model actually runs on, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// `Device::Cpu` or `Device::Cuda(n)`, never `Auto`.
    pub device: Device,
    /// One line for the log: the GPU's name, or why the CPU was taken.
    pub reason: String,
}

/// Resolves `Auto` by probing for a CUDA device; an explicit `cuda:N` that cannot be opened is an error
/// (the user asked for that GPU), an explicit `cpu` is taken as is.
pub fn choose(want: Device) -> crate::error::Result<Chosen> {
    match want {
        Device::Cpu => Ok(Chosen {
            device: Device::Cpu,
            reason: "cpu (asked for)".into(),
        }),
        Device::Cuda(n) => cuda_probe(n).map_err(crate::error::Error::Other),
        Device::Auto => Ok(cuda_probe(0).unwrap_or_else(|why| Chosen {
            device: Device::Cpu,
            reason: format!("cpu (no usable CUDA GPU: {why})"),
        })),
    }
}

#[cfg(feature = "cuda")]
fn cuda_probe(n: usize) -> Result<Chosen, String> {
    let name = super::cuda::probe(n)?;
    Ok(Chosen {
        device: Device::Cuda(n),
        reason: format!("cuda:{n} ({name})"),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_probe(_n: usize) -> Result<Chosen, String> {
    Err("this hearth was built without the `cuda` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert_eq!("CPU".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn explicit_cpu_is_taken_as_is() {
        assert_eq!(choose(Device::Cpu).unwrap().device, Device::Cpu);
    }
}
