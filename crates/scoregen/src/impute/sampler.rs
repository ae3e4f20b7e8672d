//! Row-by-row posterior imputation (deck 000): row `i` with observed coordinates `O_i` is
//! the inverse problem `y = x_{O_i}` (a noiseless mask), solved with any posterior method
//! of [`crate::inverse`] (by default deck 000's SMC imputation) on the unconditional model.
//!
//! From the `N` equal-weight posterior samples of a row:
//! * the completed table holds the posterior **mean** of each missing number and the
//!   posterior **mode** of each missing label (the most frequent decoded level);
//! * the uncertainty of a missing number is its posterior standard deviation, of a missing
//!   label the posterior probability that it differs from the mode, `1 - p(mode)`;
//! * `M` multiple imputations are `M` of the samples drawn uniformly without replacement
//!   (with replacement when `M > N`). For an SMC method with one run they come from one
//!   particle system, so when its ESS is low they repeat; `runs` independent systems per
//!   row (their samples pooled) make them, and the mean, steadier.
//!
//! A row with no observed cell has an empty mask: its "posterior" is the prior, drawn by the
//! same method. Rows are independent problems with their own seeds and run in parallel;
//! the result does not depend on the number of threads.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::table::{ColumnKind, Encoding, MixedTable};
use crate::inverse::{sample_posterior, Method, Observation, Operator, PosteriorOptions};
use crate::nn::model::Normalisation;
use crate::rng::{stream, Noise, Purpose};
use crate::score::Score;
use crate::smc::{gather_rows, Particles};
use crate::{Error, Result};

/// Settings of [`impute_table`].
#[derive(Clone, Debug)]
pub struct ImputeOptions {
    /// The posterior method (default: deck 000's SMC imputation).
    pub method: Method,
    /// The posterior settings; `particles` samples per row (`n` is ignored), `seed` the
    /// seed of the whole table (each row derives its own).
    pub posterior: PosteriorOptions,
    /// Number of multiple imputations `M` to return (0: none).
    pub draws: usize,
    /// Independent particle systems per row (`>= 1`), pooled: `runs x particles` samples.
    /// When the weights of one system degenerate (many observed cells), its particles share
    /// one ancestor and their mean is one draw; independent runs average that out.
    pub runs: usize,
}

impl Default for ImputeOptions {
    fn default() -> Self {
        ImputeOptions {
            method: Method::SmcImpute,
            posterior: PosteriorOptions {
                particles: 256,
                steps: 200,
                ..Default::default()
            },
            draws: 0,
            runs: 1,
        }
    }
}

/// The result of [`impute_table`]; cells row-major `[rows, cols]` as in
/// [`MixedTable::cells`] (numbers, level indices).
#[derive(Clone, Debug, Default)]
pub struct Imputation {
    /// The completed table: observed cells as read, missing numbers the posterior mean,
    /// missing labels the posterior mode.
    pub completed: Vec<f64>,
    /// Per missing cell: posterior sd (numbers) or `1 - p(mode)` (labels); 0 if observed.
    pub uncertainty: Vec<f64>,
    /// The `M` multiple imputations, each a completed table.
    pub draws: Vec<Vec<f64>>,
    /// Smallest ESS / N of each row's particle system (1 for rows not sampled or non-SMC).
    pub ess_min: Vec<f64>,
    /// Rows with no observed cell (imputed from the prior).
    pub prior_rows: usize,
}

/// Derived seed of row `i` (distinct rows, distinct streams).
fn row_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Posterior samples (`[particles, dim]`, model coordinates of the encoding) of one encoded
/// row `z` (NaN where missing) given its observed coordinates, and the row's smallest ESS / N.
/// `norm` maps encoded coordinates to the network's (`w = (z - mean) / std`), as stored in a
/// checkpoint; `None` when the score works on the encoded coordinates directly.
pub fn row_posterior(
    score: &dyn Score,
    norm: Option<&Normalisation>,
    z: &[f64],
    method: &Method,
    opts: &PosteriorOptions,
) -> Result<(Vec<f64>, f64)> {
    let d = z.len();
    if score.dim() != d {
        return Err(Error::invalid(format!(
            "the model has dimension {}, the encoded table {d}",
            score.dim()
        )));
    }
    let observed: Vec<usize> = (0..d).filter(|&c| !z[c].is_nan()).collect();
    let obs = Observation {
        y: observed.iter().map(|&c| z[c]).collect(),
        op: Operator::Mask { dim: d, observed },
        sigma_y: 0.0,
    };
    let obs = match norm {
        Some(nm) => obs.normalised(&nm.mean, &nm.std)?,
        None => obs,
    };
    let popts = PosteriorOptions {
        n: opts.particles,
        ..opts.clone()
    };
    let report = sample_posterior(score, &obs, method, &popts, &mut |_, _| {})?;
    let mut x = report.samples;
    if let Some(nm) = norm {
        for row in x.chunks_mut(d) {
            for c in 0..d {
                row[c] = nm.mean[c] + nm.std[c] * row[c];
            }
        }
    }
    Ok((x, report.ess_min))
}

/// Rows per batch times particles: the size of one network evaluation in [`batched_rows`].
const BATCH_ROWS_TIMES_PARTICLES: usize = 1 << 15;

/// Deck 000's SMC imputation for many rows at once: every row is its own particle system, but one network evaluation serves a
/// batch of rows. `w` holds the rows in the network's coordinates (NaN where missing).
///
/// The observed part follows the forward process pinned at `t_min` (`y_{t_min} = m(t_min) y`,
/// as in [`crate::inverse`]'s smc-impute). Instead of storing the forward path, it is drawn
/// backwards by the Gaussian bridge `q(y_{t'} | y_t, y_{t_min})` (DDPM's posterior
/// `q(x_{t-1} | x_t, x_0)` relative to `t_min`), which has the same joint law:
/// with `mr(t) = m(t) / m(t_min)`, `vr(t) = s(t)^2 - mr(t)^2 s(t_min)^2`, `a = m(t)/m(t')`,
/// `v` the transition variance from `t'` to `t`:
/// `y_{t'} ~ N(a vr(t') / vr(t) y_t + mr(t') v / vr(t) y_{t_min}, vr(t') v / vr(t))`.
/// Returns per row `particles` equal-weight samples `[particles, d]` and the smallest ESS / N.
fn batched_rows(
    score: &dyn Score,
    w: &[Vec<f64>],
    seeds: &[u64],
    opts: &PosteriorOptions,
) -> Result<Vec<(Vec<f64>, f64)>> {
    let d = score.dim();
    let (r, n) = (w.len(), opts.particles);
    let p = score.process().clone();
    let ts = opts.grid.times(&p, opts.steps, opts.t_min, p.t_max())?;
    let steps = ts.len() - 1;
    let t0 = ts[steps];
    let (m0, s0) = (p.m(t0), p.s(t0));
    let mr = |t: f64| p.m(t) / m0;
    let vr = |t: f64| (p.s(t).powi(2) - mr(t).powi(2) * s0 * s0).max(0.0);
    let noises: Vec<Noise> = seeds.iter().map(|&s| Noise::new(s)).collect();
    let observed: Vec<Vec<usize>> = w
        .iter()
        .map(|row| (0..d).filter(|&c| !row[c].is_nan()).collect())
        .collect();
    let y0: Vec<Vec<f64>> = w
        .iter()
        .zip(&observed)
        .map(|(row, o)| o.iter().map(|&c| m0 * row[c]).collect())
        .collect();
    // y at ts[0] = T.
    let mut y: Vec<Vec<f64>> = (0..r)
        .map(|i| {
            let z = noises[i].normals(stream(Purpose::Exact, 0), 1, observed[i].len());
            y0[i]
                .iter()
                .zip(&z)
                .map(|(a, z)| mr(ts[0]) * a + vr(ts[0]).sqrt() * z)
                .collect()
        })
        .collect();
    let prior_sd = p.prior_std();
    let mut x: Vec<f64> = Vec::with_capacity(r * n * d);
    for i in 0..r {
        x.extend(
            noises[i]
                .normals(stream(Purpose::Init, 0), n, d)
                .iter()
                .map(|z| prior_sd * z),
        );
    }
    let set_obs = |x: &mut [f64], y: &[Vec<f64>]| {
        for i in 0..r {
            for row in x[i * n * d..(i + 1) * n * d].chunks_mut(d) {
                for (j, &c) in observed[i].iter().enumerate() {
                    row[c] = y[i][j];
                }
            }
        }
    };
    set_obs(&mut x, &y);
    let mut parts: Vec<Particles> = (0..r)
        .map(|_| Particles::new(n, opts.resampling, opts.ess_threshold))
        .collect();
    let device = candle_core::Device::Cpu;
    for k in 0..steps {
        let (t, t1) = (ts[k], ts[k + 1]);
        let ker = p.reverse_kernel(t, t1, 1.0);
        let xt = candle_core::Tensor::from_slice(&x, (r * n, d), &device)?;
        let sc: Vec<f64> = score
            .score(t, &xt)?
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        if sc.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "impute: the score is not finite at t = {t:.4}"
            )));
        }
        let mean = ker.mean(&x, &sc);
        // The bridge step of the observed part.
        let (a, v) = (p.m(t) / p.m(t1), p.transition(t1, t).1);
        let (vt, vt1) = (vr(t), vr(t1));
        for i in 0..r {
            let z = noises[i].normals(stream(Purpose::Exact, 1 + k as u64), 1, observed[i].len());
            y[i] = if vt1 <= 0.0 || vt <= 0.0 {
                y0[i].clone()
            } else {
                (0..observed[i].len())
                    .map(|j| a * vt1 / vt * y[i][j] + mr(t1) * v / vt * y0[i][j] + (vt1 * v / vt).sqrt() * z[j])
                    .collect()
            };
        }
        let mut next = vec![0.0; r * n * d];
        for i in 0..r {
            let block = i * n * d..(i + 1) * n * d;
            let mut m_i = mean[block.clone()].to_vec();
            if !observed[i].is_empty() {
                let logg: Vec<f64> = m_i
                    .chunks(d)
                    .map(|row| {
                        observed[i]
                            .iter()
                            .enumerate()
                            .map(|(j, &c)| -0.5 * (y[i][j] - row[c]).powi(2) / ker.var)
                            .sum()
                    })
                    .collect();
                parts[i].reweight(&logg)?;
                let u = noises[i].uniforms(stream(Purpose::Resample, k as u64), opts.resampling.uniforms_needed(n));
                if let Some(anc) = parts[i].maybe_resample(&u) {
                    m_i = gather_rows(&m_i, d, &anc);
                }
            }
            let z = noises[i].normals(stream(Purpose::Step, k as u64), n, d);
            for (o, (m, z)) in next[block].iter_mut().zip(m_i.iter().zip(&z)) {
                *o = m + ker.var.sqrt() * z;
            }
        }
        x = next;
        set_obs(&mut x, &y);
    }
    let mut out = Vec::with_capacity(r);
    let xd = if opts.denoise {
        let xt = candle_core::Tensor::from_slice(&x, (r * n, d), &device)?;
        score
            .denoise(t0, &xt)?
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1()?
    } else {
        x
    };
    for i in 0..r {
        let block = &xd[i * n * d..(i + 1) * n * d];
        let u = noises[i].uniforms(
            stream(Purpose::Resample, steps as u64),
            opts.resampling.uniforms_needed(n),
        );
        let ess_min = parts[i].ess_trace.iter().fold(1.0f64, |a, e| a.min(e / n as f64));
        let anc = parts[i].resample(&u);
        let mut s = gather_rows(block, d, &anc);
        for row in s.chunks_mut(d) {
            for &c in &observed[i] {
                row[c] = w[i][c];
            }
        }
        out.push((s, ess_min));
    }
    Ok(out)
}

/// Equal-weight posterior samples (encoded coordinates) and smallest ESS / N of the rows
/// `todo` of the encoded table `z`.
fn row_samples(
    score: &dyn Score,
    norm: Option<&Normalisation>,
    z: &[f64],
    d: usize,
    todo: &[usize],
    opts: &ImputeOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<(Vec<f64>, f64)>> {
    if score.dim() != d {
        return Err(Error::invalid(format!(
            "the model has dimension {}, the encoded table {d}",
            score.dim()
        )));
    }
    let po = &opts.posterior;
    if po.particles == 0 || po.steps == 0 || !(0.0..=1.0).contains(&po.ess_threshold) {
        return Err(Error::invalid(
            "impute: particles and steps must be >= 1 and the ESS threshold in [0, 1]",
        ));
    }
    let total = todo.len();
    let seed = opts.posterior.seed;
    if opts.method != Method::SmcImpute {
        let done = AtomicUsize::new(0);
        return todo
            .par_iter()
            .map(|&i| {
                let popts = PosteriorOptions {
                    seed: row_seed(seed, i),
                    ..opts.posterior.clone()
                };
                let r = row_posterior(score, norm, &z[i * d..(i + 1) * d], &opts.method, &popts);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                r
            })
            .collect();
    }
    let to_net = |c: usize, v: f64| norm.map_or(v, |nm| (v - nm.mean[c]) / nm.std[c]);
    let from_net = |c: usize, v: f64| norm.map_or(v, |nm| nm.mean[c] + nm.std[c] * v);
    let chunk = (BATCH_ROWS_TIMES_PARTICLES / opts.posterior.particles.max(1)).max(1);
    let mut out = Vec::with_capacity(total);
    for rows in todo.chunks(chunk) {
        let w: Vec<Vec<f64>> = rows
            .iter()
            .map(|&i| (0..d).map(|c| to_net(c, z[i * d + c])).collect())
            .collect();
        let seeds: Vec<u64> = rows.iter().map(|&i| row_seed(seed, i)).collect();
        for (mut x, ess) in batched_rows(score, &w, &seeds, &opts.posterior)? {
            for row in x.chunks_mut(d) {
                for c in 0..d {
                    row[c] = from_net(c, row[c]);
                }
            }
            out.push((x, ess));
        }
        progress(out.len(), total);
    }
    Ok(out)
}

/// Imputes every missing cell of `table` (see the module docs) with the score model
/// `score` over the coordinates of `enc` (through `norm`, see [`row_posterior`]).
/// `progress(done, total)` is called from worker threads as rows finish.
pub fn impute_table(
    score: &dyn Score,
    norm: Option<&Normalisation>,
    table: &MixedTable,
    enc: &Encoding,
    opts: &ImputeOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Imputation> {
    let (n, cols, d) = (table.rows, table.cols, enc.dim());
    if matches!(opts.method, Method::Exact) {
        return Err(Error::invalid("impute: method 'exact' needs a Gaussian-mixture prior"));
    }
    let z = enc.encode(table);
    let todo = table.incomplete_rows();
    struct RowOut {
        mean: Vec<f64>,
        unc: Vec<f64>,
        draws: Vec<Vec<f64>>,
        ess: f64,
    }
    if opts.runs == 0 {
        return Err(Error::invalid("impute: runs must be >= 1"));
    }
    let mut posterior: Vec<(Vec<f64>, f64)> = Vec::new();
    for run in 0..opts.runs {
        let mut o = opts.clone();
        if run > 0 {
            o.posterior.seed = row_seed(opts.posterior.seed ^ 0x5EED_0000_0000, run);
        }
        let prog = |k: usize, total: usize| progress(run * total + k, opts.runs * total);
        let got = row_samples(score, norm, &z, d, &todo, &o, &prog)?;
        if run == 0 {
            posterior = got;
        } else {
            for ((x, e), (x2, e2)) in posterior.iter_mut().zip(got) {
                x.extend(x2);
                *e = e.min(e2);
            }
        }
    }
    let outs: Vec<(usize, RowOut)> = todo
        .par_iter()
        .zip(posterior.into_par_iter())
        .map(|(&i, (x, ess))| -> Result<(usize, RowOut)> {
            let samples: Vec<Vec<f64>> = x.chunks(d).map(|s| enc.decode_row(table, s)).collect();
            let m = samples.len() as f64;
            let mut mean = vec![0.0; cols];
            let mut unc = vec![0.0; cols];
            for j in (0..cols).filter(|&j| table.is_missing(i, j)) {
                match &table.kinds[j] {
                    ColumnKind::Numeric { .. } => {
                        let mu = samples.iter().map(|s| s[j]).sum::<f64>() / m;
                        let var = samples.iter().map(|s| (s[j] - mu).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
                        mean[j] = mu;
                        unc[j] = var.sqrt();
                    }
                    ColumnKind::Categorical { levels } => {
                        let mut count = vec![0usize; levels.len().max(1)];
                        for s in &samples {
                            count[s[j] as usize] += 1;
                        }
                        let (k, c) = count
                            .iter()
                            .enumerate()
                            .fold((0, 0), |b, (k, &c)| if c > b.1 { (k, c) } else { b });
                        mean[j] = k as f64;
                        unc[j] = 1.0 - c as f64 / m;
                    }
                }
            }
            let u = Noise::new(row_seed(opts.posterior.seed, i)).uniforms(stream(Purpose::User, 7), opts.draws);
            let mut pool: Vec<usize> = (0..samples.len()).collect();
            let draws = u
                .iter()
                .enumerate()
                .map(|(k, &u)| {
                    let pick = if opts.draws <= samples.len() {
                        // Partial Fisher-Yates: without replacement.
                        let r = k + ((u * (pool.len() - k) as f64) as usize).min(pool.len() - k - 1);
                        pool.swap(k, r);
                        pool[k]
                    } else {
                        ((u * samples.len() as f64) as usize).min(samples.len() - 1)
                    };
                    samples[pick].clone()
                })
                .collect();
            Ok((i, RowOut { mean, unc, draws, ess }))
        })
        .collect::<Result<_>>()?;
    let mut out = Imputation {
        completed: table.cells.clone(),
        uncertainty: vec![0.0; n * cols],
        draws: vec![table.cells.clone(); opts.draws],
        ess_min: vec![1.0; n],
        prior_rows: (0..n).filter(|&i| (0..cols).all(|j| table.is_missing(i, j))).count(),
    };
    for (i, r) in outs {
        out.ess_min[i] = r.ess;
        for j in (0..cols).filter(|&j| table.is_missing(i, j)) {
            out.completed[i * cols + j] = r.mean[j];
            out.uncertainty[i * cols + j] = r.unc[j];
            for (k, dr) in r.draws.iter().enumerate() {
                out.draws[k][i * cols + j] = dr[j];
            }
        }
    }
    Ok(out)
}
