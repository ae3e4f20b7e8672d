//! The commands, one file each, and what several of them share: the sampler options, the
//! draw count / seed / output options and the output checks.
//!
//! Each command parses its arguments, checks sizes and outputs before any work, calls one
//! library function and prints or writes what it returns.

pub mod bench;
pub mod demo;
pub mod ebm;
pub mod eval;
pub mod exact;
pub mod impute;
pub mod likelihood;
pub mod plot;
pub mod posterior;
pub mod sample;
pub mod train;

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use clap::Args;
use scoregen::process::TimeGrid;
use scoregen::sample::{SampleOptions, Sampler, SamplerParams};

use crate::limits;
use crate::{CliError, CliResult};

/// Options of the sampler family shared by the commands that sample.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// em (b_t family, Euler–Maruyama), ei (exponential integrator), heun (PF-ODE), ddpm,
    /// ddim, ald (annealed Langevin), pc (predictor–corrector), rk45 (the PF-ODE by adaptive
    /// Dormand–Prince, rtol = atol = 1e-5; ignores --steps).
    #[arg(long, default_value = "em")]
    pub sampler: String,
    /// Number of steps (ald: total Langevin steps).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// b of the reverse family (em, ei, pc): 1 reverse SDE, 0 probability-flow ODE.
    #[arg(long, default_value_t = 1.0)]
    pub b: f64,
    /// eta of ddim (0 deterministic, 1 = ddpm).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Target signal-to-noise ratio of the pc corrector.
    #[arg(long, default_value_t = 0.16)]
    pub snr: f64,
    /// Predictor of pc: em, ei, ddpm, ddim or heun.
    #[arg(long, default_value = "em")]
    pub predictor: String,
    /// Langevin corrector steps per time of pc.
    #[arg(long, default_value_t = 1)]
    pub corrector_steps: usize,
    /// Time grid: uniform, quadratic, edm, edm:RHO, logsnr (default: quadratic; logsnr for ald).
    #[arg(long)]
    pub grid: Option<String>,
    /// Early-stopping time t_min.
    #[arg(long, default_value_t = 1e-3)]
    pub t_min: f64,
    /// Skip the final Tweedie denoising step.
    #[arg(long)]
    pub no_denoise: bool,
}

impl SamplerArgs {
    /// The sampler and options these arguments name.
    pub fn build(&self, seed: u64) -> CliResult<(Sampler, SampleOptions)> {
        let params = SamplerParams {
            b: self.b,
            eta: self.eta,
            snr: self.snr,
            predictor: self.predictor.clone(),
            corrector_steps: self.corrector_steps,
            ..Default::default()
        };
        let sampler = Sampler::from_name(&self.sampler, &params)?;
        let grid = self.grid.as_deref().map(|g| g.parse::<TimeGrid>()).transpose()?;
        limits::count("--steps", self.steps, 1, limits::MAX_STEPS)?;
        // b scales the score term of every step: beyond ~10 the chain is unstable for any
        // step count a user would run.
        if !(self.b.is_finite() && (0.0..=100.0).contains(&self.b)) {
            return Err(CliError::user(format!(
                "--b must be a number in [0, 100], got {}",
                self.b
            )));
        }
        limits::count("--corrector-steps", self.corrector_steps, 0, limits::MAX_ROUNDS)?;
        let opts = SampleOptions {
            steps: self.steps,
            grid,
            t_min: self.t_min,
            denoise: !self.no_denoise,
            seed,
            ..Default::default()
        };
        Ok((sampler, opts))
    }
}

/// How many draws, the seed and the output file.
#[derive(Args, Debug)]
pub struct Draws {
    /// Number of samples.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.npy or .csv).
    #[arg(long)]
    pub out: PathBuf,
}

impl Draws {
    /// Checks, before any work, that `n > 0` and that the output can be written.
    pub fn check(&self) -> CliResult<()> {
        check_output(&self.out)?;
        limits::count("--n", self.n, 1, usize::MAX)?;
        Ok(())
    }
}

/// Fails early (before any work) if `out` cannot be written as points.
pub fn check_output(out: &Path) -> CliResult<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "npy" | "csv") {
        return Err(CliError::user(format!(
            "{}: output must end in .npy or .csv",
            out.display()
        )));
    }
    check_parent(out)
}

/// Fails early if the directory of `out` does not exist.
pub fn check_parent(out: &Path) -> CliResult<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(CliError::user(format!(
            "{}: directory {} does not exist",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// The rows of a `[n, d]` tensor as row-major `f64`, with `d`.
pub fn rows_f64(t: &Tensor) -> CliResult<(Vec<f64>, usize)> {
    let (_, d) = t.dims2().map_err(scoregen::Error::from)?;
    let v = t
        .to_dtype(DType::F64)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1::<f64>())
        .map_err(scoregen::Error::from)?;
    Ok((v, d))
}
