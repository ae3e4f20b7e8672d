//! `scoregen exact`: exact draws of the Gaussian or Gaussian-mixture prior of a problem
//! file ([`scoregen::score::GaussianMixture::sample`]).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::budget::Estimate;
use scoregen::data;
use scoregen::inverse::Problem;
use scoregen::rng::Noise;

use super::Draws;
use crate::limits;
use crate::output::Outputs;
use crate::CliResult;

/// `scoregen exact`.
#[derive(Args, Debug)]
pub struct ExactArgs {
    /// Problem file (JSON, docs/formats.md) with a Gaussian or Gaussian-mixture prior.
    #[arg(long)]
    pub problem: PathBuf,
    #[command(flatten)]
    pub draws: Draws,
}

/// `scoregen exact`.
pub fn run(a: ExactArgs, quiet: bool) -> CliResult<()> {
    a.draws.check()?;
    let Draws { n, seed, out } = &a.draws;
    let mut outs = Outputs::new();
    outs.input("--problem", &a.problem);
    let out_tmp = outs.file("--out", out)?;
    let law = Problem::from_file(&a.problem)?.mixture()?.clone();
    limits::check_memory(&limits::rows(Estimate::new(), "--n", *n, law.dim(), 3))?;
    let x = law.sample(*n, &Noise::new(*seed), 0);
    let t = Tensor::from_vec(x, (*n, law.dim()), &Device::Cpu).map_err(scoregen::Error::from)?;
    data::write_points(&out_tmp, &t)?;
    outs.commit()?;
    if !quiet {
        eprintln!("wrote {n} exact samples to {}", out.display());
    }
    Ok(())
}
