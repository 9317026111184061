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
