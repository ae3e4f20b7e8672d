//! Row-by-row posterior imputation (docs/methods.md): row `i` with observed coordinates `O_i` is
//! the inverse problem `y = x_{O_i}` (a noiseless mask), solved with any posterior method
//! of [`crate::inverse`] (by default the SMC imputation of Trippe et al. 2023, batched over
//! rows) on the unconditional model.
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
use crate::inverse::{sample_posterior, smc_impute_batch, Method, Observation, Operator, PosteriorOptions};
use crate::nn::model::Normalisation;
use crate::rng::{stream, Noise, Purpose};
use crate::score::Score;
use crate::{Error, Result};

/// Settings of [`impute_table`].
#[derive(Clone, Debug)]
pub struct ImputeOptions {
    /// The posterior method (default: smc-impute, Trippe et al. 2023).
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
    let obs = row_observation(score, norm, z)?;
    let popts = PosteriorOptions {
        n: opts.particles,
        ..opts.clone()
    };
    let report = sample_posterior(score, &obs, method, &popts, &mut |_, _| {})?;
    Ok((from_model(norm, report.samples, d), report.ess_min))
}

/// The noiseless mask problem of an encoded row `z` (NaN where missing) in the model's
/// coordinates (through `norm`, see [`row_posterior`]).
fn row_observation(score: &dyn Score, norm: Option<&Normalisation>, z: &[f64]) -> Result<Observation> {
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
    match norm {
        Some(nm) => obs.normalised(&nm.mean, &nm.std),
        None => Ok(obs),
    }
}

/// Samples `[n, d]` in the model's coordinates back to the encoding's (`mean + std w`).
fn from_model(norm: Option<&Normalisation>, mut x: Vec<f64>, d: usize) -> Vec<f64> {
    if let Some(nm) = norm {
        for row in x.chunks_mut(d) {
            for c in 0..d {
                row[c] = nm.mean[c] + nm.std[c] * row[c];
            }
        }
    }
    x
}

/// Rows per batch times particles: the size of one network evaluation of the batched
/// smc-impute.
const BATCH_ROWS_TIMES_PARTICLES: usize = 1 << 15;

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
    // smc-impute: the library's one implementation (`inverse`'s, as `scoregen posterior`
    // runs it), every row its own particle system, a batch of rows per score evaluation.
    let chunk = (BATCH_ROWS_TIMES_PARTICLES / opts.posterior.particles.max(1)).max(1);
    let mut out = Vec::with_capacity(total);
    for rows in todo.chunks(chunk) {
        let obs = rows
            .iter()
            .map(|&i| row_observation(score, norm, &z[i * d..(i + 1) * d]))
            .collect::<Result<Vec<_>>>()?;
        let obs_refs: Vec<&Observation> = obs.iter().collect();
        let seeds: Vec<u64> = rows.iter().map(|&i| row_seed(seed, i)).collect();
        let runs = vec![0; rows.len()];
        let got = smc_impute_batch(score, &obs_refs, &seeds, &runs, &opts.posterior, &mut |_, _| {})?;
        for r in got {
            let ess = r.ess.iter().fold(1.0f64, |a, e| a.min(e / po.particles as f64));
            out.push((from_model(norm, r.samples, d), ess));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;
    use crate::score::{Covariance, GaussianMixture, MixtureScore};
    use std::sync::Arc;

    /// `scoregen impute`'s batched smc-impute is `sample_posterior`'s smc-impute: every row
    /// of a batch gives, bit for bit, what the row alone gives with its seed (the exact
    /// mixture score is row-wise, so batching cannot change a value).
    #[test]
    fn batched_rows_equal_the_one_row_posterior() {
        let law = GaussianMixture::new(
            vec![0.4, 0.6],
            vec![vec![-1.0, 0.5, 2.0], vec![1.5, -0.5, 0.0]],
            vec![Covariance::Scalar(0.3), Covariance::Diagonal(vec![0.5, 1.0, 0.2])],
        )
        .unwrap();
        let score = MixtureScore::new(Arc::new(law), Process::ou(2.0, 6.0));
        let nan = f64::NAN;
        let z = [
            0.3, nan, 1.0, //
            nan, nan, -0.2, //
            1.2, -0.4, 0.1, //
            nan, 0.8, nan,
        ];
        let norm = Normalisation {
            mean: vec![0.1, -0.2, 0.3],
            std: vec![1.5, 0.7, 1.0],
        };
        let opts = ImputeOptions {
            posterior: PosteriorOptions {
                particles: 64,
                steps: 40,
                seed: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let todo = [0, 1, 2, 3];
        for nm in [None, Some(&norm)] {
            let got = row_samples(&score, nm, &z, 3, &todo, &opts, &|_, _| {}).unwrap();
            for (&i, (x, ess)) in todo.iter().zip(&got) {
                let popts = PosteriorOptions {
                    seed: row_seed(3, i),
                    ..opts.posterior.clone()
                };
                let (x1, ess1) = row_posterior(&score, nm, &z[i * 3..(i + 1) * 3], &Method::SmcImpute, &popts).unwrap();
                assert_eq!(x, &x1, "row {i}");
                assert_eq!(*ess, ess1, "row {i}");
            }
        }
    }
}
