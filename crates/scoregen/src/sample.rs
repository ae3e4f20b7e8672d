//! Reverse-time samplers, batched over `n` particles, seeded and bit-reproducible.
//!
//! All samplers walk a decreasing grid `T = t_0 > ... > t_N = t_min` (forward time) and
//! discretise the reverse family of SDEs (Song et al. 2021; docs/conventions.md, the `b_t`
//! family): at reverse time `u = T - t`,
//!
//! `dX = (-f(t) X + (1 + b_u^2)/2 g(t)^2 score(t, X)) du + b_u g(t) dB`,
//!
//! which for the OU process `beta = 2` is `dX = (X + (1 + b^2) score) du + sqrt(2) b dB`.
//! `b = 1` is the usual reverse SDE and `b = 0` the probability-flow ODE.
//!
//! | sampler | step from `t0` to `t1 < t0` (`h = t0 - t1`) |
//! |---|---|
//! | [`Sampler::EulerMaruyama`] | `x + (-f x + (1+b^2)/2 g^2 score) h + b sqrt(g^2 h) z` |
//! | [`Sampler::ExpIntegrator`] | `r x + (1+b^2)/2 c score + b sqrt(v) z`, linear part exact, score frozen ([`Process::ei_coefficients`]) |
//! | [`Sampler::Heun`] | Heun's second-order method on the PF-ODE (Karras et al. 2022) |
//! | [`Sampler::Ddpm`] | ancestral (Ho et al. 2020): draw from `q(x_{t1} | x_{t0}, x0_hat)`, the forward posterior at the Tweedie `x0_hat` ([`Process::reverse_kernel`], `eta = 1`) |
//! | [`Sampler::Ddim`] | Song, Meng & Ermon 2021: `m1 x0_hat + sqrt(s1^2 - c^2) eps_hat + c z`, `c = eta sqrt(Var q)`; `eta = 1` is DDPM ([`Process::reverse_kernel`]) |
//! | [`Sampler::AnnealedLangevin`] | NCSN's Algorithm 1 (Song & Ermon 2019): Langevin `x + a/2 score + sqrt(a) z` at each level, `a_i = delta s(t_i)^2`; between levels `x *= m(t_{i+1})/m(t_i)` |
//! | [`Sampler::PredictorCorrector`] | score_sde's PC: Langevin corrector at target SNR, then a predictor step |
//! | [`Sampler::Rk45`] | the PF-ODE from `T` to `t_min` by adaptive Dormand–Prince 5(4) ([`crate::ode`]; score_sde's ODE sampler) |
//!
//! Noise of step `k` comes from stream `(Purpose::Step, k)` of [`Noise`]
//! ([`Noise::normals_fast`]: particle `i` always reads the same words), so a run is a pure
//! function of `(seed, n, options)`, whatever the number of threads.
//!
//! Scores with a host row kernel ([`Score::rows_at`], e.g. the exact mixture score) and f64
//! particles on the CPU take a fused loop: per step and per fixed block of particles, the
//! score, the noise draw and the update run together in place, with no tensor allocated per
//! step; the arithmetic is the tensor path's, so both agree up to the rounding of the score. An optional final Tweedie step returns
//! `x0_hat(t_min, x)` (early stopping and denoising are explicit options; docs/conventions.md).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::{check_finite_tensor, diverged};
use crate::process::{Process, ProcessKind, ReverseKernel, TimeGrid};
use crate::rng::{stream, Noise, Purpose};
use crate::score::{RowScore, Score};
use crate::{Error, Result};

/// The diffusion multiplier `b_u` of the reverse family, a constant or a function of the
/// reverse time `u = T - t` (the `b_t` of docs/conventions.md).
#[derive(Clone)]
pub enum BFn {
    /// A constant `b >= 0`.
    Const(f64),
    /// `u -> b_u`.
    Fn(Arc<dyn Fn(f64) -> f64 + Send + Sync>),
}

impl BFn {
    /// `b` at reverse time `u`.
    pub fn at(&self, u: f64) -> f64 {
        match self {
            BFn::Const(b) => *b,
            BFn::Fn(f) => f(u),
        }
    }
}

impl std::fmt::Debug for BFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BFn::Const(b) => write!(f, "Const({b})"),
            BFn::Fn(_) => write!(f, "Fn(..)"),
        }
    }
}

/// A reverse-time sampler (see the module documentation for the formulas).
#[derive(Clone, Debug)]
pub enum Sampler {
    /// Euler–Maruyama on the `b` family (`b = 1`: reverse SDE, `b = 0`: PF-ODE).
    EulerMaruyama {
        /// The multiplier `b_u`.
        b: BFn,
    },
    /// Exponential integrator on the `b` family.
    ExpIntegrator {
        /// The multiplier `b_u`.
        b: BFn,
    },
    /// Heun on the probability-flow ODE (two score evaluations a step).
    Heun,
    /// DDPM ancestral sampling.
    Ddpm,
    /// DDIM with stochasticity `eta` in `[0, 1]`.
    Ddim {
        /// 0: deterministic DDIM; 1: DDPM.
        eta: f64,
    },
    /// Annealed Langevin dynamics (NCSN, Song & Ermon 2019). The levels are the VE-equivalent laws
    /// of `y = x / m(t)` (`y = x_0 + sigma(t) eps`, all centred like the data): in `y` the
    /// step is NCSN's `a_i = delta sigma_i^2`; in `x` this is `x + delta s^2/2 score + sqrt(delta) s z`
    /// with `x` rescaled by `m(t_{i+1})/m(t_i)` between levels (a no-op for VE).
    AnnealedLangevin {
        /// Langevin steps at each noise level (`steps / steps_per_level` levels).
        steps_per_level: usize,
        /// `delta` in the step `a_i = delta s(t_i)^2` (NCSN: `eps = 2e-5` at
        /// `sigma_L = 0.01`, i.e. `delta = 0.2`).
        step_ratio: f64,
    },
    /// Predictor–corrector (Song et al. 2021): `corrector_steps` Langevin steps at target
    /// signal-to-noise ratio `snr` at each time, then one predictor step.
    PredictorCorrector {
        /// The predictor: Euler–Maruyama, exponential integrator, DDPM, DDIM or Heun.
        predictor: Box<Sampler>,
        /// Target SNR `r`: step `eps = 2 (r |z| / |score|)^2` (score_sde).
        snr: f64,
        /// Corrector steps per time.
        corrector_steps: usize,
    },
    /// The probability-flow ODE `dx/dt = f x - g^2/2 score` integrated from `T` down to
    /// `t_min` by Dormand–Prince 5(4) with step-size control ([`crate::ode::solve_adaptive`]),
    /// all particles as one system (Song et al. 2021 sample this way with SciPy's `RK45`,
    /// `rtol = atol = 1e-5`). Deterministic; the step count follows the tolerances, not
    /// [`SampleOptions::steps`].
    Rk45 {
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
    },
}

/// Parameters that the named samplers read (see [`Sampler::from_name`]).
#[derive(Clone, Debug)]
pub struct SamplerParams {
    /// `b` for `em` / `ei` (default 1).
    pub b: f64,
    /// `eta` for `ddim` (default 0).
    pub eta: f64,
    /// Target SNR of the `pc` corrector (default 0.16, score_sde).
    pub snr: f64,
    /// Corrector steps of `pc` (default 1).
    pub corrector_steps: usize,
    /// Langevin steps per level of `ald` (default 10).
    pub steps_per_level: usize,
    /// Predictor of `pc`: `em` (with `b`), `ei` (with `b`), `ddpm`, `ddim` (with `eta`) or
    /// `heun` (default `em`).
    pub predictor: String,
    /// `delta` of `ald` (default 0.2, NCSN's `eps = 2e-5` at `sigma_L = 0.01`).
    pub step_ratio: f64,
    /// Relative and absolute tolerances of `rk45` (default `1e-5` each, score_sde's).
    pub tolerances: (f64, f64),
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            b: 1.0,
            eta: 0.0,
            snr: 0.16,
            corrector_steps: 1,
            steps_per_level: 10,
            predictor: "em".into(),
            step_ratio: 0.2,
            tolerances: (1e-5, 1e-5),
        }
    }
}

/// The sampler names the CLI accepts.
pub const SAMPLER_NAMES: [&str; 8] = ["em", "ei", "heun", "ddpm", "ddim", "ald", "pc", "rk45"];

impl Sampler {
    /// A sampler by name: `em`, `ei`, `heun`, `ddpm`, `ddim`, `ald`, `pc` (predictor
    /// `params.predictor`, Euler–Maruyama with `b = params.b` by default).
    pub fn from_name(name: &str, params: &SamplerParams) -> Result<Sampler> {
        let b = BFn::Const(params.b);
        if !(params.b.is_finite() && params.b >= 0.0) {
            return Err(Error::invalid(format!("b must be >= 0, got {}", params.b)));
        }
        Ok(match name {
            "em" => Sampler::EulerMaruyama { b },
            "ei" => Sampler::ExpIntegrator { b },
            "heun" => Sampler::Heun,
            "rk45" => Sampler::Rk45 {
                rtol: params.tolerances.0,
                atol: params.tolerances.1,
            },
            "ddpm" => Sampler::Ddpm,
            "ddim" => Sampler::Ddim { eta: params.eta },
            "ald" => Sampler::AnnealedLangevin {
                steps_per_level: params.steps_per_level,
                step_ratio: params.step_ratio,
            },
            "pc" => {
                let predictor = match params.predictor.as_str() {
                    "em" | "ei" | "ddpm" | "ddim" | "heun" => Sampler::from_name(&params.predictor, params)?,
                    other => {
                        return Err(Error::invalid(format!(
                            "unknown predictor '{other}' for pc (expected em, ei, ddpm, ddim or heun)"
                        )))
                    }
                };
                Sampler::PredictorCorrector {
                    predictor: Box::new(predictor),
                    snr: params.snr,
                    corrector_steps: params.corrector_steps,
                }
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown sampler '{name}' (expected one of {})",
                    SAMPLER_NAMES.join(", ")
                )))
            }
        })
    }

    fn validate(&self) -> Result<()> {
        match self {
            Sampler::Ddim { eta } if !(0.0..=1.0).contains(eta) => {
                Err(Error::invalid(format!("ddim: eta must be in [0, 1], got {eta}")))
            }
            Sampler::AnnealedLangevin {
                steps_per_level,
                step_ratio,
            } => {
                if *steps_per_level == 0 || !(*step_ratio > 0.0 && step_ratio.is_finite()) {
                    Err(Error::invalid("ald: need steps_per_level >= 1 and step_ratio > 0"))
                } else {
                    Ok(())
                }
            }
            Sampler::Rk45 { rtol, atol } => {
                if *rtol > 0.0 && *rtol < 1.0 && *atol > 0.0 && atol.is_finite() {
                    Ok(())
                } else {
                    Err(Error::invalid(format!(
                        "rk45: tolerances must satisfy 0 < rtol < 1 and atol > 0, got {rtol}, {atol}"
                    )))
                }
            }
            Sampler::PredictorCorrector { predictor, snr, .. } => {
                if !(*snr > 0.0 && snr.is_finite()) {
                    return Err(Error::invalid(format!("pc: snr must be positive, got {snr}")));
                }
                match **predictor {
                    Sampler::AnnealedLangevin { .. } | Sampler::PredictorCorrector { .. } | Sampler::Rk45 { .. } => {
                        Err(Error::invalid("pc: the predictor must be em, ei, ddpm, ddim or heun"))
                    }
                    _ => predictor.validate(),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Options shared by every sampler.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// Number of steps `N` of the grid (for ALD: total Langevin steps).
    pub steps: usize,
    /// Grid spacing; `None` takes the sampler's default: quadratic, except log-SNR (a
    /// geometric noise ladder, as NCSN) for annealed Langevin. Quadratic beats uniform on
    /// the 25-mode mixture for every sampler (within-mode variance error at 1000 steps:
    /// DDPM 1% vs 5%; at 100 steps, Euler–Maruyama 5% vs 12%); uniform-in-t with a constant
    /// `beta` leaves the last steps far too coarse in noise level.
    pub grid: Option<TimeGrid>,
    /// Early-stopping time `t_min > 0`.
    pub t_min: f64,
    /// Start time (default: the process horizon `T`).
    pub t_max: Option<f64>,
    /// Return the Tweedie denoiser `x0_hat(t_min, x)` at the end.
    pub denoise: bool,
    /// Seed of the [`Noise`] source.
    pub seed: u64,
    /// dtype of the particles (F64 by default; F32 for networks).
    pub dtype: DType,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            steps: 1000,
            grid: None,
            t_min: 1e-3,
            t_max: None,
            denoise: true,
            seed: 0,
            dtype: DType::F64,
        }
    }
}

/// One step of a predictor from `t0` down to `t1` at reverse time `u = T - t0`, with the
/// standard normal noise `z` (ignored by deterministic steps). `k` is the step's index, used
/// only for error messages.
pub fn predictor_step(
    score: &dyn Score,
    sampler: &Sampler,
    t0: f64,
    t1: f64,
    x: &Tensor,
    z: Option<&Tensor>,
) -> Result<Tensor> {
    let p = score.process();
    let u = p.t_max() - t0;
    let noise_term = |coef: f64, x: Tensor| -> Result<Tensor> {
        match z {
            Some(z) if coef != 0.0 => Ok((x + z.affine(coef, 0.0)?)?),
            _ => Ok(x),
        }
    };
    match sampler {
        Sampler::EulerMaruyama { b } => {
            let b = b.at(u);
            let h = t0 - t1;
            let g2 = p.g2(t0);
            let sc = score.score(t0, x)?;
            let drift = (x.affine(-p.f(t0) * h, 0.0)? + sc.affine(0.5 * (1.0 + b * b) * g2 * h, 0.0)?)?;
            noise_term(b * (g2 * h).sqrt(), (x + drift)?)
        }
        Sampler::ExpIntegrator { b } => {
            let b = b.at(u);
            let (r, c, v) = p.ei_coefficients(t0, t1);
            let sc = score.score(t0, x)?;
            let mean = (x.affine(r, 0.0)? + sc.affine(0.5 * (1.0 + b * b) * c, 0.0)?)?;
            noise_term(b * v.sqrt(), mean)
        }
        Sampler::Heun => {
            let h = t1 - t0;
            let d0 = pf_ode_velocity(score, t0, x)?;
            let xe = (x + d0.affine(h, 0.0)?)?;
            let d1 = pf_ode_velocity(score, t1, &xe)?;
            Ok((x + (d0 + d1)?.affine(0.5 * h, 0.0)?)?)
        }
        Sampler::Ddpm => predictor_step(score, &Sampler::Ddim { eta: 1.0 }, t0, t1, x, z),
        Sampler::Ddim { eta } => {
            let k = p.reverse_kernel(t0, t1, *eta);
            let sc = score.score(t0, x)?;
            noise_term(k.sd(), k.mean_tensor(x, &sc)?)
        }
        Sampler::AnnealedLangevin { .. } | Sampler::PredictorCorrector { .. } | Sampler::Rk45 { .. } => {
            Err(Error::invalid("predictor_step: not a single-step sampler"))
        }
    }
}

/// The probability-flow ODE on flat rows, for [`crate::ode`].
struct PfOde<'a> {
    score: &'a dyn Score,
    d: usize,
}

impl crate::ode::OdeSystem for PfOde<'_> {
    fn eval(&self, t: f64, y: &[f64]) -> Result<Vec<f64>> {
        let x = crate::data::from_rows(y.to_vec(), self.d, DType::F64, &Device::Cpu)?;
        let v = crate::data::to_rows(&pf_ode_velocity(self.score, t, &x)?)?.0;
        if v.iter().any(|v| !v.is_finite()) {
            return Err(diverged("rk45 (the probability-flow ODE)"));
        }
        Ok(v)
    }
}

/// The probability-flow ODE velocity in forward time: `dx/dt = f(t) x - g(t)^2/2 score(t, x)`.
pub fn pf_ode_velocity(score: &dyn Score, t: f64, x: &Tensor) -> Result<Tensor> {
    let p = score.process();
    let sc = score.score(t, x)?;
    Ok((x.affine(p.f(t), 0.0)? + sc.affine(-0.5 * p.g2(t), 0.0)?)?)
}

/// One Langevin step `x + eps score + sqrt(2 eps) z` with score_sde's step rule
/// `eps = 2 (snr |z| / |score|)^2` (Song et al. 2021), the norms averaged over the batch.
/// A non-finite score stops the run with [`Error::Numerical`]; a zero score leaves `x`.
pub fn langevin_corrector_step(score: &dyn Score, t: f64, x: &Tensor, z: &Tensor, snr: f64) -> Result<Tensor> {
    let sc = score.score(t, x)?;
    let norm = |a: &Tensor| -> Result<f64> {
        Ok(a.to_dtype(DType::F64)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .mean_all()?
            .to_scalar::<f64>()?)
    };
    let (gn, zn) = (norm(&sc)?, norm(z)?);
    if !gn.is_finite() {
        return Err(diverged("Langevin corrector (the score)"));
    }
    if gn == 0.0 {
        // A zero score (the mode of a symmetric law): the step size is undefined; stay.
        return Ok(x.clone());
    }
    let eps = 2.0 * (snr * zn / gn).powi(2);
    Ok(((x + sc.affine(eps, 0.0)?)? + z.affine((2.0 * eps).sqrt(), 0.0)?)?)
}

/// Annealed Langevin dynamics (Song & Ermon 2019, NCSN's Algorithm 1) over the noise
/// levels at the decreasing times `ts`, from the particles `x` at `ts[0]`: the one
/// implementation behind [`Sampler::AnnealedLangevin`] and [`crate::mcmc::annealed_langevin`].
///
/// Convention: the levels are the variance-exploding laws of `y = x / m(t)`
/// (`y = x_0 + sigma(t) eps`), on which NCSN's step is `y += alpha_i/2 score_y + sqrt(alpha_i) z`
/// with `alpha_i = delta sigma_i^2` (NCSN writes `alpha_i = eps sigma_i^2 / sigma_L^2`, i.e.
/// `delta = eps / sigma_L^2`). In `x` this is
/// `x += a_i/2 score(t_i, x) + sqrt(a_i) z`, `a_i = delta s(t_i)^2`, and between levels
/// `x *= m(t_{i+1}) / m(t_i)` (a no-op for VE). `steps_per_level` steps at each level; the
/// normals of step `k` (counted over all levels) are [`Noise::normals_fast`] of stream
/// `(Purpose::Step, k)`. Stops with [`Error::Numerical`] when the chains diverge.
pub fn annealed_langevin_levels(
    score: &dyn Score,
    ts: &[f64],
    steps_per_level: usize,
    delta: f64,
    x: Tensor,
    noise: &Noise,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let p = score.process();
    let (n, d) = x.dims2()?;
    let (dtype, device) = (x.dtype(), x.device().clone());
    let total = ts.len() * steps_per_level;
    let mut x = x;
    let mut k = 0;
    for (i, &t) in ts.iter().enumerate() {
        if i > 0 {
            // Levels are the VE-equivalent laws of y = x / m(t): keep y, rescale x.
            x = x.affine(p.m(t) / p.m(ts[i - 1]), 0.0)?;
        }
        let a = delta * p.s(t).powi(2);
        for _ in 0..steps_per_level {
            let sc = score.score(t, &x)?;
            let z = noise.normal_tensor_fast(stream(Purpose::Step, k as u64), n, d, dtype, &device)?;
            x = ((&x + sc.affine(0.5 * a, 0.0)?)? + z.affine(a.sqrt(), 0.0)?)?;
            k += 1;
            progress(k, total);
        }
        check_finite_tensor(&x, "annealed Langevin")?;
    }
    Ok(x)
}

/// Draws `n` particles from the reference prior `N(0, s(T)^2 I)` and runs [`sample_from`].
pub fn sample(
    score: &dyn Score,
    sampler: &Sampler,
    opts: &SampleOptions,
    n: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    if n == 0 {
        return Err(Error::invalid("the number of samples must be positive"));
    }
    let p = score.process();
    let t_max = opts.t_max.unwrap_or(p.t_max());
    let noise = Noise::new(opts.seed);
    let x = p.prior_tensor(&noise, t_max, n, score.dim(), opts.dtype, &Device::Cpu)?;
    sample_from(score, sampler, opts, x, progress)
}

/// Runs `sampler` from the particles `x` (`[n, d]`) at time `t_max` down to `t_min`;
/// `progress(done, total)` is called after every step.
pub fn sample_from(
    score: &dyn Score,
    sampler: &Sampler,
    opts: &SampleOptions,
    x: Tensor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    sampler.validate()?;
    let p = score.process();
    let (n, d) = x.dims2()?;
    if d != score.dim() {
        return Err(Error::invalid(format!(
            "particles have dimension {d}, the score {}",
            score.dim()
        )));
    }
    let t_max = opts.t_max.unwrap_or(p.t_max());
    if let Some(x) = sample_rows(score, sampler, opts, t_max, &x, progress)? {
        return Ok(x);
    }
    let noise = Noise::new(opts.seed);
    let dtype = x.dtype();
    let device = x.device().clone();
    let z_at = |purpose: Purpose, k: u64| noise.normal_tensor_fast(stream(purpose, k), n, d, dtype, &device);
    let mut x = x;
    let last_t;
    match sampler {
        Sampler::Rk45 { rtol, atol } => {
            let (mut y, _, _) = crate::data::to_rows(&x)?;
            let flow = PfOde { score, d };
            crate::ode::solve_adaptive(&flow, &mut y, t_max, opts.t_min, *rtol, *atol, 100_000)?;
            x = crate::data::from_rows(y, d, dtype, &device)?;
            progress(1, 1);
            last_t = opts.t_min;
        }
        Sampler::AnnealedLangevin {
            steps_per_level,
            step_ratio,
        } => {
            let levels = (opts.steps / steps_per_level).max(2);
            // A ladder uniform in t starves the low-noise levels: with `M` steps a level and
            // level ratio `r`, the lag in variance is about `ln(r) / (M delta)` relative (and
            // does not vanish near t = 0 for a uniform-in-t grid), so the default is log-SNR.
            let grid = opts.grid.unwrap_or(TimeGrid::LogSnr);
            let ts = grid.times(p, levels - 1, opts.t_min, t_max)?;
            x = annealed_langevin_levels(score, &ts, *steps_per_level, *step_ratio, x, &noise, progress)?;
            last_t = opts.t_min;
        }
        Sampler::PredictorCorrector {
            predictor,
            snr,
            corrector_steps,
        } => {
            let ts = opts
                .grid
                .unwrap_or(TimeGrid::Quadratic)
                .times(p, opts.steps, opts.t_min, t_max)?;
            for k in 0..opts.steps {
                for j in 0..*corrector_steps {
                    let z = z_at(Purpose::Corrector, (k * corrector_steps + j) as u64)?;
                    x = langevin_corrector_step(score, ts[k], &x, &z, *snr)?;
                }
                let z = z_at(Purpose::Step, k as u64)?;
                x = predictor_step(score, predictor, ts[k], ts[k + 1], &x, Some(&z))?;
                if k % 16 == 15 {
                    check_finite_tensor(&x, "predictor-corrector")?;
                }
                progress(k + 1, opts.steps);
            }
            last_t = opts.t_min;
        }
        _ => {
            let ts = opts
                .grid
                .unwrap_or(TimeGrid::Quadratic)
                .times(p, opts.steps, opts.t_min, t_max)?;
            let stochastic = !matches!(sampler, Sampler::Heun | Sampler::Ddim { eta: 0.0 });
            for k in 0..opts.steps {
                let z = if stochastic {
                    Some(z_at(Purpose::Step, k as u64)?)
                } else {
                    None
                };
                x = predictor_step(score, sampler, ts[k], ts[k + 1], &x, z.as_ref())?;
                if k % 16 == 15 {
                    check_finite_tensor(&x, "sampler")?;
                }
                progress(k + 1, opts.steps);
            }
            last_t = opts.t_min;
        }
    }
    check_finite_tensor(&x, "sampler")?;
    if opts.denoise {
        x = score.denoise(last_t, &x)?;
    }
    Ok(x)
}

/// Rows per parallel task of the host loop: fixed for a given `d`, and results are
/// row-local, so they do not depend on it nor on the number of threads.
fn row_block(d: usize) -> usize {
    (4096 / d.max(1)).clamp(16, 256)
}

/// One step of the host loop, with its coefficients (see [`sample_rows`]).
enum RowOp {
    /// `x' = x + (x cxx + score cs) + z cz` (Euler–Maruyama).
    Em {
        kern: usize,
        cxx: f64,
        cs: f64,
        cz: f64,
        stream: Option<u64>,
    },
    /// `x' = (x cxx + score cs) + z cz` (exponential integrator).
    Ei {
        kern: usize,
        cxx: f64,
        cs: f64,
        cz: f64,
        stream: Option<u64>,
    },
    /// `x' = ax x + kappa score + sd z` ([`Process::reverse_kernel`]; DDIM / DDPM).
    Ddim {
        kern: usize,
        k: ReverseKernel,
        stream: Option<u64>,
    },
    /// Heun on the PF-ODE: `d0 = x f0 + score(t0, x) q0`, `xe = x + d0 h`,
    /// `d1 = xe f1 + score(t1, xe) q1`, `x' = x + (d0 + d1) h / 2`.
    Heun {
        k0: usize,
        k1: usize,
        h: f64,
        f0: f64,
        q0: f64,
        f1: f64,
        q1: f64,
    },
    /// Annealed Langevin: `x *= rescale` first if given, then `x' = (x + score c_sc) + z c_z`.
    Ald {
        kern: usize,
        rescale: Option<f64>,
        c_sc: f64,
        c_z: f64,
        stream: u64,
    },
}

/// Per-task buffers of the host loop (`rows x d` each).
struct RowScratch {
    sc: Vec<f64>,
    z: Vec<f64>,
    xe: Vec<f64>,
    sc1: Vec<f64>,
}

impl RowOp {
    /// Applies the step to a block of rows starting at particle `first`.
    fn apply(
        &self,
        kernels: &[Box<dyn RowScore + '_>],
        noise: &Noise,
        first: usize,
        d: usize,
        xb: &mut [f64],
        scr: &mut RowScratch,
    ) {
        let len = xb.len();
        let (sc, z) = (&mut scr.sc[..len], &mut scr.z[..len]);
        let add_noise = |xb: &mut [f64], z: &mut [f64], stream: u64, cz: f64| {
            noise.normals_fast_rows(stream, first, d, z);
            for (xv, zv) in xb.iter_mut().zip(z.iter()) {
                *xv += zv * cz;
            }
        };
        match *self {
            RowOp::Em {
                kern,
                cxx,
                cs,
                cz,
                stream,
            } => {
                kernels[kern].score_rows(xb, sc);
                xb.iter_mut()
                    .zip(sc.iter())
                    .for_each(|(xv, s)| *xv += *xv * cxx + s * cs);
                if let Some(st) = stream {
                    add_noise(xb, z, st, cz);
                }
            }
            RowOp::Ei {
                kern,
                cxx,
                cs,
                cz,
                stream,
            } => {
                kernels[kern].score_rows(xb, sc);
                xb.iter_mut()
                    .zip(sc.iter())
                    .for_each(|(xv, s)| *xv = *xv * cxx + s * cs);
                if let Some(st) = stream {
                    add_noise(xb, z, st, cz);
                }
            }
            RowOp::Ddim { kern, k, stream } => {
                kernels[kern].score_rows(xb, sc);
                xb.iter_mut()
                    .zip(sc.iter())
                    .for_each(|(xv, s)| *xv = k.mean_of(*xv, *s));
                if let Some(st) = stream {
                    add_noise(xb, z, st, k.sd());
                }
            }
            RowOp::Heun {
                k0,
                k1,
                h,
                f0,
                q0,
                f1,
                q1,
            } => {
                let (xe, sc1) = (&mut scr.xe[..len], &mut scr.sc1[..len]);
                kernels[k0].score_rows(xb, sc);
                // d0 = x f0 + sc q0 (kept in sc); xe = x + d0 h.
                for ((s, e), xv) in sc.iter_mut().zip(xe.iter_mut()).zip(xb.iter()) {
                    *s = xv * f0 + *s * q0;
                    *e = xv + *s * h;
                }
                kernels[k1].score_rows(xe, sc1);
                for (((xv, d0), e), s1) in xb.iter_mut().zip(sc.iter()).zip(xe.iter()).zip(sc1.iter()) {
                    let d1 = e * f1 + s1 * q1;
                    *xv += (d0 + d1) * (0.5 * h);
                }
            }
            RowOp::Ald {
                kern,
                rescale,
                c_sc,
                c_z,
                stream,
            } => {
                if let Some(r) = rescale {
                    xb.iter_mut().for_each(|v| *v *= r);
                }
                kernels[kern].score_rows(xb, sc);
                xb.iter_mut().zip(sc.iter()).for_each(|(xv, s)| *xv += s * c_sc);
                add_noise(xb, z, stream, c_z);
            }
        }
    }
}

/// The host loop of [`sample_from`] for scores with a [`RowScore`] and f64 particles on the
/// CPU. Every particle's trajectory depends on that particle alone (its noise is row `i` of
/// stream `(Purpose::Step, k)`, the same draws as the tensor path), so each fixed block of
/// rows runs **all** its steps (score, noise draw and update, in place, no allocation per
/// step) before the next block: one synchronisation per wave of blocks instead of one per
/// step, which keeps a thread that loses its core (a busy machine) from stalling every
/// step, and keeps a block in cache for the whole run. The arithmetic of each update is the
/// tensor path's ([`predictor_step`]), so the two agree up to the rounding of the score.
/// Returns `None` when the fast path does not apply (other dtype or device, no row kernel,
/// or the predictor–corrector sampler, whose step size is an average over the batch).
fn sample_rows(
    score: &dyn Score,
    sampler: &Sampler,
    opts: &SampleOptions,
    t_max: f64,
    x: &Tensor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F64
        || !x.device().is_cpu()
        || matches!(sampler, Sampler::PredictorCorrector { .. } | Sampler::Rk45 { .. })
    {
        return Ok(None);
    }
    if score.rows_at(t_max).is_none() {
        return Ok(None);
    }
    let p = score.process();
    let (n, d) = x.dims2()?;
    let mut kernels: Vec<Box<dyn RowScore + '_>> = Vec::new();
    let mut kernel = |t: f64| -> Result<usize> {
        kernels.push(
            score
                .rows_at(t)
                .ok_or_else(|| Error::invalid("the score has no row kernel at some time of the grid"))?,
        );
        Ok(kernels.len() - 1)
    };
    let mut ops = Vec::new();
    let what;
    match sampler {
        Sampler::AnnealedLangevin {
            steps_per_level,
            step_ratio,
        } => {
            what = "annealed Langevin";
            let levels = (opts.steps / steps_per_level).max(2);
            let grid = opts.grid.unwrap_or(TimeGrid::LogSnr);
            let ts = grid.times(p, levels - 1, opts.t_min, t_max)?;
            for (i, &t) in ts.iter().enumerate() {
                let a = step_ratio * p.s(t).powi(2);
                let kern = kernel(t)?;
                for j in 0..*steps_per_level {
                    ops.push(RowOp::Ald {
                        kern,
                        rescale: (i > 0 && j == 0).then(|| p.m(t) / p.m(ts[i - 1])),
                        c_sc: 0.5 * a,
                        c_z: a.sqrt(),
                        stream: stream(Purpose::Step, ops.len() as u64),
                    });
                }
            }
        }
        _ => {
            what = "sampler";
            let ts = opts
                .grid
                .unwrap_or(TimeGrid::Quadratic)
                .times(p, opts.steps, opts.t_min, t_max)?;
            let stochastic = !matches!(sampler, Sampler::Heun | Sampler::Ddim { eta: 0.0 });
            for k in 0..opts.steps {
                let (t0, t1) = (ts[k], ts[k + 1]);
                let u = p.t_max() - t0;
                let noisy = |cz: f64| (stochastic && cz != 0.0).then(|| stream(Purpose::Step, k as u64));
                // Coefficients in the operation order of `predictor_step`.
                ops.push(match sampler {
                    Sampler::EulerMaruyama { b } => {
                        let b = b.at(u);
                        let h = t0 - t1;
                        let g2 = p.g2(t0);
                        let cz = b * (g2 * h).sqrt();
                        RowOp::Em {
                            kern: kernel(t0)?,
                            cxx: -p.f(t0) * h,
                            cs: 0.5 * (1.0 + b * b) * g2 * h,
                            cz,
                            stream: noisy(cz),
                        }
                    }
                    Sampler::ExpIntegrator { b } => {
                        let b = b.at(u);
                        let (r, c, v) = p.ei_coefficients(t0, t1);
                        let cz = b * v.sqrt();
                        RowOp::Ei {
                            kern: kernel(t0)?,
                            cxx: r,
                            cs: 0.5 * (1.0 + b * b) * c,
                            cz,
                            stream: noisy(cz),
                        }
                    }
                    Sampler::Ddpm | Sampler::Ddim { .. } => {
                        let eta = if let Sampler::Ddim { eta } = sampler { *eta } else { 1.0 };
                        let k = p.reverse_kernel(t0, t1, eta);
                        RowOp::Ddim {
                            kern: kernel(t0)?,
                            k,
                            stream: noisy(k.sd()),
                        }
                    }
                    Sampler::Heun => RowOp::Heun {
                        k0: kernel(t0)?,
                        k1: kernel(t1)?,
                        h: t1 - t0,
                        f0: p.f(t0),
                        q0: -0.5 * p.g2(t0),
                        f1: p.f(t1),
                        q1: -0.5 * p.g2(t1),
                    },
                    Sampler::AnnealedLangevin { .. } | Sampler::PredictorCorrector { .. } | Sampler::Rk45 { .. } => {
                        unreachable!("handled above")
                    }
                });
            }
        }
    }
    let mut xs: Vec<f64> = x.flatten_all()?.to_vec1()?;
    let noise = Noise::new(opts.seed);
    let rows = row_block(d);
    let blocks = n.div_ceil(rows);
    // At most eight waves of blocks, for the progress reports; results do not depend on them.
    let per_wave = blocks.div_ceil(8).max(4 * rayon::current_num_threads());
    let total = ops.len();
    let mut ok = true;
    for w0 in (0..blocks).step_by(per_wave) {
        let w1 = (w0 + per_wave).min(blocks);
        let part = &mut xs[w0 * rows * d..(w1 * rows * d).min(n * d)];
        ok &= part
            .par_chunks_mut(rows * d)
            .enumerate()
            .map_init(
                || RowScratch {
                    sc: vec![0.0; rows * d],
                    z: vec![0.0; rows * d],
                    xe: vec![0.0; rows * d],
                    sc1: vec![0.0; rows * d],
                },
                |scr, (b, xb)| {
                    for op in &ops {
                        op.apply(&kernels, &noise, (w0 + b) * rows, d, xb, scr);
                    }
                    xb.iter().fold(true, |ok, v| ok & v.is_finite())
                },
            )
            .reduce(|| true, |a, b| a && b);
        progress(total * w1 / blocks, total);
    }
    if !ok {
        return Err(diverged(what));
    }
    let mut x = Tensor::from_vec(xs, (n, d), x.device())?;
    if opts.denoise {
        x = score.denoise(opts.t_min, &x)?;
    }
    Ok(Some(x))
}

/// The OU horizon (`beta = 2`) at which `m(T) * radius <= 0.01`, clamped to `[5, 12]`: the
/// prior mismatch `N(0, I)` vs `p_T` is then negligible for data inside `radius`.
pub fn ou_horizon(radius: f64) -> f64 {
    ((radius.max(1.0) / 0.01).ln()).clamp(5.0, 12.0)
}

/// The default process for a data law of the given radius: OU with `beta = 2`
/// and horizon [`ou_horizon`].
pub fn default_process(radius: f64) -> Process {
    Process::ou(2.0, ou_horizon(radius))
}

/// The default process for standardised data in `d` dimensions (unit variance per
/// coordinate): [`default_process`] of radius `3 sqrt(d)`. The trainer's default.
pub fn standardised_process(d: usize) -> Process {
    default_process(3.0 * (d as f64).sqrt())
}

/// A process of the given family for data inside `radius`:
/// * `ou`: [`default_process`];
/// * `vp`, `sub-vp`: DDPM's linear schedule on `[0, 1]` (score_sde's defaults), whatever the
///   radius;
/// * `ve`: `sigma_min = 0.01`, `sigma_max = 2 radius`, an upper bound on the largest distance
///   between two data points, the choice of Song & Ermon 2020 ("Improved techniques for
///   training score-based generative models", technique 1), so that `p_T` is close to
///   `N(0, sigma_max^2 I)`.
pub fn process_for_radius(kind: ProcessKind, radius: f64) -> Process {
    match kind {
        ProcessKind::Ou => default_process(radius),
        ProcessKind::Vp => Process::ddpm_linear(),
        ProcessKind::SubVp => Process::sub_vp_linear(),
        ProcessKind::Ve => Process::ve(0.01, 2.0 * radius.max(1.0)),
    }
}

/// [`process_for_radius`] for standardised data in `d` dimensions (radius `3 sqrt(d)`, as
/// [`standardised_process`]).
pub fn standardised_process_of(kind: ProcessKind, d: usize) -> Process {
    process_for_radius(kind, 3.0 * (d as f64).sqrt())
}
