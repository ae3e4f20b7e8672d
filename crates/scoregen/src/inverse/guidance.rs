//! Guidance methods (docs/methods.md; "Diffusion posterior sampling", "Pseudoinverse-guided
//! diffusion", "Tweedie moment projected diffusion"): each approximates `grad_x log p_t(y | x)` through the denoiser
//! `x0_hat(x)` and its input gradient (first order: the vector–Jacobian product
//! [`crate::score::Score::denoise_vjp`]), `J = d x0_hat / d x`, `e = y - A x0_hat`. Each step
//! is the DDPM step of the prior score (`mean = (m'/m) x + kappa score`, variance `var`; for
//! a pair of grid times this is the DDIM step with `eta = 1`) plus a guidance term:
//!
//! * **DPS** (Chung et al. 2023, Algorithm 1 and its step rule, their Appendix C):
//!   `x' <- x' - zeta_t grad_x ||y - A x0_hat||^2` with `zeta_t = zeta / ||y - A x0_hat||`
//!   per sample, i.e. `x' <- x' + 2 zeta J^T A^T e / ||e||`. `sigma_y` is not used.
//! * **Pi-GDM** (Song et al. 2023, Algorithm 1): `p_{0|t} ≈ N(x0_hat, r_t^2 I)` in the
//!   variance-exploding scale `u = x / m` (`sigma_t = s/m`), `r_t^2 = sigma_t^2 / (1 +
//!   sigma_t^2) = s^2 / (m^2 + s^2)` (exact for a standard normal prior), so `p_t(y | x) ≈
//!   N(y; A x0_hat, Sigma_t)`, `Sigma_t = r_t^2 A A^T + sigma_y^2 I`, with gradient `g = J^T A^T
//!   Sigma_t^{-1} e` (covariance held fixed). The paper corrects the denoised estimate by a
//!   fixed-size step, `x0_hat + r_t^2 grad_u log p = x0_hat + r_t^2 m g`, while the noise
//!   direction `eps_hat` stays the prior's, so the step adds `m' m r_t^2 g` to the prior's DDIM
//!   step (`sqrt(alpha_bar_{t-1}) sqrt(alpha_bar_t) r_t^2 g` in VP notation: the coefficient
//!   of the authors' released `pgdm.py` and of the DCPS authors' `pgdm_svd`). With
//!   `sigma_y = 0` the term is `m' m J^T A^+ e`, the paper's noiseless pseudo-inverse guidance.
//!   [`PigdmUpdate::Score`] instead adds `g` to the score inside the DDPM step (the
//!   posterior score plugged into the sampler; the update of earlier versions).
//! * **TMPD** (Boys et al. 2023): `p_{0|t} ≈ N(x0_hat, C_t)` with the Tweedie covariance
//!   `C_t = (s^2 / m) J` (exact: `Cov(x_0 | x_t) = (s^2/m) d x0_hat/d x`), computed exactly:
//!   the `dy` rows of `A J` by `dy` vector–Jacobian products, so `Sigma_t = A C_t A^T +
//!   sigma_y^2 I` per particle, and `g = J^T A^T Sigma_t^{-1} e` is added to the score in the
//!   DDPM step: the DDPM posterior mean of the corrected `x0_hat + (s^2/m) g`, the update of
//!   the authors' `KPDDPM` (github.com/bb515/tmpd, `tmpd/solvers.py`). For a Gaussian prior
//!   the Tweedie moments are exact and TMPD runs the DDPM chain on the exact posterior score.
//!
//! **Taming.** With a learned network prior the guidance step is capped at one noise standard
//! deviation per coordinate (`||step|| <= sqrt(var d)` per row; `tame_rows`): where `m(t)` is
//! tiny the Jacobian of a learned denoiser is dominated by its errors divided by `m`. The cap
//! is off for analytic scores (those with an exact host form,
//! [`crate::score::Score::rows_at`], e.g. Gaussian mixtures), where it would only bias the
//! methods.

use super::common::{grid_with, tame_rows, Ctx, Observation, PosteriorOptions};
use super::operator::SvdForm;
use crate::error::check_finite;
use crate::{Error, Result};

/// `N(y; A x0, sigma_y^2 I + r^2 A A^T)` through the SVD of `A`.
pub(crate) struct GaussLik {
    f: SvdForm,
    s2: f64,
}

impl GaussLik {
    pub fn new(obs: &Observation) -> Result<Self> {
        let f = obs.op.svd()?;
        if obs.sigma_y == 0.0 && f.rank() < f.dy {
            return Err(Error::invalid(
                "the operator has linearly dependent rows and sigma_y = 0: the likelihood is degenerate",
            ));
        }
        Ok(GaussLik {
            f,
            s2: obs.sigma_y * obs.sigma_y,
        })
    }

    /// Without the degeneracy check (for callers that always add a positive `s2`).
    pub fn new_relaxed(obs: &Observation) -> Result<Self> {
        Ok(GaussLik {
            f: obs.op.svd()?,
            s2: obs.sigma_y * obs.sigma_y,
        })
    }

    /// `(Sigma^{-1} e, e^T Sigma^{-1} e, log det Sigma)` for `Sigma = s2 I + r2 A A^T`.
    pub fn solve(&self, r2: f64, e: &[f64]) -> (Vec<f64>, f64, f64) {
        let (dy, r) = (self.f.dy, self.f.rank());
        let c = self.f.ut(e);
        let mut out = vec![0.0; dy];
        let mut logdet = 0.0;
        // Range of U.
        for j in 0..r {
            let lam = self.s2 + r2 * self.f.s[j] * self.f.s[j];
            logdet += lam.ln();
            let w = c[j] / lam;
            for i in 0..dy {
                out[i] += self.f.u[i * r + j] * w;
            }
        }
        // Orthogonal complement (only when dy > r, then s2 > 0).
        if dy > r {
            let mut proj = e.to_vec();
            for i in 0..dy {
                for j in 0..r {
                    proj[i] -= self.f.u[i * r + j] * c[j];
                }
            }
            for i in 0..dy {
                out[i] += proj[i] / self.s2;
            }
            logdet += (dy - r) as f64 * self.s2.ln();
        }
        let quad = e.iter().zip(&out).map(|(a, b)| a * b).sum();
        (out, quad, logdet)
    }
}

/// Residuals `y - A x0` per row.
pub(crate) fn residuals(obs: &Observation, x0: &[f64]) -> Vec<f64> {
    let ax = obs.op.apply_rows(x0);
    let dy = obs.y.len();
    ax.chunks(dy)
        .flat_map(|row| row.iter().zip(&obs.y).map(|(a, y)| y - a).collect::<Vec<_>>())
        .collect()
}

/// The Pi-GDM variance `r_t^2 = s^2 / (m^2 + s^2)` (variance of `x_0 | x_t` for a standard
/// normal prior).
pub(crate) fn pigdm_r2(ctx: &Ctx, t: f64) -> f64 {
    let (m, s) = (ctx.p.m(t), ctx.p.s(t));
    s * s / (m * m + s * s)
}

/// Whether guidance steps are capped ([`tame_rows`]): only for scores without an exact host
/// form (learned networks).
fn tames(ctx: &Ctx, t: f64) -> bool {
    ctx.score.rows_at(t).is_none()
}

/// DPS (Chung et al. 2023): the prior's DDPM step, then
/// `x' <- x' - (zeta / ||e||) grad_x ||e||^2`, `e = y - A x0_hat(x)`.
pub(crate) fn run_dps(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    zeta: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    if !(zeta > 0.0 && zeta.is_finite()) {
        return Err(Error::invalid(format!("dps: zeta must be > 0, got {zeta}")));
    }
    let (d, n, p) = (ctx.d, opts.n, &ctx.p);
    let dy = obs.y.len();
    let ts = grid_with(p, opts, &[])?;
    let steps = ts.len() - 1;
    let tame = tames(ctx, ts[0]);
    let mut x = ctx.initial(0, n);
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let x0 = ctx.denoise(t, &x)?;
        let e = residuals(obs, &x0);
        // (zeta / ||e||) grad_{x0} ||A x0 - y||^2 = 2 zeta A^T (A x0 - y) / ||e||.
        let scaled: Vec<f64> = e
            .chunks(dy)
            .flat_map(|row| {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                row.iter().map(move |v| -2.0 * zeta * v / norm).collect::<Vec<_>>()
            })
            .collect();
        let w = obs.op.adjoint_rows(&scaled);
        let (_, mut step) = ctx.denoise_vjp(t, &x, &w)?;
        let sc = ctx.score_from_x0(t, &x, &x0);
        let mean = ker.mean(&x, &sc);
        let z = ctx.normals(0, k, 0, n, d);
        let sd = ker.var.sqrt();
        if tame {
            tame_rows(&mut step, d, sd * (d as f64).sqrt());
        }
        x = mean
            .iter()
            .zip(&z)
            .zip(&step)
            .map(|((m, z), g)| m + sd * z - g)
            .collect();
        check_finite(&x, "dps")?;
        progress(k + 1, steps);
    }
    finish(ctx, opts, x)
}

fn finish(ctx: &Ctx, opts: &PosteriorOptions, x: Vec<f64>) -> Result<Vec<f64>> {
    if opts.denoise {
        ctx.denoise(opts.t_min, &x)
    } else {
        Ok(x)
    }
}

/// Solves `M u = e` for a small symmetric positive definite `M` (`k x k`) by Cholesky,
/// adding jitter if needed.
fn spd_solve(k: usize, m: &mut [f64], e: &[f64]) -> Result<(Vec<f64>, f64)> {
    // Symmetrise.
    for i in 0..k {
        for j in 0..i {
            let v = 0.5 * (m[i * k + j] + m[j * k + i]);
            m[i * k + j] = v;
            m[j * k + i] = v;
        }
    }
    let tr: f64 = (0..k).map(|i| m[i * k + i].abs()).sum::<f64>() / k as f64;
    for attempt in 0..6 {
        let jitter = if attempt == 0 {
            0.0
        } else {
            tr.max(1e-300) * 10f64.powi(attempt - 12)
        };
        let mut l = vec![0.0; k * k];
        let mut ok = true;
        'outer: for i in 0..k {
            for j in 0..=i {
                let mut s = m[i * k + j] + if i == j { jitter } else { 0.0 };
                for q in 0..j {
                    s -= l[i * k + q] * l[j * k + q];
                }
                if i == j {
                    if s <= 0.0 || !s.is_finite() {
                        ok = false;
                        break 'outer;
                    }
                    l[i * k + i] = s.sqrt();
                } else {
                    l[i * k + j] = s / l[j * k + j];
                }
            }
        }
        if !ok {
            continue;
        }
        let mut u = e.to_vec();
        for i in 0..k {
            for q in 0..i {
                u[i] -= l[i * k + q] * u[q];
            }
            u[i] /= l[i * k + i];
        }
        for i in (0..k).rev() {
            for q in i + 1..k {
                u[i] -= l[q * k + i] * u[q];
            }
            u[i] /= l[i * k + i];
        }
        let logdet = 2.0 * (0..k).map(|i| l[i * k + i].ln()).sum::<f64>();
        return Ok((u, logdet));
    }
    Err(Error::Numerical(
        "tmpd: the projected covariance A C A^T + sigma_y^2 I is not positive definite".into(),
    ))
}

/// TMPD's projected likelihood `N(y; A x0_hat, Sigma_t)`, `Sigma_t = (s^2/m) A J A^T +
/// sigma_y^2 I` per particle (`J = d x0_hat / d x`, its `dy` rows `A J` by vector–Jacobian
/// products): returns `x0_hat`, the residuals `e = y - A x0_hat`, `Sigma_t^{-1} e`
/// (row-major `[n, dy]`) and `log det Sigma_t` per row.
pub(crate) fn tweedie_solve(ctx: &Ctx, obs: &Observation, a: &[f64], t: f64, x: &[f64]) -> Result<Projected> {
    let (d, p) = (ctx.d, &ctx.p);
    let n = x.len() / d;
    let dy = obs.y.len();
    let (m, s) = (p.m(t), p.s(t));
    let mut aj = vec![vec![0.0; n * d]; dy];
    let mut x0 = Vec::new();
    for (i, row) in aj.iter_mut().enumerate() {
        let ai = &a[i * d..(i + 1) * d];
        let v: Vec<f64> = (0..n).flat_map(|_| ai.iter().copied()).collect();
        let (den, jv) = ctx.denoise_vjp(t, x, &v)?;
        if i == 0 {
            x0 = den;
        }
        *row = jv;
    }
    let e = residuals(obs, &x0);
    let c = s * s / m;
    let mut out = vec![0.0; n * dy];
    let mut logdets = vec![0.0; n];
    for j in 0..n {
        let mut mm = vec![0.0; dy * dy];
        for i in 0..dy {
            let r = &aj[i][j * d..(j + 1) * d];
            for q in 0..dy {
                let aq = &a[q * d..(q + 1) * d];
                mm[i * dy + q] = c * r.iter().zip(aq).map(|(u, v)| u * v).sum::<f64>();
            }
            mm[i * dy + i] += obs.sigma_y * obs.sigma_y;
        }
        let (u, ld) = spd_solve(dy, &mut mm, &e[j * dy..(j + 1) * dy])?;
        out[j * dy..(j + 1) * dy].copy_from_slice(&u);
        logdets[j] = ld;
    }
    Ok(Projected {
        x0,
        e,
        sol: out,
        logdet: logdets,
    })
}

/// The output of [`tweedie_solve`].
pub(crate) struct Projected {
    pub x0: Vec<f64>,
    pub e: Vec<f64>,
    pub sol: Vec<f64>,
    pub logdet: Vec<f64>,
}

/// How Pi-GDM adds its guidance `g = J^T A^T Sigma_t^{-1} e` to the prior's DDPM step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PigdmUpdate {
    /// The paper's (Song et al. 2023, Algorithm 1): `+ m(t') m(t) r_t^2 g`, the denoised
    /// estimate corrected by `r_t^2` times the likelihood gradient in the VE scale, the noise
    /// direction kept.
    #[default]
    Paper,
    /// `g` added to the score inside the DDPM step (`+ kappa g`): the posterior score
    /// `score + g` plugged into the sampler. The correction shrinks with the step size.
    Score,
}

impl std::str::FromStr for PigdmUpdate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(PigdmUpdate::Paper),
            "score" => Ok(PigdmUpdate::Score),
            other => Err(Error::invalid(format!(
                "unknown Pi-GDM update '{other}' (expected paper or score)"
            ))),
        }
    }
}

/// The guidance of [`run_gaussian`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum GaussGuide {
    /// Pi-GDM with its update rule.
    Pigdm(PigdmUpdate),
    /// TMPD.
    Tmpd,
}

/// Pi-GDM or TMPD.
pub(crate) fn run_gaussian(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    guide: GaussGuide,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    let (d, n, p) = (ctx.d, opts.n, &ctx.p);
    let dy = obs.y.len();
    let lik = GaussLik::new(obs)?;
    let a = obs.op.matrix();
    let ts = grid_with(p, opts, &[])?;
    let steps = ts.len() - 1;
    let tame = tames(ctx, ts[0]);
    let mut x = ctx.initial(0, n);
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let r2 = pigdm_r2(ctx, t);
        let (x0, sol) = match guide {
            GaussGuide::Tmpd => {
                let pr = tweedie_solve(ctx, obs, &a, t, &x)?;
                (pr.x0, pr.sol)
            }
            GaussGuide::Pigdm(_) => {
                let x0 = ctx.denoise(t, &x)?;
                let e = residuals(obs, &x0);
                let sol = e.chunks(dy).flat_map(|row| lik.solve(r2, row).0).collect();
                (x0, sol)
            }
        };
        let w = obs.op.adjoint_rows(&sol);
        let (_, g) = ctx.denoise_vjp(t, &x, &w)?;
        let sc = ctx.score_from_x0(t, &x, &x0);
        let mean = ker.mean(&x, &sc);
        let z = ctx.normals(0, k, 0, n, d);
        let sd = ker.var.sqrt();
        let coef = match guide {
            GaussGuide::Pigdm(PigdmUpdate::Paper) => p.m(t1) * p.m(t) * r2,
            GaussGuide::Pigdm(PigdmUpdate::Score) | GaussGuide::Tmpd => ker.kappa,
        };
        let mut step: Vec<f64> = g.iter().map(|g| coef * g).collect();
        if tame {
            tame_rows(&mut step, d, sd * (d as f64).sqrt());
        }
        x = mean
            .iter()
            .zip(&z)
            .zip(&step)
            .map(|((m, z), g)| m + sd * z + g)
            .collect();
        check_finite(&x, if guide == GaussGuide::Tmpd { "tmpd" } else { "pigdm" })?;
        progress(k + 1, steps);
    }
    finish(ctx, opts, x)
}
