//! `scoregen bench gmm`: the Gaussian-mixture posterior benchmark of Cardoso et al. 2024
//! (MCGdiff) and Janati et al. 2024 (DCPS) ([`scoregen::benchmarks::gmm`]): a table of
//! sliced Wasserstein and weight errors, a CSV and figures.

use std::path::PathBuf;

use clap::Args;
use scoregen::benchmarks::gmm::{gmm_methods, published, run_gmm_bench, GmmBenchOptions};

use crate::limits;
use crate::plot::{line_plot, pair_plot, Series};
use crate::{CliError, CliResult};

/// `scoregen bench gmm`.
#[derive(Args, Debug)]
pub struct BenchGmmArgs {
    /// Dimension of x.
    #[arg(long, default_value_t = 10)]
    pub dx: usize,
    /// Dimension of y.
    #[arg(long, default_value_t = 1)]
    pub dy: usize,
    /// Number of random problems.
    #[arg(long, default_value_t = 20)]
    pub problems: usize,
    /// Methods, comma separated, or "all" (the methods that take any operator).
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// Particles per SMC run; a comma-separated list gives the convergence curve.
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    pub particles: Vec<usize>,
    /// Reverse steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Samples per method and problem (and exact samples for the reference).
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed of the problems.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for gmm_dxD_dyK.csv and the figures.
    #[arg(long, default_value = "out")]
    pub out_dir: PathBuf,
}

/// `scoregen bench gmm`.
pub fn run(b: BenchGmmArgs, quiet: bool) -> CliResult<()> {
    let mut opts = GmmBenchOptions {
        dx: b.dx,
        dy: b.dy,
        problems: b.problems,
        methods: Vec::new(),
        particles: b.particles.clone(),
        steps: b.steps,
        n: b.n,
        seed: b.seed,
    };
    opts.validate()?;
    let np = b.particles.iter().copied().max().unwrap_or(1).max(b.n);
    limits::count("--steps", b.steps, 1, limits::MAX_STEPS)?;
    let e = limits::rows(scoregen::budget::Estimate::new(), "--particles", np, b.dx, 16);
    limits::check_memory(&e.add(
        "--dx",
        format!("--dx {} x --dy {} operator and SVD (x 4 buffers of f64)", b.dx, b.dy),
        b.dx as f64 * (b.dx + b.dy) as f64 * 4.0,
        8.0,
    ))?;
    if !b.out_dir.is_dir() {
        std::fs::create_dir_all(&b.out_dir).map_err(|e| CliError::user(format!("{}: {e}", b.out_dir.display())))?;
    }
    opts.methods = gmm_methods(&b.methods)?;
    let bench = run_gmm_bench(&opts, &mut |r| {
        if !quiet && r.method != "exact" {
            eprintln!(
                "problem {}: {:<8} N={:<6} SW {:.3} (floor {:.3}) dw {:.3} {:.1}s{}",
                r.problem,
                r.method,
                r.particles,
                r.sw,
                r.floor,
                r.weight_error,
                r.seconds,
                match r.ess {
                    Some((ess, resamplings)) => format!(" ESS/N min {ess:.3} resamplings {resamplings:.1}"),
                    None => String::new(),
                }
            );
        }
    })?;
    let series: Vec<Series> = bench
        .figure
        .iter()
        .map(|(label, data)| Series { label, data, d: 2 })
        .collect();
    pair_plot(
        &b.out_dir.join(format!("gmm_dx{}_dy{}.png", b.dx, b.dy)),
        &series,
        &format!(
            "posterior samples, problem 0 (dx={}, dy={}): v1 projection vs x_1",
            b.dx, b.dy
        ),
        2,
    )
    .map_err(CliError::user)?;
    let csv_path = b.out_dir.join(format!("gmm_dx{}_dy{}.csv", b.dx, b.dy));
    let csv = bench.csv();
    scoregen::io::write_atomic(&csv_path, |w| Ok(w.write_all(csv.as_bytes())?))?;
    let (floor_median, floor_mean) = bench.floor_median_mean();
    println!(
        "bench gmm: dx = {}, dy = {}, {} problems, {} samples, {} steps, {} threads",
        b.dx,
        b.dy,
        b.problems,
        b.n,
        b.steps,
        rayon::current_num_threads()
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>16}",
        "method", "particles", "SW median", "SW mean", "dw mean", "s/problem", "paper (med/mean)"
    );
    println!(
        "{:<10} {:>9} {:>10.3} {:>10.3} {:>9} {:>9} {:>16}",
        "floor", "-", floor_median, floor_mean, "-", "-", "-"
    );
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for s in bench.summary() {
        println!(
            "{:<10} {:>9} {:>10.3} {:>10.3} {:>9.3} {:>9.2} {:>16}",
            s.method,
            if s.smc { s.particles.to_string() } else { "-".into() },
            s.sw_median,
            s.sw_mean,
            s.weight_error_mean,
            s.seconds_mean,
            published(&s.method, b.dx)
        );
        if s.smc {
            let point = (s.particles as f64, s.sw_median);
            match curves.iter_mut().find(|c| c.0 == s.method) {
                Some(c) => c.1.push(point),
                None => curves.push((s.method.clone(), vec![point])),
            }
        }
    }
    println!("wrote {}", csv_path.display());
    if b.particles.len() > 1 && !curves.is_empty() {
        let floor_line: Vec<(f64, f64)> = b.particles.iter().map(|&p| (p as f64, floor_median)).collect();
        let mut lines: Vec<(&str, &[(f64, f64)])> = curves.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
        lines.push(("noise floor", &floor_line));
        let path = b.out_dir.join(format!("gmm_particles_dx{}_dy{}.png", b.dx, b.dy));
        line_plot(
            &path,
            "SMC methods: median sliced Wasserstein vs particles",
            "particles",
            "median SW",
            &lines,
            true,
            true,
        )
        .map_err(CliError::user)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
