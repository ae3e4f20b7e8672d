//! What the posterior methods share: row-major helpers around a [`Score`] with the
//! random streams of a run ([`Ctx`]), the time grid with inserted release times, the
//! observation in the SVD basis ([`Spectral`]), and small numerical helpers. The method
//! files (`replacement`, `smc_impute`, `mcgdiff`, `tds`, `guidance`, `ddrm`, `dcps`) import
//! from here and from [`crate::process`] (the reverse kernel) and [`crate::smc`] (the
//! particle filter); [`super::posterior`] only dispatches to them.

use candle_core::{DType, Device, Tensor};

use super::problem::Operator;
use crate::error::check_finite;
use crate::process::{Process, TimeGrid};
use crate::rng::{stream, Noise, Purpose};
use crate::score::Score;
use crate::smc::Resampling;
use crate::{Error, Result};

use super::operator::SvdForm;

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

impl PosteriorReport {
    /// The mean of the per-run `log p(y)` estimates, if any.
    pub fn mean_log_evidence(&self) -> Option<f64> {
        (!self.log_evidence.is_empty()).then(|| self.log_evidence.iter().sum::<f64>() / self.log_evidence.len() as f64)
    }
}

/// One particle system of an SMC method: the score and streams, the observation, the
/// options and the run index (streams of run `run`).
#[derive(Clone, Copy)]
pub(crate) struct SmcJob<'r, 'a> {
    pub ctx: &'r Ctx<'a>,
    pub obs: &'r Observation,
    pub opts: &'r PosteriorOptions,
    pub run: usize,
}

/// The output of one particle system.
pub(crate) struct RunOutput {
    pub samples: Vec<f64>,
    pub ess: Vec<f64>,
    pub resamplings: usize,
    pub log_evidence: Option<f64>,
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
        crate::data::from_rows(x.to_vec(), self.d, DType::F64, &self.device)
    }

    fn rows(t: &Tensor) -> Result<Vec<f64>> {
        Ok(crate::data::to_rows(t)?.0)
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
        self.p.prior_rows(&self.noise, run as u64, n, self.d)
    }
}

fn idx(run: usize, step: usize, kind: u64) -> u64 {
    ((run as u64) << 26) | ((step as u64) << 3) | kind
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
