//! The exact posterior of a Gaussian-mixture prior under `y = A x + sigma_y z` (the oracle of
//! the benchmarks, docs/methods.md): again a Gaussian mixture, component by component
//!
//! * `S_k = A Sigma_k A^T + sigma_y^2 I`, `K_k = Sigma_k A^T S_k^{-1}`;
//! * mean `mu_k + K_k (y - A mu_k)`, covariance `Sigma_k - K_k A Sigma_k`;
//! * weight `w_k N(y; A mu_k, S_k)`, normalised.
//!
//! With `sigma_y = 0` the covariances are singular (the observed directions are fixed); the
//! sampler works through an eigen-factor, so noiseless masks are exact too.

use super::problem::Operator;
use crate::linalg::{log_sum_exp, sym_eigen};
use crate::rng::{stream, Noise, Purpose};
use crate::score::{Covariance, GaussianMixture};
use crate::{Error, Result};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The exact posterior: a Gaussian mixture with possibly singular covariances.
#[derive(Clone, Debug)]
pub struct ExactPosterior {
    /// Dimension `dx`.
    pub dim: usize,
    /// Posterior weights (sum 1).
    pub weights: Vec<f64>,
    /// Posterior means.
    pub means: Vec<Vec<f64>>,
    /// Posterior covariances, row-major `dx x dx`.
    pub covs: Vec<Vec<f64>>,
    /// `log p(y)`, the evidence.
    pub log_evidence: f64,
    factors: Vec<Vec<f64>>,
}

impl ExactPosterior {
    /// The posterior of `prior` given `y = A x + sigma_y z`.
    pub fn new(prior: &GaussianMixture, op: &Operator, y: &[f64], sigma_y: f64) -> Result<Self> {
        let (dy, dx) = op.shape();
        if prior.dim() != dx {
            return Err(Error::invalid(format!(
                "operator acts on dimension {dx}, the prior has dimension {}",
                prior.dim()
            )));
        }
        if y.len() != dy {
            return Err(Error::invalid(format!(
                "y has {} values, the operator {dy} rows",
                y.len()
            )));
        }
        let a = op.matrix();
        let mut logw = Vec::new();
        let mut means = Vec::new();
        let mut covs = Vec::new();
        for (k, (w, mu)) in prior.weights().iter().zip(prior.means()).enumerate() {
            let sig = prior.covariance_matrix(k);
            // B = A Sigma (dy x dx); S = B A^T + s^2 I.
            let mut b = vec![0.0; dy * dx];
            crate::linalg::gemm_ab(&mut b, &a, &sig, (dy, dx, dx), 1.0, false);
            let mut s = vec![0.0; dy * dy];
            crate::linalg::gemm_abt(&mut s, &b, &a, (dy, dx, dy), 1.0, false);
            for i in 0..dy {
                s[i * dy + i] += sigma_y * sigma_y;
            }
            let (lam, q) = sym_eigen(dy, &s)?;
            let lmax = lam.iter().fold(0.0f64, |m, v| m.max(*v));
            if lam.iter().any(|&l| l <= 1e-12 * lmax.max(1e-300)) {
                return Err(Error::invalid(
                    "exact posterior: A Sigma A^T + sigma_y^2 I is singular (observations are redundant with sigma_y = 0)",
                ));
            }
            // r = y - A mu; S^{-1} r and S^{-1} B via the eigenbasis.
            let mut amu = vec![0.0; dy];
            crate::linalg::matvec(dy, dx, &a, &mu, &mut amu);
            let r: Vec<f64> = (0..dy).map(|i| y[i] - amu[i]).collect();
            let solve = |v: &[f64]| -> Vec<f64> {
                // Q diag(1/lam) Q^T v
                let mut c = vec![0.0; dy];
                for j in 0..dy {
                    let mut acc = 0.0;
                    for i in 0..dy {
                        acc += q[i * dy + j] * v[i];
                    }
                    c[j] = acc / lam[j];
                }
                (0..dy).map(|i| (0..dy).map(|j| q[i * dy + j] * c[j]).sum()).collect()
            };
            let sr = solve(&r);
            let quad: f64 = r.iter().zip(&sr).map(|(a, b)| a * b).sum();
            let logdet: f64 = lam.iter().map(|l| l.ln()).sum();
            logw.push(w.ln() - 0.5 * (quad + logdet + dy as f64 * LN_2PI));
            // mean = mu + B^T S^{-1} r.
            let mut mean = mu.clone();
            for i in 0..dy {
                for c in 0..dx {
                    mean[c] += b[i * dx + c] * sr[i];
                }
            }
            // cov = Sigma - B^T S^{-1} B: column by column of B.
            let mut sib = vec![0.0; dy * dx];
            for c in 0..dx {
                let col: Vec<f64> = (0..dy).map(|i| b[i * dx + c]).collect();
                let sc = solve(&col);
                for i in 0..dy {
                    sib[i * dx + c] = sc[i];
                }
            }
            let mut cov = sig.clone();
            for r1 in 0..dx {
                for c in 0..dx {
                    let mut acc = 0.0;
                    for i in 0..dy {
                        acc += b[i * dx + r1] * sib[i * dx + c];
                    }
                    cov[r1 * dx + c] -= acc;
                }
            }
            // Symmetrise.
            for r1 in 0..dx {
                for c in 0..r1 {
                    let v = 0.5 * (cov[r1 * dx + c] + cov[c * dx + r1]);
                    cov[r1 * dx + c] = v;
                    cov[c * dx + r1] = v;
                }
            }
            means.push(mean);
            covs.push(cov);
        }
        let lse = log_sum_exp(&logw);
        let weights: Vec<f64> = logw.iter().map(|l| (l - lse).exp()).collect();
        let factors = covs
            .iter()
            .map(|c| {
                let (lam, q) = sym_eigen(dx, c)?;
                // F = Q diag(sqrt(max(lam, 0))), so F F^T = cov.
                let mut f = q;
                for i in 0..dx {
                    for j in 0..dx {
                        f[i * dx + j] *= lam[j].max(0.0).sqrt();
                    }
                }
                Ok(f)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ExactPosterior {
            dim: dx,
            weights,
            means,
            covs,
            log_evidence: lse,
            factors,
        })
    }

    /// `n` exact posterior samples (row-major `[n, dx]`) and their components, from the
    /// `Purpose::Exact` streams `2 index` and `2 index + 1` of `noise`.
    pub fn sample_labelled(&self, n: usize, noise: &Noise, index: u64) -> (Vec<f64>, Vec<usize>) {
        let d = self.dim;
        let u = noise.uniforms(stream(Purpose::Exact, 2 * index), n);
        let z = noise.normals(stream(Purpose::Exact, 2 * index + 1), n, d);
        let mut out = vec![0.0; n * d];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let k = crate::smc::categorical(&self.weights, u[i]);
            labels.push(k);
            let f = &self.factors[k];
            let zi = &z[i * d..(i + 1) * d];
            for r in 0..d {
                let mut v = self.means[k][r];
                for j in 0..d {
                    v += f[r * d + j] * zi[j];
                }
                out[i * d + r] = v;
            }
        }
        (out, labels)
    }

    /// `n` exact posterior samples (row-major `[n, dx]`).
    pub fn sample(&self, n: usize, noise: &Noise, index: u64) -> Vec<f64> {
        self.sample_labelled(n, noise, index).0
    }

    /// The posterior as a [`GaussianMixture`] (for densities, scores and the mixture-weight
    /// error); fails when a covariance is singular (`sigma_y = 0`).
    pub fn mixture(&self) -> Result<GaussianMixture> {
        GaussianMixture::new(
            self.weights.clone(),
            self.means.clone(),
            self.covs.iter().map(|c| Covariance::Full(c.clone())).collect(),
        )
        .map_err(|e| Error::invalid(format!("exact posterior has a singular covariance ({e})")))
    }

    /// Posterior mean and covariance of the whole mixture.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim;
        let mut mean = vec![0.0; d];
        for (w, m) in self.weights.iter().zip(&self.means) {
            for i in 0..d {
                mean[i] += w * m[i];
            }
        }
        let mut cov = vec![0.0; d * d];
        for ((w, m), c) in self.weights.iter().zip(&self.means).zip(&self.covs) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += w * (c[i * d + j] + (m[i] - mean[i]) * (m[j] - mean[j]));
                }
            }
        }
        (mean, cov)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bivariate Gaussian imputation example: (Y, X) ~ N(0, [[1, 1.5], [1.5, 5]]), observe Y = y exactly:
    /// X | y ~ N(1.5 y, 2.75).
    #[test]
    fn bivariate_gaussian_conditional() {
        let prior = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 1.5, 1.5, 5.0])).unwrap();
        let op = Operator::Mask {
            dim: 2,
            observed: vec![0],
        };
        let post = ExactPosterior::new(&prior, &op, &[0.8], 0.0).unwrap();
        assert!((post.means[0][1] - 1.2).abs() < 1e-12);
        assert!((post.covs[0][3] - 2.75).abs() < 1e-12);
        assert!(post.covs[0][0].abs() < 1e-12);
        let x = post.sample(1000, &Noise::new(1), 0);
        assert!(x.chunks(2).all(|r| (r[0] - 0.8).abs() < 1e-9));
        // log p(y) = log N(0.8; 0, 1).
        assert!((post.log_evidence - (-0.5 * 0.64 - 0.5 * LN_2PI)).abs() < 1e-12);
    }

    /// The posterior density integrates to one and equals prior x likelihood / evidence on a
    /// 1-D grid (two-component prior, noisy observation).
    #[test]
    fn density_is_bayes_rule_in_1d() {
        let prior = GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![-2.0], vec![1.5]],
            vec![Covariance::Scalar(0.5), Covariance::Scalar(1.2)],
        )
        .unwrap();
        let op = Operator::Dense {
            rows: 1,
            cols: 1,
            a: vec![0.7],
        };
        let (y, sy) = (0.4, 0.6);
        let post = ExactPosterior::new(&prior, &op, &[y], sy).unwrap();
        let mix = post.mixture().unwrap();
        let h = 0.001;
        let grid: Vec<f64> = (0..20000).map(|i| -10.0 + h * (i as f64 + 0.5)).collect();
        let lp = mix.log_prob(&grid).unwrap();
        let lprior = prior.log_prob(&grid).unwrap();
        let mut total = 0.0;
        for (i, x) in grid.iter().enumerate() {
            let ll = -0.5 * ((y - 0.7 * x) / sy).powi(2) - (sy * (2.0 * std::f64::consts::PI).sqrt()).ln();
            let bayes = lprior[i] + ll - post.log_evidence;
            assert!((lp[i] - bayes).abs() < 1e-9, "x={x}: {} vs {bayes}", lp[i]);
            total += lp[i].exp() * h;
        }
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }
}
