//! `scoregen likelihood`: `log p(x)` of each row of a data file under a trained model or the
//! prior of a problem file, by the probability-flow ODE ([`scoregen::likelihood`]).

use std::path::PathBuf;

use candle_core::DType;
use clap::Args;
use scoregen::budget::Estimate;
use scoregen::data;
use scoregen::inverse::{Prior, Problem};
use scoregen::likelihood::{self, Divergence, LikelihoodOptions, OdeSolver};
use scoregen::process::TimeGrid;
use scoregen::score::Score;

use crate::limits;
use crate::output::Outputs;
use crate::{CliError, CliResult};

/// `scoregen likelihood`.
#[derive(Args, Debug)]
pub struct LikelihoodArgs {
    /// A trained model (checkpoint directory); the data are in its own units.
    #[arg(long, conflicts_with = "problem", required_unless_present = "problem")]
    pub model: Option<PathBuf>,
    /// A problem file whose (Gaussian or mixture) prior is the model, with its exact score.
    #[arg(long)]
    pub problem: Option<PathBuf>,
    /// The points (.npy, .csv or .txt), one per row.
    #[arg(long)]
    pub data: PathBuf,
    /// exact (d vector-Jacobian products per step) or hutchinson (Rademacher probes)
    /// [default: exact up to 16 dimensions, hutchinson above].
    #[arg(long)]
    pub estimator: Option<String>,
    /// Hutchinson probes per row (2 or more give a standard error).
    #[arg(long, default_value_t = 4)]
    pub probes: usize,
    /// adaptive (Dormand–Prince 5(4) with --rtol / --atol) or fixed (--steps steps).
    #[arg(long, default_value = "adaptive")]
    pub solver: String,
    /// Relative tolerance of the adaptive solver.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
    /// Absolute tolerance of the adaptive solver.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    /// Steps of the fixed-step solver (on the log-SNR grid).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// The time the data are taken at.
    #[arg(long, default_value_t = 1e-5)]
    pub t_min: f64,
    /// Uniform dequantisation of this width (e.g. 1 for integer pixel values); the bits per
    /// dimension of the discrete data are then reported.
    #[arg(long)]
    pub dequantise: Option<f64>,
    /// Seed of the probes and the dequantisation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output (.npy or .csv): one log-density per row, in nats, in the data's units.
    #[arg(long)]
    pub out: PathBuf,
}

/// `scoregen likelihood`.
pub fn run(a: LikelihoodArgs, quiet: bool) -> CliResult<()> {
    limits::count("--probes", a.probes, 1, 10_000)?;
    limits::count("--steps", a.steps, 1, limits::MAX_STEPS)?;
    let mut outs = Outputs::new();
    outs.input("--data", &a.data);
    if let Some(m) = &a.model {
        outs.input("--model", m);
    }
    if let Some(p) = &a.problem {
        outs.input("--problem", p);
    }
    let out_tmp = outs.file("--out", &a.out)?;
    let x = data::read_points(&a.data)?;
    let (rows, n, d) = data::to_rows(&x)?;
    let solver = match a.solver.as_str() {
        "adaptive" => OdeSolver::Adaptive {
            rtol: a.rtol,
            atol: a.atol,
        },
        "fixed" => OdeSolver::Fixed {
            steps: a.steps,
            grid: TimeGrid::LogSnr,
        },
        o => return Err(CliError::user(format!("--solver '{o}': expected adaptive or fixed"))),
    };
    let divergence = match a.estimator.as_deref() {
        None if d <= 16 => Divergence::Exact,
        None => Divergence::Hutchinson { probes: a.probes },
        Some("exact") => Divergence::Exact,
        Some("hutchinson") => Divergence::Hutchinson { probes: a.probes },
        Some(o) => {
            return Err(CliError::user(format!(
                "--estimator '{o}': expected exact or hutchinson"
            )))
        }
    };
    let opts = LikelihoodOptions {
        divergence,
        solver,
        t_min: a.t_min,
        seed: a.seed,
        ..Default::default()
    };
    let probes = match divergence {
        Divergence::Exact => 1,
        Divergence::Hutchinson { probes } => probes,
    };
    // The ODE state (d + probes per row) and the solver's seven stages, per block of rows.
    let block = n.min(opts.block);
    let e = limits::rows(Estimate::new(), "--data", n, d, 3);
    let e = limits::rows(e, "--probes", block, d + probes, 10);
    limits::check_memory(&e)?;
    let rows = match a.dequantise {
        Some(w) if !(w > 0.0 && w <= 1e6) => {
            return Err(CliError::user(format!(
                "--dequantise must be a width in (0, 1e6] (the grid spacing of the data), got {w}"
            )))
        }
        Some(w) => likelihood::dequantise(&rows, w, a.seed)?,
        None => rows,
    };
    let (ll, closed_form) = match (&a.model, &a.problem) {
        (Some(dir), _) => {
            let (score, meta) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
            check_dim(score.dim(), d)?;
            (
                likelihood::model_log_likelihood(&score, &meta.normalisation, &rows, &opts)?,
                None,
            )
        }
        (None, Some(p)) => {
            let problem = Problem::from_file(p)?;
            let law = match &problem.prior {
                Prior::Mixture(law) => law.clone(),
                Prior::Model(_) => {
                    return Err(CliError::user(
                        "--problem: the prior is a trained model; pass its directory as --model",
                    ))
                }
            };
            check_dim(law.dim(), d)?;
            let score = scoregen::solve::prior_score(&law);
            let exact = law.log_prob(&rows)?;
            (likelihood::log_likelihood(&score, &rows, &opts)?, Some(exact))
        }
        (None, None) => return Err(CliError::user("give --model or --problem")),
    };
    let t = data::from_rows(ll.log_p.clone(), 1, DType::F64, &candle_core::Device::Cpu)?;
    data::write_points(&out_tmp, &t)?;
    outs.commit()?;
    if !quiet {
        eprintln!(
            "{n} rows, d = {d}: mean log p {:.4} nats, NLL {:.4} nats/dim ({} score evaluations, {} ODE steps accepted, {} rejected)",
            ll.log_p.iter().sum::<f64>() / n as f64,
            ll.nats_per_dim(d),
            ll.evaluations,
            ll.steps.0,
            ll.steps.1
        );
        if let Some(w) = a.dequantise {
            let bpd = ll.discrete_bits_per_dim(d, w);
            eprintln!("dequantised with width {w}: {bpd:.4} bits/dim (an upper bound)");
        }
        if let Some(se) = &ll.std_err {
            let mean_se = se.iter().sum::<f64>() / n as f64;
            eprintln!("Hutchinson ({probes} probes): mean standard error per row {mean_se:.4} nats");
        }
        if let Some(exact) = closed_form {
            eprintln!(
                "closed form of the prior: mean log p {:.4} nats",
                exact.iter().sum::<f64>() / n as f64
            );
        }
        eprintln!("wrote {}", a.out.display());
    }
    Ok(())
}

fn check_dim(model: usize, data: usize) -> CliResult<()> {
    if model != data {
        return Err(CliError::user(format!(
            "--data has {data} columns, the model {model} dimensions"
        )));
    }
    Ok(())
}
