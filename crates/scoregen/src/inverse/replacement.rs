//! Replacement (Song et al. 2021's imputation; DiffPuter's E-step, RePaint; docs/methods.md): run the reverse chain
//! and after every step overwrite the observed coordinates with a forward-noised copy of
//! the observation, `x_{t'}[obs] <- m(t') y + s(t') z`, fresh noise each step.
//!
//! Resampling jumps (RePaint, Lugmayr et al. 2022), our documented schedule: with
//! `jumps = r > 1`, each step `t -> t'` is done `r` times; between repetitions the whole
//! state is pushed back from `t'` to `t` by the forward transition
//! `x_t = (m/m') x_{t'} + sqrt(v) z` (jump length one step).
//!
//! The method is a heuristic: for a Gaussian prior its output is biased (the tests, and the
//! `bench impute-gauss` table); it treats a noisy `y` as exact.

use super::common::{grid_with, Ctx, Observation, PosteriorOptions};
use crate::error::check_finite;
use crate::rng::{stream, Purpose};
use crate::{Error, Result};

/// `n` replacement samples (row-major `[n, d]`).
pub(crate) fn run(
    ctx: &Ctx,
    obs: &Observation,
    opts: &PosteriorOptions,
    jumps: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    let observed = obs
        .mask()
        .ok_or_else(|| Error::invalid("replacement needs a mask operator (\"kind\": \"mask\")"))?
        .to_vec();
    if jumps == 0 {
        return Err(Error::invalid("replacement: jumps must be >= 1"));
    }
    let (d, n, p) = (ctx.d, opts.n, &ctx.p);
    let ts = grid_with(p, opts, &[])?;
    let steps = ts.len() - 1;
    let overwrite = |x: &mut [f64], t: f64, z: &[f64]| {
        if observed.is_empty() {
            return;
        }
        let (m, s) = (p.m(t), p.s(t));
        for (row, zr) in x.chunks_mut(d).zip(z.chunks(observed.len())) {
            for (j, &i) in observed.iter().enumerate() {
                row[i] = m * obs.y[j] + s * zr[j];
            }
        }
    };
    let mut x = ctx.initial(0, n);
    let dy = observed.len();
    overwrite(&mut x, ts[0], &ctx.normals(0, 0, 7, n, dy));
    // Noise of repetition j > 0 of step k: its own streams (kind 0: back-up, 1: step, 2: overwrite).
    let jump_normals = |k: usize, j: usize, kind: u64, dim: usize| {
        ctx.noise.normals(
            stream(Purpose::Corrector, (kind << 40) | ((k as u64) << 16) | j as u64),
            n,
            dim,
        )
    };
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let (a, v) = p.transition(t1, t);
        let mut xt = x.clone();
        for j in 0..jumps {
            if j > 0 {
                let zb = jump_normals(k, j, 0, d);
                xt = x.iter().zip(&zb).map(|(x1, z)| a * x1 + v.sqrt() * z).collect();
            }
            let sc = ctx.score(t, &xt)?;
            let z = if j == 0 {
                ctx.normals(0, k, 0, n, d)
            } else {
                jump_normals(k, j, 1, d)
            };
            let mean = ker.mean(&xt, &sc);
            x = mean.iter().zip(&z).map(|(m, z)| m + ker.var.sqrt() * z).collect();
            let zo = if j == 0 {
                ctx.normals(0, k, 1, n, dy)
            } else {
                jump_normals(k, j, 2, dy)
            };
            overwrite(&mut x, t1, &zo);
        }
        check_finite(&x, "replacement")?;
        progress(k + 1, steps);
    }
    if opts.denoise {
        x = ctx.denoise(opts.t_min, &x)?;
    }
    for row in x.chunks_mut(d) {
        for (j, &i) in observed.iter().enumerate() {
            row[i] = obs.y[j];
        }
    }
    Ok(x)
}
