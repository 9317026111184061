//! Backends and devices. Model code is generic; these are the concrete choices: `flex` on CPU, and
//! CUDA when built with `--features cuda` (device `cuda:N` in configs).

use anyhow::{Result, bail};
use std::str::FromStr;

pub type Cpu = burn::backend::Flex;
pub type CpuTrain = burn::backend::Autodiff<Cpu>;
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type GpuTrain = burn::backend::Autodiff<Gpu>;
/// CUDA in half precision, for encoding with `encode.precision = "f16"`.
#[cfg(feature = "cuda")]
pub type GpuHalf = burn::backend::Cuda<burn::tensor::f16>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let spec = match s {
            "cpu" => DeviceSpec::Cpu,
            "cuda" => DeviceSpec::Cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => DeviceSpec::Cuda(n),
                _ => bail!("unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""),
            },
        };
        if matches!(spec, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
            bail!("device {s:?} needs a CUDA build: rebuild with `--features cuda`");
        }
        Ok(spec)
    }
}

#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice::new(index)
}

/// The backend jobs run on: CUDA in a `--features cuda` build (a GPU worker), the CPU otherwise.
#[cfg(not(feature = "cuda"))]
pub type Job = Cpu;
#[cfg(feature = "cuda")]
pub type Job = Gpu;
/// [`Job`] with autodiff, for training jobs.
pub type JobTrain = burn::backend::Autodiff<Job>;

/// The device jobs run on, in words: `cuda:N` in a CUDA build, else `cpu (N cores)`.
pub fn describe_job_device() -> String {
    match crate::env::get().device.as_deref() {
        Some(d) if cfg!(feature = "cuda") => d.to_string(),
        _ if cfg!(feature = "cuda") => "cuda:0".into(),
        _ => format!("cpu ({} cores)", std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The device jobs run on: `$PHRASESWEEP_DEVICE` (`cuda:N` in a CUDA build, default `cuda:0`), else the CPU.
pub fn job_device() -> Result<burn::tensor::Device<Job>> {
    let spec: DeviceSpec = crate::env::get().device.as_deref().unwrap_or(if cfg!(feature = "cuda") { "cuda:0" } else { "cpu" }).parse()?;
    match spec {
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => Ok(cuda_device(n)),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cpu => bail!("this worker is a CUDA build: PHRASESWEEP_DEVICE must be cuda or cuda:N"),
        #[cfg(not(feature = "cuda"))]
        _ => Ok(Default::default()),
    }
}
