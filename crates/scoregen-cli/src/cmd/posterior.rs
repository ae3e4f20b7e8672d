//! `scoregen posterior`: posterior samples for a problem file (docs/formats.md) by any
//! method ([`scoregen::solve::sample_problem`]; the methods: docs/methods.md).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::budget::Estimate;
use scoregen::data;
use scoregen::inverse::{Method, PosteriorOptions, Prior, Problem};
use scoregen::process::TimeGrid;
use scoregen::smc::Resampling;
use scoregen::solve::sample_problem;

use super::check_output;
use crate::limits;
use crate::output::Outputs;
use crate::progress::Steps;
use crate::CliResult;

/// `scoregen posterior`.
#[derive(Args, Debug)]
pub struct PosteriorArgs {
    /// Problem file (JSON): prior (mixture, Gaussian or trained model), operator, y, sigma_y.
    #[arg(long)]
    pub problem: PathBuf,
    /// exact, replacement, smc-impute, mcgdiff (Tweedie potentials), mcgdiff-paper (the paper's potentials), tds, dps, pigdm, pigdm-score, tmpd, ddrm, dcps (= dcps500), dcps50, dcps500.
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
    /// DPS step zeta' of the paper's rule zeta_t = zeta' / ||y - A x0_hat|| on the squared residual.
    #[arg(long, default_value_t = scoregen::inverse::DPS_ZETA)]
    pub zeta: f64,
    /// Pi-GDM update: paper (fixed-size correction, Song et al. 2023) or score (guidance added
    /// to the score) [default: paper for --method pigdm, score for pigdm-score].
    #[arg(long)]
    pub pigdm_update: Option<String>,
    /// DDRM eta (observed directions less noisy than y).
    #[arg(long, default_value_t = 0.85)]
    pub eta: f64,
    /// DDRM eta_b (observed directions noisier than y).
    #[arg(long, default_value_t = 1.0)]
    pub eta_b: f64,
    /// DDRM eta_c (unobserved directions).
    #[arg(long, default_value_t = scoregen::inverse::DDRM_ETA_C)]
    pub eta_c: f64,
    /// Replacement: RePaint resampling repetitions per step (1 = none).
    #[arg(long, default_value_t = 1)]
    pub jumps: usize,
    /// DCPS: number of blocks L (default 4; Janati et al. 2024's reference code uses 3).
    #[arg(long)]
    pub blocks: Option<usize>,
    /// DCPS: tamed Langevin steps K at the start of each block (default: the method's, 500
    /// for dcps / dcps500, 50 for dcps50).
    #[arg(long)]
    pub langevin: Option<usize>,
    /// DCPS: Langevin step size gamma (default 0.05; the reference code's is 1e-3).
    #[arg(long)]
    pub langevin_step: Option<f64>,
    /// DCPS: normalised gradient steps of each Gaussian variational fit (default 2).
    #[arg(long)]
    pub grad_steps: Option<usize>,
    /// DCPS: learning rate of the variational fit (default 1).
    #[arg(long)]
    pub lr: Option<f64>,
}

impl PosteriorArgs {
    /// The method with its options applied.
    pub fn method(&self) -> CliResult<Method> {
        let mut m: Method = self.method.parse()?;
        match &mut m {
            Method::Dps { zeta } => *zeta = self.zeta,
            Method::Pigdm { update } => {
                if let Some(u) = &self.pigdm_update {
                    *update = u.parse()?;
                }
            }
            Method::Ddrm { eta, eta_b, eta_c } => {
                *eta = self.eta;
                *eta_b = self.eta_b;
                *eta_c = self.eta_c;
            }
            Method::Replacement { jumps } => *jumps = self.jumps,
            Method::Dcps(dc) => {
                dc.blocks = self.blocks.unwrap_or(dc.blocks);
                dc.langevin = self.langevin.unwrap_or(dc.langevin);
                dc.gamma = self.langevin_step.unwrap_or(dc.gamma);
                dc.grad_steps = self.grad_steps.unwrap_or(dc.grad_steps);
                dc.lr = self.lr.unwrap_or(dc.lr);
                dc.validate()?;
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
        if let Some(b) = self.blocks {
            limits::count("--blocks", b, 1, limits::MAX_ROUNDS)?;
        }
        if let Some(k) = self.langevin {
            limits::count("--langevin", k, 0, limits::MAX_STEPS)?;
        }
        if let Some(j) = self.grad_steps {
            limits::count("--grad-steps", j, 0, limits::MAX_ROUNDS)?;
        }
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

/// `scoregen posterior`.
pub fn run(a: PosteriorArgs, quiet: bool) -> CliResult<()> {
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
    let start = Instant::now();
    let bar = Steps::new(opts.steps, method.name(), quiet);
    let post = sample_problem(&problem, &method, &opts, &crate::device::get(), &mut |k, t| {
        bar.tick(k, t)
    })?;
    drop(bar);
    let (samples, dx, report) = (post.samples, post.dim, post.report);
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
                r.mean_log_evidence()
                    .map_or(String::new(), |z| format!("; log p(y) estimate {z:.4}"))
            );
            if r.ess_min < 0.01 {
                eprintln!("warning: the ESS fell below 1% of the particles (weight degeneracy); use more particles");
            }
        }
    }
    Ok(())
}
