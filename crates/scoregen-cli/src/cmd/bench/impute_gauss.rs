//! `scoregen bench impute-gauss`: imputation of a 2-D Gaussian against its closed-form
//! posterior ([`scoregen::benchmarks::impute_gauss`]).

use clap::Args;
use scoregen::benchmarks::impute_gauss::{iid_rmse, posterior_mean, rmse_of_mean, run_seeds, score, summarise};
use scoregen::inverse::Method;

use crate::limits;
use crate::{CliError, CliResult};

/// `scoregen bench impute-gauss`.
#[derive(Args, Debug)]
pub struct BenchImputeGaussArgs {
    /// Observed values y of the first coordinate.
    #[arg(long, value_delimiter = ',', default_value = "-2,-1,0.5,2")]
    pub y: Vec<f64>,
    /// Particle counts of the convergence table.
    #[arg(long, value_delimiter = ',', default_value = "100,400,1600,6400")]
    pub particles: Vec<usize>,
    /// Independent runs per setting (error bars from their spread).
    #[arg(long, default_value_t = 12)]
    pub runs: u64,
    /// Reverse steps.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
}

/// `scoregen bench impute-gauss`: (Y, X) ~ N(0, [[1, 1.5], [1.5, 5]]), observe Y = y,
/// impute X (exact: N(1.5 y, 2.75)).
pub fn run(b: BenchImputeGaussArgs) -> CliResult<()> {
    if b.runs < 2 || b.particles.contains(&0) || b.steps == 0 {
        return Err(CliError::user("need --runs >= 2, positive particles and steps"));
    }
    limits::count(
        "--runs",
        usize::try_from(b.runs).unwrap_or(usize::MAX),
        2,
        limits::MAX_ROUNDS,
    )?;
    limits::count("--steps", b.steps, 1, limits::MAX_STEPS)?;
    let np = b.particles.iter().copied().max().unwrap_or(1);
    limits::check_memory(&limits::rows(
        scoregen::budget::Estimate::new(),
        "--particles",
        np,
        2,
        16,
    ))?;
    let score = score()?;
    println!(
        "bench impute-gauss: (Y, X) ~ N(0, [[1, 1.5], [1.5, 5]]), observe Y = y exactly, impute X ~ N(1.5 y, 2.75); {} steps, {} runs each (± = standard error over runs)",
        b.steps, b.runs
    );
    println!(
        "{:<12} {:>6} {:>9} {:>18} {:>18}",
        "method", "y", "particles", "mean (exact)", "variance (2.75)"
    );
    let np_main = *b.particles.iter().max().unwrap_or(&1600).min(&1600);
    for &y in &b.y {
        for name in ["replacement", "smc-impute", "mcgdiff", "tds"] {
            let m: Method = name.parse()?;
            let np = if m.is_smc() { np_main } else { 2000 };
            let ((mm, ms), (vm, vs)) = summarise(&run_seeds(&score, &m, y, np, b.steps, 0..b.runs)?);
            println!(
                "{:<12} {:>6} {:>9} {:>9.3} ±{:.3} ({:>5.2}) {:>9.3} ±{:.3}",
                name,
                y,
                np,
                mm,
                ms,
                posterior_mean(y),
                vm,
                vs
            );
        }
    }
    println!();
    println!("root-mean-square error of the posterior mean of X at y = 0.5, over runs:");
    print!("{:<12}", "particles");
    for np in &b.particles {
        print!(" {np:>9}");
    }
    println!();
    for name in ["smc-impute", "mcgdiff", "tds"] {
        let m: Method = name.parse()?;
        print!("{name:<12}");
        for &np in &b.particles {
            let runs = run_seeds(&score, &m, 0.5, np, b.steps, 100..100 + b.runs)?;
            print!(" {:>9.4}", rmse_of_mean(&runs, 0.5));
        }
        println!();
    }
    print!("{:<12}", "iid 1/sqrtN");
    for np in &b.particles {
        print!(" {:>9.4}", iid_rmse(*np));
    }
    println!();
    Ok(())
}
