//! Deck 000's SMC imputation (SMCDiff, Trippe et al. 2023), for mask operators.
//!
//! Split `x = (x_miss, y_obs)`. Draw and store **one** forward trajectory of the observed
//! part, `y_{t_N} -> ... -> y_{t_0}` from `y`, by the forward transitions. Particles carry
//! the missing part; at each reverse step `t -> t'`:
//!
//! 1. weight `w_i ∝ N(y_{t'}; mean_obs(x_t^i, y_t), var)`, the backward kernel's density of
//!    the stored observed value;
//! 2. resample when `ESS < threshold N`;
//! 3. propagate `x_miss' ~ N(mean_miss(x_t^i, y_t), var)` and set the observed part to `y_{t'}`.
//!
//! Because the forward noise is coordinate-wise, `y_{t>0}` carries no information on
//! `x_miss` beyond `y_0`, so the target is `p(x_miss | y)`: the only errors are the
//! discretisation of the kernel and the Monte Carlo error `O(1/sqrt(N))`.
//!
//! Noisy observations (`sigma_y > 0`): `y = x_obs + sigma_y z` is distributed like
//! `x_tau / m(tau)` at the time `tau` where `s(tau)/m(tau) = sigma_y`, so the stored
//! trajectory starts at `y_tau = m(tau) y` (`tau` inserted in the grid) and below `tau`
//! the observed coordinates are latent and move freely. This is exact, not a heuristic.

use super::common::{grid_with, same_time, Ctx, Observation, PosteriorOptions, RunOutput};
use crate::error::check_finite;
use crate::smc::{gather_rows, Particles};
use crate::{Error, Result};

pub(crate) fn run(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    run: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunOutput> {
    let observed = obs
        .mask()
        .ok_or_else(|| {
            Error::invalid("smc-impute needs a mask operator (\"kind\": \"mask\"); use mcgdiff for general A")
        })?
        .to_vec();
    let (d, n, p) = (ctx.d, opts.particles, &ctx.p);
    let dy = observed.len();
    let tau = if obs.sigma_y > 0.0 {
        p.t_of_sigma(obs.sigma_y).max(opts.t_min)
    } else {
        opts.t_min
    };
    let noisy = obs.sigma_y > 0.0 && tau > opts.t_min;
    let ts = grid_with(p, opts, &[tau])?;
    let steps = ts.len() - 1;
    let itau = ts
        .iter()
        .position(|&t| same_time(t, tau, p))
        .expect("tau is on the grid");
    // The stored forward trajectory of the observed part, y_path[k] at ts[k], k <= itau.
    let mut y_path = vec![Vec::new(); itau + 1];
    // Noiseless observations are pinned at t_min like the samplers' early stopping: y is
    // read as x_{t_min} / m(t_min) (an observation noise s/m at t_min, 0.045 with the
    // defaults), which keeps the random end of the stored path out of the answer.
    y_path[itau] = obs.y.iter().map(|v| p.m(tau) * v).collect();
    for k in (0..itau).rev() {
        let (a, v) = p.transition(ts[k + 1], ts[k]);
        let z = ctx.normals(run, k, 5, 1, dy);
        y_path[k] = y_path[k + 1]
            .iter()
            .zip(&z)
            .map(|(y, z)| a * y + v.sqrt() * z)
            .collect();
    }
    let set_obs = |x: &mut [f64], yv: &[f64]| {
        for row in x.chunks_mut(d) {
            for (j, &i) in observed.iter().enumerate() {
                row[i] = yv[j];
            }
        }
    };
    let mut x = ctx.initial(run, n);
    set_obs(&mut x, &y_path[0]);
    let mut parts = Particles::new(n, opts.resampling, opts.ess_threshold);
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let sc = ctx.score(t, &x)?;
        let mut mean = ker.mean(&x, &sc);
        let z = ctx.normals(run, k, 0, n, d);
        if k < itau {
            let target = &y_path[k + 1];
            let logg: Vec<f64> = mean
                .chunks(d)
                .map(|row| {
                    observed
                        .iter()
                        .enumerate()
                        .map(|(j, &i)| -0.5 * (target[j] - row[i]).powi(2) / ker.var)
                        .sum()
                })
                .collect();
            parts.reweight(&logg)?;
            let u = ctx.uniforms(run, k, opts.resampling.uniforms_needed(n));
            if let Some(a) = parts.maybe_resample(&u) {
                mean = gather_rows(&mean, d, &a);
            }
            x = mean.iter().zip(&z).map(|(m, z)| m + ker.var.sqrt() * z).collect();
            set_obs(&mut x, target);
        } else {
            x = mean.iter().zip(&z).map(|(m, z)| m + ker.var.sqrt() * z).collect();
        }
        check_finite(&x, "smc-impute")?;
        progress(k + 1, steps);
    }
    let u = ctx.uniforms(run, steps, opts.resampling.uniforms_needed(n));
    let ess = parts.ess_trace.clone();
    let resamplings = parts.resamplings();
    let a = parts.resample(&u);
    let mut x = gather_rows(&x, d, &a);
    if opts.denoise {
        x = ctx.denoise(opts.t_min, &x)?;
    }
    if !noisy {
        set_obs(&mut x, &obs.y);
    }
    Ok(RunOutput {
        samples: x,
        ess,
        resamplings,
        log_evidence: None,
    })
}
