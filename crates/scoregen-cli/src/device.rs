//! The global `--device` option: where networks train and run.

use std::sync::OnceLock;

use candle_core::Device;

use crate::{CliError, CliResult};

static DEVICE: OnceLock<Device> = OnceLock::new();

/// Parses and records `--device` (`cpu`, `cuda` or `cuda:N`; default `cpu`).
pub fn set(name: Option<&str>) -> CliResult<()> {
    let device = scoregen::device::parse(name.unwrap_or("cpu")).map_err(|e| CliError::user(e.to_string()))?;
    let _ = DEVICE.set(device);
    Ok(())
}

/// The device `--device` named (the CPU when unset).
pub fn get() -> Device {
    DEVICE.get().cloned().unwrap_or(Device::Cpu)
}
