//! `scoregen eval`: sample metrics against a reference ([`scoregen::metrics::compare_with`]).

use std::path::PathBuf;

use candle_core::DType;
use clap::Args;
use scoregen::budget::Estimate;
use scoregen::data;
use scoregen::inverse::Problem;
use scoregen::metrics;

use crate::limits;
use crate::{CliError, CliResult};

/// `scoregen eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Samples to evaluate (.npy or .csv).
    #[arg(long)]
    pub samples: PathBuf,
    /// Reference samples (.npy or .csv), e.g. from `scoregen exact`.
    #[arg(long)]
    pub reference: PathBuf,
    /// Problem file whose mixture prior gives the mixture-weight error.
    #[arg(long)]
    pub problem: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Random directions of the sliced Wasserstein distances.
    #[arg(long, default_value_t = 100)]
    pub directions: usize,
    /// Seed of the random directions.
    #[arg(long, default_value_t = 0)]
    pub sw_seed: u64,
}

/// `scoregen eval`.
pub fn run(a: EvalArgs) -> CliResult<()> {
    limits::count("--directions", a.directions, 1, 100_000)?;
    let x = data::read_points(&a.samples)?
        .to_dtype(DType::F64)
        .map_err(scoregen::Error::from)?;
    let r = data::read_points(&a.reference)?
        .to_dtype(DType::F64)
        .map_err(scoregen::Error::from)?;
    let problem = a.problem.as_ref().map(Problem::from_file).transpose()?;
    let law = problem.as_ref().map(|p| p.mixture()).transpose()?;
    {
        let (n, d) = x.dims2().map_err(scoregen::Error::from)?;
        let m = r.dims2().map_err(scoregen::Error::from)?.0;
        let e = limits::rows(Estimate::new(), "--samples", n, d, 3);
        let e = limits::rows(e, "--reference", m, d, 3).add(
            "--samples",
            format!("covariances and their square roots in dimension {d} (d x d x 8 buffers of f64)"),
            d as f64 * d as f64 * 8.0,
            8.0,
        );
        let e = e.add(
            "--directions",
            format!("--directions {} x (samples + reference + dimension)", a.directions),
            a.directions as f64 * (n + m + d) as f64,
            8.0,
        );
        limits::check_memory(&e)?;
    }
    let sliced = metrics::SlicedOptions {
        directions: a.directions,
        seed: a.sw_seed,
        ..Default::default()
    };
    let c = metrics::compare_with(&x, &r, law, &sliced)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).map_err(|e| CliError::user(e.to_string()))?
        );
    } else {
        println!(
            "samples {} x {}, reference {} x {}",
            c.n_samples, c.dim, c.n_reference, c.dim
        );
        for (name, v) in c.rows() {
            println!("{name:<20} {v:>12.5}");
        }
    }
    Ok(())
}
