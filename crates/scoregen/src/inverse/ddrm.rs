//! DDRM (Kawar et al. 2022, "Denoising diffusion restoration models"), SVD-based.
//!
//! In the variance-exploding scale `u = x / m(t)` with noise level `sigma_t = s/m`, and in
//! the SVD basis (`ubar = V^T u`, `ybar = S^{-1} U^T y`, per-direction noise
//! `sigma_i = sigma_y / s_i`), one step from `t` to `t'` given `x0_hat` (the paper's Eq. 7
//! and 8):
//!
//! * unobserved directions: `x0 + sqrt(1 - eta_c^2) sigma_{t'} (u_t - x0) / sigma_t + eta_c sigma_{t'} z`;
//! * observed, `sigma_{t'} < sigma_i`: `x0 + sqrt(1 - eta^2) sigma_{t'} (ybar - x0) / sigma_i + eta sigma_{t'} z`;
//! * observed, `sigma_{t'} >= sigma_i`: `(1 - eta_b) x0 + eta_b ybar + sqrt(sigma_{t'}^2 - eta_b^2 sigma_i^2) z`.
//!
//! The start is the paper's `p(x_T | y)`: `ybar_i + sqrt(sigma_T^2 - sigma_i^2) z` in the
//! observed directions with `sigma_T > sigma_i`, `sigma_T z` elsewhere. Defaults `eta = 0.85`,
//! `eta_b = 1` (the paper's) and `eta_c = 1` (the Gaussian-mixture scripts of the MCGdiff and
//! DCPS authors, `etaC = 1`; the paper uses one `eta` for both, which `eta_c = eta` gives).
//! Then `x_{t'} = m(t') u_{t'}`.

use super::common::{grid_with, Ctx, Observation, PosteriorOptions, Spectral};
use crate::error::check_finite;
use crate::{Error, Result};

/// DDRM with `[eta, eta_b, eta_c]`.
pub(crate) fn run(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    etas: [f64; 3],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    let [eta, eta_b, eta_c] = etas;
    if !etas.iter().all(|e| (0.0..=1.0).contains(e)) {
        return Err(Error::invalid("ddrm: eta, eta_b and eta_c must be in [0, 1]"));
    }
    let sp = Spectral::new(obs)?;
    let (d, n, p) = (ctx.d, opts.n, &ctx.p);
    let r = sp.f.rank();
    let ts = grid_with(p, opts, &[])?;
    let steps = ts.len() - 1;
    // x_T from p(x_T | y), built on the prior draw x_T = s(T) z.
    let mut x = ctx.initial(0, n);
    {
        let (sg, m) = (p.sigma(ts[0]), p.m(ts[0]));
        let mut u: Vec<f64> = x.iter().map(|v| v / m).collect();
        let ub = sp.f.vt_rows(&u);
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                let si = sp.noise[i];
                if sg > si {
                    let zi = ub[j * r + i] / sg;
                    delta[j * r + i] = sp.ybar[i] + (sg * sg - si * si).sqrt() * zi - ub[j * r + i];
                }
            }
        }
        sp.f.add_v_rows(&mut u, &delta);
        x = u.into_iter().map(|v| m * v).collect();
    }
    let (ca, cc) = ((1.0 - eta * eta).sqrt(), (1.0 - eta_c * eta_c).sqrt());
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let (sg, sg1, m, m1) = (p.sigma(t), p.sigma(t1), p.m(t), p.m(t1));
        let x0 = ctx.denoise(t, &x)?;
        let z = ctx.normals(0, k, 0, n, d);
        // Unobserved rule on every coordinate, in the VE scale.
        let mut u1: Vec<f64> = x
            .iter()
            .zip(&x0)
            .zip(&z)
            .map(|((xt, x0), z)| x0 + cc * sg1 * (xt / m - x0) / sg + eta_c * sg1 * z)
            .collect();
        let xb0 = sp.f.vt_rows(&x0);
        let ub1 = sp.f.vt_rows(&u1);
        let zb = sp.f.vt_rows(&z);
        let mut delta = vec![0.0; n * r];
        for j in 0..n {
            for i in 0..r {
                let (a0, zi, yi, si) = (xb0[j * r + i], zb[j * r + i], sp.ybar[i], sp.noise[i]);
                let val = if sg1 < si {
                    a0 + ca * sg1 * (yi - a0) / si + eta * sg1 * zi
                } else {
                    (1.0 - eta_b) * a0 + eta_b * yi + (sg1 * sg1 - eta_b * eta_b * si * si).max(0.0).sqrt() * zi
                };
                delta[j * r + i] = val - ub1[j * r + i];
            }
        }
        sp.f.add_v_rows(&mut u1, &delta);
        x = u1.into_iter().map(|v| m1 * v).collect();
        check_finite(&x, "ddrm")?;
        progress(k + 1, steps);
    }
    if opts.denoise {
        x = ctx.denoise(opts.t_min, &x)?;
    }
    Ok(x)
}
