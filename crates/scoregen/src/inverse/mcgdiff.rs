//! MCGdiff (Cardoso et al. 2024, "Monte Carlo guided diffusion for Bayesian linear inverse
//! problems"; docs/methods.md): a [`FeynmanKac`] model run by [`crate::smc::run_feynman_kac`].
//!
//! Work in the SVD basis `A = U diag(s) V^T`: `xbar = V^T x` (the `r` observed directions;
//! the rest of `x` is unconstrained) and `ybar = S^{-1} U^T y`, so that
//! `ybar_i = xbar_i + (sigma_y / s_i) z_i`. Direction `i` is pinned at the time `tau_i`
//! where `s(tau)/m(tau) = sigma_y / s_i` to the value `x~_i = m(tau_i) ybar_i` — the law of
//! `x_0` given those pins is exactly the posterior — and, above `tau_i`, guided by
//! intermediate potentials. The potentials only steer the particles: whatever they are, the
//! weights make the target the pinned chain, so the output tends to the exact posterior as
//! the particles grow ([`McgdiffPotentials`] chooses them).
//!
//! * [`McgdiffPotentials::Paper`], the paper's: `g_t(x) = prod_i N(a_i(t) x~_i; xbar_i, v_i(t))`,
//!   `(a_i, v_i)` the forward transition from `tau_i` to `t` (the density of the forward
//!   path from the pin, the exact twist for a flat prior). The auxiliary weight
//!   `int g_{t'}(x') p(x' | x) dx' / g_t(x) = N(a' x~; mean_i, var + v') / N(a x~; xbar_i, v)`
//!   is in closed form, and so is the optimal proposal `∝ g_{t'}(x') p(x' | x)`: per
//!   observed direction a product of two Gaussians; the other directions move by the plain
//!   kernel.
//! * [`McgdiffPotentials::Tweedie`] (default): the Gaussian approximation of the exact twist
//!   `p(xbar_{tau_i} = x~_i | x_t)`. Given `x_0` and `x_t`, `x_tau` is the forward bridge
//!   `N(alpha x_0 + gamma x_t, beta)` with `gamma = a s_tau^2 / (a^2 s_tau^2 + v)`,
//!   `alpha = m_tau (1 - a gamma)`, `beta = s_tau^2 v / (a^2 s_tau^2 + v)`; taking
//!   `xbar_0,i | x_t ~ N(x0_hat_i(x_t), V_t)` (Tweedie's mean, the variance of a Gaussian
//!   reference `V_t = sigma0^2 s^2 / (m^2 sigma0^2 + s^2)`, `sigma0^2` the prior's variance
//!   along `v_i` read from the denoiser's slope at `x_T = 0`) gives
//!   `psi_t(x) = N(x~; alpha x0_hat_i + gamma xbar_i, alpha^2 V_t + beta)`. For a flat prior
//!   (`sigma0 -> inf`, `x0_hat = x / m`) it is the paper's potential. The weight before
//!   the move is the look-ahead `P(x) = int psi~_{t'} p(. | x)` and after it
//!   `1 / psi~_{t'}(x')`, `psi~_{t'}` a linearisation of `psi_{t'}` around the kernel mean
//!   that makes the proposal `M ∝ p(x' | x) psi~_{t'}(x')` Gaussian. Over a path the
//!   look-aheads cancel and the weights multiply to `prod p / M` times the pins' densities:
//!   the paper's target, whatever `psi`. Two linearisations:
//!   - with at most [`JACOBIAN_MAX_RANK`] observed directions (and a score with
//!     vector-Jacobian products), the denoiser's Jacobian `J_t = d x0_hat / d x_t`, whose
//!     products `g_i = J_t(x)^T v_i` give, per particle, the slope `lambda_t = v_i^T g_i =
//!     (m/s^2) Var(xbar_0,i | x_t)` (Tweedie's covariance, as in the twisted SMC of Wu et
//!     al. 2023 and TMPD of Boys et al. 2023) and so a local Gaussian reference of variance
//!     `sigma_e^2 = s^2 lambda_t / (m (1 - m lambda_t))` (flat when `m lambda_t >= 1`, the
//!     global `sigma0^2` when `lambda_t <= 0`) in place of `sigma0^2`:
//!     `V_{t'} = sigma_e^2 s'^2 / (m'^2 sigma_e^2 + s'^2)`, `lambda_{t'} = m' sigma_e^2 /
//!     (m'^2 sigma_e^2 + s'^2)`. The move linearises `x0_hat_{t',i}(x') ≈ x0_hat_{t,i}(x) +
//!     rho g_i^T (x' - mean)`, `rho = lambda_{t'} / lambda_t`, so `psi~_{t',i}(x') =
//!     N(x~_i; h_i^T x' + C_i, W_i)` with `h_i = alpha rho g_i + gamma v_i`,
//!     `C_i = alpha (x0_hat_i - rho g_i^T mean)`, `W_i = alpha^2 V_{t'} + beta`. The
//!     proposal is the kernel `N(mean, var I)` (with the step's pins set) conditioned on
//!     these linear-Gaussian observations, drawn by Matheron's rule
//!     `x' = x_k + var H^T S^{-1} (x~ - H x_k - C - W^{1/2} e)` (`x_k` the kernel draw, `e`
//!     standard normals, `S = var H H^T + diag(W)`; Wilson et al. 2020, "Efficiently
//!     sampling functions from Gaussian process posteriors"), and `P(x) = N(x~; H mean + C,
//!     S)`. The move steers every coordinate the denoiser couples to `xbar_i` (on a
//!     mixture: which component a particle heads to), not `xbar_i` alone. `r`
//!     vector-Jacobian products a step replace the score evaluation. For a Gaussian prior
//!     `N(mu, c I)`, `J_t = lambda_t I` and the twist is exact;
//!   - otherwise, the global reference's slope along `v_i` only:
//!     `x0_hat_{t'}(x') ≈ x0_hat_t(x) + lambda (xbar'_i - mean_i)`, `lambda = m' sigma0^2 /
//!     (m'^2 sigma0^2 + s'^2)`, so that `psi~_{t'}(xbar') = N(x~; K xbar' + C, W)` is
//!     Gaussian in `xbar'`: the proposal moves `xbar_i` only, `P(x) = N(x~; K mean_i + C,
//!     W + K^2 var)`, one score evaluation a step (as the paper's).
//!
//! At `t' = tau_i` the direction is set to `x~_i` with weight `N(x~_i; mean_i, var)`; below
//! `tau_i` it is free.
//!
//! Noiseless directions (`sigma_y = 0`) and directions whose `tau_i` falls below `t_min`
//! are pinned at `t_min` (the early-stopping convention of the samplers) and set to
//! `ybar_i` after the final denoising. With a full-rank `U` and every direction either
//! released at `tau_i >= t_min` or noiseless, the run's `log Z` gives an estimate of
//! `log p(y) = log Z + sum_i log m(tau_i) - sum_i log s_i` (noiseless directions: `p(y)`
//! smoothed by the noise `(s/m)(t_min)` of early stopping).

use super::common::{grid_with, log_normal, same_time, Ctx, RunOutput, SmcJob, Spectral};
use crate::error::check_finite;
use crate::process::ReverseKernel;
use crate::score::NO_GRADIENTS;
use crate::smc::{gather_rows, run_feynman_kac, FeynmanKac, Shape};
use crate::{Error, Result};

/// MCGdiff's intermediate potentials (both keep the target: the pins decide it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum McgdiffPotentials {
    /// Gaussian approximations of the exact twist from Tweedie's denoiser: the particles'
    /// weights see which mode of the prior a particle is heading to; with at most
    /// [`JACOBIAN_MAX_RANK`] observed directions, Tweedie's variance and the move's
    /// linearisation come from the denoiser's Jacobian, so the proposal steers the mode too
    /// (module doc).
    #[default]
    Tweedie,
    /// The paper's flat-prior potentials `N(a x~; xbar, v)` with the exact optimal proposal.
    Paper,
}

impl std::str::FromStr for McgdiffPotentials {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tweedie" => Ok(McgdiffPotentials::Tweedie),
            "paper" => Ok(McgdiffPotentials::Paper),
            other => Err(Error::invalid(format!(
                "unknown MCGdiff potentials '{other}' (expected tweedie or paper)"
            ))),
        }
    }
}

/// The MCGdiff model of one particle system.
struct Mcgdiff<'a, 'c> {
    ctx: &'c Ctx<'a>,
    run: usize,
    sp: Spectral,
    /// Per observed direction: whether `tau_i >= t_min` (exactly pinned), `tau_i`, the pin `x~_i`.
    exact: Vec<bool>,
    tau: Vec<f64>,
    pin: Vec<f64>,
    ts: Vec<f64>,
    n: usize,
    x: Vec<f64>,
    /// The kernel means of the current step and their coordinates `V^T mean` (empty between steps).
    mean: Vec<f64>,
    mb: Vec<f64>,
    ker: Option<ReverseKernel>,
    potentials: McgdiffPotentials,
    /// Tweedie: the prior's variance `sigma0^2` along each `v_i` (infinite: flat reference).
    prior_var: Vec<f64>,
    /// Tweedie: per particle and direction the linearised twist `(K, C, W)` at `t'`.
    lin: Vec<[f64; 3]>,
    /// Tweedie: `-log psi~_{t'}(x')` of the last move, added to the next look-ahead.
    carry: Vec<f64>,
    /// Tweedie with the denoiser's Jacobian (rank at most [`JACOBIAN_MAX_RANK`] and a score
    /// with vector-Jacobian products): the linearisation of the current step.
    jac: bool,
    step: Option<JacStep>,
}

/// Up to this many observed directions the Tweedie potentials linearise `x0_hat` with the
/// denoiser's Jacobian (one vector-Jacobian product per direction and step); above, with
/// the Gaussian reference's slope along `v_i` only.
pub const JACOBIAN_MAX_RANK: usize = 4;

/// One step of the Jacobian linearisation (module doc): the directions twisted at `t'`
/// and pinned at `t'`, and per particle the pinned kernel mean, the projected `h_i`, the
/// offsets `C_i` (pins folded in) and the variances `W_i`.
struct JacStep {
    twisted: Vec<usize>,
    pinned: Vec<usize>,
    /// `[n, d]`: the kernel mean with the pinned directions set to their pins.
    mean: Vec<f64>,
    /// `[n, |twisted|, d]`: `P h_i`, `P` the projection off the pinned directions.
    h: Vec<f64>,
    /// `[n, |twisted|]`: `C_i + sum_p (h_i . v_p) x~_p`.
    c: Vec<f64>,
    /// `[n, |twisted|]`: `W_i`.
    w: Vec<f64>,
}

/// Cholesky factor (lower, row-major) of a small SPD matrix, or `None`.
fn cholesky(k: usize, a: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut v = a[i * k + j];
            for q in 0..j {
                v -= l[i * k + q] * l[j * k + q];
            }
            if i == j {
                if v.is_nan() || v <= 0.0 {
                    return None;
                }
                l[i * k + i] = v.sqrt();
            } else {
                l[i * k + j] = v / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// `(S^{-1} b, b^T S^{-1} b, log det S)` from the Cholesky factor `l` of `S`.
fn chol_solve(k: usize, l: &[f64], b: &[f64]) -> (Vec<f64>, f64, f64) {
    let mut y = b.to_vec();
    for i in 0..k {
        for q in 0..i {
            y[i] -= l[i * k + q] * y[q];
        }
        y[i] /= l[i * k + i];
    }
    let quad = y.iter().map(|v| v * v).sum();
    let mut x = y;
    for i in (0..k).rev() {
        for q in i + 1..k {
            x[i] -= l[q * k + i] * x[q];
        }
        x[i] /= l[i * k + i];
    }
    let logdet = 2.0 * (0..k).map(|i| l[i * k + i].ln()).sum::<f64>();
    (x, quad, logdet)
}

/// `(lambda, V)` of a Gaussian reference of variance `s0` (infinite: flat) at `(m, s)`:
/// the slope `d E[x_0 | x_t] / d x_t` and the variance `Var(x_0 | x_t)`.
fn reference(s0: f64, m: f64, s: f64) -> (f64, f64) {
    if s0.is_finite() {
        let dd = m * m * s0 + s * s;
        (m * s0 / dd, s0 * s * s / dd)
    } else {
        (1.0 / m, s * s / (m * m))
    }
}

impl Mcgdiff<'_, '_> {
    /// `log g_t` of the paper's potential for direction `i` at `xb` (0 at or below `tau_i`).
    fn log_pot(&self, i: usize, t: f64, xb: f64) -> f64 {
        let p = &self.ctx.p;
        if t > self.tau[i] && !same_time(t, self.tau[i], p) {
            let (a, v) = p.transition(self.tau[i], t);
            log_normal(a * self.pin[i], xb, v)
        } else {
            0.0
        }
    }

    /// Tweedie potentials: the look-ahead weights `P(x)` (and the pins' densities) of the
    /// step `t -> t'`, with the linearised twists `(K, C, W)` kept for the move; the last
    /// move's `-log psi~(x)` is added.
    fn look_ahead(&mut self, t: f64, t1: f64, var: f64, sc: &[f64]) -> Vec<f64> {
        let p = &self.ctx.p;
        let (n, r) = (self.n, self.sp.f.rank());
        let (m, s) = (p.m(t), p.s(t));
        let x0: Vec<f64> = self.x.iter().zip(sc).map(|(x, g)| (x + s * s * g) / m).collect();
        let x0b = self.sp.f.vt_rows(&x0);
        let (m1, s1) = (p.m(t1), p.s(t1));
        // Per direction twisted at t': (gamma, alpha, beta, lambda, V).
        let coef: Vec<Option<[f64; 5]>> = (0..r)
            .map(|i| {
                (t1 > self.tau[i] && !same_time(t1, self.tau[i], p)).then(|| {
                    let (a1, v1) = p.transition(self.tau[i], t1);
                    let st2 = p.s(self.tau[i]).powi(2);
                    let den = a1 * a1 * st2 + v1;
                    let g = a1 * st2 / den;
                    let (la, vv) = reference(self.prior_var[i], m1, s1);
                    [g, p.m(self.tau[i]) * (1.0 - a1 * g), st2 * v1 / den, la, vv]
                })
            })
            .collect();
        self.lin = vec![[0.0; 3]; n * r];
        let mut logg = std::mem::take(&mut self.carry);
        logg.resize(n, 0.0);
        for (j, lg) in logg.iter_mut().enumerate() {
            for i in 0..r {
                let mbi = self.mb[j * r + i];
                if same_time(t1, self.tau[i], p) {
                    *lg += log_normal(self.pin[i], mbi, var);
                } else if let Some([g, al, be, la, vv]) = coef[i] {
                    let kk = al * la + g;
                    let cc = al * (x0b[j * r + i] - la * mbi);
                    let ww = al * al * vv + be;
                    self.lin[j * r + i] = [kk, cc, ww];
                    *lg += log_normal(self.pin[i], kk * mbi + cc, ww + kk * kk * var);
                }
            }
        }
        logg
    }
}

impl Mcgdiff<'_, '_> {
    /// Tweedie potentials with the Jacobian (module doc): the look-ahead weights `P(x)` of
    /// the step `t -> t'` and the pins' densities, with the step's linearisation kept for
    /// the move; the last move's `-log psi~(x)` is added. `gs[i]` holds `J^T v_i` per row.
    fn look_ahead_jac(&mut self, t: f64, t1: f64, var: f64, x0: &[f64], gs: &[Vec<f64>]) -> Result<Vec<f64>> {
        let p = &self.ctx.p;
        let (n, d, r) = (self.n, self.ctx.d, self.sp.f.rank());
        let (m, s, m1, s1) = (p.m(t), p.s(t), p.m(t1), p.s(t1));
        let x0b = self.sp.f.vt_rows(x0);
        let v = &self.sp.f.v;
        let pinned: Vec<usize> = (0..r).filter(|&i| same_time(t1, self.tau[i], p)).collect();
        let twisted: Vec<usize> = (0..r)
            .filter(|&i| t1 > self.tau[i] && !same_time(t1, self.tau[i], p))
            .collect();
        // Per twisted direction: (gamma, alpha, beta) of the bridge at t'.
        let coef: Vec<[f64; 3]> = twisted
            .iter()
            .map(|&i| {
                let (a1, v1) = p.transition(self.tau[i], t1);
                let st2 = p.s(self.tau[i]).powi(2);
                let den = a1 * a1 * st2 + v1;
                let g = a1 * st2 / den;
                [g, p.m(self.tau[i]) * (1.0 - a1 * g), st2 * v1 / den]
            })
            .collect();
        let nt = twisted.len();
        let mut w = vec![0.0; n * nt];
        let mut logg = std::mem::take(&mut self.carry);
        logg.resize(n, 0.0);
        let mut mean = std::mem::take(&mut self.mean);
        let mut hs = vec![0.0; n * nt * d];
        let mut cs = vec![0.0; n * nt];
        let mut sm = vec![0.0; nt * nt];
        let mut res = vec![0.0; nt];
        for j in 0..n {
            let row = &mut mean[j * d..(j + 1) * d];
            for (a, (&i, &[g, al, be])) in twisted.iter().zip(&coef).enumerate() {
                let gi = &gs[i][j * d..(j + 1) * d];
                // The local Gaussian reference: sigma_eff^2 from lambda = v_i . J^T v_i.
                let lam: f64 = (0..d).map(|c| gi[c] * v[c * r + i]).sum();
                let s0 = if lam.is_nan() || lam <= 0.0 {
                    self.prior_var[i]
                } else if m * lam >= 1.0 {
                    f64::INFINITY
                } else {
                    s * s * lam / (m * (1.0 - m * lam))
                };
                let (la1, vv) = reference(s0, m1, s1);
                let rho = la1 / reference(s0, m, s).0;
                w[j * nt + a] = al * al * vv + be;
                let h = &mut hs[(j * nt + a) * d..(j * nt + a + 1) * d];
                let mut gm = 0.0;
                for c in 0..d {
                    gm += gi[c] * row[c];
                    h[c] = al * rho * gi[c] + g * v[c * r + i];
                }
                cs[j * nt + a] = al * (x0b[j * r + i] - rho * gm);
            }
            for &q in &pinned {
                let mbq = self.mb[j * r + q];
                logg[j] += log_normal(self.pin[q], mbq, var);
                let dlt = self.pin[q] - mbq;
                for c in 0..d {
                    row[c] += dlt * v[c * r + q];
                }
                for a in 0..nt {
                    let h = &mut hs[(j * nt + a) * d..(j * nt + a + 1) * d];
                    let hv: f64 = (0..d).map(|c| h[c] * v[c * r + q]).sum();
                    cs[j * nt + a] += hv * self.pin[q];
                    for c in 0..d {
                        h[c] -= hv * v[c * r + q];
                    }
                }
            }
            if nt == 0 {
                continue;
            }
            let hj = &hs[j * nt * d..(j + 1) * nt * d];
            for a in 0..nt {
                let ha = &hj[a * d..(a + 1) * d];
                for b in 0..=a {
                    let hb = &hj[b * d..(b + 1) * d];
                    let dot: f64 = ha.iter().zip(hb).map(|(x, y)| x * y).sum();
                    sm[a * nt + b] = var * dot + if a == b { w[j * nt + a] } else { 0.0 };
                    sm[b * nt + a] = sm[a * nt + b];
                }
                let pred: f64 = ha.iter().zip(row.iter()).map(|(x, y)| x * y).sum::<f64>() + cs[j * nt + a];
                res[a] = self.pin[twisted[a]] - pred;
            }
            let l = cholesky(nt, &sm).ok_or_else(|| Error::Numerical("mcgdiff: look-ahead covariance".into()))?;
            let (_, quad, logdet) = chol_solve(nt, &l, &res);
            logg[j] += -0.5 * (quad + logdet + nt as f64 * (2.0 * std::f64::consts::PI).ln());
        }
        self.step = Some(JacStep {
            twisted,
            pinned,
            mean,
            h: hs,
            c: cs,
            w,
        });
        Ok(logg)
    }

    /// The move of the Jacobian linearisation: `x' ~ N(mean, var P) psi~(x')` by
    /// conditioning (Matheron's rule: a draw of the kernel, corrected by
    /// `var H^T S^{-1} (x~ - H x - C - W^{1/2} e)`), and `-log psi~(x')` kept for the next
    /// look-ahead.
    fn move_jac(&mut self, k: usize, var: f64) -> Result<()> {
        let ctx = self.ctx;
        let (n, d, r) = (self.n, ctx.d, self.sp.f.rank());
        let st = self.step.take().expect("look_ahead_jac ran");
        let nt = st.twisted.len();
        let v = &self.sp.f.v;
        let z = ctx.normals(self.run, k, 0, n, d);
        let e = if nt > 0 {
            ctx.normals(self.run, k, 1, n, nt)
        } else {
            Vec::new()
        };
        let sd = var.sqrt();
        let mut x = st.mean;
        let mut carry = vec![0.0; n];
        let mut sm = vec![0.0; nt * nt];
        let mut res = vec![0.0; nt];
        for j in 0..n {
            let mut zp = z[j * d..(j + 1) * d].to_vec();
            for &q in &st.pinned {
                let zq: f64 = (0..d).map(|c| zp[c] * v[c * r + q]).sum();
                for c in 0..d {
                    zp[c] -= zq * v[c * r + q];
                }
            }
            let row = &mut x[j * d..(j + 1) * d];
            for c in 0..d {
                row[c] += sd * zp[c];
            }
            if nt == 0 {
                continue;
            }
            let hj = &st.h[j * nt * d..(j + 1) * nt * d];
            for a in 0..nt {
                let ha = &hj[a * d..(a + 1) * d];
                for b in 0..=a {
                    let hb = &hj[b * d..(b + 1) * d];
                    let dot: f64 = ha.iter().zip(hb).map(|(x, y)| x * y).sum();
                    sm[a * nt + b] = var * dot + if a == b { st.w[j * nt + a] } else { 0.0 };
                    sm[b * nt + a] = sm[a * nt + b];
                }
                let pred: f64 = ha.iter().zip(row.iter()).map(|(x, y)| x * y).sum::<f64>() + st.c[j * nt + a];
                res[a] = self.pin[st.twisted[a]] - pred - st.w[j * nt + a].sqrt() * e[j * nt + a];
            }
            let l = cholesky(nt, &sm).ok_or_else(|| Error::Numerical("mcgdiff: proposal covariance".into()))?;
            let (u, _, _) = chol_solve(nt, &l, &res);
            for (a, ua) in u.iter().enumerate() {
                let ha = &hj[a * d..(a + 1) * d];
                for c in 0..d {
                    row[c] += var * ua * ha[c];
                }
            }
            for a in 0..nt {
                let ha = &hj[a * d..(a + 1) * d];
                let pred: f64 = ha.iter().zip(row.iter()).map(|(x, y)| x * y).sum::<f64>() + st.c[j * nt + a];
                carry[j] -= log_normal(self.pin[st.twisted[a]], pred, st.w[j * nt + a]);
            }
        }
        check_finite(&x, "mcgdiff")?;
        self.x = x;
        self.carry = carry;
        Ok(())
    }
}

impl FeynmanKac for Mcgdiff<'_, '_> {
    fn shape(&self) -> Shape {
        Shape::single(self.n, self.ts.len() - 1)
    }

    /// `x_T` from the prior, weighted by `g_T` (paper's potentials; the Tweedie potentials
    /// enter through the look-ahead only).
    fn initial(&mut self) -> Result<Option<Vec<f64>>> {
        let r = self.sp.f.rank();
        self.x = self.ctx.initial(self.run, self.n);
        if self.potentials == McgdiffPotentials::Tweedie {
            return Ok(None);
        }
        let xb = self.sp.f.vt_rows(&self.x);
        Ok(Some(
            xb.chunks(r)
                .map(|row| (0..r).map(|i| self.log_pot(i, self.ts[0], row[i])).sum())
                .collect(),
        ))
    }

    /// The look-ahead weight of the step, in closed form: `int g_{t'}(x') p(x' | x) dx' /
    /// g_t(x)` (paper) or `P(x) / psi~(x)` (Tweedie; module doc).
    fn pre_log_potential(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let (ctx, p) = (self.ctx, &self.ctx.p);
        let r = self.sp.f.rank();
        let (t, t1) = (self.ts[k], self.ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        if self.jac {
            let (n, d) = (self.n, ctx.d);
            let vrow = |i: usize| -> Vec<f64> {
                let col: Vec<f64> = (0..d).map(|c| self.sp.f.v[c * r + i]).collect();
                (0..n).flat_map(|_| col.iter().copied()).collect()
            };
            match ctx.denoise_vjp(t, &self.x, &vrow(0)) {
                Ok((x0, g0)) => {
                    let mut gs = vec![g0];
                    for i in 1..r {
                        gs.push(ctx.denoise_vjp(t, &self.x, &vrow(i))?.1);
                    }
                    let sc = ctx.score_from_x0(t, &self.x, &x0);
                    self.mean = ker.mean(&self.x, &sc);
                    self.mb = self.sp.f.vt_rows(&self.mean);
                    self.ker = Some(ker);
                    return Ok(Some(self.look_ahead_jac(t, t1, ker.var, &x0, &gs)?));
                }
                // No vector-Jacobian products (a score computed on the host): the
                // reference's slope for the whole run (decided at the first step).
                Err(Error::InvalidInput(msg)) if msg == NO_GRADIENTS && k == 0 => self.jac = false,
                Err(e) => return Err(e),
            }
        }
        let sc = ctx.score(t, &self.x)?;
        self.mean = ker.mean(&self.x, &sc);
        self.mb = self.sp.f.vt_rows(&self.mean);
        self.ker = Some(ker);
        if self.potentials == McgdiffPotentials::Tweedie {
            return Ok(Some(self.look_ahead(t, t1, ker.var, &sc)));
        }
        let xb = self.sp.f.vt_rows(&self.x);
        let mut logg = vec![0.0; self.n];
        for (j, lg) in logg.iter_mut().enumerate() {
            let (mr, xr) = (&self.mb[j * r..(j + 1) * r], &xb[j * r..(j + 1) * r]);
            let mut acc = 0.0;
            for i in 0..r {
                if same_time(t1, self.tau[i], p) {
                    acc += log_normal(self.pin[i], mr[i], ker.var);
                } else if t1 > self.tau[i] {
                    let (a1, v1) = p.transition(self.tau[i], t1);
                    acc += log_normal(a1 * self.pin[i], mr[i], ker.var + v1);
                }
                acc -= self.log_pot(i, t, xr[i]);
            }
            *lg = acc;
        }
        Ok(Some(logg))
    }

    fn select(&mut self, _b: usize, a: &[usize]) {
        let (d, r) = (self.ctx.d, self.sp.f.rank());
        if let Some(st) = &mut self.step {
            let nt = st.twisted.len();
            st.mean = gather_rows(&st.mean, d, a);
            st.h = gather_rows(&st.h, nt * d, a);
            st.c = gather_rows(&st.c, nt, a);
            st.w = gather_rows(&st.w, nt, a);
            return;
        }
        if self.mean.is_empty() {
            self.x = gather_rows(&self.x, d, a);
        } else {
            self.mean = gather_rows(&self.mean, d, a);
            self.mb = gather_rows(&self.mb, r, a);
            if !self.lin.is_empty() {
                self.lin = a.iter().flat_map(|&j| self.lin[j * r..(j + 1) * r].to_vec()).collect();
            }
        }
    }

    /// The proposal `∝ g_{t'}(x') p(x' | x)` (paper: optimal) or `∝ psi~_{t'}(x') p(x' | x)`
    /// (Tweedie): per observed direction a product of two Gaussians, the plain kernel
    /// elsewhere; pinned at `tau_i`, free below.
    fn propagate(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let (ctx, p) = (self.ctx, &self.ctx.p);
        let (d, n, r) = (ctx.d, self.n, self.sp.f.rank());
        let t1 = self.ts[k + 1];
        let ker = self.ker.take().expect("pre_log_potential ran");
        if self.step.is_some() {
            self.move_jac(k, ker.var)?;
            return Ok(None);
        }
        let (mean, mb) = (std::mem::take(&mut self.mean), std::mem::take(&mut self.mb));
        let lin = std::mem::take(&mut self.lin);
        let tweedie = self.potentials == McgdiffPotentials::Tweedie;
        let z = ctx.normals(self.run, k, 0, n, d);
        let sd = ker.var.sqrt();
        self.x = mean.iter().zip(&z).map(|(m, z)| m + sd * z).collect();
        let zb = self.sp.f.vt_rows(&z);
        let mut carry = vec![0.0; n];
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                let (m_i, z_i) = (mb[j * r + i], zb[j * r + i]);
                let free = m_i + sd * z_i;
                let val = if same_time(t1, self.tau[i], p) {
                    self.pin[i]
                } else if t1 > self.tau[i] && tweedie {
                    let [kk, cc, ww] = lin[j * r + i];
                    let prec = 1.0 / ker.var + kk * kk / ww;
                    let v = (m_i / ker.var + kk * (self.pin[i] - cc) / ww) / prec + z_i / prec.sqrt();
                    carry[j] -= log_normal(self.pin[i], kk * v + cc, ww);
                    v
                } else if t1 > self.tau[i] {
                    let (a1, v1) = p.transition(self.tau[i], t1);
                    let prec = 1.0 / ker.var + 1.0 / v1;
                    (m_i / ker.var + a1 * self.pin[i] / v1) / prec + z_i / prec.sqrt()
                } else {
                    free
                };
                delta[j * r + i] = val - free;
            }
        }
        self.sp.f.add_v_rows(&mut self.x, &delta);
        check_finite(&self.x, "mcgdiff")?;
        if tweedie {
            self.carry = carry;
        }
        Ok(None)
    }

    /// Tweedie: the last move's `-log psi~` (zero: every direction is pinned by `t_min`).
    fn final_log_potential(&mut self) -> Result<Option<Vec<f64>>> {
        Ok((!self.carry.is_empty()).then(|| std::mem::take(&mut self.carry)))
    }

    fn uniforms(&self, _b: usize, k: usize, count: usize) -> Vec<f64> {
        self.ctx.uniforms(self.run, k, count)
    }
}

/// The prior's variance along each `v_i`, `sigma0_i^2 = v_i^T Cov(x_0 | x_T = 0) v_i`
/// (at `T`, `x_T` says almost nothing about `x_0`: the prior's variance), from Tweedie's
/// `Cov(x_0 | x_t) = (s^2/m) d x0_hat / d x` by a central difference of the denoiser along
/// `v_i` (no vector-Jacobian product needed). A value that is not finite and positive
/// gives the flat reference (infinite).
fn prior_variances(ctx: &Ctx, sp: &Spectral, t: f64) -> Result<Vec<f64>> {
    let (d, r, p) = (ctx.d, sp.f.rank(), &ctx.p);
    let (m, s) = (p.m(t), p.s(t));
    let eps = 1e-2 * s;
    let mut x = vec![0.0; 2 * r * d];
    let mut c = vec![0.0; 2 * r * r];
    for i in 0..r {
        c[2 * i * r + i] = eps;
        c[(2 * i + 1) * r + i] = -eps;
    }
    sp.f.add_v_rows(&mut x, &c);
    let x0b = sp.f.vt_rows(&ctx.denoise(t, &x)?);
    Ok((0..r)
        .map(|i| {
            let slope = (x0b[2 * i * r + i] - x0b[(2 * i + 1) * r + i]) / (2.0 * eps);
            let v = s * s / m * slope;
            if v.is_finite() && v > 0.0 {
                v
            } else {
                f64::INFINITY
            }
        })
        .collect())
}

pub(crate) fn run(
    job: &SmcJob,
    potentials: McgdiffPotentials,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunOutput> {
    let SmcJob { ctx, obs, opts, run } = *job;
    let sp = Spectral::new(obs)?;
    let p = &ctx.p;
    let exact: Vec<bool> = sp
        .noise
        .iter()
        .map(|&s| s > 0.0 && p.t_of_sigma(s) >= opts.t_min)
        .collect();
    let tau: Vec<f64> = sp
        .noise
        .iter()
        .zip(&exact)
        .map(|(&s, &e)| if e { p.t_of_sigma(s) } else { opts.t_min })
        .collect();
    let pin: Vec<f64> = tau.iter().zip(&sp.ybar).map(|(&t, &yb)| p.m(t) * yb).collect();
    let ts = grid_with(p, opts, &tau)?;
    let r = sp.f.rank();
    let prior_var = match potentials {
        McgdiffPotentials::Tweedie => prior_variances(ctx, &sp, ts[0])?,
        McgdiffPotentials::Paper => Vec::new(),
    };
    let mut model = Mcgdiff {
        ctx,
        run,
        sp,
        exact,
        tau,
        pin,
        ts,
        n: opts.particles,
        x: Vec::new(),
        mean: Vec::new(),
        mb: Vec::new(),
        ker: None,
        potentials,
        prior_var,
        lin: Vec::new(),
        carry: Vec::new(),
        jac: potentials == McgdiffPotentials::Tweedie && r <= JACOBIAN_MAX_RANK,
        step: None,
    };
    let diag = run_feynman_kac(&mut model, opts.resampling, opts.ess_threshold, progress)?.remove(0);
    let Mcgdiff {
        sp, exact, tau, x, n, ..
    } = model;
    let mut x = if opts.denoise { ctx.denoise(opts.t_min, &x)? } else { x };
    // Directions pinned at t_min: set to ybar exactly.
    if exact.iter().any(|e| !e) {
        let xb = sp.f.vt_rows(&x);
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                if !exact[i] {
                    delta[j * r + i] = sp.ybar[i] - xb[j * r + i];
                }
            }
        }
        sp.f.add_v_rows(&mut x, &delta);
    }
    // Noiseless directions pinned at t_min read y as x_{t_min} / m(t_min): their factor is
    // the density of xbar_0 + (s/m)(t_min) e at ybar, p(y) smoothed by (s/m)(t_min).
    let log_evidence = if exact.iter().zip(&sp.noise).all(|(&e, &s)| e || s == 0.0) && r == sp.f.dy {
        Some(diag.log_z + tau.iter().map(|&t| p.m(t).ln()).sum::<f64>() - sp.f.s.iter().map(|s| s.ln()).sum::<f64>())
    } else {
        None
    };
    Ok(RunOutput {
        samples: x,
        ess: diag.ess,
        resamplings: diag.resamplings,
        log_evidence,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inverse::{Observation, Operator};
    use crate::sample::default_process;
    use crate::score::{Covariance, GaussianMixture, MixtureScore};

    /// On a Gaussian prior `N(mu, Sigma)` the denoiser is affine, so the central difference
    /// is exact: `sigma0^2 = v^T (Sigma^{-1} + (m/s)^2 I)^{-1} v` at `T` (close to
    /// `v^T Sigma v`), per direction of a two-row operator.
    #[test]
    fn prior_variances_are_the_gaussian_posterior_variances_at_t() {
        let sigma = [2.0, 0.6, 0.6, 1.0];
        let law = GaussianMixture::gaussian(vec![1.0, -2.0], Covariance::Full(sigma.to_vec())).unwrap();
        let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
        let ctx = Ctx::new(&score, 0);
        let obs = Observation {
            op: Operator::Dense {
                rows: 2,
                cols: 2,
                a: vec![0.6, -0.8, 0.3, 0.9],
            },
            y: vec![0.0, 0.0],
            sigma_y: 0.1,
        };
        let sp = Spectral::new(&obs).unwrap();
        let t = ctx.p.t_max();
        let got = prior_variances(&ctx, &sp, t).unwrap();
        // (Sigma^{-1} + c I)^{-1}, c = (m/s)^2, by the 2x2 inverse twice.
        let inv = |a: [f64; 4]| {
            let det = a[0] * a[3] - a[1] * a[2];
            [a[3] / det, -a[1] / det, -a[2] / det, a[0] / det]
        };
        let c = (ctx.p.m(t) / ctx.p.s(t)).powi(2);
        let si = inv(sigma);
        let post = inv([si[0] + c, si[1], si[2], si[3] + c]);
        for (i, g) in got.iter().enumerate() {
            let v = [sp.f.v[i], sp.f.v[2 + i]];
            let want = v[0] * v[0] * post[0] + 2.0 * v[0] * v[1] * post[1] + v[1] * v[1] * post[3];
            assert!((g - want).abs() < 1e-6 * want, "direction {i}: {g} vs {want}");
        }
    }
}
