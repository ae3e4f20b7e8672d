//! MCGdiff (Cardoso et al. 2024, "Monte Carlo guided diffusion for Bayesian linear inverse
//! problems"; docs/methods.md): a [`FeynmanKac`] model run by [`crate::smc::run_feynman_kac`].
//!
//! Work in the SVD basis `A = U diag(s) V^T`: `xbar = V^T x` (the `r` observed directions;
//! the rest of `x` is unconstrained) and `ybar = S^{-1} U^T y`, so that
//! `ybar_i = xbar_i + (sigma_y / s_i) z_i`. Direction `i` is pinned at the time `tau_i`
//! where `s(tau)/m(tau) = sigma_y / s_i` to the value `x~_i = m(tau_i) ybar_i` — the law of
//! `x_0` given those pins is exactly the posterior — and, above `tau_i`, guided by the
//! paper's potentials
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
//! `ybar_i` after the final denoising. With a full-rank `U` and every direction either
//! released at `tau_i >= t_min` or noiseless, the run's `log Z` gives an estimate of
//! `log p(y) = log Z + sum_i log m(tau_i) - sum_i log s_i` (noiseless directions: `p(y)`
//! smoothed by the noise `(s/m)(t_min)` of early stopping).

use super::common::{grid_with, log_normal, same_time, Ctx, RunOutput, SmcJob, Spectral};
use crate::error::check_finite;
use crate::process::ReverseKernel;
use crate::smc::{gather_rows, run_feynman_kac, FeynmanKac, Shape};
use crate::Result;

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
}

impl Mcgdiff<'_, '_> {
    /// `log g_t` for direction `i` at the value `xb` (0 at or below `tau_i`).
    fn log_pot(&self, i: usize, t: f64, xb: f64) -> f64 {
        let p = &self.ctx.p;
        if t > self.tau[i] && !same_time(t, self.tau[i], p) {
            let (a, v) = p.transition(self.tau[i], t);
            log_normal(a * self.pin[i], xb, v)
        } else {
            0.0
        }
    }
}

impl FeynmanKac for Mcgdiff<'_, '_> {
    fn shape(&self) -> Shape {
        Shape::single(self.n, self.ts.len() - 1)
    }

    /// `x_T` from the prior, weighted by `g_T`.
    fn initial(&mut self) -> Result<Option<Vec<f64>>> {
        let r = self.sp.f.rank();
        self.x = self.ctx.initial(self.run, self.n);
        let xb = self.sp.f.vt_rows(&self.x);
        Ok(Some(
            xb.chunks(r)
                .map(|row| (0..r).map(|i| self.log_pot(i, self.ts[0], row[i])).sum())
                .collect(),
        ))
    }

    /// The auxiliary weight `int g_{t'}(x') p(x' | x) dx' / g_t(x)`, in closed form.
    fn pre_log_potential(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let (ctx, p) = (self.ctx, &self.ctx.p);
        let r = self.sp.f.rank();
        let (t, t1) = (self.ts[k], self.ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let sc = ctx.score(t, &self.x)?;
        self.mean = ker.mean(&self.x, &sc);
        self.mb = self.sp.f.vt_rows(&self.mean);
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
        self.ker = Some(ker);
        Ok(Some(logg))
    }

    fn select(&mut self, _b: usize, a: &[usize]) {
        let (d, r) = (self.ctx.d, self.sp.f.rank());
        if self.mean.is_empty() {
            self.x = gather_rows(&self.x, d, a);
        } else {
            self.mean = gather_rows(&self.mean, d, a);
            self.mb = gather_rows(&self.mb, r, a);
        }
    }

    /// The optimal proposal `∝ g_{t'}(x') p(x' | x)`: per observed direction a product of
    /// two Gaussians, the plain kernel elsewhere; pinned at `tau_i`, free below.
    fn propagate(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let (ctx, p) = (self.ctx, &self.ctx.p);
        let (d, n, r) = (ctx.d, self.n, self.sp.f.rank());
        let t1 = self.ts[k + 1];
        let ker = self.ker.take().expect("pre_log_potential ran");
        let (mean, mb) = (std::mem::take(&mut self.mean), std::mem::take(&mut self.mb));
        let z = ctx.normals(self.run, k, 0, n, d);
        let sd = ker.var.sqrt();
        self.x = mean.iter().zip(&z).map(|(m, z)| m + sd * z).collect();
        let zb = self.sp.f.vt_rows(&z);
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                let (m_i, z_i) = (mb[j * r + i], zb[j * r + i]);
                let free = m_i + sd * z_i;
                let val = if same_time(t1, self.tau[i], p) {
                    self.pin[i]
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
        Ok(None)
    }

    fn uniforms(&self, _b: usize, k: usize, count: usize) -> Vec<f64> {
        self.ctx.uniforms(self.run, k, count)
    }
}

pub(crate) fn run(job: &SmcJob, progress: &mut dyn FnMut(usize, usize)) -> Result<RunOutput> {
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
    };
    let diag = run_feynman_kac(&mut model, opts.resampling, opts.ess_threshold, progress)?.remove(0);
    let Mcgdiff {
        sp, exact, tau, x, n, ..
    } = model;
    let r = sp.f.rank();
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
