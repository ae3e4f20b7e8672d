//! MCGdiff (Cardoso et al. 2024; deck 003, "Monte Carlo guided diffusion").
//!
//! Work in the SVD basis `A = U diag(s) V^T`: `xbar = V^T x` (the `r` observed directions;
//! the rest of `x` is unconstrained) and `ybar = S^{-1} U^T y`, so that
//! `ybar_i = xbar_i + (sigma_y / s_i) z_i`. Direction `i` is pinned at the time `tau_i`
//! where `s(tau)/m(tau) = sigma_y / s_i` to the value `x~_i = m(tau_i) ybar_i` — the law of
//! `x_0` given those pins is exactly the posterior — and, above `tau_i`, guided by deck
//! 003's potentials
//!
//! `g_t(x) = prod_i N(a_i(t) x~_i; xbar_i, v_i(t))`, `(a_i, v_i)` the forward transition from
//! `tau_i` to `t` (for the noiseless case and one direction: `N(sqrt(abar_t) y; x_t, 1 - abar_t)`).
//!
//! The Feynman–Kac model has the DDPM kernel as transition; the auxiliary weight
//! `int g_{t'}(x') p(x' | x) dx' / g_t(x) = N(a' x~; mean_i, var + v') / N(a x~; xbar_i, v)`
//! is in closed form, and so is the optimal proposal `∝ g_{t'}(x') p(x' | x)`: per observed
//! direction a product of two Gaussians; the other directions move by the plain kernel.
//! At `t' = tau_i` the direction is set to `x~_i` with weight `N(x~_i; mean_i, var)`; below
//! `tau_i` it is free.
//!
//! Noiseless directions (`sigma_y = 0`) and directions whose `tau_i` falls below `t_min`
//! are pinned at `t_min` (the early-stopping convention of the samplers) and set to
//! `ybar_i` after the final denoising. With every `tau_i >= t_min` and a full-rank `U`, the
//! run's `log Z` gives an estimate of `log p(y) = log Z + sum_i log m(tau_i) - sum_i log s_i`.

use super::common::{grid_with, log_normal, same_time, Ctx, Observation, PosteriorOptions, RunOutput, Spectral};
use crate::error::check_finite;
use crate::smc::{gather_rows, Particles};
use crate::Result;

pub(crate) fn run(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    run: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunOutput> {
    let sp = Spectral::new(obs)?;
    let (d, n, p) = (ctx.d, opts.particles, &ctx.p);
    let r = sp.f.rank();
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
    let steps = ts.len() - 1;
    // log g_t for direction i at the value xb (0 at or below tau_i).
    let log_pot = |i: usize, t: f64, xb: f64| -> f64 {
        if t > tau[i] && !same_time(t, tau[i], p) {
            let (a, v) = p.transition(tau[i], t);
            log_normal(a * pin[i], xb, v)
        } else {
            0.0
        }
    };
    let mut x = ctx.initial(run, n);
    let mut parts = Particles::new(n, opts.resampling, opts.ess_threshold);
    let xb = sp.f.vt_rows(&x);
    let logg0: Vec<f64> = xb
        .chunks(r)
        .map(|row| (0..r).map(|i| log_pot(i, ts[0], row[i])).sum())
        .collect();
    parts.reweight(&logg0)?;
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let sc = ctx.score(t, &x)?;
        let mut mean = ker.mean(&x, &sc);
        let mut mb = sp.f.vt_rows(&mean);
        let xb = sp.f.vt_rows(&x);
        let mut logg = vec![0.0; n];
        for (j, lg) in logg.iter_mut().enumerate() {
            let (mr, xr) = (&mb[j * r..(j + 1) * r], &xb[j * r..(j + 1) * r]);
            let mut acc = 0.0;
            for i in 0..r {
                if same_time(t1, tau[i], p) {
                    acc += log_normal(pin[i], mr[i], ker.var);
                } else if t1 > tau[i] {
                    let (a1, v1) = p.transition(tau[i], t1);
                    acc += log_normal(a1 * pin[i], mr[i], ker.var + v1);
                }
                acc -= log_pot(i, t, xr[i]);
            }
            *lg = acc;
        }
        parts.reweight(&logg)?;
        let u = ctx.uniforms(run, k, opts.resampling.uniforms_needed(n));
        if let Some(a) = parts.maybe_resample(&u) {
            mean = gather_rows(&mean, d, &a);
            mb = gather_rows(&mb, r, &a);
        }
        let z = ctx.normals(run, k, 0, n, d);
        let sd = ker.var.sqrt();
        x = mean.iter().zip(&z).map(|(m, z)| m + sd * z).collect();
        let zb = sp.f.vt_rows(&z);
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                let (m_i, z_i) = (mb[j * r + i], zb[j * r + i]);
                let free = m_i + sd * z_i;
                let val = if same_time(t1, tau[i], p) {
                    pin[i]
                } else if t1 > tau[i] {
                    let (a1, v1) = p.transition(tau[i], t1);
                    let prec = 1.0 / ker.var + 1.0 / v1;
                    (m_i / ker.var + a1 * pin[i] / v1) / prec + z_i / prec.sqrt()
                } else {
                    free
                };
                delta[j * r + i] = val - free;
            }
        }
        sp.f.add_v_rows(&mut x, &delta);
        check_finite(&x, "mcgdiff")?;
        progress(k + 1, steps);
    }
    let log_z = parts.log_z;
    let ess = parts.ess_trace.clone();
    let resamplings = parts.resamplings();
    let u = ctx.uniforms(run, steps, opts.resampling.uniforms_needed(n));
    let a = parts.resample(&u);
    let mut x = gather_rows(&x, d, &a);
    if opts.denoise {
        x = ctx.denoise(opts.t_min, &x)?;
    }
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
    let log_evidence = if exact.iter().all(|&e| e) && r == sp.f.dy {
        Some(log_z + tau.iter().map(|&t| p.m(t).ln()).sum::<f64>() - sp.f.s.iter().map(|s| s.ln()).sum::<f64>())
    } else {
        None
    };
    Ok(RunOutput {
        samples: x,
        ess,
        resamplings,
        log_evidence,
    })
}
