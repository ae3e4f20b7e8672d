//! SMC imputation (SMCDiff, Trippe et al. 2023; docs/methods.md), for mask operators: a
//! [`FeynmanKac`] model run by [`crate::smc::run_feynman_kac`].
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

//!
//! Several problems (rows of a table, each its own mask, `y` and seed) run as independent
//! particle systems of one model, sharing each step's score evaluation: `scoregen impute`
//! and `scoregen posterior` run this one implementation.

use super::common::{grid_with, log_normal, same_time, Ctx, Observation, PosteriorOptions, RunOutput, SmcJob};
use crate::error::check_finite;
use crate::process::ReverseKernel;
use crate::smc::{gather_rows, run_feynman_kac, FeynmanKac, Shape};
use crate::{Error, Result};

/// One problem of the batch: its random streams (`ctx.noise`, `run`), mask and the stored
/// forward path of its observed part, `y_path[k]` at `ts[k]` for `k <= itau`.
struct System<'a> {
    ctx: Ctx<'a>,
    run: usize,
    observed: Vec<usize>,
    y_path: Vec<Vec<f64>>,
}

/// The smc-impute model of a batch of mask problems with one `sigma_y`.
struct SmcImpute<'a> {
    sys: Vec<System<'a>>,
    ts: Vec<f64>,
    itau: usize,
    n: usize,
    d: usize,
    /// Particles `[B N, d]`, system-major.
    x: Vec<f64>,
    /// The kernel means of the current step (empty between steps).
    mean: Vec<f64>,
    ker: Option<ReverseKernel>,
}

/// Sets the observed coordinates of every row of `x` to `yv`.
fn set_obs(x: &mut [f64], d: usize, observed: &[usize], yv: &[f64]) {
    for row in x.chunks_mut(d) {
        for (j, &i) in observed.iter().enumerate() {
            row[i] = yv[j];
        }
    }
}

impl<'a> SmcImpute<'a> {
    /// The model of the problems `obs[b]`, with streams `ctxs[b]` and run indices `runs[b]`.
    fn new(ctxs: Vec<Ctx<'a>>, runs: &[usize], obs: &[&Observation], opts: &PosteriorOptions) -> Result<Self> {
        let p = ctxs[0].p.clone();
        let (d, n) = (ctxs[0].d, opts.particles);
        let sigma_y = obs[0].sigma_y;
        if obs.iter().any(|o| o.sigma_y != sigma_y) {
            return Err(Error::invalid("smc-impute: a batch of problems needs one sigma_y"));
        }
        let tau = if sigma_y > 0.0 {
            p.t_of_sigma(sigma_y).max(opts.t_min)
        } else {
            opts.t_min
        };
        let ts = grid_with(&p, opts, &[tau])?;
        let itau = ts
            .iter()
            .position(|&t| same_time(t, tau, &p))
            .expect("tau is on the grid");
        let mut sys = Vec::with_capacity(ctxs.len());
        let mut x = Vec::with_capacity(ctxs.len() * n * d);
        for ((ctx, &run), o) in ctxs.into_iter().zip(runs).zip(obs) {
            let observed = o
                .mask()
                .ok_or_else(|| {
                    Error::invalid("smc-impute needs a mask operator (\"kind\": \"mask\"); use mcgdiff for general A")
                })?
                .to_vec();
            let dy = observed.len();
            // The stored forward trajectory of the observed part. Noiseless observations are
            // pinned at t_min like the samplers' early stopping: y is read as
            // x_{t_min} / m(t_min) (an observation noise s/m at t_min, 0.045 with the
            // defaults), which keeps the random end of the stored path out of the answer.
            let mut y_path = vec![Vec::new(); itau + 1];
            y_path[itau] = o.y.iter().map(|v| p.m(tau) * v).collect();
            for k in (0..itau).rev() {
                let (a, v) = p.transition(ts[k + 1], ts[k]);
                let z = ctx.normals(run, k, 5, 1, dy);
                y_path[k] = y_path[k + 1]
                    .iter()
                    .zip(&z)
                    .map(|(y, z)| a * y + v.sqrt() * z)
                    .collect();
            }
            let mut xb = ctx.initial(run, n);
            set_obs(&mut xb, d, &observed, &y_path[0]);
            x.extend(xb);
            sys.push(System {
                ctx,
                run,
                observed,
                y_path,
            });
        }
        Ok(SmcImpute {
            sys,
            ts,
            itau,
            n,
            d,
            x,
            mean: Vec::new(),
            ker: None,
        })
    }

    fn block(&self, b: usize, width: usize) -> std::ops::Range<usize> {
        b * self.n * width..(b + 1) * self.n * width
    }
}

impl FeynmanKac for SmcImpute<'_> {
    fn shape(&self) -> Shape {
        Shape {
            systems: self.sys.len(),
            particles: self.n,
            steps: self.ts.len() - 1,
        }
    }

    /// The particles start from the prior with the observed part at `y_path[0]`.
    fn initial(&mut self) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }

    /// Weight `N(y_{t'}; mean_obs(x_t), var)`: the backward kernel's density of the stored
    /// observed value (above the release time `tau` only).
    fn pre_log_potential(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let p = &self.sys[0].ctx.p;
        let ker = p.reverse_kernel(self.ts[k], self.ts[k + 1], 1.0);
        let sc = self.sys[0].ctx.score(self.ts[k], &self.x)?;
        self.mean = ker.mean(&self.x, &sc);
        self.ker = Some(ker);
        if k >= self.itau {
            return Ok(None);
        }
        let d = self.d;
        let mut logg = Vec::with_capacity(self.mean.len() / d);
        for (b, s) in self.sys.iter().enumerate() {
            let target = &s.y_path[k + 1];
            logg.extend(self.mean[self.block(b, d)].chunks(d).map(|row| {
                s.observed
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| -0.5 * (target[j] - row[i]).powi(2) / ker.var)
                    .sum::<f64>()
            }));
        }
        Ok(Some(logg))
    }

    fn select(&mut self, b: usize, a: &[usize]) {
        let r = self.block(b, self.d);
        let buf = if self.mean.is_empty() {
            &mut self.x
        } else {
            &mut self.mean
        };
        let g = gather_rows(&buf[r.clone()], self.d, a);
        buf[r].copy_from_slice(&g);
    }

    /// `x_miss' ~ N(mean_miss, var)`; above `tau` the observed part is set to `y_{t'}`.
    fn propagate(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
        let (d, n) = (self.d, self.n);
        let ker = self.ker.take().expect("pre_log_potential ran");
        let mean = std::mem::take(&mut self.mean);
        for (b, s) in self.sys.iter().enumerate() {
            let r = b * n * d..(b + 1) * n * d;
            let z = s.ctx.normals(s.run, k, 0, n, d);
            let xb = &mut self.x[r.clone()];
            for ((x, m), z) in xb.iter_mut().zip(&mean[r]).zip(&z) {
                *x = m + ker.var.sqrt() * z;
            }
            if k < self.itau {
                set_obs(xb, d, &s.observed, &s.y_path[k + 1]);
            }
        }
        check_finite(&self.x, "smc-impute")?;
        Ok(None)
    }

    fn uniforms(&self, b: usize, k: usize, count: usize) -> Vec<f64> {
        self.sys[b].ctx.uniforms(self.sys[b].run, k, count)
    }
}

/// Runs smc-impute on the problems `obs` (each with its own seed `seeds[b]` and run index
/// `runs[b]`) as independent particle systems sharing each step's score evaluation:
/// per problem, `opts.particles` equally weighted posterior samples and the run's
/// diagnostics. With one problem this is `sample_posterior`'s smc-impute run.
pub(crate) fn run_batch(
    score: &dyn crate::score::Score,
    obs: &[&Observation],
    seeds: &[u64],
    runs: &[usize],
    opts: &PosteriorOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<RunOutput>> {
    let ctxs: Vec<Ctx> = seeds.iter().map(|&s| Ctx::new(score, s)).collect();
    let mut model = SmcImpute::new(ctxs, runs, obs, opts)?;
    let diags = run_feynman_kac(&mut model, opts.resampling, opts.ess_threshold, progress)?;
    let (d, n) = (model.d, model.n);
    let noisy = obs[0].sigma_y > 0.0 && model.ts[model.itau] > opts.t_min;
    let mut x = std::mem::take(&mut model.x);
    if opts.denoise {
        x = model.sys[0].ctx.denoise(opts.t_min, &x)?;
    }
    // log p(y): log Z of the run is log p(path) minus the Gaussian constants the potentials
    // leave out and the prior density of y_path[0] (x_T's observed part is set, not drawn).
    let p = &model.sys[0].ctx.p;
    let (ts, itau) = (&model.ts, model.itau);
    let kernel_const: f64 = (0..itau)
        .map(|k| -0.5 * (2.0 * std::f64::consts::PI * p.reverse_kernel(ts[k], ts[k + 1], 1.0).var).ln())
        .sum();
    let mut out = Vec::with_capacity(obs.len());
    for (b, (diag, o)) in diags.into_iter().zip(obs).enumerate() {
        let path = &model.sys[b].y_path;
        let dy = path[itau].len() as f64;
        let s_t = p.prior_std();
        let mut l = diag.log_z + dy * kernel_const;
        l += path[0].iter().map(|v| log_normal(*v, 0.0, s_t * s_t)).sum::<f64>();
        for k in 0..itau {
            let (a, v) = p.transition(ts[k + 1], ts[k]);
            l -= path[k]
                .iter()
                .zip(&path[k + 1])
                .map(|(hi, lo)| log_normal(*hi, a * lo, v))
                .sum::<f64>();
        }
        l += dy * p.m(ts[itau]).ln();
        let mut xb = x[b * n * d..(b + 1) * n * d].to_vec();
        if !noisy {
            set_obs(&mut xb, d, &model.sys[b].observed, &o.y);
        }
        out.push(RunOutput {
            samples: xb,
            ess: diag.ess,
            resamplings: diag.resamplings,
            log_evidence: Some(l),
        });
    }
    Ok(out)
}

/// One smc-impute particle system (run `run` of `sample_posterior`).
pub(crate) fn run(job: &SmcJob, progress: &mut dyn FnMut(usize, usize)) -> Result<RunOutput> {
    let SmcJob { ctx, obs, opts, run } = *job;
    let mut out = run_batch(ctx.score, &[obs], &[ctx.noise.seed()], &[run], opts, progress)?;
    Ok(out.remove(0))
}
