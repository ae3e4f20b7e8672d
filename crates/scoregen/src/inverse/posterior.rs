//! Posterior sampling with an unconditional score (decks 000 and 003): the methods, their
//! options and the one entry point [`sample_posterior`].
//!
//! Every method walks the same decreasing time grid `T = t_0 > ... > t_N = t_min` of the
//! score's process and uses the same backward kernel, the DDPM ancestral step
//! `p(x_{t'} | x_t) = N(x_{t'}; (m'/m) x + kappa score(t, x), var)` with
//! `var = v s'^2 / s^2` (`v` the forward transition variance from `t'` to `t`) and
//! `kappa = m' s^2 / m - s sqrt(s'^2 - var)` ([`Kernel`]; deck 003's `p_{k|k+1}`). The
//! methods differ in how they bring in `y = A x + sigma_y z`:
//!
//! | method | kind | how |
//! |---|---|---|
//! | `exact` | oracle | closed-form mixture posterior ([`super::exact`]) |
//! | `replacement` | heuristic | overwrite observed coordinates with `m' y + s' z` (deck 000 "Option 2"; RePaint jumps optional) |
//! | `smc-impute` | SMC | deck 000: one stored forward path of `y`, weights = backward density of the observed coordinates |
//! | `mcgdiff` | SMC | deck 003: potentials `N(a x~; Vbar^T x_t, v)` in the SVD basis, exact optimal proposal |
//! | `tds` | SMC | twisted SMC (Wu et al. 2024), twist `N(y; A x0_hat, sigma_y^2 + r_t^2 A A^T)` |
//! | `dps` | guidance | Chung et al. 2023: `- zeta grad ||y - A x0_hat||` after each step |
//! | `pigdm` | guidance | Song et al. 2023: score of `N(y; A x0_hat, r_t^2 A A^T + sigma_y^2 I)` |
//! | `tmpd` | guidance | Boys et al. 2023: score of `N(y; A x0_hat, A C_t A^T + sigma_y^2 I)`, `C_t = (s^2/m) d x0_hat/d x` |
//! | `ddrm` | SVD | Kawar et al. 2022, spectral updates with `eta`, `eta_b` |
//! | `dcps` | blocks | Janati et al. 2024: tamed ULA + Gaussian variational steps per block |
//!
//! The SMC methods run `ceil(n / particles)` independent particle systems and return the
//! final population of each, resampled to equal weights: their error goes to zero as the
//! particle count grows. The guidance methods move `n` samples in one batch.

use candle_core::{DType, Device, Tensor};

use super::operator::SvdForm;
use super::problem::Operator;
use crate::process::{Process, TimeGrid};
use crate::rng::{stream, Noise, Purpose};
use crate::score::Score;
use crate::smc::Resampling;
use crate::{Error, Result};

/// The observation `y = A x + sigma_y z`.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The operator `A`.
    pub op: Operator,
    /// The observed `y` (`dy` values).
    pub y: Vec<f64>,
    /// The noise level `sigma_y >= 0`.
    pub sigma_y: f64,
}

impl Observation {
    /// Checks shapes and values against a prior of dimension `dx`.
    pub fn validate(&self, dx: usize) -> Result<()> {
        let (dy, odx) = self.op.shape();
        if odx != dx {
            return Err(Error::invalid(format!(
                "operator acts on dimension {odx}, the prior has dimension {dx}"
            )));
        }
        if self.y.len() != dy {
            return Err(Error::invalid(format!(
                "y has {} values, the operator has {dy} rows",
                self.y.len()
            )));
        }
        if self.y.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("y contains NaN or infinite values"));
        }
        if !(self.sigma_y >= 0.0 && self.sigma_y.is_finite()) {
            return Err(Error::invalid(format!("sigma_y must be >= 0, got {}", self.sigma_y)));
        }
        Ok(())
    }

    /// The observation in the coordinates `z = (x - mean) / std` a trained model works in
    /// (`x = mean + D z`, `D = diag(std)`): `y - A mean = A D z + sigma_y eps`. A mask stays a
    /// mask when `sigma_y = 0` or when the observed scales are equal (then
    /// `y' = (y - mean_obs) / std`, `sigma_y' = sigma_y / std`); otherwise the operator
    /// becomes the dense `A D`.
    pub fn normalised(&self, mean: &[f64], std: &[f64]) -> Result<Observation> {
        let (dy, dx) = self.op.shape();
        if mean.len() != dx || std.len() != dx {
            return Err(Error::invalid(format!(
                "the model has dimension {}, the operator acts on {dx}",
                mean.len()
            )));
        }
        if let Operator::Mask { observed, dim } = &self.op {
            let s0 = observed.first().map(|&i| std[i]).unwrap_or(1.0);
            let equal = observed.iter().all(|&i| (std[i] - s0).abs() <= 1e-12 * s0);
            if self.sigma_y == 0.0 || equal {
                return Ok(Observation {
                    op: Operator::Mask {
                        dim: *dim,
                        observed: observed.clone(),
                    },
                    y: observed
                        .iter()
                        .zip(&self.y)
                        .map(|(&i, y)| (y - mean[i]) / std[i])
                        .collect(),
                    sigma_y: self.sigma_y / s0,
                });
            }
        }
        let a = self.op.matrix();
        let mut ad = a.clone();
        let mut y = self.y.clone();
        for i in 0..dy {
            for j in 0..dx {
                ad[i * dx + j] *= std[j];
                y[i] -= a[i * dx + j] * mean[j];
            }
        }
        Ok(Observation {
            op: Operator::Dense {
                rows: dy,
                cols: dx,
                a: ad,
            },
            y,
            sigma_y: self.sigma_y,
        })
    }

    pub(crate) fn mask(&self) -> Option<&[usize]> {
        match &self.op {
            Operator::Mask { observed, .. } => Some(observed),
            _ => None,
        }
    }
}

/// A posterior sampling method (with the settings its paper recommends as defaults).
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// The closed-form posterior (Gaussian / mixture priors only).
    Exact,
    /// Replacement (deck 000 "Option 2", DiffPuter, RePaint): `jumps` repetitions of each
    /// step (RePaint's `r`, jump length 1; 1 = no resampling jumps).
    Replacement {
        /// RePaint resampling repetitions per step (>= 1).
        jumps: usize,
    },
    /// Deck 000's SMC imputation (SMCDiff, Trippe et al. 2023) — mask operators.
    SmcImpute,
    /// MCGdiff (Cardoso et al. 2024, deck 003).
    Mcgdiff,
    /// Twisted diffusion sampler (Wu et al. 2024).
    Tds,
    /// Diffusion posterior sampling (Chung et al. 2023) with step `zeta / ||y - A x0_hat||`
    /// on the squared residual, i.e. `zeta grad ||y - A x0_hat||`.
    Dps {
        /// The step scale `zeta` (paper: 0.1 to 1; default 1).
        zeta: f64,
    },
    /// Pseudo-inverse guided diffusion (Song et al. 2023).
    Pigdm,
    /// Tweedie moment projected diffusion (Boys et al. 2023), exact denoiser Jacobian.
    Tmpd,
    /// Divide-and-conquer posterior sampling (Janati et al. 2024, deck 003).
    Dcps(super::dcps::DcpsOptions),
    /// Denoising diffusion restoration models (Kawar et al. 2022).
    Ddrm {
        /// Stochasticity of the unobserved directions (paper: 0.85).
        eta: f64,
        /// Weight of the observation in the observed directions (paper: 1).
        eta_b: f64,
    },
}

/// The names `--method` accepts.
pub const METHOD_NAMES: &[&str] = &[
    "exact",
    "replacement",
    "smc-impute",
    "mcgdiff",
    "tds",
    "dps",
    "pigdm",
    "tmpd",
    "ddrm",
    "dcps",
];

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "exact" => Method::Exact,
            "replacement" => Method::Replacement { jumps: 1 },
            "smc-impute" => Method::SmcImpute,
            "mcgdiff" => Method::Mcgdiff,
            "tds" => Method::Tds,
            "dps" => Method::Dps { zeta: 1.0 },
            "pigdm" => Method::Pigdm,
            "tmpd" => Method::Tmpd,
            "ddrm" => Method::Ddrm { eta: 0.85, eta_b: 1.0 },
            "dcps" => Method::Dcps(super::dcps::DcpsOptions::default()),
            other => {
                return Err(Error::invalid(format!(
                    "unknown posterior method '{other}' (expected one of: {})",
                    METHOD_NAMES.join(", ")
                )))
            }
        })
    }
}

impl Method {
    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Replacement { .. } => "replacement",
            Method::SmcImpute => "smc-impute",
            Method::Mcgdiff => "mcgdiff",
            Method::Tds => "tds",
            Method::Dps { .. } => "dps",
            Method::Pigdm => "pigdm",
            Method::Tmpd => "tmpd",
            Method::Ddrm { .. } => "ddrm",
            Method::Dcps(_) => "dcps",
        }
    }

    /// Whether the method is a particle filter (uses `particles`, reports ESS and `log Z`).
    pub fn is_smc(&self) -> bool {
        matches!(self, Method::SmcImpute | Method::Mcgdiff | Method::Tds)
    }
}

/// Settings shared by the methods.
#[derive(Clone, Debug)]
pub struct PosteriorOptions {
    /// Number of output samples `n`.
    pub n: usize,
    /// Particles per SMC run (SMC methods run `ceil(n / particles)` independent systems).
    pub particles: usize,
    /// Reverse steps.
    pub steps: usize,
    /// Time grid (default quadratic).
    pub grid: TimeGrid,
    /// Early stopping time.
    pub t_min: f64,
    /// Final Tweedie denoising step at `t_min`.
    pub denoise: bool,
    /// Resampling scheme of the SMC methods.
    pub resampling: Resampling,
    /// Resample when `ESS < ess_threshold N`.
    pub ess_threshold: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for PosteriorOptions {
    fn default() -> Self {
        PosteriorOptions {
            n: 2000,
            particles: 2000,
            steps: 1000,
            grid: TimeGrid::Quadratic,
            t_min: 1e-3,
            denoise: true,
            resampling: Resampling::Systematic,
            ess_threshold: 0.5,
            seed: 0,
        }
    }
}

/// Diagnostics of a posterior run.
#[derive(Clone, Debug, Default)]
pub struct PosteriorReport {
    /// Samples, row-major `[n, dx]`.
    pub samples: Vec<f64>,
    /// Independent particle systems run (SMC methods; 0 otherwise).
    pub runs: usize,
    /// Smallest ESS / N seen over all steps and runs (SMC methods).
    pub ess_min: f64,
    /// Mean ESS / N over steps and runs (SMC methods).
    pub ess_mean: f64,
    /// Mean number of resampling events per run.
    pub resamplings: f64,
    /// Per-run estimate of `log p(y)` where the method provides one.
    pub log_evidence: Vec<f64>,
}

/// The output of one particle system.
pub(crate) struct RunOutput {
    pub samples: Vec<f64>,
    pub ess: Vec<f64>,
    pub resamplings: usize,
    pub log_evidence: Option<f64>,
}

/// The DDPM backward kernel from `t` down to `t1`: mean `ax x + kappa score`, variance `var`.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// `m(t1) / m(t)`.
    pub ax: f64,
    /// Coefficient of the score in the mean.
    pub kappa: f64,
    /// Variance.
    pub var: f64,
}

impl Kernel {
    /// The kernel of `process` from `t` to `t1 < t`.
    pub fn new(p: &Process, t: f64, t1: f64) -> Self {
        let (m, s, m1, s1) = (p.m(t), p.s(t), p.m(t1), p.s(t1));
        let (_, v) = p.transition(t1, t);
        let var = v * s1 * s1 / (s * s);
        let kappa = m1 * s * s / m - s * (s1 * s1 - var).max(0.0).sqrt();
        Kernel { ax: m1 / m, kappa, var }
    }

    /// The mean for each row given the scores.
    pub fn mean(&self, x: &[f64], score: &[f64]) -> Vec<f64> {
        x.iter().zip(score).map(|(a, b)| self.ax * a + self.kappa * b).collect()
    }
}

/// Row-major helpers around a [`Score`] (f64, CPU tensors).
pub(crate) struct Ctx<'a> {
    pub score: &'a dyn Score,
    pub d: usize,
    pub p: Process,
    pub noise: Noise,
    pub device: Device,
}

impl<'a> Ctx<'a> {
    pub fn new(score: &'a dyn Score, seed: u64) -> Self {
        Ctx {
            score,
            d: score.dim(),
            p: score.process().clone(),
            noise: Noise::new(seed),
            device: Device::Cpu,
        }
    }

    fn tensor(&self, x: &[f64]) -> Result<Tensor> {
        Ok(Tensor::from_vec(x.to_vec(), (x.len() / self.d, self.d), &self.device)?)
    }

    fn rows(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    /// The score at each row.
    pub fn score(&self, t: f64, x: &[f64]) -> Result<Vec<f64>> {
        let s = Self::rows(&self.score.score(t, &self.tensor(x)?)?)?;
        check_finite(&s, "score")?;
        Ok(s)
    }

    /// The Tweedie denoiser at each row.
    pub fn denoise(&self, t: f64, x: &[f64]) -> Result<Vec<f64>> {
        Self::rows(&self.score.denoise(t, &self.tensor(x)?)?)
    }

    /// `(x0_hat, J^T v)` at each row.
    pub fn denoise_vjp(&self, t: f64, x: &[f64], v: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let (a, b) = self.score.denoise_vjp(t, &self.tensor(x)?, &self.tensor(v)?)?;
        let (a, b) = (Self::rows(&a)?, Self::rows(&b)?);
        check_finite(&a, "denoiser")?;
        check_finite(&b, "denoiser gradient")?;
        Ok((a, b))
    }

    /// The score from a denoised value: `(m x0 - x) / s^2`.
    pub fn score_from_x0(&self, t: f64, x: &[f64], x0: &[f64]) -> Vec<f64> {
        let (m, s) = (self.p.m(t), self.p.s(t));
        x.iter().zip(x0).map(|(a, b)| (m * b - a) / (s * s)).collect()
    }

    /// Standard normals `[n, d]` for (run, step, kind).
    pub fn normals(&self, run: usize, step: usize, kind: u64, n: usize, d: usize) -> Vec<f64> {
        self.noise.normals(stream(Purpose::Step, idx(run, step, kind)), n, d)
    }

    /// Uniforms for (run, step).
    pub fn uniforms(&self, run: usize, step: usize, n: usize) -> Vec<f64> {
        self.noise.uniforms(stream(Purpose::Resample, idx(run, step, 0)), n)
    }

    /// The initial `x_T ~ N(0, s(T)^2 I)` of a run.
    pub fn initial(&self, run: usize, n: usize) -> Vec<f64> {
        let s = self.p.prior_std();
        self.noise
            .normals(stream(Purpose::Init, run as u64), n, self.d)
            .into_iter()
            .map(|z| s * z)
            .collect()
    }
}

fn idx(run: usize, step: usize, kind: u64) -> u64 {
    ((run as u64) << 26) | ((step as u64) << 3) | kind
}

pub(crate) fn check_finite(x: &[f64], what: &str) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::Numerical(format!(
            "{what} produced NaN or infinite values (diverged)"
        )))
    }
}

/// Tames guidance displacements row by row: a row `g` of length above `limit` is scaled
/// down to length `limit`. Guidance methods cap their drift at one noise standard deviation
/// per coordinate (`limit = sd sqrt(d)`): where `m(t)` is tiny the denoiser's Jacobian
/// `(I - s d eps/d x)/m` of a learned model is dominated by its errors divided by `m`, and
/// an uncapped step throws the particles out of the data's range (a NaN a few steps later).
/// Particle methods stay exact (the weights use the tamed proposal).
pub(crate) fn tame_rows(g: &mut [f64], d: usize, limit: f64) {
    for row in g.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > limit {
            let f = limit / norm;
            row.iter_mut().for_each(|v| *v *= f);
        }
    }
}

/// `log N(x; mean, var)` of a scalar.
pub(crate) fn log_normal(x: f64, mean: f64, var: f64) -> f64 {
    -0.5 * ((x - mean).powi(2) / var + (2.0 * std::f64::consts::PI * var).ln())
}

/// The decreasing time grid of the options, with `extra` times inserted (each clamped to
/// `[t_min, T]`, duplicates merged).
pub(crate) fn grid_with(p: &Process, opts: &PosteriorOptions, extra: &[f64]) -> Result<Vec<f64>> {
    let mut ts = opts.grid.times(p, opts.steps, opts.t_min, p.t_max())?;
    for &e in extra {
        let e = e.clamp(opts.t_min, p.t_max());
        if !ts.iter().any(|&t| (t - e).abs() <= 1e-12 * p.t_max()) {
            ts.push(e);
        }
    }
    ts.sort_by(|a, b| b.total_cmp(a));
    Ok(ts)
}

/// Where a time sits relative to a release time `tau` (within rounding).
pub(crate) fn same_time(a: f64, b: f64, p: &Process) -> bool {
    (a - b).abs() <= 1e-12 * p.t_max()
}

/// Samples the posterior of `score`'s prior given `obs` with `method`. `progress` receives
/// (done, total) steps. An operator with no rows (nothing observed) gives prior samples
/// from the DDPM chain, whatever the method.
pub fn sample_posterior(
    score: &dyn Score,
    obs: &Observation,
    method: &Method,
    opts: &PosteriorOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PosteriorReport> {
    let d = score.dim();
    obs.validate(d)?;
    if opts.n == 0 || opts.particles == 0 || opts.steps == 0 {
        return Err(Error::invalid("posterior: n, particles and steps must be >= 1"));
    }
    if !(0.0..=1.0).contains(&opts.ess_threshold) {
        return Err(Error::invalid("posterior: the ESS threshold must be in [0, 1]"));
    }
    let ctx = Ctx::new(score, opts.seed);
    if obs.op.shape().0 == 0 && !matches!(method, Method::Exact) {
        // Nothing observed: the posterior is the prior, drawn by the plain DDPM chain (the
        // replacement sampler with an empty mask); every method would reduce to it.
        let empty = Observation {
            op: Operator::Mask {
                dim: d,
                observed: Vec::new(),
            },
            y: Vec::new(),
            sigma_y: 0.0,
        };
        let samples = super::replacement::run(&ctx, &empty, opts, 1, progress)?;
        return Ok(PosteriorReport {
            samples,
            runs: usize::from(method.is_smc()),
            ess_min: 1.0,
            ess_mean: 1.0,
            ..Default::default()
        });
    }
    if method.is_smc() {
        let runs = opts.n.div_ceil(opts.particles);
        let total = runs * opts.steps;
        let mut report = PosteriorReport {
            runs,
            ess_min: 1.0,
            ..Default::default()
        };
        let mut ess_sum = 0.0;
        let mut ess_count = 0usize;
        let mut resamplings = 0usize;
        for run in 0..runs {
            let mut prog = |k: usize, _: usize| progress(run * opts.steps + k.min(opts.steps), total);
            let out = match method {
                Method::SmcImpute => super::smc_impute::run(&ctx, obs, opts, run, &mut prog)?,
                Method::Mcgdiff => super::mcgdiff::run(&ctx, obs, opts, run, &mut prog)?,
                Method::Tds => super::tds::run(&ctx, obs, opts, run, &mut prog)?,
                _ => unreachable!("is_smc"),
            };
            let n_part = opts.particles as f64;
            for e in &out.ess {
                report.ess_min = report.ess_min.min(e / n_part);
                ess_sum += e / n_part;
                ess_count += 1;
            }
            resamplings += out.resamplings;
            if let Some(l) = out.log_evidence {
                report.log_evidence.push(l);
            }
            let take = (opts.n - report.samples.len() / d).min(opts.particles);
            report.samples.extend_from_slice(&out.samples[..take * d]);
        }
        report.ess_mean = if ess_count > 0 { ess_sum / ess_count as f64 } else { 1.0 };
        report.resamplings = resamplings as f64 / runs as f64;
        Ok(report)
    } else {
        let samples = match method {
            Method::Exact => {
                return Err(Error::invalid(
                    "method 'exact' needs a Gaussian or Gaussian-mixture prior (use ExactPosterior)",
                ))
            }
            Method::Replacement { jumps } => super::replacement::run(&ctx, obs, opts, *jumps, progress)?,
            Method::Dps { zeta } => super::guidance::run_dps(&ctx, obs, opts, *zeta, progress)?,
            Method::Pigdm => super::guidance::run_gaussian(&ctx, obs, opts, false, progress)?,
            Method::Tmpd => super::guidance::run_gaussian(&ctx, obs, opts, true, progress)?,
            Method::Ddrm { eta, eta_b } => super::ddrm::run(&ctx, obs, opts, *eta, *eta_b, progress)?,
            Method::Dcps(dc) => super::dcps::run(&ctx, obs, opts, *dc, progress)?,
            _ => unreachable!("not smc"),
        };
        Ok(PosteriorReport {
            samples,
            ess_min: 1.0,
            ess_mean: 1.0,
            ..Default::default()
        })
    }
}

/// `SvdForm` with the observation in its basis: `ybar = S^{-1} U^T y` and per-direction
/// noise `sigma_y / s_i`.
pub(crate) struct Spectral {
    pub f: SvdForm,
    pub ybar: Vec<f64>,
    pub noise: Vec<f64>,
}

impl Spectral {
    pub fn new(obs: &Observation) -> Result<Self> {
        let f = obs.op.svd()?;
        let uty = f.ut(&obs.y);
        let ybar: Vec<f64> = uty.iter().zip(&f.s).map(|(a, s)| a / s).collect();
        let noise = f.s.iter().map(|s| obs.sigma_y / s).collect();
        Ok(Spectral { f, ybar, noise })
    }
}
