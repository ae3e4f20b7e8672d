//! DCPS (Janati et al. 2024, "Divide-and-conquer posterior sampling for denoising
//! diffusion priors"; docs/methods.md).
//!
//! Split the grid at `L` block times `t_min = tau_0 < tau_1 < ... < tau_L = T` and target in
//! turn the intermediate posteriors `p^y_{tau_l} ∝ g_l(x) p_{tau_l}(x)` with the potentials
//! `g_l(x) = N(m(tau_l) y; A x, sigma_{y,l}^2 I)`, `sigma_{y,l}^2 = m^2 sigma_y^2 + s^2` at
//! `tau_l` (exact for masks; `sigma_{y,0} ≈ sigma_y`). Within block `l` the backward
//! function `beta_l(x_j) = int g_l(x_{tau_l}) p_{tau_l | j}(dx_{tau_l} | x_j)` is replaced
//! by its DPS-type Gaussian approximation
//! `beta^_l(x_j) = N(m(tau_l) y; A mu(x_j), sigma_{tau|j}^2 A A^T + sigma_{y,l}^2 I)`, with
//! `mu`, `sigma_{tau|j}^2` the mean and variance of `q(x_{tau_l} | x_0 = x0_hat(x_j), x_j)`.
//! Each block:
//!
//! 1. `M` tamed ULA steps (Brosse et al. 2019) on `beta^_l(x) p_{tau_{l+1}}(x)` from the
//!    current sample, `x += gamma G / (1 + gamma |G|) + sqrt(2 gamma) z`,
//!    `G = grad log beta^_l + score`, `gamma = 0.05 s(tau_{l+1})^2`;
//! 2. down the grid to `tau_l`: at each step a mean-field Gaussian
//!    `r = N(mu_v, diag(e^{s_v}))` fitted to `∝ beta^_l(x') p(x' | x)` by `K` steps of SGD on
//!    the KL with normalised gradients (the paper: "2 or 3 SGD steps"), then `x' ~ r`.
//!
//! Defaults: `L = 4` blocks equally spaced in log-SNR, `M = 50` Langevin steps (the
//! paper's DCPS50; DCPS500 is `--langevin 500`), `K = 3`, SGD step 0.05 times the kernel's
//! standard deviation per unit of normalised gradient.

use super::common::{grid_with, same_time, Ctx, Observation, PosteriorOptions};
use super::guidance::{residuals, GaussLik};
use crate::error::check_finite;
use crate::{Error, Result};

/// DCPS settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DcpsOptions {
    /// Number of blocks `L`.
    pub blocks: usize,
    /// Tamed-ULA steps at the start of each block `M`.
    pub langevin: usize,
    /// SGD steps of each variational fit `K`.
    pub sgd: usize,
}

impl Default for DcpsOptions {
    fn default() -> Self {
        DcpsOptions {
            blocks: 4,
            langevin: 50,
            sgd: 3,
        }
    }
}

/// `grad_x log beta^_l(x)` at time `t` for the block ending at `tau` (with `log beta^`):
/// `mu = c0 x0_hat + cx x`, `Sigma = v_q A A^T + s2l I`.
fn grad_log_beta(
    ctx: &Ctx,
    obs: &Observation,
    lik: &GaussLik,
    t: f64,
    tau: f64,
    s2l: f64,
    x: &[f64],
) -> Result<Vec<f64>> {
    let p = &ctx.p;
    let (mt, st, mj, sj) = (p.m(tau), p.s(tau), p.m(t), p.s(t));
    // q(x_tau | x_0, x_t): x_t = a x_tau + sqrt(v) z.
    let (a, v) = p.transition(tau, t);
    let (c0, cx, vq) = if same_time(t, tau, p) {
        (0.0, 1.0, 0.0)
    } else {
        (mt * v / (sj * sj), a * st * st / (sj * sj), st * st * v / (sj * sj))
    };
    let _ = mj;
    let x0 = ctx.denoise(t, x)?;
    let mu: Vec<f64> = x0.iter().zip(x).map(|(a0, xx)| c0 * a0 + cx * xx).collect();
    // Residual of the scaled observation m(tau) y against A mu.
    let scaled = Observation {
        op: obs.op.clone(),
        y: obs.y.iter().map(|y| mt * y).collect(),
        sigma_y: s2l.sqrt(),
    };
    let e = residuals(&scaled, &mu);
    let dy = obs.y.len();
    let sol: Vec<f64> = e.chunks(dy).flat_map(|row| lik.solve_with(vq, s2l, row)).collect();
    let w = obs.op.adjoint_rows(&sol);
    // d/dx of mu = c0 J + cx I: gradient = c0 J^T w + cx w.
    let (_, jw) = ctx.denoise_vjp(t, x, &w)?;
    Ok(jw.iter().zip(&w).map(|(j, w)| c0 * j + cx * w).collect())
}

pub(crate) fn run(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    dc: DcpsOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    if dc.blocks == 0 || dc.sgd == 0 {
        return Err(Error::invalid("dcps: need at least one block and one SGD step"));
    }
    let (d, n, p) = (ctx.d, opts.n, ctx.p.clone());
    let lik = GaussLik::new_relaxed(obs)?;
    // Block times, equally spaced in log-SNR between t_min and T.
    let (l0, l1) = (p.log_snr(opts.t_min), p.log_snr(p.t_max()));
    let taus: Vec<f64> = (0..=dc.blocks)
        .map(|l| {
            if l == 0 {
                opts.t_min
            } else if l == dc.blocks {
                p.t_max()
            } else {
                let lam = l0 + (l1 - l0) * l as f64 / dc.blocks as f64;
                p.t_of_sigma((-0.5 * lam).exp())
            }
        })
        .collect();
    let ts = grid_with(&p, opts, &taus)?;
    let steps = ts.len() - 1;
    let total = steps + dc.blocks * dc.langevin;
    let mut done = 0;
    let mut x = ctx.initial(0, n);
    let mut k = 0; // grid index
    for l in (0..dc.blocks).rev() {
        let (tau, start) = (taus[l], ts[k]);
        let (m_l, s_l) = (p.m(tau), p.s(tau));
        let s2l = m_l * m_l * obs.sigma_y * obs.sigma_y + s_l * s_l;
        // 1. Tamed ULA on beta^_l(x) p_start(x).
        let gamma = 0.05 * p.s(start).powi(2);
        for i in 0..dc.langevin {
            let gb = grad_log_beta(ctx, obs, &lik, start, tau, s2l, &x)?;
            let sc = ctx.score(start, &x)?;
            let z = ctx.normals(1 + l, i, 3, n, d);
            for ((xr, (gr, sr)), zr) in x.chunks_mut(d).zip(gb.chunks(d).zip(sc.chunks(d))).zip(z.chunks(d)) {
                let g: Vec<f64> = gr.iter().zip(sr).map(|(a, b)| a + b).collect();
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                let tame = 1.0 / (1.0 + gamma * norm);
                for c in 0..d {
                    xr[c] += gamma * tame * g[c] + (2.0 * gamma).sqrt() * zr[c];
                }
            }
            check_finite(&x, "dcps (Langevin)")?;
            done += 1;
            progress(done, total);
        }
        // 2. Variational steps down to tau.
        while ts[k] > tau && !same_time(ts[k], tau, &p) {
            let (t, t1) = (ts[k], ts[k + 1]);
            let ker = p.reverse_kernel(t, t1, 1.0);
            let sc = ctx.score(t, &x)?;
            let mean = ker.mean(&x, &sc);
            let sd = ker.var.sqrt();
            let mut mu = mean.clone();
            let mut ls = vec![ker.var.ln(); n * d]; // log variances
            let lr = 0.05 * sd;
            for it in 0..dc.sgd {
                let z = ctx.normals(0, k, 4 + (it as u64 % 3), n, d);
                let xs: Vec<f64> = mu
                    .iter()
                    .zip(&ls)
                    .zip(&z)
                    .map(|((m, s), z)| m + (0.5 * s).exp() * z)
                    .collect();
                let gb = grad_log_beta(ctx, obs, &lik, t1, tau, s2l, &xs)?;
                for j in 0..n {
                    let r = j * d..(j + 1) * d;
                    let mut g_mu: Vec<f64> = Vec::with_capacity(d);
                    let mut g_s: Vec<f64> = Vec::with_capacity(d);
                    for c in r.clone() {
                        g_mu.push(-gb[c] + (mu[c] - mean[c]) / ker.var);
                        let e = ls[c].exp();
                        g_s.push(-gb[c] * z[c] * 0.5 * (0.5 * ls[c]).exp() - 0.5 * (1.0 - e / ker.var));
                    }
                    let norm = g_mu.iter().chain(&g_s).map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
                    for (i, c) in r.enumerate() {
                        mu[c] -= lr * g_mu[i] / norm;
                        ls[c] -= lr / sd * g_s[i] / norm;
                    }
                }
            }
            let z = ctx.normals(0, k, 0, n, d);
            x = mu
                .iter()
                .zip(&ls)
                .zip(&z)
                .map(|((m, s), z)| m + (0.5 * s).exp() * z)
                .collect();
            check_finite(&x, "dcps")?;
            k += 1;
            done += 1;
            progress(done, total);
        }
    }
    if opts.denoise {
        x = ctx.denoise(opts.t_min, &x)?;
    }
    Ok(x)
}
