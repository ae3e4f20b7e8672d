//! The sampler options of `scoregen sample`, built exactly as the CLI builds them
//! (`SamplerArgs::build` in crates/scoregen-cli/src/cmd/mod.rs), so that the same options
//! and seed give the same samples.

use pyo3::prelude::*;
use scoregen::process::TimeGrid;
use scoregen::sample::{SampleOptions, Sampler, SamplerParams};

use crate::common::*;

/// The sampler options as given.
pub struct SamplerSpec<'a> {
    pub sampler: &'a str,
    pub steps: usize,
    pub b: f64,
    pub eta: f64,
    pub snr: f64,
    pub predictor: &'a str,
    pub corrector_steps: usize,
    pub grid: Option<&'a str>,
    pub t_min: f64,
    pub denoise: bool,
    pub seed: u64,
}

impl SamplerSpec<'_> {
    /// The sampler and options, with the CLI's checks.
    pub fn build(&self) -> PyResult<(Sampler, SampleOptions)> {
        let params = SamplerParams {
            b: self.b,
            eta: self.eta,
            snr: self.snr,
            predictor: self.predictor.to_string(),
            corrector_steps: self.corrector_steps,
            ..Default::default()
        };
        let sampler = Sampler::from_name(self.sampler, &params).py()?;
        let grid = self.grid.map(|g| g.parse::<TimeGrid>()).transpose().py()?;
        count("steps", self.steps, 1, MAX_STEPS)?;
        if !(self.b.is_finite() && (0.0..=100.0).contains(&self.b)) {
            return Err(invalid(format!("b must be a number in [0, 100], got {}", self.b)));
        }
        count("corrector_steps", self.corrector_steps, 0, MAX_ROUNDS)?;
        let opts = SampleOptions {
            steps: self.steps,
            grid,
            t_min: self.t_min,
            denoise: self.denoise,
            seed: self.seed,
            ..Default::default()
        };
        Ok((sampler, opts))
    }
}
