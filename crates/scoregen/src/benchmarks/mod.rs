//! The benchmark recipes behind `scoregen bench` and `scoregen demo`, and their evaluation:
//! each returns numbers; the CLI prints them and draws the figures.
//!
//! * [`gmm`]: the Gaussian-mixture posterior benchmark of Cardoso et al. 2024 (MCGdiff)
//!   and Janati et al. 2024 (DCPS): random 25-component priors, random dense operators,
//!   sliced Wasserstein and mixture-weight errors against the exact posterior.
//! * [`impute_gauss`]: imputation of a 2-D Gaussian, where the posterior is known in closed
//!   form.
//! * [`digits`]: inpainting, outpainting and super-resolution of real digits with a trained
//!   image prior.
//! * [`demo`]: the two-sample noise floor of the sliced Wasserstein distance and the
//!   sampler comparison of `scoregen demo`.
//! * [`stats`]: percentile bootstrap and Wilson intervals and paired win shares, to rank
//!   methods over a benchmark's problems.
//!
//! Shared helpers: [`median`], [`mean_sd`], [`mode_counts`], and the full-covariance
//! variant of the 25-component prior, [`full_cov_grid25`] (`scoregen bench sample`).

pub mod demo;
pub mod digits;
pub mod gmm;
pub mod impute_gauss;
pub mod quality;
pub mod stats;

use crate::rng::{stream, Noise, Purpose};
use crate::score::{Covariance, GaussianMixture};
use crate::Result;

/// The 25-component grid prior of dimension `d` ([`GaussianMixture::grid25`], weights of
/// `Noise::new(0)`) with full covariances `Sigma_k = A_k A_k^T / d + 0.5 I`, `A_k` a
/// `d x d` standard normal matrix (stream `(User, k)` of `Noise::new(1)`): a mixture whose
/// scores need the full Cholesky path.
pub fn full_cov_grid25(d: usize) -> Result<GaussianMixture> {
    let iso = GaussianMixture::grid25(d, &Noise::new(0))?;
    let noise = Noise::new(1);
    let covs = (0..25)
        .map(|k| {
            let a = noise.normals(stream(Purpose::User, k), d, d);
            let mut c = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] = (0..d).map(|l| a[i * d + l] * a[j * d + l]).sum::<f64>() / d as f64;
                }
                c[i * d + i] += 0.5;
            }
            Covariance::Full(c)
        })
        .collect();
    GaussianMixture::new(iso.weights(), iso.means(), covs)
}

/// The median of `v` (the mean of the two middle values for an even count); sorts `v`.
/// `NaN` for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The mean and the sample standard deviation `sqrt(sum (v - mean)^2 / (n - 1))` of `v`
/// (standard deviation 0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    (m, s)
}

/// Mode counts of samples `x` (row-major, rows of the means' dimension): each row is
/// assigned to its nearest mean (Euclidean distance) and counted there if that distance is
/// below `radius`. Returns one count per mean; rows farther than `radius` from every mean
/// are not counted.
pub fn mode_counts(x: &[f64], means: &[Vec<f64>], radius: f64) -> Vec<usize> {
    let mut counts = vec![0usize; means.len()];
    let Some(d) = means.first().map(Vec::len).filter(|&d| d > 0) else {
        return counts;
    };
    let dist = |r: &[f64], m: &[f64]| -> f64 {
        if d == 2 {
            (r[0] - m[0]).hypot(r[1] - m[1])
        } else {
            r.iter().zip(m).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()
        }
    };
    for r in x.chunks(d) {
        let k = (0..means.len())
            .min_by(|&i, &j| dist(r, &means[i]).total_cmp(&dist(r, &means[j])))
            .unwrap_or(0);
        if dist(r, &means[k]) < radius {
            counts[k] += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mean_sd_and_mode_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(mean_sd(&[2.0]), (2.0, 0.0));
        let means = vec![vec![0.0, 0.0], vec![10.0, 0.0]];
        let x = [0.5, 0.5, 9.0, 0.0, 5.0, 5.0, 11.0, -1.0];
        assert_eq!(mode_counts(&x, &means, 3.0), vec![1, 2]);
        let means3 = vec![vec![0.0, 0.0, 0.0], vec![0.0, 0.0, 4.0]];
        assert_eq!(
            mode_counts(&[0.0, 0.0, 3.5, 0.0, 0.0, 0.5, 0.0, 0.0, 2.0], &means3, 1.0),
            vec![1, 1]
        );
    }

    #[test]
    fn full_covariance_prior() {
        let law = full_cov_grid25(3).unwrap();
        let iso = GaussianMixture::grid25(3, &Noise::new(0)).unwrap();
        assert_eq!(
            (law.n_components(), law.means(), law.weights()),
            (25, iso.means(), iso.weights())
        );
    }
}
