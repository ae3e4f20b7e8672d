//! Imputation of a 2-D Gaussian: `(Y, X) ~ N(0, [[1, 1.5], [1.5, 5]])`, `Y = y` observed
//! exactly, `X` imputed. The posterior is `N(1.5 y, 2.75)`, so the mean and variance of the
//! imputations of each method (replacement, Lugmayr et al. 2022; smc-impute; MCGdiff,
//! Cardoso et al. 2024; TDS, Wu et al. 2023) can be checked against exact values, and their
//! convergence in the number of particles against the i.i.d. rate `sqrt(2.75 / N)`.

use crate::inverse::{sample_posterior, Method, Observation, Operator, PosteriorOptions};
use crate::process::Process;
use crate::sample::default_process;
use crate::score::{Covariance, GaussianMixture, MixtureScore};
use crate::Result;
use std::sync::Arc;

/// The posterior variance of `X` given `Y`: `5 - 1.5^2 / 1 = 2.75`.
pub const POSTERIOR_VARIANCE: f64 = 2.75;

/// The posterior mean of `X` given `Y = y`: `1.5 y`.
pub fn posterior_mean(y: f64) -> f64 {
    1.5 * y
}

/// The process of the benchmark: [`default_process`] of radius `3 sqrt(5.5)` (three
/// standard deviations of the joint law's total variance).
pub fn process() -> Process {
    default_process(5.5f64.sqrt() * 3.0)
}

/// The exact score of the joint law `N(0, [[1, 1.5], [1.5, 5]])` on [`process`].
pub fn score() -> Result<MixtureScore> {
    let law = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 1.5, 1.5, 5.0]))?;
    Ok(MixtureScore::new(Arc::new(law), process()))
}

/// One run: `particles` imputations of `X` given `Y = y` by `method` (`steps` reverse
/// steps, seed `seed`, one particle system of `particles` for the SMC methods); returns
/// the sample mean and the unbiased sample variance of the imputed `X`.
pub fn run(
    score: &MixtureScore,
    method: &Method,
    y: f64,
    particles: usize,
    steps: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let obs = Observation {
        op: Operator::Mask {
            dim: 2,
            observed: vec![0],
        },
        y: vec![y],
        sigma_y: 0.0,
    };
    let mut opts = PosteriorOptions {
        n: particles,
        particles,
        ..Default::default()
    };
    (opts.steps, opts.seed) = (steps, seed);
    let x: Vec<f64> = sample_posterior(score, &obs, method, &opts, &mut |_, _| {})?
        .samples
        .chunks(2)
        .map(|r| r[1])
        .collect();
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    Ok((m, x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)))
}

/// The mean of `v` and its standard error `sqrt(sum (v - mean)^2 / (n - 1) / n)`.
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt(),
    )
}

/// [`run`] with each seed of `seeds`: `(mean, variance)` per run.
pub fn run_seeds(
    score: &MixtureScore,
    method: &Method,
    y: f64,
    particles: usize,
    steps: usize,
    seeds: std::ops::Range<u64>,
) -> Result<Vec<(f64, f64)>> {
    seeds.map(|s| run(score, method, y, particles, steps, s)).collect()
}

/// The means and variances of runs ([`run_seeds`]), each with its standard error over the
/// runs ([`mean_se`]): `((mean, se), (variance, se))`.
pub fn summarise(runs: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    let (means, vars): (Vec<f64>, Vec<f64>) = runs.iter().copied().unzip();
    (mean_se(&means), mean_se(&vars))
}

/// The root-mean-square error over runs ([`run_seeds`] at `y`) of the posterior mean of `X`
/// against [`posterior_mean`]`(y)`.
pub fn rmse_of_mean(runs: &[(f64, f64)], y: f64) -> f64 {
    (runs.iter().map(|a| (a.0 - posterior_mean(y)).powi(2)).sum::<f64>() / runs.len() as f64).sqrt()
}

/// The root-mean-square error of the mean of `particles` i.i.d. posterior draws:
/// `sqrt(2.75 / N)`.
pub fn iid_rmse(particles: usize) -> f64 {
    (POSTERIOR_VARIANCE / particles as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smc_impute_recovers_the_gaussian_posterior() {
        // 2000 particles: the mean within 5 standard errors sqrt(2.75 / 2000) of 1.5 y and
        // the variance within 5 of sqrt(2 / 1999) 2.75 (plus the discretisation's bias).
        let s = score().unwrap();
        let m: Method = "smc-impute".parse().unwrap();
        let (mean, var) = run(&s, &m, 1.0, 2000, 200, 3).unwrap();
        assert!((mean - posterior_mean(1.0)).abs() < 5.0 * iid_rmse(2000), "{mean}");
        let var_se = POSTERIOR_VARIANCE * (2.0f64 / 1999.0).sqrt();
        assert!((var - POSTERIOR_VARIANCE).abs() < 5.0 * var_se + 0.1, "{var}");
        let (m2, se) = mean_se(&[1.0, 2.0, 3.0]);
        assert_eq!(m2, 2.0);
        assert!((se - (1.0f64 / 3.0).sqrt()).abs() < 1e-15);
        let r = [(0.5, 2.0), (1.0, 3.0)];
        assert_eq!(summarise(&r), (mean_se(&[0.5, 1.0]), mean_se(&[2.0, 3.0])));
        assert!((rmse_of_mean(&r, 0.5) - 0.25).abs() < 1e-15);
        let seeds = run_seeds(&s, &m, 1.0, 50, 20, 3..5).unwrap();
        assert_eq!(seeds[0], run(&s, &m, 1.0, 50, 20, 3).unwrap());
    }
}
