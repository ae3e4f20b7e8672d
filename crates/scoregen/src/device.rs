//! Where the networks run: the CPU (the default, with the fused engine of [`crate::nn`]) or
//! a CUDA GPU through candle's CUDA backend (cargo feature `cuda`).
//!
//! Only the networks move: training steps, score evaluations and their gradients run on the
//! chosen device, while the samplers, the posterior methods and the SMC layer keep their
//! particles in host memory and call the network once per step on the whole batch (one
//! transfer of `[n, d]` each way). On the GPU the networks run in `f32` through candle's
//! kernels (cuBLAS for the products, candle's own convolutions and reductions), so results
//! agree with the CPU's to rounding, not bit for bit; a fixed seed still gives the same
//! numbers run after run on the same device.

use candle_core::Device;

use crate::{Error, Result};

/// The device a user names: `cpu`, `cuda` (GPU 0) or `cuda:N`.
///
/// `cuda` in a build without the `cuda` feature, or with no usable GPU, is an
/// [`Error::Invalid`] that says so.
pub fn parse(name: &str) -> Result<Device> {
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(i) => i
                    .parse::<usize>()
                    .map_err(|_| Error::invalid(format!("unknown device '{s}': expected cpu, cuda or cuda:N")))?,
            };
            cuda(ordinal)
        }
        other => Err(Error::invalid(format!(
            "unknown device '{}': expected cpu, cuda or cuda:N",
            crate::error::excerpt(other)
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        // The driver's error, without the backtrace candle appends (escaped or not).
        let text = e.to_string();
        let first = text
            .split(['\n'])
            .next()
            .unwrap_or("")
            .split("\\n")
            .next()
            .unwrap_or("");
        Error::invalid(format!(
            "CUDA device {ordinal} is not available: {}",
            crate::error::one_line(first.trim())
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(Error::invalid(
        "this scoregen was built without CUDA: rebuild with `cargo build --release --features cuda` (see docs/gpu.md)",
    ))
}

/// A short name of `device` for messages and reports: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(name(&Device::Cpu), "cpu");
        for bad in ["gpu", "cuda:x", "", "CPU"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("unknown device"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let e = parse("cuda").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
