//! Where a run computes: `cpu` (the model crate's kernels, all cores) or, in a build with the
//! `cuda` feature, `cuda` / `cuda:N` (dfdx's CUDA device on GPU `N`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A device named on the command line or in a config (`--device cuda:1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// NVIDIA GPU number `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceSpec::Cuda).ok_or_else(|| {
                Error::UnknownChoice { what: "device", name: other.into(), choices: "cpu, cuda or cuda:N" }
            }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `true` in a build with the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// dfdx's CUDA device on GPU `ordinal`, its RNG seeded with `seed`. cudarc panics instead of
/// returning an error when no driver or GPU is present; that panic becomes a one-line error.
/// With op profiling on ([`siamlab_model::profile`]), each timed op waits for this device, so
/// the per-op times are GPU times.
#[cfg(feature = "cuda")]
pub fn cuda_device(ordinal: usize, seed: u64) -> Result<dfdx::tensor::Cuda> {
    let dev = start_cuda(ordinal, seed)?;
    if siamlab_model::profile::enabled() {
        use dfdx::tensor::Synchronize;
        let d = dev.clone();
        siamlab_model::profile::set_sync(Some(Box::new(move || {
            let _ = d.try_synchronize();
        })));
    }
    Ok(dev)
}

#[cfg(feature = "cuda")]
fn start_cuda(ordinal: usize, seed: u64) -> Result<dfdx::tensor::Cuda> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(|| dfdx::tensor::Cuda::try_build(ordinal, seed));
    std::panic::set_hook(hook);
    match built {
        Ok(Ok(dev)) => Ok(dev),
        Ok(Err(e)) => Err(Error::config(format!("cuda:{ordinal}: cannot start the GPU ({e:?})"))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            let why = why.lines().next().unwrap_or_default();
            let why = why.strip_prefix("called `Result::unwrap()` on an `Err` value: ").unwrap_or(why);
            Err(Error::config(format!("cuda:{ordinal}: no usable GPU (the CUDA driver says: {why}); use --device cpu")))
        }
    }
}

/// Refuses `cuda` in a build without the feature, with what to do.
pub fn check_available(spec: DeviceSpec) -> Result<()> {
    match spec {
        DeviceSpec::Cuda(_) if !CUDA_BUILT => Err(Error::config(
            "--device cuda: this siamlab was built without the `cuda` feature; build it with \
             scripts/build-cuda.sh (or cargo build --release --features cuda with a CUDA toolkit)",
        )),
        _ => Ok(()),
    }
}

/// Every model op on `device` against the `Cpu` kernels, forward and backward
/// ([`siamlab_model::check::compare_ops`]): on `cuda`, the ops the GPU runs; on `cpu`, the
/// same compositions run by dfdx's CPU kernels.
pub fn check_ops(device: DeviceSpec) -> Result<Vec<siamlab_model::check::OpCheck>> {
    use siamlab_model::check::{compare_ops, Path};
    check_available(device)?;
    Ok(match device {
        DeviceSpec::Cpu => compare_ops(&dfdx::tensor::Cpu::default(), Path::Composed)?,
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => compare_ops(&cuda_device(n, 0)?, Path::Kernels)?,
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("check_available refuses cuda without the feature"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:2".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(2));
        let err = "tpu".parse::<DeviceSpec>().unwrap_err();
        assert!(matches!(&err, Error::UnknownChoice { what: "device", name, .. } if name == "tpu"), "{err}");
        assert_eq!(err.to_string(), "unknown device \"tpu\": use cpu, cuda or cuda:N");
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(Error::UnknownChoice { what: "device", .. })));
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let e = check_available(DeviceSpec::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("without the `cuda` feature") && e.contains("build-cuda.sh"), "{e}");
        assert!(check_available(DeviceSpec::Cpu).is_ok());
    }
}
