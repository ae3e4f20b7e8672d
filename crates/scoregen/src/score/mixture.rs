//! Gaussian and Gaussian-mixture data laws with their **exact** diffused scores.
//!
//! If `x_0 ~ sum_k w_k N(mu_k, Sigma_k)` and `x_t = m(t) x_0 + s(t) eps`, then
//! `x_t ~ sum_k w_k N(m mu_k, C_k(t))` with `C_k(t) = m^2 Sigma_k + s^2 I`, so
//!
//! `score(t, x) = sum_k r_k(x) C_k(t)^{-1} (m mu_k - x)`,
//! `r_k(x) = softmax_k(log w_k + log N(x; m mu_k, C_k(t)))`.
//!
//! With `Sigma_k = Q_k diag(lambda_k) Q_k^T` computed once, `C_k(t) = Q_k diag(m^2 lambda_k + s^2) Q_k^T`
//! for every `t` at no further cost. Responsibilities are normalised in log space, so points
//! far from every component get a finite score (no NaN). A Gaussian is the one-component
//! case.

mod rows;

use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

pub use rows::MixtureRows;

use super::{RowScore, Score};
use crate::linalg::{check_spd, gemm_ab, gemm_abt, log_sum_exp, matvec, matvec_t, sym_eigen};
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// A covariance as it may be given.
#[derive(Clone, Debug, PartialEq)]
pub enum Covariance {
    /// `v I`.
    Scalar(f64),
    /// `diag(v)`.
    Diagonal(Vec<f64>),
    /// A full symmetric positive-definite matrix, row-major `d x d`.
    Full(Vec<f64>),
}

#[derive(Clone, Debug)]
struct Component {
    log_w: f64,
    mean: Vec<f64>,
    /// Eigenvalues of the covariance.
    lam: Vec<f64>,
    /// Eigenvectors as columns (row-major `d x d`); `None` when axis-aligned.
    q: Option<Vec<f64>>,
    /// `Q^T` (row-major), for the row kernel's products.
    qt: Option<Vec<f64>>,
}

impl Component {
    /// `z = Q^T (x - m mu)`: the residual of `x` from the diffused mean in the eigenbasis of
    /// the covariance (`c` is scratch of length `d`).
    fn whiten(&self, m: f64, x: &[f64], c: &mut [f64], z: &mut [f64]) {
        let d = x.len();
        for i in 0..d {
            c[i] = x[i] - m * self.mean[i];
        }
        match &self.q {
            Some(q) => matvec_t(d, d, q, c, z),
            None => z.copy_from_slice(c),
        }
    }
}

/// The row-major transpose of a row-major `d x d` matrix.
fn transpose(d: usize, q: &[f64]) -> Vec<f64> {
    let mut t = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            t[j * d + i] = q[i * d + j];
        }
    }
    t
}

/// A Gaussian mixture data law `sum_k w_k N(mu_k, Sigma_k)` in `R^d`.
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    d: usize,
    comps: Vec<Component>,
    covs: Vec<Covariance>,
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Rows per parallel task of [`GaussianMixture::score_diffused`].
const ROW_BLOCK: usize = 64;

impl GaussianMixture {
    /// A mixture from (unnormalised, non-negative) weights, means and covariances.
    /// Fails on inconsistent shapes, NaN, negative weights, or a covariance that is not
    /// symmetric positive definite.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covs: Vec<Covariance>) -> Result<Self> {
        let k = weights.len();
        if k == 0 {
            return Err(Error::invalid("mixture: no components"));
        }
        if means.len() != k || covs.len() != k {
            return Err(Error::invalid(format!(
                "mixture: {k} weights but {} means and {} covariances",
                means.len(),
                covs.len()
            )));
        }
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(Error::invalid("mixture: weights must be finite and non-negative"));
        }
        // Normalised as in log-sum-exp, relative to the largest weight:
        // `log w_k = log(w_k / w_max) - log sum_j (w_j / w_max)`, so that weights whose sum
        // overflows (`[1e308, 1e308]`) keep their ratios (the scaled sum is in `[1, k]`).
        let w_max = weights.iter().fold(0.0f64, |m, w| m.max(*w));
        if w_max <= 0.0 {
            return Err(Error::invalid("mixture: weights sum to zero"));
        }
        let log_total = weights.iter().map(|w| w / w_max).sum::<f64>().ln();
        let d = means[0].len();
        if d == 0 {
            return Err(Error::invalid("mixture: means have dimension 0"));
        }
        let mut comps = Vec::with_capacity(k);
        for (i, ((w, mu), cov)) in weights.iter().zip(&means).zip(&covs).enumerate() {
            if mu.len() != d {
                return Err(Error::invalid(format!(
                    "mixture: mean {i} has dimension {}, expected {d}",
                    mu.len()
                )));
            }
            if mu.iter().any(|v| !v.is_finite()) {
                return Err(Error::invalid(format!("mixture: mean {i} contains NaN or infinity")));
            }
            let (lam, q) = match cov {
                Covariance::Scalar(v) => {
                    if !(v.is_finite() && *v > 0.0) {
                        return Err(Error::invalid(format!(
                            "mixture: covariance {i} is not positive definite"
                        )));
                    }
                    (vec![*v; d], None)
                }
                Covariance::Diagonal(v) => {
                    if v.len() != d {
                        return Err(Error::invalid(format!(
                            "mixture: variances {i} have length {}, expected {d}",
                            v.len()
                        )));
                    }
                    if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                        return Err(Error::invalid(format!(
                            "mixture: covariance {i} is not positive definite"
                        )));
                    }
                    (v.clone(), None)
                }
                Covariance::Full(a) => {
                    check_spd(d, a, &format!("mixture: covariance {i}"))?;
                    let diagonal = (0..d).all(|r| (0..d).all(|c| r == c || a[r * d + c] == 0.0));
                    if diagonal {
                        ((0..d).map(|r| a[r * d + r]).collect(), None)
                    } else {
                        let (lam, q) = sym_eigen(d, a)?;
                        if lam[0] <= 0.0 {
                            return Err(Error::invalid(format!(
                                "mixture: covariance {i} is not positive definite"
                            )));
                        }
                        (lam, Some(q))
                    }
                }
            };
            comps.push(Component {
                log_w: if *w > 0.0 {
                    (w / w_max).ln() - log_total
                } else {
                    f64::NEG_INFINITY
                },
                mean: mu.clone(),
                lam,
                qt: q.as_ref().map(|q| transpose(d, q)),
                q,
            });
        }
        Ok(GaussianMixture { d, comps, covs })
    }

    /// A single Gaussian `N(mean, cov)`.
    pub fn gaussian(mean: Vec<f64>, cov: Covariance) -> Result<Self> {
        Self::new(vec![1.0], vec![mean], vec![cov])
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The number of components.
    pub fn n_components(&self) -> usize {
        self.comps.len()
    }

    /// The normalised weights.
    pub fn weights(&self) -> Vec<f64> {
        self.comps.iter().map(|c| c.log_w.exp()).collect()
    }

    /// The means.
    pub fn means(&self) -> Vec<Vec<f64>> {
        self.comps.iter().map(|c| c.mean.clone()).collect()
    }

    /// The covariances as given.
    pub fn covariances(&self) -> &[Covariance] {
        &self.covs
    }

    /// Full row-major covariance of component `k`.
    pub fn covariance_matrix(&self, k: usize) -> Vec<f64> {
        let d = self.d;
        let c = &self.comps[k];
        let mut a = vec![0.0; d * d];
        match &c.q {
            None => (0..d).for_each(|i| a[i * d + i] = c.lam[i]),
            Some(q) => {
                for i in 0..d {
                    for j in 0..d {
                        a[i * d + j] = (0..d).map(|l| q[i * d + l] * c.lam[l] * q[j * d + l]).sum();
                    }
                }
            }
        }
        a
    }

    /// The mixture's overall mean and (row-major) covariance.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        let w = self.weights();
        let mut mean = vec![0.0; d];
        for (c, wk) in self.comps.iter().zip(&w) {
            for i in 0..d {
                mean[i] += wk * c.mean[i];
            }
        }
        let mut cov = vec![0.0; d * d];
        for (k, (c, wk)) in self.comps.iter().zip(&w).enumerate() {
            let ck = self.covariance_matrix(k);
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += wk * (ck[i * d + j] + (c.mean[i] - mean[i]) * (c.mean[j] - mean[j]));
                }
            }
        }
        (mean, cov)
    }

    /// The law of `x_t = m x_0 + s eps`: `sum_k w_k N(m mu_k, m^2 Sigma_k + s^2 I)`.
    pub fn diffused(&self, m: f64, s: f64) -> GaussianMixture {
        let comps = self
            .comps
            .iter()
            .map(|c| Component {
                log_w: c.log_w,
                mean: c.mean.iter().map(|v| m * v).collect(),
                lam: c.lam.iter().map(|l| m * m * l + s * s).collect(),
                q: c.q.clone(),
                qt: c.qt.clone(),
            })
            .collect();
        let covs = (0..self.comps.len())
            .map(|k| {
                let mut a = self.covariance_matrix(k);
                for (i, v) in a.iter_mut().enumerate() {
                    *v *= m * m;
                    if i % (self.d + 1) == 0 {
                        *v += s * s;
                    }
                }
                Covariance::Full(a)
            })
            .collect();
        GaussianMixture { d: self.d, comps, covs }
    }

    /// Per-row log density and (optionally) gradient of the law of `m x_0 + s eps`, and the
    /// per-row log responsibilities (`[n, K]`) when asked. Axis-aligned mixtures (scalar or
    /// diagonal covariances) go through dense products ([`Self::eval_axis_aligned`]), the
    /// others row by row in each component's eigenbasis.
    fn eval(&self, m: f64, s: f64, x: &[f64], grad: Option<&mut [f64]>, resp: Option<&mut [f64]>) -> Vec<f64> {
        if self.comps.iter().all(|c| c.q.is_none()) {
            self.eval_axis_aligned(m, s, x, grad, resp)
        } else {
            self.eval_rows(m, s, x, grad, resp)
        }
    }

    /// [`Self::eval`] for axis-aligned components, `v_ki = m^2 lambda_ki + s^2`:
    /// `quad_k(x) = sum_i x_i^2 / v_ki - 2 m x_i mu_ki / v_ki + m^2 mu_ki^2 / v_ki` is
    /// `X^2 A^T - 2 X B^T + c` with `A = 1/V`, `B = m mu / V`, and the score
    /// `sum_k r_k (m mu_k - x) / v_k = R B - X * (R A)`: four `n x d x K` products.
    fn eval_axis_aligned(
        &self,
        m: f64,
        s: f64,
        x: &[f64],
        grad: Option<&mut [f64]>,
        resp: Option<&mut [f64]>,
    ) -> Vec<f64> {
        let d = self.d;
        let kk = self.comps.len();
        let n = x.len() / d;
        let s2 = s * s;
        let mut a = vec![0.0; kk * d];
        let mut b = vec![0.0; kk * d];
        let mut c = vec![0.0; kk];
        for (k, comp) in self.comps.iter().enumerate() {
            let mut logdet = 0.0;
            for i in 0..d {
                let v = m * m * comp.lam[i] + s2;
                a[k * d + i] = 1.0 / v;
                b[k * d + i] = m * comp.mean[i] / v;
                c[k] += m * comp.mean[i] * b[k * d + i];
                logdet += v.ln();
            }
            // Fold the normaliser in: c_k <- -2 log w_k + log det + d log 2 pi + m^2 |mu|^2_V.
            c[k] += -2.0 * comp.log_w + logdet + d as f64 * LN_2PI;
        }
        let x2: Vec<f64> = x.iter().map(|v| v * v).collect();
        // l = X^2 A^T - 2 X B^T, then log p_k = -(l + c_k) / 2.
        let mut l = vec![0.0; n * kk];
        gemm_abt(&mut l, &x2, &a, (n, d, kk), 1.0, false);
        gemm_abt(&mut l, x, &b, (n, d, kk), -2.0, true);
        let mut logp = vec![0.0; n];
        l.par_chunks_mut(kk).zip(logp.par_iter_mut()).for_each(|(row, lp)| {
            for k in 0..kk {
                row[k] = -0.5 * (row[k] + c[k]);
            }
            let lse = log_sum_exp(row);
            *lp = lse;
            for v in row.iter_mut() {
                *v -= lse; // log responsibilities
            }
        });
        if let Some(r) = resp {
            r.copy_from_slice(&l);
        }
        if let Some(g) = grad {
            l.par_iter_mut().for_each(|v| *v = v.exp());
            let mut ra = vec![0.0; n * d];
            gemm_ab(g, &l, &b, (n, kk, d), 1.0, false);
            gemm_ab(&mut ra, &l, &a, (n, kk, d), 1.0, false);
            g.par_iter_mut()
                .zip(ra.par_iter().zip(x.par_iter()))
                .for_each(|(gi, (rai, xi))| *gi -= rai * xi);
        }
        logp
    }

    /// Per component of the law of `m x_0 + s eps`: the variances along its eigenvectors,
    /// `m^2 lambda + s^2`, and its log-normaliser `log w - (log det + d log 2 pi) / 2`.
    fn eigen_variances(&self, m: f64, s: f64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let d = self.d;
        let var: Vec<Vec<f64>> = self
            .comps
            .iter()
            .map(|c| c.lam.iter().map(|l| m * m * l + s * s).collect())
            .collect();
        let lnorm = self
            .comps
            .iter()
            .zip(&var)
            .map(|(c, v)| c.log_w - 0.5 * (v.iter().map(|x| x.ln()).sum::<f64>() + d as f64 * LN_2PI))
            .collect();
        (var, lnorm)
    }

    /// [`Self::eval`] row by row (any covariances).
    fn eval_rows(&self, m: f64, s: f64, x: &[f64], grad: Option<&mut [f64]>, resp: Option<&mut [f64]>) -> Vec<f64> {
        let d = self.d;
        let kk = self.comps.len();
        let n = x.len() / d;
        let (var, lnorm) = self.eigen_variances(m, s);
        let mut logp = vec![0.0; n];
        const ROWS: usize = 64;
        let mut dummy_g = Vec::new();
        let mut dummy_r = Vec::new();
        let want_grad = grad.is_some();
        let want_resp = resp.is_some();
        let g = grad.unwrap_or(&mut dummy_g);
        let r = resp.unwrap_or(&mut dummy_r);
        let gchunks: Vec<&mut [f64]> = if want_grad {
            g.chunks_mut(ROWS * d).collect()
        } else {
            Vec::new()
        };
        let rchunks: Vec<&mut [f64]> = if want_resp {
            r.chunks_mut(ROWS * kk).collect()
        } else {
            Vec::new()
        };
        let mut gopt: Vec<Option<&mut [f64]>> = gchunks.into_iter().map(Some).collect();
        let mut ropt: Vec<Option<&mut [f64]>> = rchunks.into_iter().map(Some).collect();
        let nchunks = logp.chunks(ROWS).len();
        gopt.resize_with(nchunks, || None);
        ropt.resize_with(nchunks, || None);
        logp.par_chunks_mut(ROWS)
            .zip(x.par_chunks(ROWS * d))
            .zip(gopt.into_par_iter().zip(ropt.into_par_iter()))
            .for_each(|((lp, xc), (mut gc, mut rc))| {
                let mut c = vec![0.0; d];
                let mut z = vec![0.0; d];
                let mut zs = vec![0.0; kk * d]; // C_k^{-1}-scaled coordinates per component
                let mut lk = vec![0.0; kk];
                let mut tmp = vec![0.0; d];
                for (row, xr) in xc.chunks(d).enumerate() {
                    for (k, comp) in self.comps.iter().enumerate() {
                        comp.whiten(m, xr, &mut c, &mut z);
                        let mut quad = 0.0;
                        let zk = &mut zs[k * d..(k + 1) * d];
                        for i in 0..d {
                            zk[i] = z[i] / var[k][i];
                            quad += z[i] * zk[i];
                        }
                        lk[k] = lnorm[k] - 0.5 * quad;
                    }
                    let lse = log_sum_exp(&lk);
                    lp[row] = lse;
                    if let Some(rr) = rc.as_deref_mut() {
                        for k in 0..kk {
                            rr[row * kk + k] = lk[k] - lse;
                        }
                    }
                    if let Some(gg) = gc.as_deref_mut() {
                        let gr = &mut gg[row * d..(row + 1) * d];
                        gr.iter_mut().for_each(|v| *v = 0.0);
                        for (k, comp) in self.comps.iter().enumerate() {
                            let wk = (lk[k] - lse).exp();
                            if wk == 0.0 {
                                continue;
                            }
                            let zk = &zs[k * d..(k + 1) * d];
                            match &comp.q {
                                Some(q) => {
                                    matvec(d, d, q, zk, &mut tmp);
                                    for i in 0..d {
                                        gr[i] -= wk * tmp[i];
                                    }
                                }
                                None => {
                                    for i in 0..d {
                                        gr[i] -= wk * zk[i];
                                    }
                                }
                            }
                        }
                    }
                }
            });
        logp
    }

    fn check_rows(&self, x: &[f64]) -> Result<usize> {
        if !x.len().is_multiple_of(self.d) {
            return Err(Error::invalid(format!(
                "points of dimension {} expected, got {} values",
                self.d,
                x.len()
            )));
        }
        Ok(x.len() / self.d)
    }

    /// Log density of each row of `x` (row-major `[n, d]`) under the data law.
    pub fn log_prob(&self, x: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x)?;
        Ok(self.eval(1.0, 0.0, x, None, None))
    }

    /// Log density of each row under the law of `m x_0 + s eps`.
    pub fn log_prob_diffused(&self, m: f64, s: f64, x: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x)?;
        Ok(self.eval(m, s, x, None, None))
    }

    /// The exact score of the law of `m x_0 + s eps` at each row (row-major `[n, d]`), by
    /// the per-row kernel [`MixtureRows`] over fixed blocks of rows in parallel (the result
    /// does not depend on the number of threads).
    pub fn score_diffused(&self, m: f64, s: f64, x: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x)?;
        let mut g = vec![0.0; x.len()];
        let k = self.rows(m, s);
        let block = ROW_BLOCK * self.d;
        g.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(gc, xc)| k.score_rows(xc, gc));
        Ok(g)
    }

    /// The score by the generic path this crate had before the per-row kernel (dense
    /// products for axis-aligned components, row by row in the eigenbases otherwise); kept
    /// as a reference for tests.
    #[doc(hidden)]
    pub fn score_diffused_reference(&self, m: f64, s: f64, x: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x)?;
        let mut g = vec![0.0; x.len()];
        self.eval(m, s, x, Some(&mut g), None);
        Ok(g)
    }

    /// The exact score and Hessian-vector product `H v` (`H = grad^2 log p`) of the law of
    /// `m x_0 + s eps` at each row: with component precisions `P_k`, component scores
    /// `g_k = -P_k (x - m mu_k)`, responsibilities `r_k` and `g = sum_k r_k g_k`,
    /// `H v = sum_k r_k (g_k (g_k . v) - P_k v) - g (g . v)`.
    pub fn score_hvp_diffused(&self, m: f64, s: f64, x: &[f64], v: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = self.check_rows(x)?;
        if v.len() != x.len() {
            return Err(Error::invalid("score_hvp_diffused: x and v differ in shape"));
        }
        if self.comps.iter().all(|c| c.q.is_none()) {
            return Ok(self.hvp_axis_aligned(m, s, x, v));
        }
        let d = self.d;
        let kk = self.comps.len();
        let (var, lnorm) = self.eigen_variances(m, s);
        let mut score = vec![0.0; n * d];
        let mut hv = vec![0.0; n * d];
        const ROWS: usize = 64;
        score
            .par_chunks_mut(ROWS * d)
            .zip(hv.par_chunks_mut(ROWS * d))
            .zip(x.par_chunks(ROWS * d).zip(v.par_chunks(ROWS * d)))
            .for_each(|((scc, hrc), (xc, vc))| {
                let mut c = vec![0.0; d];
                let mut z = vec![0.0; d];
                let mut gk = vec![0.0; kk * d]; // component scores, original basis
                let mut pv = vec![0.0; kk * d]; // P_k v, original basis
                let mut lk = vec![0.0; kk];
                let mut tmp = vec![0.0; d];
                for (((sc, hr), xr), vr) in scc
                    .chunks_mut(d)
                    .zip(hrc.chunks_mut(d))
                    .zip(xc.chunks(d))
                    .zip(vc.chunks(d))
                {
                    for (k, comp) in self.comps.iter().enumerate() {
                        comp.whiten(m, xr, &mut c, &mut z);
                        let mut quad = 0.0;
                        for i in 0..d {
                            quad += z[i] * z[i] / var[k][i];
                            z[i] /= var[k][i];
                        }
                        lk[k] = lnorm[k] - 0.5 * quad;
                        let g = &mut gk[k * d..(k + 1) * d];
                        match &comp.q {
                            Some(q) => {
                                matvec(d, d, q, &z, &mut tmp);
                                for i in 0..d {
                                    g[i] = -tmp[i];
                                }
                                matvec_t(d, d, q, vr, &mut z);
                                for i in 0..d {
                                    z[i] /= var[k][i];
                                }
                                matvec(d, d, q, &z, &mut pv[k * d..(k + 1) * d]);
                            }
                            None => {
                                for i in 0..d {
                                    g[i] = -z[i];
                                    pv[k * d + i] = vr[i] / var[k][i];
                                }
                            }
                        }
                    }
                    let lse = log_sum_exp(&lk);
                    sc.iter_mut().for_each(|v| *v = 0.0);
                    hr.iter_mut().for_each(|v| *v = 0.0);
                    for k in 0..kk {
                        let r = (lk[k] - lse).exp();
                        if r == 0.0 {
                            continue;
                        }
                        let g = &gk[k * d..(k + 1) * d];
                        let gv: f64 = g.iter().zip(vr).map(|(a, b)| a * b).sum();
                        for i in 0..d {
                            sc[i] += r * g[i];
                            hr[i] += r * (g[i] * gv - pv[k * d + i]);
                        }
                    }
                    let gv: f64 = sc.iter().zip(vr).map(|(a, b)| a * b).sum();
                    for i in 0..d {
                        hr[i] -= sc[i] * gv;
                    }
                }
            });
        Ok((score, hv))
    }

    /// [`Self::score_hvp_diffused`] for axis-aligned components by dense products: with
    /// `A = 1/V`, `B = m mu / V` (`K x d`), responsibilities `R` and `C_k = g_k . v`
    /// (`C = v B^T - (x * v) A^T`), `H v = (R*C) B - x * ((R*C) A) - v * (R A) - g (g . v)`.
    fn hvp_axis_aligned(&self, m: f64, s: f64, x: &[f64], v: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        let kk = self.comps.len();
        let n = x.len() / d;
        let mut score = vec![0.0; n * d];
        let mut lr = vec![0.0; n * kk];
        self.eval_axis_aligned(m, s, x, Some(&mut score), Some(&mut lr));
        let mut a = vec![0.0; kk * d];
        let mut b = vec![0.0; kk * d];
        for (k, comp) in self.comps.iter().enumerate() {
            for i in 0..d {
                let var = m * m * comp.lam[i] + s * s;
                a[k * d + i] = 1.0 / var;
                b[k * d + i] = m * comp.mean[i] / var;
            }
        }
        let xv: Vec<f64> = x.iter().zip(v).map(|(p, q)| p * q).collect();
        let mut c = vec![0.0; n * kk];
        gemm_abt(&mut c, v, &b, (n, d, kk), 1.0, false);
        gemm_abt(&mut c, &xv, &a, (n, d, kk), -1.0, true);
        let r: Vec<f64> = lr.iter().map(|l| l.exp()).collect();
        let w: Vec<f64> = r.iter().zip(&c).map(|(p, q)| p * q).collect();
        let mut hv = vec![0.0; n * d];
        gemm_ab(&mut hv, &w, &b, (n, kk, d), 1.0, false);
        let mut wa = vec![0.0; n * d];
        gemm_ab(&mut wa, &w, &a, (n, kk, d), 1.0, false);
        let mut ra = vec![0.0; n * d];
        gemm_ab(&mut ra, &r, &a, (n, kk, d), 1.0, false);
        hv.par_chunks_mut(d)
            .zip(score.par_chunks(d))
            .zip(x.par_chunks(d).zip(v.par_chunks(d)))
            .zip(wa.par_chunks(d).zip(ra.par_chunks(d)))
            .for_each(|(((h, g), (xr, vr)), (war, rar))| {
                let gv: f64 = g.iter().zip(vr).map(|(p, q)| p * q).sum();
                for i in 0..d {
                    h[i] += -xr[i] * war[i] - vr[i] * rar[i] - g[i] * gv;
                }
            });
        (score, hv)
    }

    /// Log responsibilities `log P(component k | x)` (row-major `[n, K]`) under the law of
    /// `m x_0 + s eps`.
    pub fn log_responsibilities(&self, m: f64, s: f64, x: &[f64]) -> Result<Vec<f64>> {
        let n = self.check_rows(x)?;
        let mut r = vec![0.0; n * self.comps.len()];
        self.eval(m, s, x, None, Some(&mut r));
        Ok(r)
    }

    /// `n` exact samples (row-major `[n, d]`) and their component labels, from the streams
    /// `Purpose::Exact` of `noise` (indices `2 * index` and `2 * index + 1`).
    pub fn sample_labelled(&self, n: usize, noise: &Noise, index: u64) -> (Vec<f64>, Vec<usize>) {
        let d = self.d;
        let u = noise.uniforms(stream(Purpose::Exact, 2 * index), n);
        let z = noise.normals(stream(Purpose::Exact, 2 * index + 1), n, d);
        let w = self.weights();
        let mut x = vec![0.0; n * d];
        let mut labels = vec![0; n];
        let mut tmp = vec![0.0; d];
        for i in 0..n {
            let k = crate::smc::categorical(&w, u[i]);
            labels[i] = k;
            let c = &self.comps[k];
            let zi = &z[i * d..(i + 1) * d];
            let xi = &mut x[i * d..(i + 1) * d];
            for j in 0..d {
                tmp[j] = c.lam[j].sqrt() * zi[j];
            }
            match &c.q {
                Some(q) => matvec(d, d, q, &tmp, xi),
                None => xi.copy_from_slice(&tmp),
            }
            for j in 0..d {
                xi[j] += c.mean[j];
            }
        }
        (x, labels)
    }

    /// `n` exact samples (row-major `[n, d]`); see [`GaussianMixture::sample_labelled`].
    pub fn sample(&self, n: usize, noise: &Noise, index: u64) -> Vec<f64> {
        self.sample_labelled(n, noise, index).0
    }

    /// The benchmark prior of Cardoso et al. 2024 (MCGdiff; also Janati et al. 2024, DCPS) in dimension `dx >= 2`: 25 components with
    /// means `(8i, 8j, 8i, 8j, ...)` for `i, j in {-2..2}`, identity covariances and weights
    /// `w_k ∝ g_k^2`, `g_k ~ N(0, 1)` drawn from `noise` (stream `(Purpose::Exact, 1 << 40)`).
    pub fn grid25(dx: usize, noise: &Noise) -> Result<Self> {
        if dx < 2 {
            return Err(Error::invalid("grid25: need dimension >= 2"));
        }
        let g = noise.normals(stream(Purpose::Exact, 1 << 40), 25, 1);
        let mut means = Vec::with_capacity(25);
        for i in -2i32..=2 {
            for j in -2i32..=2 {
                means.push((0..dx).map(|c| 8.0 * if c % 2 == 0 { i } else { j } as f64).collect());
            }
        }
        let weights = g.iter().map(|v| v * v).collect();
        Self::new(weights, means, vec![Covariance::Scalar(1.0); 25])
    }

    /// The largest `|mu_k| + sqrt(lambda_max,k)` over components: a radius that holds most
    /// of the mass, used to choose horizons.
    pub fn radius(&self) -> f64 {
        self.comps
            .iter()
            .map(|c| {
                c.mean.iter().map(|v| v * v).sum::<f64>().sqrt() + c.lam.iter().cloned().fold(0.0, f64::max).sqrt()
            })
            .fold(0.0, f64::max)
    }
}

/// The exact score of a Gaussian-mixture data law diffused by a process.
#[derive(Clone, Debug)]
pub struct MixtureScore {
    law: Arc<GaussianMixture>,
    process: Process,
}

impl MixtureScore {
    /// The exact score of `law` under `process`.
    pub fn new(law: Arc<GaussianMixture>, process: Process) -> Self {
        MixtureScore { law, process }
    }

    /// The data law.
    pub fn law(&self) -> &GaussianMixture {
        &self.law
    }
}

/// Reads a `[n, d]` tensor as row-major f64.
pub(crate) fn tensor_rows(x: &Tensor, d: usize) -> Result<Vec<f64>> {
    let dims = x.dims();
    if dims.len() != 2 || dims[1] != d {
        return Err(Error::invalid(format!("expected a [n, {d}] tensor, got {dims:?}")));
    }
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

impl Score for MixtureScore {
    fn dim(&self) -> usize {
        self.law.d
    }

    fn process(&self) -> &Process {
        &self.process
    }

    fn score(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let v = tensor_rows(x, self.law.d)?;
        let g = self.law.score_diffused(self.process.m(t), self.process.s(t), &v)?;
        Ok(Tensor::from_vec(g, x.dims(), x.device())?.to_dtype(x.dtype())?)
    }

    fn rows_at(&self, t: f64) -> Option<Box<dyn RowScore + '_>> {
        Some(Box::new(self.law.rows(self.process.m(t), self.process.s(t))))
    }

    /// Exact: `x0_hat = (x + s^2 score) / m` and, the Jacobian being symmetric,
    /// `J^T v = (v + s^2 H v) / m` with the Hessian-vector product of the mixture.
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = self.law.d;
        let (xs, vs) = (tensor_rows(x, d)?, tensor_rows(v, d)?);
        let (m, s) = (self.process.m(t), self.process.s(t));
        let (sc, hv) = self.law.score_hvp_diffused(m, s, &xs, &vs)?;
        let s2 = s * s;
        let x0: Vec<f64> = xs.iter().zip(&sc).map(|(a, b)| (a + s2 * b) / m).collect();
        let jv: Vec<f64> = vs.iter().zip(&hv).map(|(a, b)| (a + s2 * b) / m).collect();
        let mk =
            |w: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(w, x.dims(), x.device())?.to_dtype(x.dtype())?) };
        Ok((mk(x0)?, mk(jv)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_mixture(d: usize, k: usize, seed: u64) -> GaussianMixture {
        let noise = Noise::new(seed);
        let z = noise.normals(stream(Purpose::User, 0), k, d);
        let a = noise.normals(stream(Purpose::User, 1), k * d, d);
        let u = noise.uniforms(stream(Purpose::User, 2), k);
        let means = (0..k)
            .map(|i| z[i * d..(i + 1) * d].iter().map(|v| 3.0 * v).collect())
            .collect();
        let covs = (0..k)
            .map(|i| {
                let ai = &a[i * d * d..(i + 1) * d * d];
                // A A^T / d + 0.2 I
                let mut c = vec![0.0; d * d];
                for r in 0..d {
                    for s in 0..d {
                        c[r * d + s] = (0..d).map(|l| ai[r * d + l] * ai[s * d + l]).sum::<f64>() / d as f64;
                    }
                    c[r * d + r] += 0.2;
                }
                Covariance::Full(c)
            })
            .collect();
        GaussianMixture::new(u.iter().map(|v| v + 0.1).collect(), means, covs).unwrap()
    }

    #[test]
    fn score_is_gradient_of_log_density_by_central_differences() {
        for (d, k) in [(1, 3), (2, 5), (10, 4), (100, 3)] {
            let law = random_mixture(d, k, d as u64);
            let p = Process::ou(2.0, 5.0);
            let noise = Noise::new(99);
            let ts = noise.uniforms(stream(Purpose::User, 5), 6);
            for (j, &u) in ts.iter().enumerate() {
                let t = 0.02 + 2.0 * u;
                let (m, s) = (p.m(t), p.s(t));
                let x0 = law.sample(3, &noise, j as u64);
                let e = noise.normals(stream(Purpose::User, 10 + j as u64), 3, d);
                let x: Vec<f64> = x0.iter().zip(&e).map(|(a, b)| m * a + s * b).collect();
                let g = law.score_diffused(m, s, &x).unwrap();
                let h = 1e-5;
                for row in 0..3 {
                    for i in (0..d).step_by((d / 7).max(1)) {
                        let mut xp = x[row * d..(row + 1) * d].to_vec();
                        let mut xm = xp.clone();
                        xp[i] += h;
                        xm[i] -= h;
                        let lp = law.log_prob_diffused(m, s, &xp).unwrap()[0];
                        let lm = law.log_prob_diffused(m, s, &xm).unwrap()[0];
                        let fd = (lp - lm) / (2.0 * h);
                        let an = g[row * d + i];
                        assert!(
                            (fd - an).abs() < 1e-5 * (1.0 + an.abs()),
                            "d={d} t={t} i={i}: fd {fd} vs {an}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_path_agrees_with_row_path_and_differences() {
        // Diagonal covariances take the dense-product path; compare with the row path.
        let noise = Noise::new(11);
        let (d, k) = (7, 6);
        let z = noise.normals(stream(Purpose::User, 0), k, d);
        let u = noise.uniforms(stream(Purpose::User, 1), k * d);
        let means: Vec<Vec<f64>> = (0..k)
            .map(|i| z[i * d..(i + 1) * d].iter().map(|v| 4.0 * v).collect())
            .collect();
        let covs: Vec<Covariance> = (0..k)
            .map(|i| Covariance::Diagonal(u[i * d..(i + 1) * d].iter().map(|v| 0.2 + v).collect()))
            .collect();
        let law = GaussianMixture::new((1..=k).map(|i| i as f64).collect(), means, covs).unwrap();
        let mut x = noise.normals(stream(Purpose::User, 2), 50, d);
        x.iter_mut().for_each(|v| *v *= 6.0);
        for (m, s) in [(1.0, 0.0), (0.7, 0.5), (0.05, 0.99)] {
            let (mut g1, mut g2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let (mut r1, mut r2) = (vec![0.0; 50 * k], vec![0.0; 50 * k]);
            let l1 = law.eval_axis_aligned(m, s, &x, Some(&mut g1), Some(&mut r1));
            let l2 = law.eval_rows(m, s, &x, Some(&mut g2), Some(&mut r2));
            for i in 0..l1.len() {
                assert!((l1[i] - l2[i]).abs() < 1e-9 * (1.0 + l2[i].abs()));
            }
            for i in 0..g1.len() {
                assert!(
                    (g1[i] - g2[i]).abs() < 1e-9 * (1.0 + g2[i].abs()),
                    "{} vs {}",
                    g1[i],
                    g2[i]
                );
            }
            for i in 0..r1.len() {
                assert!((r1[i].exp() - r2[i].exp()).abs() < 1e-9);
            }
            // And the dense path's score is the gradient of its log density.
            let h = 1e-6;
            for j in 0..d {
                let (mut xp, mut xm) = (x[..d].to_vec(), x[..d].to_vec());
                xp[j] += h;
                xm[j] -= h;
                let fd = (law.eval_axis_aligned(m, s, &xp, None, None)[0]
                    - law.eval_axis_aligned(m, s, &xm, None, None)[0])
                    / (2.0 * h);
                assert!((fd - g1[j]).abs() < 1e-5 * (1.0 + fd.abs()));
            }
        }
    }

    /// Largest `|a - b|` over its allowance `(1e-12 + 4 eps q) (|g| + (|x| + m |mu|) / v_min)`:
    /// 1e-12 of the size of the terms, plus f64's own limit for far points. With
    /// `q = (|x|_2 + m |mu|_2)^2 / v_min` bounding the Mahalanobis distances, the
    /// log-densities `-q/2 + ...` of a point are defined only to about `eps q` (the
    /// generic path normalises the responsibilities by `exp(l_k - lse)`, which carries that
    /// error into every `r_k`), so two correct evaluations differ by that much.
    fn scaled_err(law: &GaussianMixture, m: f64, s: f64, x: &[f64], a: &[f64], b: &[f64]) -> f64 {
        let d = law.dim();
        let vmin = law
            .comps
            .iter()
            .flat_map(|c| c.lam.iter().map(|l| m * m * l + s * s))
            .fold(f64::INFINITY, f64::min);
        let mu = law
            .comps
            .iter()
            .flat_map(|c| c.mean.iter())
            .fold(0.0f64, |acc, v| acc.max(v.abs()));
        let mut worst = 0.0f64;
        for r in 0..x.len() / d {
            let row = r * d..(r + 1) * d;
            let xn = x[row.clone()].iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
            let gn = b[row.clone()].iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
            let x2 = x[row.clone()].iter().map(|v| v * v).sum::<f64>().sqrt();
            let q = (x2 + m * mu * (d as f64).sqrt()).powi(2) / vmin;
            let allowed = (1e-12 + 4.0 * f64::EPSILON * q) * (gn + (xn + m * mu) / vmin);
            for i in row {
                worst = worst.max((a[i] - b[i]).abs() / allowed);
            }
        }
        worst
    }

    /// The per-row kernel against the generic row-by-row path (every covariance kind) and
    /// the dense-product path (axis-aligned ones), at points near the means, at moderate
    /// distances, and far from every mean (`|x| ~ 1e3 .. 1e7`, where only log-sum-exp
    /// keeps the responsibilities finite), to 1e-12 of the size of the terms (plus f64's
    /// own limit `eps q` for far points, see `scaled_err`).
    #[test]
    fn row_kernel_matches_generic_paths() {
        let noise = Noise::new(21);
        let (k, n) = (7, 60);
        for d in [1, 2, 9, 33] {
            let z = noise.normals(stream(Purpose::User, d as u64), k, d);
            let u = noise.uniforms(stream(Purpose::User, 100 + d as u64), k * d);
            let means: Vec<Vec<f64>> = (0..k)
                .map(|i| z[i * d..(i + 1) * d].iter().map(|v| 4.0 * v).collect())
                .collect();
            let w: Vec<f64> = (1..=k).map(|i| i as f64).collect();
            let laws = [
                (
                    "isotropic",
                    GaussianMixture::new(
                        w.clone(),
                        means.clone(),
                        (0..k).map(|i| Covariance::Scalar(0.3 + u[i])).collect(),
                    )
                    .unwrap(),
                ),
                (
                    "equal isotropic",
                    GaussianMixture::new(w.clone(), means.clone(), vec![Covariance::Scalar(1.0); k]).unwrap(),
                ),
                (
                    "diagonal",
                    GaussianMixture::new(
                        w.clone(),
                        means.clone(),
                        (0..k)
                            .map(|i| Covariance::Diagonal(u[i * d..(i + 1) * d].iter().map(|v| 0.2 + v).collect()))
                            .collect(),
                    )
                    .unwrap(),
                ),
                ("full", random_mixture(d, k, 40 + d as u64)),
            ];
            for (kind, law) in &laws {
                let e = noise.normals(stream(Purpose::User, 200 + d as u64), n, d);
                for (m, s) in [(1.0, 0.0), (0.7, 0.5), (0.05, 0.99)] {
                    for scale in [0.5, 5.0, 1e3, 1e7] {
                        let x: Vec<f64> = e.iter().map(|v| scale * v).collect();
                        let fast = law.score_diffused(m, s, &x).unwrap();
                        assert!(fast.iter().all(|v| v.is_finite()), "{kind} d={d}: not finite");
                        let mut rows = vec![0.0; x.len()];
                        law.eval_rows(m, s, &x, Some(&mut rows), None);
                        let err = scaled_err(law, m, s, &x, &fast, &rows);
                        assert!(
                            err <= 1.0,
                            "{kind} d={d} m={m} scale={scale}: {err} x allowed vs the row path"
                        );
                        if law.comps.iter().all(|c| c.q.is_none()) && scale <= 5.0 {
                            let dense = law.score_diffused_reference(m, s, &x).unwrap();
                            let err = scaled_err(law, m, s, &x, &fast, &dense);
                            assert!(err <= 1.0, "{kind} d={d} m={m} scale={scale}: {err} x allowed vs dense");
                        }
                    }
                }
                // Block boundaries do not matter: one row at a time gives the same bits.
                let x: Vec<f64> = e.iter().map(|v| 3.0 * v).collect();
                let all = law.score_diffused(0.7, 0.5, &x).unwrap();
                let kern = law.rows(0.7, 0.5);
                let mut one = vec![0.0; d];
                for r in 0..n {
                    kern.score_rows(&x[r * d..(r + 1) * d], &mut one);
                    assert_eq!(&all[r * d..(r + 1) * d], &one[..], "{kind} d={d} row {r}");
                }
            }
        }
    }

    #[test]
    fn far_away_points_are_finite() {
        let law = random_mixture(5, 4, 3);
        let x = vec![1e6, -1e6, 3e5, 0.0, 1e7];
        let g = law.score_diffused(0.5, 0.8, &x).unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
        let r = law.log_responsibilities(0.5, 0.8, &x).unwrap();
        assert!((log_sum_exp(&r) - 0.0).abs() < 1e-9);
        // The dense-product path for axis-aligned components too.
        let iso = GaussianMixture::grid25(5, &Noise::new(0)).unwrap();
        let g = iso.score_diffused(0.5, 0.8, &x).unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
        // Far away the score is the pull of the nearest-in-Mahalanobis component, -x/v roughly.
        let v = 0.25 + 0.64;
        assert!((g[0] - (-1e6 / v)).abs() < 1e-3 * 1e6 / v, "{}", g[0]);
    }

    #[test]
    fn gaussian_score_is_affine_and_samples_have_right_moments() {
        let cov = vec![2.0, 0.6, 0.6, 1.0];
        let law = GaussianMixture::gaussian(vec![1.0, -2.0], Covariance::Full(cov.clone())).unwrap();
        let x = [0.3, 0.4];
        let g = law.score_diffused(1.0, 0.0, &x).unwrap();
        // -Sigma^{-1}(x - mu)
        let det = 2.0 - 0.36;
        let (a, b) = (x[0] - 1.0, x[1] + 2.0);
        let e = [-(1.0 * a - 0.6 * b) / det, -(-0.6 * a + 2.0 * b) / det];
        assert!((g[0] - e[0]).abs() < 1e-12 && (g[1] - e[1]).abs() < 1e-12);
        let n = 100_000;
        let s = law.sample(n, &Noise::new(4), 0);
        let m0 = s.iter().step_by(2).sum::<f64>() / n as f64;
        let c01 = s.chunks(2).map(|r| (r[0] - 1.0) * (r[1] + 2.0)).sum::<f64>() / n as f64;
        assert!((m0 - 1.0).abs() < 5.0 * (2.0f64 / n as f64).sqrt());
        assert!((c01 - 0.6).abs() < 5.0 * ((2.0 + 0.36) / n as f64).sqrt());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 2.0, 2.0, 1.0])).is_err());
        assert!(GaussianMixture::gaussian(vec![f64::NAN], Covariance::Scalar(1.0)).is_err());
        assert!(GaussianMixture::new(
            vec![1.0, -1.0],
            vec![vec![0.0], vec![1.0]],
            vec![Covariance::Scalar(1.0); 2]
        )
        .is_err());
        assert!(GaussianMixture::new(vec![1.0], vec![vec![0.0, 1.0]], vec![Covariance::Diagonal(vec![1.0])]).is_err());
    }

    /// The Hessian-vector product and the denoiser's vector–Jacobian product against central
    /// differences of the exact score (full and axis-aligned mixtures, d = 1, 3, 10).
    #[test]
    fn hvp_and_denoise_vjp_match_differences() {
        use crate::process::Process;
        for (d, k, axis) in [(1, 2, false), (3, 3, false), (10, 4, false), (10, 25, true)] {
            let law = if axis {
                GaussianMixture::grid25(d, &Noise::new(2)).unwrap()
            } else {
                random_mixture(d, k, 7 + d as u64)
            };
            let noise = Noise::new(3);
            let x = noise.normals(stream(Purpose::User, 10), 3, d);
            let v = noise.normals(stream(Purpose::User, 11), 3, d);
            let (m, s) = (0.7, 0.9);
            let x: Vec<f64> = x.iter().map(|a| 2.0 * a).collect();
            let (sc, hv) = law.score_hvp_diffused(m, s, &x, &v).unwrap();
            let sc0 = law.score_diffused(m, s, &x).unwrap();
            let h = 1e-5;
            let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + h * b).collect();
            let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - h * b).collect();
            let (gp, gm) = (
                law.score_diffused(m, s, &xp).unwrap(),
                law.score_diffused(m, s, &xm).unwrap(),
            );
            for i in 0..x.len() {
                assert!((sc[i] - sc0[i]).abs() < 1e-10 * (1.0 + sc0[i].abs()));
                let fd = (gp[i] - gm[i]) / (2.0 * h);
                assert!(
                    (hv[i] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "d={d} i={i}: {} vs {fd}",
                    hv[i]
                );
            }
            // The denoiser's VJP through the trait.
            let p = Process::ou(2.0, 5.0);
            let t = 0.4;
            let score = MixtureScore::new(Arc::new(law), p.clone());
            let dev = candle_core::Device::Cpu;
            let xt = Tensor::from_vec(x.clone(), (3, d), &dev).unwrap();
            let vt = Tensor::from_vec(v.clone(), (3, d), &dev).unwrap();
            let (_, jv) = score.denoise_vjp(t, &xt, &vt).unwrap();
            let jv: Vec<f64> = jv.flatten_all().unwrap().to_vec1().unwrap();
            let den = |z: &[f64]| -> Vec<f64> {
                let zt = Tensor::from_vec(z.to_vec(), (3, d), &dev).unwrap();
                score.denoise(t, &zt).unwrap().flatten_all().unwrap().to_vec1().unwrap()
            };
            // J symmetric: J^T v = J v = directional derivative along v.
            let (dp, dm) = (den(&xp), den(&xm));
            for i in 0..x.len() {
                let fd = (dp[i] - dm[i]) / (2.0 * h);
                assert!(
                    (jv[i] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "vjp d={d} i={i}: {} vs {fd}",
                    jv[i]
                );
            }
        }
    }
}
