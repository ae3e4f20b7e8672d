//! `scoregen bench quality`: train on each built-in set with the defaults, then compare
//! samples and likelihoods with held-out data ([`scoregen::benchmarks::quality`]).

use std::path::PathBuf;

use clap::Args;
use scoregen::benchmarks::quality::{run_quality, QualityOptions, QUALITY_SETS};
use scoregen::budget::Estimate;

use crate::limits;
use crate::{CliError, CliResult};

/// `scoregen bench quality`.
#[derive(Args, Debug)]
pub struct BenchQualityArgs {
    /// Sets, comma separated (default: all of two-spheres, gmm25, mixture, moons,
    /// swiss-roll, checkerboard, funnel, digits; `mixture` is a random 2-d Gaussian mixture
    /// drawn from --seed, trained as a plain unlabelled file).
    #[arg(long, value_delimiter = ',')]
    pub sets: Option<Vec<String>>,
    /// Training points of the synthetic sets.
    #[arg(long, default_value_t = 20_000)]
    pub n_train: usize,
    /// Samples and held-out points compared (synthetic sets).
    #[arg(long, default_value_t = 2000)]
    pub n_eval: usize,
    /// Training steps [default: the trainer's, 4000 (MLP) and 1500 (U-Net)].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Reverse steps of the Euler–Maruyama sampler.
    #[arg(long, default_value_t = 1000)]
    pub sample_steps: usize,
    /// Held-out rows whose log-likelihood is computed (0: none).
    #[arg(long, default_value_t = 200)]
    pub likelihood_rows: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What the networks output: edm, eps, x0 or score.
    #[arg(long, default_value = "edm")]
    pub param: String,
    /// Training-time sampling: uniform, logsnr, mixed or lognormal [default: lognormal with
    /// --param edm, else mixed].
    #[arg(long)]
    pub time_sampling: Option<String>,
    /// Train the synthetic sets that have labels (two-spheres, gmm25, moons) on them, as
    /// `scoregen train` does by default, and sample the training frequencies' class mixture
    /// [default: unconditional, as for a plain unlabelled file].
    #[arg(long)]
    pub conditional: bool,
    /// Time cut t_min of training and sampling [default: 1e-3, the trainer's and sampler's].
    #[arg(long)]
    pub t_min: Option<f64>,
    /// Directory for the trained models (one subdirectory per set; must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the benchmark and prints one table row per set, then the set-specific statistics.
pub fn run(b: BenchQualityArgs, quiet: bool) -> CliResult<()> {
    limits::count("--n-train", b.n_train, 2, usize::MAX)?;
    limits::count("--n-eval", b.n_eval, 2, usize::MAX)?;
    // The largest synthetic set has 10 columns; each set's data, held-out sets and samples.
    let e = limits::rows(Estimate::new(), "--n-train", b.n_train, 10, 2);
    limits::check_memory(&limits::rows(e, "--n-eval", b.n_eval, 10, 6))?;
    limits::count("--sample-steps", b.sample_steps, 1, limits::MAX_STEPS)?;
    if let Some(s) = b.steps {
        limits::count("--steps", s, 1, limits::MAX_TRAIN_STEPS)?;
    }
    if b.out.exists() {
        return Err(CliError::user(format!(
            "--out {}: already exists (choose a new directory)",
            b.out.display()
        )));
    }
    let param: scoregen::score::Parametrisation = b.param.parse()?;
    let opts = QualityOptions {
        sets: b
            .sets
            .unwrap_or_else(|| QUALITY_SETS.iter().map(|s| s.to_string()).collect()),
        n_train: b.n_train,
        n_eval: b.n_eval,
        steps: b.steps,
        sample_steps: b.sample_steps,
        likelihood_rows: b.likelihood_rows,
        seed: b.seed,
        device: crate::device::get(),
        param,
        time_sampling: match &b.time_sampling {
            Some(s) => s.parse()?,
            None => scoregen::nn::train::TimeSampling::default_for(param),
        },
        conditional: b.conditional,
        t_min: b.t_min,
    };
    let rows = run_quality(&opts, &b.out, &mut |set, stage| {
        if !quiet {
            eprintln!("bench quality: {set}: {stage}");
        }
    })?;
    println!(
        "bench quality: trainer and sampler defaults (EM, {} steps), {} synthetic models; {} sets of {} samples, each vs its own set of {} held-out points (SW1 and floor: means over the {} paired comparisons, ratio ± its delta-method standard error; digits: 359 samples vs its held-out fifth); NLL on {} held-out rows (± standard error)",
        opts.sample_steps,
        if opts.conditional { "class-conditional" } else { "unconditional" },
        scoregen::benchmarks::quality::COMPARISONS,
        opts.n_eval,
        opts.n_eval,
        scoregen::benchmarks::quality::COMPARISONS,
        opts.likelihood_rows
    );
    println!(
        "{:<13} {:>3} {:>6} {:>9} {:>9} {:>13} {:>10} {:>10} {:>18} {:>9} {:>8} {:>8}",
        "set", "d", "steps", "SW1", "floor", "ratio", "MMD^2", "floor", "NLL/dim", "true NLL", "train s", "other s"
    );
    for r in &rows {
        let nll = r
            .nll
            .map(|(m, se)| format!("{m:.3} ± {se:.3}{}", if r.bits { " b" } else { "" }))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:>3} {:>6} {:>9.4} {:>9.4} {:>13} {:>10.2e} {:>10.2e} {:>18} {:>9} {:>8.1} {:>8.1}",
            r.set,
            r.dim,
            r.steps,
            r.sw.0,
            r.sw.1,
            match r.sw_ratio_se {
                Some(se) => format!("{:.2} ± {se:.2}", r.sw_ratio()),
                None => format!("{:.2}", r.sw_ratio()),
            },
            r.mmd.0,
            r.mmd.1,
            nll,
            r.true_nll.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
            r.seconds.0,
            r.seconds.1 + r.seconds.2
        );
    }
    for r in rows.iter().filter(|r| !r.extra.is_empty()) {
        for (k, v) in &r.extra {
            println!("{:<13} {k}: {v:.4}", r.set);
        }
    }
    Ok(())
}
