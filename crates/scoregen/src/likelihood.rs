//! Exact log-likelihoods of a score model by the probability-flow ODE (Song et al. 2021,
//! "Score-based generative modeling through stochastic differential equations", §4.3 and
//! appendix D.2), with the instantaneous change of variables of neural ODEs (Chen et al.
//! 2018) and Skilling–Hutchinson trace estimates (Skilling 1989; Hutchinson 1989; Grathwohl
//! et al. 2019, FFJORD).
//!
//! The forward process `dX = f(t) X dt + g(t) dB` has the probability-flow ODE
//!
//! ```text
//! dx/dt = v(t, x) = f(t) x - g(t)^2 / 2 * score(t, x),
//! ```
//!
//! whose solution carries the law of `x_{t_min}` to that of `x_T`. Along it the log density
//! obeys `d log p_t(x_t) / dt = -div v(t, x_t)`, so for a data point `x = x_{t_min}`
//!
//! ```text
//! log p_{t_min}(x) = log N(x_T; 0, s(T)^2 I) + int_{t_min}^{T} div v(t, x_t) dt,
//! div v = d f(t) - g(t)^2 / 2 * div score(t, x).
//! ```
//!
//! The divergence of the score comes from the Tweedie denoiser `x0_hat = (x + s^2 score) / m`
//! and its vector–Jacobian product ([`Score::denoise_vjp`]): `score = (m x0_hat - x) / s^2`,
//! so `div score = (m tr(J) - d) / s^2` with `J = d x0_hat / d x`. [`Divergence::Exact`]
//! takes `tr(J) = sum_i e_i^T J e_i` from `d` products; [`Divergence::Hutchinson`] estimates
//! it by `z^T J z` with `K` fixed Rademacher probes `z` per row, integrated separately, so
//! that each row gets a mean over the probes and its standard error. The trajectory `x_t` does
//! not depend on the probes.
//!
//! The reference prior `N(0, s(T)^2 I)` stands in for the true `p_T`; the difference shows in
//! `log p` as `O(m(T))` for VP processes and `O(|x| / sigma_max)` for VE, so VE models want a
//! large `sigma_max` (Song et al. 2021 use `sigma_max` about the largest pairwise distance of
//! the data; the bias is then a fraction of a nat).
//!
//! The ODE is solved by Dormand–Prince 5(4) with step-size control ([`crate::ode`], the
//! solver of score_sde, SciPy's `RK45`), or with a fixed number of steps of the same
//! fifth-order formula on a time grid. Rows are integrated in blocks of
//! [`LikelihoodOptions::block`] rows, each block one ODE system with one step size.

use candle_core::{DType, Device, Tensor};

use crate::ode::{self, OdeSystem};
use crate::process::{Process, TimeGrid};
use crate::rng::{stream, Noise, Purpose};
use crate::score::Score;
use crate::{Error, Result};

/// How the divergence of the score is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// The exact trace from `d` vector–Jacobian products per evaluation.
    Exact,
    /// Skilling–Hutchinson: `probes` Rademacher vectors per row, fixed along the trajectory.
    Hutchinson {
        /// Probes per row (at least 1; 2 or more give a standard error).
        probes: usize,
    },
}

/// The ODE solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OdeSolver {
    /// Dormand–Prince 5(4) with step-size control: a step is accepted when the RMS over the
    /// block of `err_i / (atol + rtol max(|y_i|, |y_i'|))` is at most 1.
    Adaptive {
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
    },
    /// `steps` Dormand–Prince fifth-order steps on the time grid `grid` from `t_min` to `T`.
    Fixed {
        /// Number of steps.
        steps: usize,
        /// Spacing of the steps.
        grid: TimeGrid,
    },
}

/// Settings of [`log_likelihood`].
#[derive(Clone, Debug, PartialEq)]
pub struct LikelihoodOptions {
    /// Exact divergence or Hutchinson estimates.
    pub divergence: Divergence,
    /// The ODE solver.
    pub solver: OdeSolver,
    /// The time the data are taken at (`x = x_{t_min}`; score_sde uses `1e-5`).
    pub t_min: f64,
    /// Seed of the Hutchinson probes.
    pub seed: u64,
    /// Rows integrated together as one ODE system.
    pub block: usize,
    /// The most adaptive steps (accepted or not) per block before giving up.
    pub max_steps: usize,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        LikelihoodOptions {
            divergence: Divergence::Exact,
            solver: OdeSolver::Adaptive { rtol: 1e-5, atol: 1e-5 },
            t_min: 1e-5,
            seed: 0,
            block: 1024,
            max_steps: 100_000,
        }
    }
}

/// Per-row log-densities and what it took to get them.
#[derive(Clone, Debug)]
pub struct LogLikelihood {
    /// `log p(x)` of each row, in nats (for Hutchinson the mean over the probes).
    pub log_p: Vec<f64>,
    /// With two or more Hutchinson probes, the standard error of each row's `log_p`.
    pub std_err: Option<Vec<f64>>,
    /// Score evaluations (each over one block of rows).
    pub evaluations: usize,
    /// Accepted and rejected ODE steps, summed over blocks.
    pub steps: (usize, usize),
}

impl LogLikelihood {
    /// The mean negative log-likelihood per dimension, in nats.
    pub fn nats_per_dim(&self, d: usize) -> f64 {
        -self.log_p.iter().sum::<f64>() / (self.log_p.len() * d) as f64
    }

    /// The mean negative log-likelihood per dimension, in bits.
    pub fn bits_per_dim(&self, d: usize) -> f64 {
        self.nats_per_dim(d) / std::f64::consts::LN_2
    }

    /// For data dequantised with width `w` ([`dequantise`]): the bits per dimension of the
    /// discrete values, `-(mean log p + d log w) / (d ln 2)`, an upper bound since
    /// `log P(x) >= E_u log p(x + w u) + d log w`.
    pub fn discrete_bits_per_dim(&self, d: usize, w: f64) -> f64 {
        self.bits_per_dim(d) - w.log2()
    }
}

impl LikelihoodOptions {
    fn validate(&self, process: &Process) -> Result<()> {
        let t_max = process.t_max();
        if !(self.t_min > 0.0 && self.t_min < t_max) {
            return Err(Error::invalid(format!(
                "likelihood: t_min must be in (0, T = {t_max}), got {}",
                self.t_min
            )));
        }
        if let Divergence::Hutchinson { probes } = self.divergence {
            if probes == 0 {
                return Err(Error::invalid("likelihood: need at least one Hutchinson probe"));
            }
        }
        match self.solver {
            OdeSolver::Adaptive { rtol, atol } => {
                if !(rtol > 0.0 && rtol < 1.0 && atol > 0.0 && atol.is_finite()) {
                    return Err(Error::invalid(format!(
                        "likelihood: tolerances must satisfy 0 < rtol < 1 and atol > 0, got rtol {rtol}, atol {atol}"
                    )));
                }
            }
            OdeSolver::Fixed { steps, .. } => {
                if steps == 0 {
                    return Err(Error::invalid("likelihood: need at least one ODE step"));
                }
            }
        }
        if self.block == 0 || self.max_steps == 0 {
            return Err(Error::invalid("likelihood: block and max_steps must be positive"));
        }
        Ok(())
    }
}

/// `log p(x)` of each row of `x` (row-major `[n, d]`) under the model whose score is `score`,
/// by the probability-flow ODE (see the module documentation). Errors: a shape that does not
/// match, non-finite data or settings out of range ([`Error::InvalidInput`]), a score that
/// turns non-finite or an adaptive solve that needs more than `max_steps` steps
/// ([`Error::Numerical`]).
pub fn log_likelihood(score: &dyn Score, x: &[f64], opts: &LikelihoodOptions) -> Result<LogLikelihood> {
    let d = score.dim();
    let process = score.process();
    process.validate()?;
    opts.validate(process)?;
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(Error::invalid(format!(
            "likelihood: {} values do not make rows of dimension {d}",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "likelihood: the data contain NaN or infinity (row {}, column {})",
            i / d + 1,
            i % d + 1
        )));
    }
    let n = x.len() / d;
    let probes = match opts.divergence {
        Divergence::Exact => 1,
        Divergence::Hutchinson { probes } => probes,
    };
    let mut out = LogLikelihood {
        log_p: Vec::with_capacity(n),
        std_err: (probes > 1 && opts.divergence != Divergence::Exact).then(|| Vec::with_capacity(n)),
        evaluations: 0,
        steps: (0, 0),
    };
    let noise = Noise::new(opts.seed);
    for (b, rows) in x.chunks(opts.block * d).enumerate() {
        let m = rows.len() / d;
        let z = match opts.divergence {
            Divergence::Exact => None,
            Divergence::Hutchinson { probes } => {
                let u = noise.uniforms(stream(Purpose::Metric, (1 << 40) + b as u64), probes * m * d);
                Some(
                    u.iter()
                        .map(|&u| if u <= 0.5 { -1.0 } else { 1.0 })
                        .collect::<Vec<f64>>(),
                )
            }
        };
        let system = Flow {
            score,
            process,
            d,
            rows: m,
            probes,
            z,
        };
        let mut y = vec![0.0; m * (d + probes)];
        for r in 0..m {
            y[r * (d + probes)..r * (d + probes) + d].copy_from_slice(&rows[r * d..(r + 1) * d]);
        }
        let st = match opts.solver {
            OdeSolver::Adaptive { rtol, atol } => {
                ode::solve_adaptive(&system, &mut y, opts.t_min, process.t_max(), rtol, atol, opts.max_steps)?
            }
            OdeSolver::Fixed { steps, grid } => {
                let mut ts = grid.times(process, steps, opts.t_min, process.t_max())?;
                ts.reverse();
                ode::solve_fixed(&system, &mut y, &ts)?
            }
        };
        out.evaluations += st.evaluations;
        out.steps.0 += st.accepted;
        out.steps.1 += st.rejected;
        let sd = process.prior_std();
        let log_norm = -0.5 * d as f64 * (2.0 * std::f64::consts::PI * sd * sd).ln();
        for r in 0..m {
            let row = &y[r * (d + probes)..(r + 1) * (d + probes)];
            let prior = log_norm - 0.5 * row[..d].iter().map(|v| v * v).sum::<f64>() / (sd * sd);
            let deltas = &row[d..];
            let mean = deltas.iter().sum::<f64>() / probes as f64;
            out.log_p.push(prior + mean);
            if let Some(se) = out.std_err.as_mut() {
                let var = deltas.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (probes - 1) as f64;
                se.push((var / probes as f64).sqrt());
            }
        }
    }
    Ok(out)
}

/// `log p(x)` of raw data rows under a trained model that works in normalised coordinates
/// `z = (x - mean) / std` ([`crate::nn::model::Normalisation`]): `log p_x(x) = log p_z(z) - sum_j
/// log std_j`, the change of variables of the affine map. `x` is row-major `[n, d]`.
pub fn model_log_likelihood(
    score: &dyn Score,
    normalisation: &crate::nn::model::Normalisation,
    x: &[f64],
    opts: &LikelihoodOptions,
) -> Result<LogLikelihood> {
    let d = score.dim();
    let (mean, std) = (&normalisation.mean, &normalisation.std);
    if mean.len() != d || std.len() != d {
        return Err(Error::invalid(format!(
            "likelihood: the model's normalisation has {} coordinates, its network {d}",
            mean.len()
        )));
    }
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(Error::invalid(format!(
            "likelihood: {} values do not make rows of dimension {d}",
            x.len()
        )));
    }
    let z: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mean[i % d]) / std[i % d])
        .collect();
    let mut ll = log_likelihood(score, &z, opts)?;
    let log_jac: f64 = std.iter().map(|s| s.ln()).sum();
    for v in ll.log_p.iter_mut() {
        *v -= log_jac;
    }
    Ok(ll)
}

/// Uniform dequantisation (Theis et al. 2016; Uria et al. 2013): `x + width u` with `u`
/// uniform on `[0, 1)^d`, one draw per cell from `Noise::new(seed)`. For data on a grid of
/// spacing `width` (pixel intensities), `log p(x + width u)` averaged over `u` is a lower
/// bound on the log probability of the discrete value times `width^-d`, so that
/// `-(log p(x + width u) + d log width) / (d ln 2)` is the bits per dimension of the
/// discrete data.
pub fn dequantise(x: &[f64], width: f64, seed: u64) -> Result<Vec<f64>> {
    if !(width > 0.0 && width.is_finite()) {
        return Err(Error::invalid(format!(
            "dequantisation width must be positive, got {width}"
        )));
    }
    let u = Noise::new(seed).uniforms(stream(Purpose::Metric, (1 << 41) + 1), x.len());
    // `uniforms` lie in (0, 1]; `1 - u` in [0, 1).
    Ok(x.iter().zip(&u).map(|(v, u)| v + width * (1.0 - u)).collect())
}

/// The augmented system `y = [x (d), Delta_1..Delta_K]` per row, `dx/dt = v`,
/// `dDelta_k/dt = div_k v` (the exact divergence, or probe `k`'s estimate).
struct Flow<'a> {
    score: &'a dyn Score,
    process: &'a Process,
    d: usize,
    rows: usize,
    probes: usize,
    /// Rademacher probes `[probes, rows, d]` (Hutchinson).
    z: Option<Vec<f64>>,
}

impl OdeSystem for Flow<'_> {
    fn eval(&self, t: f64, y: &[f64]) -> Result<Vec<f64>> {
        let (d, n, k) = (self.d, self.rows, self.probes);
        let w = d + k;
        let mut xs = Vec::with_capacity(n * d);
        for r in 0..n {
            xs.extend_from_slice(&y[r * w..r * w + d]);
        }
        let x = crate::data::from_rows(xs.clone(), d, DType::F64, &Device::Cpu)?;
        let (m, s) = (self.process.m(t), self.process.s(t));
        let (f, g2) = (self.process.f(t), self.process.g2(t));
        let to_vec = |t: &Tensor| -> Result<Vec<f64>> { Ok(crate::data::to_rows(t)?.0) };
        // tr(J) (or z^T J z) per row and probe, with the denoiser from the same calls.
        let mut traces = vec![0.0; n * k];
        let mut x0 = Vec::new();
        let directions = match &self.z {
            None => d,
            Some(_) => k,
        };
        for j in 0..directions {
            let v: Vec<f64> = match &self.z {
                None => (0..n * d).map(|i| if i % d == j { 1.0 } else { 0.0 }).collect(),
                Some(z) => z[j * n * d..(j + 1) * n * d].to_vec(),
            };
            let vt = crate::data::from_rows(v.clone(), d, DType::F64, &Device::Cpu)?;
            let (den, jtv) = self.score.denoise_vjp(t, &x, &vt)?;
            let jtv = to_vec(&jtv)?;
            if x0.is_empty() {
                x0 = to_vec(&den)?;
            }
            for r in 0..n {
                let q: f64 = (0..d).map(|i| v[r * d + i] * jtv[r * d + i]).sum();
                match &self.z {
                    None => traces[r * k] += q,
                    Some(_) => traces[r * k + j] = q,
                }
            }
        }
        let mut dy = vec![0.0; n * w];
        for r in 0..n {
            for i in 0..d {
                let xi = xs[r * d + i];
                let sc = (m * x0[r * d + i] - xi) / (s * s);
                dy[r * w + i] = f * xi - 0.5 * g2 * sc;
            }
            for p in 0..k {
                let div_score = (m * traces[r * k + p] - d as f64) / (s * s);
                dy[r * w + d + p] = d as f64 * f - 0.5 * g2 * div_score;
            }
        }
        if let Some(i) = dy.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "likelihood: the probability-flow ODE is not finite at t = {t} (row {})",
                i / w + 1
            )));
        }
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::score::{Covariance, GaussianMixture, MixtureScore};

    fn mixture(d: usize) -> GaussianMixture {
        let means = vec![(0..d).map(|i| 1.5 + 0.1 * i as f64).collect(), vec![-1.0; d]];
        let covs = vec![
            Covariance::Scalar(0.4),
            Covariance::Diagonal((0..d).map(|i| 0.3 + 0.05 * i as f64).collect()),
        ];
        GaussianMixture::new(vec![0.3, 0.7], means, covs).unwrap()
    }

    fn points(law: &GaussianMixture, n: usize) -> Vec<f64> {
        law.sample(n, &Noise::new(9), 0)
    }

    /// The exact log density of `x_{t_min}` (the data law diffused to `t_min`).
    fn truth(law: &GaussianMixture, p: &Process, t_min: f64, x: &[f64]) -> Vec<f64> {
        law.log_prob_diffused(p.m(t_min), p.s(t_min), x).unwrap()
    }

    #[test]
    fn exact_divergence_matches_the_closed_form_density() {
        // The prior at T = 8 differs from N(0, s(T)^2) by O(m(T)) = O(3e-4) in log density.
        for (p, d, tol) in [
            (Process::ou(2.0, 8.0), 1, 2e-3),
            (Process::ou(2.0, 8.0), 2, 4e-3),
            (Process::ou(2.0, 8.0), 10, 2e-2),
            (Process::sub_vp(2.0, 8.0), 2, 4e-3),
        ] {
            let law = mixture(d);
            let score = MixtureScore::new(Arc::new(law.clone()), p.clone());
            let x = points(&law, 20);
            let opts = LikelihoodOptions {
                solver: OdeSolver::Adaptive { rtol: 1e-7, atol: 1e-7 },
                ..Default::default()
            };
            let got = log_likelihood(&score, &x, &opts).unwrap();
            let want = truth(&law, &p, opts.t_min, &x);
            for (g, w) in got.log_p.iter().zip(&want) {
                assert!((g - w).abs() < tol, "{p:?}, d = {d}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn ve_process_and_gaussian_prior() {
        let law = GaussianMixture::gaussian(vec![0.5, -1.0], Covariance::Full(vec![1.0, 0.3, 0.3, 0.5])).unwrap();
        // The reference prior N(0, sigma_max^2) misses p_T = N(mu, Sigma + sigma_max^2) by
        // O(|mu| / sigma_max) in log density at the end of the flow (0.04 at sigma_max = 50).
        let p = Process::ve(0.01, 2000.0);
        let score = MixtureScore::new(Arc::new(law.clone()), p.clone());
        let x = points(&law, 10);
        let got = log_likelihood(&score, &x, &LikelihoodOptions::default()).unwrap();
        let want = truth(&law, &p, 1e-5, &x);
        for (g, w) in got.log_p.iter().zip(&want) {
            assert!((g - w).abs() < 3e-3, "{g} vs {w}");
        }
    }

    #[test]
    fn adaptive_error_falls_with_the_tolerance() {
        let law = mixture(2);
        let p = Process::ou(2.0, 8.0);
        let score = MixtureScore::new(Arc::new(law.clone()), p.clone());
        let x = points(&law, 20);
        let want = truth(&law, &p, 1e-5, &x);
        let err = |tol: f64| {
            let opts = LikelihoodOptions {
                solver: OdeSolver::Adaptive { rtol: tol, atol: tol },
                ..Default::default()
            };
            let got = log_likelihood(&score, &x, &opts).unwrap();
            let e = got
                .log_p
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f64::max);
            (e, got.evaluations)
        };
        let (loose, n_loose) = err(1e-2);
        let (tight, n_tight) = err(1e-6);
        assert!(tight < loose / 10.0, "error {loose} at 1e-2, {tight} at 1e-6");
        assert!(n_tight > n_loose);
        // A fixed-step solve with enough steps agrees too.
        let fixed = LikelihoodOptions {
            solver: OdeSolver::Fixed {
                steps: 200,
                grid: TimeGrid::LogSnr,
            },
            ..Default::default()
        };
        let got = log_likelihood(&score, &x, &fixed).unwrap();
        for (g, w) in got.log_p.iter().zip(&want) {
            assert!((g - w).abs() < 1e-2, "{g} vs {w}");
        }
    }

    #[test]
    fn hutchinson_is_unbiased_within_its_standard_error() {
        let law = mixture(10);
        let p = Process::ou(2.0, 8.0);
        let score = MixtureScore::new(Arc::new(law.clone()), p);
        let x = points(&law, 8);
        let exact = log_likelihood(&score, &x, &LikelihoodOptions::default()).unwrap();
        let opts = LikelihoodOptions {
            divergence: Divergence::Hutchinson { probes: 16 },
            seed: 4,
            ..Default::default()
        };
        let est = log_likelihood(&score, &x, &opts).unwrap();
        let se = est.std_err.as_ref().unwrap();
        for i in 0..x.len() / 10 {
            assert!(se[i] > 0.0);
            let z = (est.log_p[i] - exact.log_p[i]) / se[i];
            assert!(
                z.abs() < 3.5,
                "row {i}: {} vs {} (se {})",
                est.log_p[i],
                exact.log_p[i],
                se[i]
            );
        }
        // Reproducible, and the probes matter.
        let again = log_likelihood(&score, &x, &opts).unwrap();
        assert_eq!(est.log_p, again.log_p);
    }

    #[test]
    fn a_normalised_model_accounts_for_the_affine_map() {
        // A mixture in z coordinates; x = mean + std * z has the density p_z(z) / prod std.
        let law = mixture(2);
        let p = Process::ou(2.0, 8.0);
        let score = MixtureScore::new(Arc::new(law.clone()), p.clone());
        let norm = crate::nn::model::Normalisation {
            mean: vec![10.0, -3.0],
            std: vec![2.0, 0.5],
        };
        let z = points(&law, 10);
        let x: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(i, v)| norm.mean[i % 2] + norm.std[i % 2] * v)
            .collect();
        let opts = LikelihoodOptions::default();
        let in_z = log_likelihood(&score, &z, &opts).unwrap();
        let in_x = model_log_likelihood(&score, &norm, &x, &opts).unwrap();
        for (a, b) in in_z.log_p.iter().zip(&in_x.log_p) {
            assert!((a - (b + 2f64.ln() + 0.5f64.ln())).abs() < 1e-9, "{a} {b}");
        }
        let wrong = crate::nn::model::Normalisation {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        assert!(model_log_likelihood(&score, &wrong, &x, &opts).is_err());
    }

    #[test]
    fn dequantisation_stays_in_the_cell() {
        let x = vec![0.0, 1.0, 2.0, 16.0];
        let y = dequantise(&x, 1.0, 3).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!(*b >= *a && *b < a + 1.0);
        }
        assert_eq!(y, dequantise(&x, 1.0, 3).unwrap());
        assert!(dequantise(&x, 0.0, 3).is_err());
    }

    #[test]
    fn bad_settings_and_data_are_refused() {
        let law = mixture(2);
        let score = MixtureScore::new(Arc::new(law), Process::ou(2.0, 8.0));
        let ok = LikelihoodOptions::default();
        assert!(log_likelihood(&score, &[1.0, 2.0, 3.0], &ok).is_err());
        assert!(log_likelihood(&score, &[1.0, f64::NAN], &ok).is_err());
        for bad in [
            LikelihoodOptions {
                t_min: 0.0,
                ..ok.clone()
            },
            LikelihoodOptions {
                t_min: 9.0,
                ..ok.clone()
            },
            LikelihoodOptions {
                divergence: Divergence::Hutchinson { probes: 0 },
                ..ok.clone()
            },
            LikelihoodOptions {
                solver: OdeSolver::Adaptive { rtol: 0.0, atol: 1e-5 },
                ..ok.clone()
            },
            LikelihoodOptions { block: 0, ..ok.clone() },
        ] {
            assert!(log_likelihood(&score, &[1.0, 2.0], &bad).is_err(), "{bad:?}");
        }
    }
}
