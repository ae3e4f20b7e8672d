//! Helpers shared by the posterior tests (each test file uses some of them).
#![allow(dead_code)]

use std::sync::Arc;

use scoregen::sample::default_process;
use scoregen::score::{Covariance, GaussianMixture, MixtureScore};

/// `(Y, X) ~ N(0, [[1, 1.5], [1.5, 5]])`: its exact score on the default process, and the law.
pub fn bivariate() -> (MixtureScore, GaussianMixture) {
    let law = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 1.5, 1.5, 5.0])).unwrap();
    let p = default_process(law.radius());
    (MixtureScore::new(Arc::new(law.clone()), p), law)
}

/// Sample mean and unbiased variance.
pub fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0))
}

/// Column `j` of row-major `[n, d]` values.
pub fn column(x: &[f64], d: usize, j: usize) -> Vec<f64> {
    x.chunks(d).map(|r| r[j]).collect()
}
