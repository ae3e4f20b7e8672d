//! `scoregen posterior`: posterior samples for a problem file (DESIGN.md §3) by any method.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::data;
use scoregen::inverse::{
    sample_posterior, ExactPosterior, Method, Observation, PosteriorOptions, PosteriorReport, Prior, Problem,
};
use scoregen::process::TimeGrid;
use scoregen::rng::Noise;
use scoregen::sample::default_process;
use scoregen::score::{MixtureScore, Score};
use scoregen::smc::Resampling;

use crate::commands::check_output;
use crate::limits;
use crate::output::Outputs;
use crate::progress::bar;
use crate::{CliError, CliResult};
use scoregen::budget::Estimate;

/// `scoregen posterior`.
#[derive(Args, Debug)]
pub struct PosteriorArgs {
    /// Problem file (JSON): prior (mixture, Gaussian or trained model), operator, y, sigma_y.
    #[arg(long)]
    pub problem: PathBuf,
    /// exact, replacement, smc-impute, mcgdiff, tds, dps, pigdm, tmpd, ddrm, dcps.
    #[arg(long)]
    pub method: String,
    /// Posterior samples to write.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Particles per SMC run (runs = ceil(n / particles)).
    #[arg(long, default_value_t = 2000)]
    pub particles: usize,
    /// Reverse steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output (.npy or .csv), `[n, dx]` float64.
    #[arg(long)]
    pub out: PathBuf,
    /// Time grid: uniform, quadratic, edm, edm:RHO, logsnr.
    #[arg(long, default_value = "quadratic")]
    pub grid: String,
    /// Early-stopping time.
    #[arg(long, default_value_t = 1e-3)]
    pub t_min: f64,
    /// SMC resampling scheme: multinomial, stratified, systematic, residual.
    #[arg(long, default_value = "systematic")]
    pub resampling: String,
    /// SMC: resample when ESS < threshold x particles.
    #[arg(long, default_value_t = 0.5)]
    pub ess_threshold: f64,
    /// DPS step scale zeta.
    #[arg(long, default_value_t = 1.0)]
    pub zeta: f64,
    /// DDRM eta (unobserved directions).
    #[arg(long, default_value_t = 0.85)]
    pub eta: f64,
    /// DDRM eta_b (observed directions).
    #[arg(long, default_value_t = 1.0)]
    pub eta_b: f64,
    /// Replacement: RePaint resampling repetitions per step (1 = none).
    #[arg(long, default_value_t = 1)]
    pub jumps: usize,
    /// DCPS: number of blocks L.
    #[arg(long, default_value_t = 4)]
    pub blocks: usize,
    /// DCPS: tamed Langevin steps at the start of each block (deck 003's DCPS50 / DCPS500).
    #[arg(long, default_value_t = 50)]
    pub langevin: usize,
}

impl PosteriorArgs {
    /// The method with its options applied.
    pub fn method(&self) -> CliResult<Method> {
        let mut m: Method = self.method.parse()?;
        match &mut m {
            Method::Dps { zeta } => *zeta = self.zeta,
            Method::Ddrm { eta, eta_b } => {
                *eta = self.eta;
                *eta_b = self.eta_b;
            }
            Method::Replacement { jumps } => *jumps = self.jumps,
            Method::Dcps(dc) => {
                dc.blocks = self.blocks;
                dc.langevin = self.langevin;
            }
            _ => {}
        }
        Ok(m)
    }

    /// The shared options.
    pub fn options(&self) -> CliResult<PosteriorOptions> {
        limits::count("--n", self.n, 1, usize::MAX)?;
        limits::count("--particles", self.particles, 1, usize::MAX)?;
        limits::count("--steps", self.steps, 1, limits::MAX_STEPS)?;
        limits::count("--jumps", self.jumps, 1, limits::MAX_ROUNDS)?;
        limits::count("--blocks", self.blocks, 1, limits::MAX_ROUNDS)?;
        limits::count("--langevin", self.langevin, 0, limits::MAX_STEPS)?;
        Ok(PosteriorOptions {
            n: self.n,
            particles: self.particles,
            steps: self.steps,
            grid: self.grid.parse::<TimeGrid>()?,
            t_min: self.t_min,
            denoise: true,
            resampling: self.resampling.parse::<Resampling>()?,
            ess_threshold: self.ess_threshold,
            seed: self.seed,
        })
    }
}

/// Runs a method on a score with a progress bar.
pub fn run_method(
    score: &dyn Score,
    obs: &Observation,
    method: &Method,
    opts: &PosteriorOptions,
    quiet: bool,
) -> CliResult<PosteriorReport> {
    let pb = bar(opts.steps as u64, method.name(), quiet);
    let rep = sample_posterior(score, obs, method, opts, &mut |k, total| {
        pb.set_length(total as u64);
        pb.set_position(k as u64)
    });
    pb.finish_and_clear();
    Ok(rep?)
}

/// `scoregen posterior`.
pub fn posterior(a: PosteriorArgs, quiet: bool) -> CliResult<()> {
    check_output(&a.out)?;
    let method = a.method()?;
    let opts = a.options()?;
    let problem = Problem::from_file(&a.problem)?;
    let mut outs = Outputs::new();
    outs.input("--problem", &a.problem);
    if let Prior::Model(dir) = &problem.prior {
        outs.input("the problem's model", dir);
    }
    let out_tmp = outs.file("--out", &a.out)?;
    {
        let arch = match &problem.prior {
            Prior::Model(dir) => Some(scoregen::nn::train::read_meta(dir)?.arch),
            Prior::Mixture(_) => None,
        };
        let dx = match (&problem.prior, &arch) {
            (Prior::Mixture(law), _) => law.dim(),
            (_, Some(arch)) => arch.dim(),
            _ => 0,
        };
        let dy = problem.y.as_ref().map_or(0, Vec::len);
        let p = opts.particles.min(opts.n);
        let e = limits::rows(Estimate::new(), "--particles", p, dx, 16);
        let e = limits::rows(e, "--n", opts.n, dx, 2).add(
            "--particles",
            format!("--particles {p} x {dy} observations x 4 buffers of f64"),
            p as f64 * dy as f64 * 4.0,
            8.0,
        );
        let e = match &arch {
            Some(arch) => limits::network(e, "--particles", p, arch, "the problem's model"),
            None => e,
        };
        limits::check_memory(&e)?;
    }
    let obs = problem.observation()?;
    let start = Instant::now();
    let (samples, dx, report) = match (&problem.prior, &method) {
        (Prior::Mixture(law), Method::Exact) => {
            let post = ExactPosterior::new(law, &obs.op, &obs.y, obs.sigma_y)?;
            (post.sample(opts.n, &Noise::new(opts.seed), 0), law.dim(), None)
        }
        (Prior::Model(_), Method::Exact) => {
            return Err(CliError::user(
                "method 'exact' needs a Gaussian or Gaussian-mixture prior, not a trained model",
            ))
        }
        (Prior::Mixture(law), _) => {
            obs.validate(law.dim())?;
            let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
            let rep = run_method(&score, &obs, &method, &opts, quiet)?;
            (rep.samples.clone(), law.dim(), Some(rep))
        }
        (Prior::Model(dir), _) => {
            let (score, meta) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
            let norm = &meta.normalisation;
            let local = obs.normalised(&norm.mean, &norm.std)?;
            let rep = run_method(&score, &local, &method, &opts, quiet)?;
            let d = score.dim();
            let z = Tensor::from_vec(rep.samples.clone(), (opts.n, d), &Device::Cpu).map_err(scoregen::Error::from)?;
            let x = norm.denormalise(&z)?;
            let x: Vec<f64> = x
                .to_dtype(candle_core::DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(scoregen::Error::from)?;
            (x, d, Some(rep))
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let t = Tensor::from_vec(samples, (opts.n, dx), &Device::Cpu).map_err(scoregen::Error::from)?;
    data::write_points(&out_tmp, &t)?;
    outs.commit()?;
    if !quiet {
        eprintln!(
            "{}: wrote {} posterior samples of dimension {dx} to {} ({secs:.1} s)",
            method.name(),
            opts.n,
            a.out.display()
        );
        if let Some(r) = report.filter(|_| method.is_smc()) {
            eprintln!(
                "{} run(s) of {} particles: ESS/N min {:.3}, mean {:.3}; {:.1} resamplings per run{}",
                r.runs,
                opts.particles,
                r.ess_min,
                r.ess_mean,
                r.resamplings,
                if r.log_evidence.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; log p(y) estimate {:.4}",
                        r.log_evidence.iter().sum::<f64>() / r.log_evidence.len() as f64
                    )
                }
            );
            if r.ess_min < 0.01 {
                eprintln!("warning: the ESS fell below 1% of the particles (weight degeneracy); use more particles");
            }
        }
    }
    Ok(())
}
