//! Forward (noising) processes and time grids.
//!
//! A process is given by its marginal `x_t = m(t) x_0 + s(t) eps`, `eps ~ N(0, I)`, with
//! forward time `t: 0 -> T` (docs/conventions.md). In SDE form `dX = f(t) X dt + g(t) dB` with
//! `f = d log m / dt` and `g^2 = d s^2/dt - 2 f s^2`.
//!
//! * **VP / Ornstein–Uhlenbeck** (Song et al. 2021, "Score-based generative modeling through SDEs"): `dX = -beta(t)/2 X dt + sqrt(beta(t)) dB`,
//!   `m = exp(-B/2)`, `s^2 = 1 - m^2`, `B(t) = int_0^t beta`. `beta = 2` is the project's default
//!   `dX = -X dt + sqrt(2) dB`; DDPM's linear and cosine schedules are other `beta(t)`.
//! * **sub-VP** (Song et al. 2021, §3.4): `dX = -beta(t)/2 X dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dB`,
//!   the same `m = exp(-B/2)` with `s = 1 - m^2` (so `s^2 <= 1 - m^2`: the variance is bounded
//!   by the VP one), `g^2 = beta (1 - exp(-2 B))`.
//! * **VE** (NCSN, Song & Ermon 2019): `m = 1`, `s(t) = sigma_min (sigma_max / sigma_min)^t` on
//!   `t in [0, 1]`, so `g^2 = d s^2 / dt = 2 s^2 log(sigma_max / sigma_min)`.
//!
//! The discrete DDPM chains are these marginals read on a grid (`alpha_bar_k = m(t_k)^2`).

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::f64::consts::FRAC_PI_2;

use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// The rate `beta(t)` of a VP process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `beta(t) = beta` (the OU process; `beta = 2` by default).
    Constant {
        /// The constant rate.
        beta: f64,
    },
    /// DDPM's linear schedule `beta(t) = beta_min + t (beta_max - beta_min)` on `[0, 1]`
    /// (score_sde: `beta_min = 0.1`, `beta_max = 20`).
    Linear {
        /// Rate at `t = 0`.
        beta_min: f64,
        /// Rate at `t = 1`.
        beta_max: f64,
    },
    /// Improved DDPM's cosine schedule:
    /// `alpha_bar(t) = cos^2(((t + s)/(1 + s)) pi/2) / cos^2((s/(1 + s)) pi/2)`.
    Cosine {
        /// The offset `s` (0.008 in Nichol & Dhariwal).
        s: f64,
    },
}

/// A forward noising process (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Process {
    /// Variance preserving: `m = exp(-B/2)`, `s^2 = 1 - m^2`.
    Vp {
        /// The rate `beta(t)`.
        schedule: BetaSchedule,
        /// The horizon `T`.
        t_max: f64,
    },
    /// Sub-variance preserving (Song et al. 2021): `m = exp(-B/2)`, `s = 1 - m^2`.
    SubVp {
        /// The rate `beta(t)`.
        schedule: BetaSchedule,
        /// The horizon `T`.
        t_max: f64,
    },
    /// Variance exploding: `m = 1`, `s(t) = sigma_min (sigma_max/sigma_min)^t`, `T = 1`.
    Ve {
        /// `s(0)`.
        sigma_min: f64,
        /// `s(1)`.
        sigma_max: f64,
    },
}

impl Process {
    /// The OU process `dX = -beta/2 X dt + sqrt(beta) dB` on `[0, t_max]`.
    pub fn ou(beta: f64, t_max: f64) -> Self {
        Process::Vp {
            schedule: BetaSchedule::Constant { beta },
            t_max,
        }
    }

    /// DDPM's linear schedule (`beta` from 0.1 to 20 on `[0, 1]`), as in score_sde.
    pub fn ddpm_linear() -> Self {
        Process::Vp {
            schedule: BetaSchedule::Linear {
                beta_min: 0.1,
                beta_max: 20.0,
            },
            t_max: 1.0,
        }
    }

    /// The cosine schedule with `s = 0.008`, on `[0, 0.99]`: the rate `beta(t)` diverges at
    /// `t = 1` (it is about 200 at 0.99, where `m = 0.016`).
    pub fn ddpm_cosine() -> Self {
        Process::Vp {
            schedule: BetaSchedule::Cosine { s: 0.008 },
            t_max: 0.99,
        }
    }

    /// The sub-VP process with DDPM's linear schedule (`beta` from 0.1 to 20 on `[0, 1]`), as in
    /// score_sde's `subvpsde`.
    pub fn sub_vp_linear() -> Self {
        Process::SubVp {
            schedule: BetaSchedule::Linear {
                beta_min: 0.1,
                beta_max: 20.0,
            },
            t_max: 1.0,
        }
    }

    /// The sub-VP process with a constant rate `beta` on `[0, t_max]`.
    pub fn sub_vp(beta: f64, t_max: f64) -> Self {
        Process::SubVp {
            schedule: BetaSchedule::Constant { beta },
            t_max,
        }
    }

    /// The VE process of NCSN with the given noise range.
    pub fn ve(sigma_min: f64, sigma_max: f64) -> Self {
        Process::Ve { sigma_min, sigma_max }
    }

    /// Checks the parameters: positive finite rates, `0 < sigma_min < sigma_max`, `T > 0`.
    pub fn validate(&self) -> Result<()> {
        let ok = |c: bool, m: &str| if c { Ok(()) } else { Err(Error::invalid(m)) };
        match self {
            Process::Vp { schedule, t_max } | Process::SubVp { schedule, t_max } => {
                ok(t_max.is_finite() && *t_max > 0.0, "process: t_max must be positive")?;
                match *schedule {
                    BetaSchedule::Constant { beta } => {
                        ok(beta.is_finite() && beta > 0.0, "process: beta must be positive")
                    }
                    BetaSchedule::Linear { beta_min, beta_max } => ok(
                        beta_min.is_finite() && beta_max.is_finite() && beta_min > 0.0 && beta_max >= beta_min,
                        "process: need 0 < beta_min <= beta_max",
                    ),
                    BetaSchedule::Cosine { s } => {
                        ok(s.is_finite() && s >= 0.0, "process: cosine offset must be >= 0")?;
                        ok(*t_max < 1.0, "process: the cosine schedule needs t_max < 1")
                    }
                }
            }
            Process::Ve { sigma_min, sigma_max } => ok(
                sigma_min.is_finite() && sigma_max.is_finite() && *sigma_min > 0.0 && sigma_max > sigma_min,
                "process: need 0 < sigma_min < sigma_max",
            ),
        }
    }

    /// The horizon `T`.
    pub fn t_max(&self) -> f64 {
        match self {
            Process::Vp { t_max, .. } | Process::SubVp { t_max, .. } => *t_max,
            Process::Ve { .. } => 1.0,
        }
    }

    /// `B(t) = int_0^t beta` (VP only; 0 for VE).
    fn b_int(&self, t: f64) -> f64 {
        match self {
            Process::Vp { schedule, .. } | Process::SubVp { schedule, .. } => match *schedule {
                BetaSchedule::Constant { beta } => beta * t,
                BetaSchedule::Linear { beta_min, beta_max } => beta_min * t + 0.5 * (beta_max - beta_min) * t * t,
                BetaSchedule::Cosine { s } => {
                    let th = |u: f64| ((u + s) / (1.0 + s)) * FRAC_PI_2;
                    -2.0 * (th(t).cos() / th(0.0).cos()).ln()
                }
            },
            Process::Ve { .. } => 0.0,
        }
    }

    /// Inverse of `B` (VP only).
    fn b_inv(&self, b: f64) -> f64 {
        match self {
            Process::Vp { schedule, .. } | Process::SubVp { schedule, .. } => match *schedule {
                BetaSchedule::Constant { beta } => b / beta,
                BetaSchedule::Linear { beta_min, beta_max } => {
                    let a = 0.5 * (beta_max - beta_min);
                    if a.abs() < 1e-12 {
                        b / beta_min
                    } else {
                        2.0 * b / (beta_min + (beta_min * beta_min + 4.0 * a * b).sqrt())
                    }
                }
                BetaSchedule::Cosine { s } => {
                    let th0 = (s / (1.0 + s)) * FRAC_PI_2;
                    let c = ((-0.5 * b).exp() * th0.cos()).clamp(-1.0, 1.0);
                    c.acos() / FRAC_PI_2 * (1.0 + s) - s
                }
            },
            Process::Ve { .. } => 0.0,
        }
    }

    /// The signal coefficient `m(t)`.
    pub fn m(&self, t: f64) -> f64 {
        (-0.5 * self.b_int(t)).exp()
    }

    /// The noise scale `s(t)`.
    pub fn s(&self, t: f64) -> f64 {
        match self {
            Process::Vp { .. } => (-(-self.b_int(t)).exp_m1()).max(0.0).sqrt(),
            Process::SubVp { .. } => (-(-self.b_int(t)).exp_m1()).max(0.0),
            Process::Ve { sigma_min, sigma_max } => sigma_min * (sigma_max / sigma_min).powf(t),
        }
    }

    /// The noise-to-signal ratio `sigma(t) = s(t) / m(t)` (k-diffusion's sigma).
    pub fn sigma(&self, t: f64) -> f64 {
        match self {
            Process::Vp { .. } => self.b_int(t).exp_m1().max(0.0).sqrt(),
            // (1 - e^{-B}) / e^{-B/2} = 2 sinh(B / 2).
            Process::SubVp { .. } => 2.0 * (0.5 * self.b_int(t)).sinh(),
            Process::Ve { .. } => self.s(t),
        }
    }

    /// The log signal-to-noise ratio `lambda(t) = log(m^2 / s^2) = -2 log sigma(t)`.
    pub fn log_snr(&self, t: f64) -> f64 {
        -2.0 * self.sigma(t).ln()
    }

    /// The time at which `sigma(t) = sigma` (inverse of [`Process::sigma`]), clamped to
    /// `[0, T]`.
    pub fn t_of_sigma(&self, sigma: f64) -> f64 {
        let t = match self {
            Process::Vp { .. } => self.b_inv((sigma * sigma).ln_1p()),
            Process::SubVp { .. } => self.b_inv(2.0 * (0.5 * sigma).asinh()),
            Process::Ve { sigma_min, sigma_max } => (sigma / sigma_min).ln() / (sigma_max / sigma_min).ln(),
        };
        t.clamp(0.0, self.t_max())
    }

    /// The rate `beta(t)`; for VE the squared diffusion `g(t)^2` (same role).
    pub fn beta(&self, t: f64) -> f64 {
        match self {
            Process::Vp { schedule, .. } | Process::SubVp { schedule, .. } => match *schedule {
                BetaSchedule::Constant { beta } => beta,
                BetaSchedule::Linear { beta_min, beta_max } => beta_min + t * (beta_max - beta_min),
                BetaSchedule::Cosine { s } => {
                    let th = ((t + s) / (1.0 + s)) * FRAC_PI_2;
                    std::f64::consts::PI / (1.0 + s) * th.tan()
                }
            },
            Process::Ve { .. } => self.g2(t),
        }
    }

    /// The drift coefficient `f(t)` of `dX = f X dt + g dB`.
    pub fn f(&self, t: f64) -> f64 {
        match self {
            Process::Vp { .. } | Process::SubVp { .. } => -0.5 * self.beta(t),
            Process::Ve { .. } => 0.0,
        }
    }

    /// The squared diffusion coefficient `g(t)^2`.
    pub fn g2(&self, t: f64) -> f64 {
        match self {
            Process::Vp { .. } => self.beta(t),
            Process::SubVp { .. } => -self.beta(t) * (-2.0 * self.b_int(t)).exp_m1(),
            Process::Ve { sigma_min, sigma_max } => {
                let s = self.s(t);
                2.0 * s * s * (sigma_max / sigma_min).ln()
            }
        }
    }

    /// The forward transition from `t0` to `t1 >= t0`: `x_{t1} = a x_{t0} + sqrt(v) z`;
    /// returns `(a, v)` with `a = m(t1)/m(t0)`, `v = s(t1)^2 - a^2 s(t0)^2`.
    pub fn transition(&self, t0: f64, t1: f64) -> (f64, f64) {
        match self {
            Process::Vp { .. } => {
                let db = self.b_int(t1) - self.b_int(t0);
                ((-0.5 * db).exp(), -(-db).exp_m1())
            }
            Process::SubVp { .. } => {
                // A Gaussian linear Markov process: Var(x1 | x0) = s1^2 - a^2 s0^2.
                let (b0, b1) = (self.b_int(t0), self.b_int(t1));
                let a = (-0.5 * (b1 - b0)).exp();
                let (s0, s1) = (-(-b0).exp_m1(), -(-b1).exp_m1());
                (a, (s1 * s1 - a * a * s0 * s0).max(0.0))
            }
            Process::Ve { .. } => {
                let (s0, s1) = (self.s(t0), self.s(t1));
                (1.0, s1 * s1 - s0 * s0)
            }
        }
    }

    /// Coefficients of the exponential-integrator step of the reverse family from `t0` down
    /// to `t1 < t0` with the score frozen at `t0`:
    /// `x_{t1} = r x + (1 + b^2)/2 c score + b sqrt(v) z`, returned as `(r, c, v)` with
    /// `r = m(t1)/m(t0)`, `c = int_{t1}^{t0} m(t1)/m(u) g(u)^2 du`, `v = m(t1)^2 (sigma(t0)^2 - sigma(t1)^2)`.
    /// For the OU process with `beta = 2` and `h = t0 - t1` this is
    /// `x' = e^h x + (1 + b^2)(e^h - 1) score + b sqrt(e^{2h} - 1) z`.
    pub fn ei_coefficients(&self, t0: f64, t1: f64) -> (f64, f64, f64) {
        match self {
            Process::Vp { .. } => {
                let db = self.b_int(t0) - self.b_int(t1);
                let r = (0.5 * db).exp();
                (r, 2.0 * (0.5 * db).exp_m1(), db.exp_m1())
            }
            Process::SubVp { .. } => {
                // c = e^{-B1/2} int_{B1}^{B0} e^{w/2} (1 - e^{-2w}) dw, v = m1^2 (sigma0^2 - sigma1^2).
                let (b0, b1) = (self.b_int(t0), self.b_int(t1));
                let db = b0 - b1;
                let c = 2.0 * (0.5 * db).exp_m1() + (2.0 / 3.0) * ((-1.5 * b0 - 0.5 * b1).exp() - (-2.0 * b1).exp());
                let (h0, h1) = ((0.5 * b0).sinh(), (0.5 * b1).sinh());
                ((0.5 * db).exp(), c, 4.0 * (-b1).exp() * (h0 - h1) * (h0 + h1))
            }
            Process::Ve { .. } => {
                let (s0, s1) = (self.s(t0), self.s(t1));
                let v = s0 * s0 - s1 * s1;
                (1.0, v, v)
            }
        }
    }

    /// The standard deviation of the reference prior `N(0, s(T)^2 I)` the samplers start
    /// from (1 for VP up to `m(T)^2`, `sigma_max` for VE).
    pub fn prior_std(&self) -> f64 {
        self.s(self.t_max())
    }

    /// `n` draws (row-major `[n, d]`) of the reference prior `N(0, s(T)^2 I)` from the
    /// stream `(Purpose::Init, index)` of `noise`: `s(T) z`. Every posterior method and
    /// imputer starts its particle system `index` here.
    pub fn prior_rows(&self, noise: &Noise, index: u64, n: usize, d: usize) -> Vec<f64> {
        let s = self.prior_std();
        noise
            .normals(stream(Purpose::Init, index), n, d)
            .into_iter()
            .map(|z| s * z)
            .collect()
    }

    /// [`Process::prior_rows`] (index 0) as an `[n, d]` tensor of `dtype`, started at `t`
    /// (the samplers' `t_max`, `T` by default): `s(t) z`, the normals rounded to `dtype`
    /// first.
    pub fn prior_tensor(
        &self,
        noise: &Noise,
        t: f64,
        n: usize,
        d: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        Ok(noise
            .normal_tensor(stream(Purpose::Init, 0), n, d, dtype, device)?
            .affine(self.s(t), 0.0)?)
    }

    /// The reverse (backward) kernel of the DDPM / DDIM chains from `t0` down to `t1 < t0`
    /// (Ho et al. 2020; Song, Meng & Ermon 2021, "Denoising diffusion implicit models"),
    /// with the score at `t0`:
    ///
    /// `x_{t1} ~ N(ax x + kappa score(t0, x), var I)`, `ax = m1/m0`,
    /// `var = eta^2 v s1^2 / s0^2`, `kappa = m1 s0^2 / m0 - s0 sqrt(s1^2 - var)`,
    ///
    /// `v` the forward transition variance from `t1` to `t0` (`m0 = m(t0)`, ...). This is
    /// DDIM's `m1 x0_hat + sqrt(s1^2 - var) eps_hat + sqrt(var) z` with the Tweedie
    /// `x0_hat = (x + s0^2 score)/m0`, `eps_hat = -s0 score` (docs/conventions.md);
    /// `eta = 1` is DDPM's ancestral step, the forward posterior `q(x_{t1} | x_{t0}, x0_hat)`,
    /// and the transition of every posterior method's Feynman–Kac model.
    pub fn reverse_kernel(&self, t0: f64, t1: f64, eta: f64) -> ReverseKernel {
        let (m, s, m1, s1) = (self.m(t0), self.s(t0), self.m(t1), self.s(t1));
        let (_, v) = self.transition(t1, t0);
        let var = eta * eta * (v * s1 * s1 / (s * s));
        let kappa = m1 * s * s / m - s * (s1 * s1 - var).max(0.0).sqrt();
        ReverseKernel { ax: m1 / m, kappa, var }
    }
}

/// One step of the DDPM / DDIM reverse chain ([`Process::reverse_kernel`]):
/// `x' = ax x + kappa score + sqrt(var) z`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReverseKernel {
    /// `m(t1) / m(t0)`.
    pub ax: f64,
    /// Coefficient of the score in the mean.
    pub kappa: f64,
    /// Variance of the step.
    pub var: f64,
}

impl ReverseKernel {
    /// The standard deviation `sqrt(var)`.
    pub fn sd(&self) -> f64 {
        self.var.sqrt()
    }

    /// The mean `ax x + kappa score` of one coordinate.
    #[inline]
    pub fn mean_of(&self, x: f64, score: f64) -> f64 {
        self.ax * x + self.kappa * score
    }

    /// The means of rows `x` given their scores (row-major, same shape).
    pub fn mean(&self, x: &[f64], score: &[f64]) -> Vec<f64> {
        x.iter().zip(score).map(|(a, b)| self.mean_of(*a, *b)).collect()
    }

    /// The mean as a tensor, `ax x + kappa score` (the same arithmetic as [`Self::mean`]).
    pub fn mean_tensor(&self, x: &Tensor, score: &Tensor) -> Result<Tensor> {
        Ok((x.affine(self.ax, 0.0)? + score.affine(self.kappa, 0.0)?)?)
    }
}

/// Spacing of the reverse-time grid `T = t_0 > t_1 > ... > t_N = t_min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeGrid {
    /// Uniform in `t`.
    Uniform,
    /// `t = t_min + (T - t_min) u^2`, `u` uniform: finer near the data.
    Quadratic,
    /// Karras et al. (EDM): uniform in `sigma^(1/rho)` (rho = 7 by default).
    EdmRho(f64),
    /// Uniform in the log signal-to-noise ratio `lambda(t)`.
    LogSnr,
}

impl std::str::FromStr for TimeGrid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(TimeGrid::Uniform),
            "quadratic" => Ok(TimeGrid::Quadratic),
            "edm" => Ok(TimeGrid::EdmRho(7.0)),
            "logsnr" => Ok(TimeGrid::LogSnr),
            _ => {
                if let Some(r) = s.strip_prefix("edm:") {
                    let rho: f64 = r
                        .parse()
                        .map_err(|_| Error::invalid(format!("time grid: bad rho '{r}'")))?;
                    if rho > 0.0 && rho.is_finite() {
                        return Ok(TimeGrid::EdmRho(rho));
                    }
                }
                Err(Error::invalid(format!(
                    "unknown time grid '{s}' (expected uniform, quadratic, edm, edm:RHO, logsnr)"
                )))
            }
        }
    }
}

impl TimeGrid {
    /// The `steps + 1` decreasing times from `t_max` to `t_min`.
    pub fn times(&self, process: &Process, steps: usize, t_min: f64, t_max: f64) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::invalid("time grid: need at least one step"));
        }
        if !(t_min > 0.0 && t_min < t_max && t_max <= process.t_max() * (1.0 + 1e-12)) {
            return Err(Error::invalid(format!(
                "time grid: need 0 < t_min ({t_min}) < t_max ({t_max}) <= T ({})",
                process.t_max()
            )));
        }
        let n = steps as f64;
        let mut ts: Vec<f64> = (0..=steps)
            .map(|i| {
                let u = i as f64 / n; // 0 at t_max, 1 at t_min
                match *self {
                    TimeGrid::Uniform => t_max + u * (t_min - t_max),
                    TimeGrid::Quadratic => t_min + (t_max - t_min) * (1.0 - u).powi(2),
                    TimeGrid::EdmRho(rho) => {
                        let (a, b) = (
                            process.sigma(t_max).powf(1.0 / rho),
                            process.sigma(t_min).powf(1.0 / rho),
                        );
                        process.t_of_sigma((a + u * (b - a)).powf(rho))
                    }
                    TimeGrid::LogSnr => {
                        let (a, b) = (process.log_snr(t_max), process.log_snr(t_min));
                        process.t_of_sigma((-0.5 * (a + u * (b - a))).exp())
                    }
                }
            })
            .collect();
        ts[0] = t_max;
        ts[steps] = t_min;
        if ts.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::invalid(
                "time grid: times are not strictly decreasing (too many steps for this range?)",
            ));
        }
        Ok(ts)
    }
}

/// The process families a trainer can be given by name (`scoregen train --process`):
/// `ou` (constant-rate VP, the default), `vp` (DDPM's linear schedule, score_sde's `vpsde`),
/// `sub-vp` (Song et al. 2021, score_sde's `subvpsde`) and `ve` (NCSN's variance exploding
/// process, Song & Ermon 2020). [`crate::sample::process_for_radius`] instantiates one for data
/// of a given radius.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessKind {
    /// [`Process::ou`] with `beta = 2` and the horizon [`crate::sample::ou_horizon`].
    Ou,
    /// [`Process::ddpm_linear`].
    Vp,
    /// [`Process::sub_vp_linear`].
    SubVp,
    /// [`Process::ve`] with `sigma_min = 0.01` and `sigma_max` twice the data radius.
    Ve,
}

/// The names [`ProcessKind`] parses, in order.
pub const PROCESS_NAMES: [&str; 4] = ["ou", "vp", "sub-vp", "ve"];

impl std::str::FromStr for ProcessKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "ou" => ProcessKind::Ou,
            "vp" => ProcessKind::Vp,
            "sub-vp" => ProcessKind::SubVp,
            "ve" => ProcessKind::Ve,
            other => {
                return Err(Error::invalid(format!(
                    "unknown process '{other}' (expected one of: {})",
                    PROCESS_NAMES.join(", ")
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Process> {
        vec![
            Process::ou(2.0, 5.0),
            Process::ou(1.0, 8.0),
            Process::ddpm_linear(),
            Process::ddpm_cosine(),
            Process::sub_vp_linear(),
            Process::sub_vp(2.0, 5.0),
            Process::ve(0.01, 50.0),
        ]
    }

    #[test]
    fn sub_vp_marginals_match_a_simulation_of_its_sde() {
        // Euler–Maruyama of dX = f X dt + g dB from x0 = 1.5, 20000 paths, 4000 steps on
        // [0, 1]: mean and variance at t = 0.1, 0.3, 1 against m x0 and s^2, within 4.5
        // standard errors (Var(mean) = s^2 / n, Var(var) = 2 s^4 / n) plus the O(h) bias.
        let p = Process::sub_vp_linear();
        let (n, steps, x0) = (20_000, 4000, 1.5);
        let noise = Noise::new(3);
        let mut x = vec![x0; n];
        let h = 1.0 / steps as f64;
        for k in 0..steps {
            let t = k as f64 * h;
            let (f, g) = (p.f(t), p.g2(t).sqrt());
            let z = noise.normals(stream(Purpose::User, k as u64), n, 1);
            for (x, z) in x.iter_mut().zip(&z) {
                *x += f * *x * h + g * h.sqrt() * z;
            }
            let t1 = (k + 1) as f64 * h;
            if [400, 1200, 4000].contains(&(k + 1)) {
                let mean = x.iter().sum::<f64>() / n as f64;
                let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
                let (m, s2) = (p.m(t1), p.s(t1).powi(2));
                let bias = 20.0 * h;
                assert!(
                    (mean - m * x0).abs() < 4.5 * (s2 / n as f64).sqrt() + bias,
                    "t = {t1}: mean {mean} vs {}",
                    m * x0
                );
                assert!(
                    (var - s2).abs() < 4.5 * s2 * (2.0 / n as f64).sqrt() + bias,
                    "t = {t1}: var {var} vs {s2}"
                );
                // Below the VP variance at the same m.
                assert!(s2 <= 1.0 - m * m + 1e-15);
            }
        }
    }

    #[test]
    fn ou_marginals() {
        let p = Process::ou(2.0, 5.0);
        for &t in &[0.01, 0.3, 1.0, 4.0] {
            assert!((p.m(t) - (-t).exp()).abs() < 1e-14);
            assert!((p.s(t) - (1.0 - (-2.0 * t).exp()).sqrt()).abs() < 1e-14);
        }
    }

    #[test]
    fn f_and_g_match_derivatives_of_m_and_s() {
        // f = d log m / dt and g^2 = d s^2 / dt - 2 f s^2, by central differences.
        for p in all() {
            for &t in &[0.05, 0.3, 0.7, 0.95] {
                let t = t * p.t_max();
                let h = 1e-6;
                let dlogm = ((p.m(t + h)).ln() - (p.m(t - h)).ln()) / (2.0 * h);
                let ds2 = (p.s(t + h).powi(2) - p.s(t - h).powi(2)) / (2.0 * h);
                assert!((p.f(t) - dlogm).abs() < 1e-5 * (1.0 + dlogm.abs()), "{p:?} t={t}");
                let g2 = ds2 - 2.0 * p.f(t) * p.s(t).powi(2);
                assert!((p.g2(t) - g2).abs() < 1e-5 * (1.0 + g2.abs()), "{p:?} t={t}");
            }
        }
    }

    #[test]
    fn transitions_compose_to_marginals_and_sigma_inverts() {
        for p in all() {
            let (t0, t1) = (0.2 * p.t_max(), 0.6 * p.t_max());
            let (a, v) = p.transition(t0, t1);
            assert!((a * p.m(t0) - p.m(t1)).abs() < 1e-12);
            assert!((a * a * p.s(t0).powi(2) + v - p.s(t1).powi(2)).abs() < 1e-10);
            for &t in &[0.01, 0.2, 0.5, 0.9] {
                let t = t * p.t_max();
                assert!((p.t_of_sigma(p.sigma(t)) - t).abs() < 1e-8, "{p:?} {t}");
            }
        }
    }

    #[test]
    fn ei_coefficients_match_quadrature() {
        for p in all() {
            let (t0, t1) = (0.6 * p.t_max(), 0.4 * p.t_max());
            let (r, c, v) = p.ei_coefficients(t0, t1);
            assert!((r - p.m(t1) / p.m(t0)).abs() < 1e-12);
            // Midpoint rule for c = int_{t1}^{t0} m(t1)/m(u) g^2(u) du.
            let k = 20000;
            let h = (t0 - t1) / k as f64;
            let q: f64 = (0..k)
                .map(|i| {
                    let u = t1 + (i as f64 + 0.5) * h;
                    p.m(t1) / p.m(u) * p.g2(u) * h
                })
                .sum();
            assert!((c - q).abs() < 1e-6 * q.abs().max(1.0), "{p:?}: {c} vs {q}");
            let vv = p.m(t1).powi(2) * (p.sigma(t0).powi(2) - p.sigma(t1).powi(2));
            assert!((v - vv).abs() < 1e-9 * vv.max(1.0));
        }
    }

    #[test]
    fn grids_are_decreasing_with_right_ends() {
        for p in all() {
            for g in [
                TimeGrid::Uniform,
                TimeGrid::Quadratic,
                TimeGrid::EdmRho(7.0),
                TimeGrid::LogSnr,
            ] {
                let ts = g.times(&p, 50, 1e-3, p.t_max()).unwrap();
                assert_eq!(ts.len(), 51);
                assert_eq!(ts[0], p.t_max());
                assert_eq!(ts[50], 1e-3);
            }
        }
        // LogSnr is uniform in lambda.
        let p = Process::ddpm_linear();
        let ts = TimeGrid::LogSnr.times(&p, 10, 1e-3, 1.0).unwrap();
        let l: Vec<f64> = ts.iter().map(|&t| p.log_snr(t)).collect();
        for w in l.windows(3) {
            assert!(((w[1] - w[0]) - (w[2] - w[1])).abs() < 1e-6);
        }
        assert!(TimeGrid::Uniform.times(&p, 10, 0.0, 1.0).is_err());
        assert!("edm:x".parse::<TimeGrid>().is_err());
        assert_eq!("edm:5".parse::<TimeGrid>().unwrap(), TimeGrid::EdmRho(5.0));
    }
}
