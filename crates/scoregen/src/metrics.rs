//! Distances between sample sets and from samples to known laws.
//!
//! Every metric takes `[n, d]` tensors (any float dtype, any device), computes in f64 on the
//! host, and validates its input: a rank other than 2, mismatched dimensions, too few rows,
//! or a NaN / infinite value is an [`Error::InvalidInput`].
//!
//! * [`sliced_wasserstein`]: mean over random unit directions of the exact 1-D Wasserstein-p
//!   distance between projections (the metric of Cardoso et al. 2024 with
//!   [`SlicedOptions::default`]);
//! * [`wasserstein_1d`]: exact 1-D Wasserstein-p between empirical measures of any sizes;
//! * [`energy_distance`] and [`mmd_rbf`]: unbiased two-sample statistics;
//! * [`gaussian_w2`]: closed-form W2 between Gaussians; [`moments`], [`moment_errors`];
//! * [`mixture_weight_error`]: the mixture-weight error of Cardoso et al. 2024 against a
//!   known mixture;
//! * [`compare`]: all of the above at once, as a serialisable [`Comparison`].
//!
//! The only randomness (the directions of the sliced distance) comes from
//! [`Noise`] stream `stream(Purpose::Metric, 0)`, so every metric is a deterministic
//! function of its inputs and seed; parallel sums are reduced in a fixed order, so results
//! do not depend on the number of threads.

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::to_rows;
use crate::linalg::sym_eigen;
use crate::rng::{stream, Noise, Purpose};
use crate::score::GaussianMixture;
use crate::{Error, Result};

/// A validated `[n, d]` point set, row-major f64.
struct Points {
    v: Vec<f64>,
    n: usize,
    d: usize,
}

impl Points {
    fn row(&self, i: usize) -> &[f64] {
        &self.v[i * self.d..(i + 1) * self.d]
    }
}

/// Reads `x` as a `[n, d]` set with `n >= min_rows`, `d >= 1` and finite entries.
fn points(x: &Tensor, what: &str, min_rows: usize) -> Result<Points> {
    let dims = x.dims();
    if dims.len() != 2 {
        return Err(Error::invalid(format!(
            "{what}: expected a [n, d] tensor, got shape {dims:?}"
        )));
    }
    let (n, d) = (dims[0], dims[1]);
    if d == 0 {
        return Err(Error::invalid(format!("{what}: points have dimension 0")));
    }
    if n < min_rows {
        return Err(Error::invalid(format!(
            "{what}: needs at least {min_rows} points, got {n}"
        )));
    }
    let v = to_rows(x)?.0;
    check_finite(&v, what)?;
    Ok(Points { v, n, d })
}

fn check_finite(v: &[f64], what: &str) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}: contains NaN or infinite values (first at flat index {i})"
        )));
    }
    Ok(())
}

/// Reads two sets that must share their dimension.
fn pair(a: &Tensor, b: &Tensor, min_rows: usize) -> Result<(Points, Points)> {
    let pa = points(a, "first sample", min_rows)?;
    let pb = points(b, "second sample", min_rows)?;
    if pa.d != pb.d {
        return Err(Error::invalid(format!(
            "samples have different dimensions: {} and {}",
            pa.d, pb.d
        )));
    }
    Ok((pa, pb))
}

fn sq_dist(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Options of [`sliced_wasserstein`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SlicedOptions {
    /// Number of random unit directions (default 100).
    pub directions: usize,
    /// The order `p` of the 1-D Wasserstein distance: 1 or 2 (default 1).
    pub p: u32,
    /// Seed of the directions (default 0).
    pub seed: u64,
}

impl Default for SlicedOptions {
    /// The convention of Cardoso et al. 2024: 100 directions, W1, seed 0.
    fn default() -> Self {
        SlicedOptions {
            directions: 100,
            p: 1,
            seed: 0,
        }
    }
}

fn check_p(p: u32) -> Result<()> {
    if p == 1 || p == 2 {
        Ok(())
    } else {
        Err(Error::invalid(format!("Wasserstein order p must be 1 or 2, got {p}")))
    }
}

/// `k` unit directions in `R^d`: normalised standard normals of stream
/// `stream(Purpose::Metric, 0)` of `Noise::new(seed)` (so uniform on the sphere, and the
/// first `k` directions do not depend on how many more are drawn).
fn unit_directions(d: usize, k: usize, seed: u64) -> Vec<f64> {
    let mut u = Noise::new(seed).normals(stream(Purpose::Metric, 0), k, d);
    for row in u.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        } else {
            // Probability ~2^-53 per direction; any fixed unit vector keeps it well-defined.
            row[0] = 1.0;
        }
    }
    u
}

/// `W_p(a, b)^p` for sorted `a`, `b` (non-empty, finite): the integral over `t in (0, 1)` of
/// `|F_a^{-1}(t) - F_b^{-1}(t)|^p`, exactly, over the merged breakpoints `i / n`, `j / m`
/// (kept as integers `i m`, `j n` over the common denominator `n m`).
fn wp_pow_sorted(a: &[f64], b: &[f64], p: u32) -> f64 {
    let (n, m) = (a.len() as u128, b.len() as u128);
    let (mut i, mut j) = (0usize, 0usize);
    let mut cur: u128 = 0;
    let mut acc = 0.0;
    while i < a.len() && j < b.len() {
        let na = (i as u128 + 1) * m;
        let nb = (j as u128 + 1) * n;
        let next = na.min(nb);
        let diff = (a[i] - b[j]).abs();
        let cost = if p == 1 { diff } else { diff * diff };
        acc += (next - cur) as f64 * cost;
        cur = next;
        if na == next {
            i += 1;
        }
        if nb == next {
            j += 1;
        }
    }
    acc / (n * m) as f64
}

fn sort(v: &mut [f64]) {
    v.sort_unstable_by(|x, y| x.total_cmp(y));
}

/// Exact 1-D Wasserstein-`p` distance (`p` = 1 or 2) between the empirical measures of `a`
/// and `b` (any order, possibly different sizes): `(int_0^1 |F_a^{-1}(t) - F_b^{-1}(t)|^p dt)^{1/p}`,
/// integrated exactly over the merged breakpoints of the two quantile functions.
///
/// Fails on an empty input, a NaN or infinite value, or `p` other than 1 or 2.
pub fn wasserstein_1d(a: &[f64], b: &[f64], p: u32) -> Result<f64> {
    check_p(p)?;
    if a.is_empty() || b.is_empty() {
        return Err(Error::invalid(format!(
            "wasserstein_1d: needs non-empty samples, got sizes {} and {}",
            a.len(),
            b.len()
        )));
    }
    check_finite(a, "wasserstein_1d: first sample")?;
    check_finite(b, "wasserstein_1d: second sample")?;
    let mut sa = a.to_vec();
    let mut sb = b.to_vec();
    sort(&mut sa);
    sort(&mut sb);
    let w = wp_pow_sorted(&sa, &sb, p);
    Ok(if p == 1 { w } else { w.sqrt() })
}

/// Sliced Wasserstein distance between the rows of `a` (`[n, d]`) and `b` (`[m, d]`): the
/// mean over `opts.directions` random unit directions `u` of the exact 1-D
/// `W_p(<a, u>, <b, u>)` ([`wasserstein_1d`], so `n != m` is fine).
///
/// For `p = 2` this is the **mean of the per-direction W2** (the square root is taken per
/// direction, then averaged), not the square root of the mean of `W2^2`.
///
/// The directions are normalised standard normals from `Noise::new(opts.seed)`, stream
/// `stream(Purpose::Metric, 0)`: the same for every call with the same seed and `d`. With
/// [`SlicedOptions::default`] this is the metric of Cardoso et al. 2024 (100 directions, W1). Identical sets
/// give exactly 0.
pub fn sliced_wasserstein(a: &Tensor, b: &Tensor, opts: &SlicedOptions) -> Result<f64> {
    check_p(opts.p)?;
    if opts.directions == 0 {
        return Err(Error::invalid(
            "sliced Wasserstein: the number of directions must be at least 1",
        ));
    }
    let (pa, pb) = pair(a, b, 1)?;
    Ok(sliced_of(&pa, &pb, opts))
}

fn sliced_of(pa: &Points, pb: &Points, opts: &SlicedOptions) -> f64 {
    let d = pa.d;
    let dirs = unit_directions(d, opts.directions, opts.seed);
    let project = |pts: &Points, u: &[f64]| -> Vec<f64> {
        let mut v: Vec<f64> = pts
            .v
            .chunks(d)
            .map(|r| r.iter().zip(u).map(|(x, y)| x * y).sum())
            .collect();
        sort(&mut v);
        v
    };
    let per_dir: Vec<f64> = dirs
        .par_chunks(d)
        .map(|u| {
            let w = wp_pow_sorted(&project(pa, u), &project(pb, u), opts.p);
            if opts.p == 1 {
                w
            } else {
                w.sqrt()
            }
        })
        .collect();
    per_dir.iter().sum::<f64>() / opts.directions as f64
}

/// Sums of Euclidean distances: (over all `n m` cross pairs, over pairs `i < j` of `a`,
/// over pairs `i < j` of `b`), each reduced in a fixed order.
fn distance_sums(a: &Points, b: &Points) -> (f64, f64, f64) {
    let cross: Vec<f64> = (0..a.n)
        .into_par_iter()
        .map(|i| {
            let x = a.row(i);
            (0..b.n).map(|j| sq_dist(x, b.row(j)).sqrt()).sum()
        })
        .collect();
    let within = |p: &Points| -> f64 {
        let rows: Vec<f64> = (0..p.n)
            .into_par_iter()
            .map(|i| {
                let x = p.row(i);
                (i + 1..p.n).map(|j| sq_dist(x, p.row(j)).sqrt()).sum()
            })
            .collect();
        rows.iter().sum()
    };
    (cross.iter().sum(), within(a), within(b))
}

/// Energy distance `2 E|X - Y| - E|X - X'| - E|Y - Y'|` between the rows of `a` (`[n, d]`)
/// and `b` (`[m, d]`), Euclidean norm.
///
/// The cross term is the mean over all `n m` pairs; the within terms are **U-statistics**
/// (means over pairs `i != j`), so the estimate is unbiased for the population energy
/// distance, which is `>= 0` and zero only for equal laws. The estimate itself can be
/// slightly negative: for `a = b` it is `-2 E|X - X'| / n`
/// (with `E|X - X'|` the mean over pairs `i != j`).
/// Needs `n, m >= 2`. Cost `O((n + m)^2 d)`, parallel over rows.
pub fn energy_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (pa, pb) = pair(a, b, 2)?;
    Ok(energy_of(&pa, &pb))
}

fn energy_of(pa: &Points, pb: &Points) -> f64 {
    let (cross, wa, wb) = distance_sums(pa, pb);
    let (n, m) = (pa.n as f64, pb.n as f64);
    2.0 * cross / (n * m) - 2.0 * wa / (n * (n - 1.0)) - 2.0 * wb / (m * (m - 1.0))
}

/// The result of [`mmd_rbf`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MmdResult {
    /// The unbiased estimate of `MMD^2` (can be slightly negative).
    pub mmd2_unbiased: f64,
    /// The kernel bandwidth `h` used (given or from the median heuristic).
    pub bandwidth: f64,
}

/// Pooled points used by the median heuristic: the first 500 rows of each sample.
const MEDIAN_ROWS: usize = 500;

/// Median heuristic: the median of the pairwise Euclidean distances among the first 500
/// rows of `a` and the first 500 of `b` pooled. Falls back to the mean pairwise distance if
/// the median is 0, and to 1 if all pooled points coincide (then every bandwidth gives the
/// same kernel values on them).
fn median_bandwidth(a: &Points, b: &Points) -> f64 {
    let mut pool: Vec<&[f64]> = (0..a.n.min(MEDIAN_ROWS)).map(|i| a.row(i)).collect();
    pool.extend((0..b.n.min(MEDIAN_ROWS)).map(|i| b.row(i)));
    let np = pool.len();
    let mut dist: Vec<f64> = (0..np)
        .into_par_iter()
        .flat_map_iter(|i| {
            let pool = &pool;
            (i + 1..np).map(move |j| sq_dist(pool[i], pool[j]).sqrt())
        })
        .collect();
    let len = dist.len();
    if len == 0 {
        return 1.0;
    }
    let mid = len / 2;
    let (lower, &mut hi, _) = dist.select_nth_unstable_by(mid, |x, y| x.total_cmp(y));
    let med = if len % 2 == 1 {
        hi
    } else {
        let lo = lower.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lo + hi)
    };
    if med > 0.0 {
        return med;
    }
    let mean = dist.iter().sum::<f64>() / len as f64;
    if mean > 0.0 {
        mean
    } else {
        1.0
    }
}

/// Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) between the rows
/// of `a` (`[n, d]`) and `b` (`[m, d]`) with the RBF kernel
/// `k(x, y) = exp(-|x - y|^2 / (2 h^2))`:
///
/// `MMD_u^2 = sum_{i != j} k(a_i, a_j) / (n (n-1)) + sum_{i != j} k(b_i, b_j) / (m (m-1))
///  - 2 sum_{i, j} k(a_i, b_j) / (n m)`.
///
/// With `bandwidth = None`, `h` is the median heuristic: the median pairwise distance of the
/// pooled first 500 rows of each sample (deterministic; mean distance if that median is 0).
/// Needs `n, m >= 2` and a finite positive bandwidth when one is given. Cost
/// `O((n + m)^2 d)`, parallel over rows.
pub fn mmd_rbf(a: &Tensor, b: &Tensor, bandwidth: Option<f64>) -> Result<MmdResult> {
    if let Some(h) = bandwidth {
        if !(h.is_finite() && h > 0.0) {
            return Err(Error::invalid(format!(
                "MMD: bandwidth must be finite and positive, got {h}"
            )));
        }
    }
    let (pa, pb) = pair(a, b, 2)?;
    Ok(mmd_of(&pa, &pb, bandwidth))
}

fn mmd_of(pa: &Points, pb: &Points, bandwidth: Option<f64>) -> MmdResult {
    let h = match bandwidth {
        Some(h) => h,
        None => median_bandwidth(pa, pb),
    };
    let g = -0.5 / (h * h);
    let cross: Vec<f64> = (0..pa.n)
        .into_par_iter()
        .map(|i| {
            let x = pa.row(i);
            (0..pb.n).map(|j| (g * sq_dist(x, pb.row(j))).exp()).sum()
        })
        .collect();
    let within = |p: &Points| -> f64 {
        let rows: Vec<f64> = (0..p.n)
            .into_par_iter()
            .map(|i| {
                let x = p.row(i);
                (i + 1..p.n).map(|j| (g * sq_dist(x, p.row(j))).exp()).sum()
            })
            .collect();
        // Pairs i < j, counted twice for i != j.
        2.0 * rows.iter().sum::<f64>()
    };
    let (n, m) = (pa.n as f64, pb.n as f64);
    let mmd2 = within(pa) / (n * (n - 1.0)) + within(pb) / (m * (m - 1.0)) - 2.0 * cross.iter().sum::<f64>() / (n * m);
    MmdResult {
        mmd2_unbiased: mmd2,
        bandwidth: h,
    }
}

/// Symmetric part of a row-major `d x d` matrix after checking its size, finiteness,
/// symmetry (relative 1e-8) and positive semi-definiteness (eigenvalues `>= -1e-8` times
/// the largest in magnitude); returns the eigen-decomposition with negative eigenvalues
/// clamped to 0.
fn psd_eigen(d: usize, s: &[f64], what: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    if s.len() != d * d {
        return Err(Error::invalid(format!(
            "{what}: expected a {d}x{d} matrix ({} entries), got {}",
            d * d,
            s.len()
        )));
    }
    check_finite(s, what)?;
    let scale = s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..d {
        for j in 0..i {
            if (s[i * d + j] - s[j * d + i]).abs() > 1e-8 * scale {
                return Err(Error::invalid(format!("{what}: not symmetric (entry {i},{j})")));
            }
        }
    }
    let (mut lam, q) = sym_eigen(d, s)?;
    let lmax = lam.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if lam.iter().any(|&l| l < -1e-8 * lmax) {
        return Err(Error::invalid(format!("{what}: not positive semi-definite")));
    }
    lam.iter_mut().for_each(|l| *l = l.max(0.0));
    Ok((lam, q))
}

/// Closed-form 2-Wasserstein distance between `N(mean1, cov1)` and `N(mean2, cov2)` in
/// `R^d` (covariances row-major `d x d`, symmetric positive semi-definite):
///
/// `W2^2 = |m1 - m2|^2 + tr(S1 + S2 - 2 (S2^{1/2} S1 S2^{1/2})^{1/2})`; returns `W2`.
///
/// Matrix square roots come from symmetric eigen-decompositions with tiny negative
/// eigenvalues (round-off) clamped to 0. For (nearly) equal covariances the trace term
/// cancels to round-off, so the result has an absolute floor of about
/// `sqrt(1e-15 tr S)`.
pub fn gaussian_w2(mean1: &[f64], cov1: &[f64], mean2: &[f64], cov2: &[f64], d: usize) -> Result<f64> {
    if d == 0 {
        return Err(Error::invalid("gaussian_w2: dimension 0"));
    }
    if mean1.len() != d || mean2.len() != d {
        return Err(Error::invalid(format!(
            "gaussian_w2: means must have length {d}, got {} and {}",
            mean1.len(),
            mean2.len()
        )));
    }
    check_finite(mean1, "gaussian_w2: first mean")?;
    check_finite(mean2, "gaussian_w2: second mean")?;
    psd_eigen(d, cov1, "gaussian_w2: first covariance")?;
    let (l2, q2) = psd_eigen(d, cov2, "gaussian_w2: second covariance")?;
    // R = S2^{1/2} = Q diag(sqrt l) Q^T.
    let mut r = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            r[i * d + j] = (0..d).map(|k| q2[i * d + k] * l2[k].sqrt() * q2[j * d + k]).sum();
        }
    }
    let rs1 = matmul(d, &r, cov1);
    let m = matmul(d, &rs1, &r);
    let (mu, _) = sym_eigen(d, &m)?;
    let tr_sqrt: f64 = mu.iter().map(|v| v.max(0.0).sqrt()).sum();
    let tr1: f64 = (0..d).map(|i| cov1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| cov2[i * d + i]).sum();
    let dm2 = sq_dist(mean1, mean2);
    Ok((dm2 + tr1 + tr2 - 2.0 * tr_sqrt).max(0.0).sqrt())
}

/// Row-major `d x d` product `A B`, parallel over rows.
fn matmul(d: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    c.par_chunks_mut(d).enumerate().for_each(|(i, ci)| {
        for k in 0..d {
            let aik = a[i * d + k];
            for (cij, bkj) in ci.iter_mut().zip(&b[k * d..(k + 1) * d]) {
                *cij += aik * bkj;
            }
        }
    });
    c
}

fn moments_of(p: &Points) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (p.n, p.d);
    let mut mean = vec![0.0; d];
    for row in p.v.chunks(d) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Centred columns, contiguous per coordinate.
    let mut ct = vec![0.0; d * n];
    for (r, row) in p.v.chunks(d).enumerate() {
        for k in 0..d {
            ct[k * n + r] = row[k] - mean[k];
        }
    }
    let mut cov = vec![0.0; d * d];
    cov.par_chunks_mut(d).enumerate().for_each(|(i, ci)| {
        let xi = &ct[i * n..(i + 1) * n];
        for (j, cij) in ci.iter_mut().enumerate().skip(i) {
            let xj = &ct[j * n..(j + 1) * n];
            *cij = xi.iter().zip(xj).map(|(a, b)| a * b).sum::<f64>() / (n as f64 - 1.0);
        }
    });
    for i in 0..d {
        for j in 0..i {
            cov[i * d + j] = cov[j * d + i];
        }
    }
    (mean, cov)
}

/// Sample mean and unbiased (divisor `n - 1`) covariance, row-major `d x d`, of the rows of
/// `x` (`[n, d]`, `n >= 2`).
pub fn moments(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = points(x, "moments", 2)?;
    Ok(moments_of(&p))
}

/// Errors of a sample's first two moments against reference ones (see [`moment_errors`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MomentErrors {
    /// Euclidean norm of the difference of the means.
    pub mean_err: f64,
    /// Frobenius norm of the difference of the covariances.
    pub cov_err: f64,
    /// `cov_err` divided by the Frobenius norm of the reference covariance (0 if both are
    /// 0, infinite if only the reference is 0).
    pub cov_rel: f64,
}

fn moment_errors_of(mean: &[f64], cov: &[f64], ref_mean: &[f64], ref_cov: &[f64]) -> MomentErrors {
    let mean_err = sq_dist(mean, ref_mean).sqrt();
    let cov_err = sq_dist(cov, ref_cov).sqrt();
    let ref_norm = ref_cov.iter().map(|v| v * v).sum::<f64>().sqrt();
    let cov_rel = if ref_norm > 0.0 {
        cov_err / ref_norm
    } else if cov_err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    MomentErrors {
        mean_err,
        cov_err,
        cov_rel,
    }
}

/// Moment errors of the rows of `a` (`[n, d]`, `n >= 2`; unbiased covariance, see
/// [`moments`]) against a reference mean (length `d`) and covariance (row-major `d x d`).
pub fn moment_errors(a: &Tensor, ref_mean: &[f64], ref_cov: &[f64]) -> Result<MomentErrors> {
    let p = points(a, "moment_errors: sample", 2)?;
    let d = p.d;
    if ref_mean.len() != d || ref_cov.len() != d * d {
        return Err(Error::invalid(format!(
            "moment_errors: reference mean and covariance must have {d} and {} entries, got {} and {}",
            d * d,
            ref_mean.len(),
            ref_cov.len()
        )));
    }
    check_finite(ref_mean, "moment_errors: reference mean")?;
    check_finite(ref_cov, "moment_errors: reference covariance")?;
    let (mean, cov) = moments_of(&p);
    Ok(moment_errors_of(&mean, &cov, ref_mean, ref_cov))
}

fn mixture_weight_error_of(p: &Points, law: &GaussianMixture) -> Result<f64> {
    if p.d != law.dim() {
        return Err(Error::invalid(format!(
            "mixture weight error: samples have dimension {}, the mixture {}",
            p.d,
            law.dim()
        )));
    }
    let kk = law.n_components();
    let lr = law.log_responsibilities(1.0, 0.0, &p.v)?;
    let mut counts = vec![0usize; kk];
    for row in lr.chunks(kk) {
        // Most responsible component; ties go to the lowest index.
        let mut best = 0;
        for k in 1..kk {
            if row[k] > row[best] {
                best = k;
            }
        }
        counts[best] += 1;
    }
    let n = p.n as f64;
    Ok(law
        .weights()
        .iter()
        .zip(&counts)
        .map(|(w, &c)| (w - c as f64 / n).abs())
        .sum())
}

/// The mixture-weight error of Cardoso et al. 2024: the L1 distance between the mixture's weights and the
/// shares of the rows of `samples` (`[n, d]`, `n >= 1`) whose most responsible component
/// (largest `log_responsibilities(1, 0, x)`, ties to the lowest index) is `k`. In `[0, 2]`.
pub fn mixture_weight_error(samples: &Tensor, law: &GaussianMixture) -> Result<f64> {
    let p = points(samples, "mixture weight error: samples", 1)?;
    mixture_weight_error_of(&p, law)
}

/// All metrics of a sample set against a reference set (see [`compare`]); serialises to
/// JSON with these field names, and [`Comparison::rows`] lists them for a table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Rows of the sample set.
    pub n_samples: usize,
    /// Rows of the reference set.
    pub n_reference: usize,
    /// Dimension.
    pub dim: usize,
    /// Sliced W1 with [`SlicedOptions::default`] (the metric of Cardoso et al. 2024).
    pub sw1: f64,
    /// Sliced W2 (mean of per-direction W2) with the default directions.
    pub sw2: f64,
    /// Energy distance (U-statistic, [`energy_distance`]).
    pub energy_distance: f64,
    /// Unbiased `MMD^2` with the median-heuristic RBF bandwidth ([`mmd_rbf`]).
    pub mmd2_unbiased: f64,
    /// The bandwidth used for `mmd2_unbiased`.
    pub mmd_bandwidth: f64,
    /// Norm of the difference of the sample means.
    pub mean_err: f64,
    /// Frobenius norm of the difference of the sample covariances.
    pub cov_err: f64,
    /// `cov_err` relative to the reference covariance's Frobenius norm.
    pub cov_rel: f64,
    /// Closed-form W2 between the Gaussians fitted to the two sets ([`gaussian_w2`]).
    pub gaussian_w2: f64,
    /// Mixture-weight error of the samples against the law, when one was given.
    pub mixture_weight_err: Option<f64>,
}

impl Comparison {
    /// `(name, value)` pairs of the metrics for printing a table (names as in the JSON;
    /// the mixture-weight error only when present; the counts are left out).
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        let mut r = vec![
            ("sw1", self.sw1),
            ("sw2", self.sw2),
            ("energy_distance", self.energy_distance),
            ("mmd2_unbiased", self.mmd2_unbiased),
            ("mmd_bandwidth", self.mmd_bandwidth),
            ("mean_err", self.mean_err),
            ("cov_err", self.cov_err),
            ("cov_rel", self.cov_rel),
            ("gaussian_w2", self.gaussian_w2),
        ];
        if let Some(e) = self.mixture_weight_err {
            r.push(("mixture_weight_err", e));
        }
        r
    }
}

/// Every metric of `samples` (`[n, d]`) against `reference` (`[m, d]`), `n, m >= 2`: sliced
/// W1 and W2 with the default directions, energy distance, unbiased MMD^2 with the median
/// heuristic, moment errors against the reference's sample moments, the Gaussian W2 between
/// the two fitted Gaussians, and, given `law`, the mixture-weight error of `samples`.
pub fn compare(samples: &Tensor, reference: &Tensor, law: Option<&GaussianMixture>) -> Result<Comparison> {
    compare_with(samples, reference, law, &SlicedOptions::default())
}

/// [`compare`] with the sliced distances computed with `sliced`'s directions and seed (its
/// `p` is ignored: `sw1` uses 1, `sw2` uses 2).
pub fn compare_with(
    samples: &Tensor,
    reference: &Tensor,
    law: Option<&GaussianMixture>,
    sliced: &SlicedOptions,
) -> Result<Comparison> {
    if sliced.directions == 0 {
        return Err(Error::invalid("sliced Wasserstein: need at least one direction"));
    }
    let (ps, pr) = pair(samples, reference, 2)?;
    let d = ps.d;
    let mixture_weight_err = match law {
        Some(l) => Some(mixture_weight_error_of(&ps, l)?),
        None => None,
    };
    let sw1 = sliced_of(&ps, &pr, &SlicedOptions { p: 1, ..*sliced });
    let sw2 = sliced_of(&ps, &pr, &SlicedOptions { p: 2, ..*sliced });
    let energy = energy_of(&ps, &pr);
    let mmd = mmd_of(&ps, &pr, None);
    let (ms, cs) = moments_of(&ps);
    let (mr, cr) = moments_of(&pr);
    let me = moment_errors_of(&ms, &cs, &mr, &cr);
    let gw2 = gaussian_w2(&ms, &cs, &mr, &cr, d)?;
    Ok(Comparison {
        n_samples: ps.n,
        n_reference: pr.n,
        dim: d,
        sw1,
        sw2,
        energy_distance: energy,
        mmd2_unbiased: mmd.mmd2_unbiased,
        mmd_bandwidth: mmd.bandwidth,
        mean_err: me.mean_err,
        cov_err: me.cov_err,
        cov_rel: me.cov_rel,
        gaussian_w2: gw2,
        mixture_weight_err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Covariance;
    use candle_core::{DType, Device};

    fn tensor(v: Vec<f64>, n: usize, d: usize) -> Tensor {
        Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
    }

    fn normals(index: u64, n: usize, d: usize) -> Vec<f64> {
        Noise::new(11).normals(stream(Purpose::User, index), n, d)
    }

    fn pts(v: Vec<f64>, n: usize, d: usize) -> Points {
        Points { v, n, d }
    }

    /// Mean and standard error of the mean.
    fn mean_se(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, (var / n).sqrt())
    }

    /// Sorted distinct breakpoints of both samples and the two empirical CDFs on each gap:
    /// an independent route to integrals of functions of `F - G`.
    fn cdf_integral(a: &[f64], b: &[f64], f: impl Fn(f64) -> f64) -> f64 {
        let mut z: Vec<f64> = a.iter().chain(b).cloned().collect();
        z.sort_by(|x, y| x.total_cmp(y));
        let mut acc = 0.0;
        for w in z.windows(2) {
            let fa = a.iter().filter(|&&x| x <= w[0]).count() as f64 / a.len() as f64;
            let fb = b.iter().filter(|&&x| x <= w[0]).count() as f64 / b.len() as f64;
            acc += (w[1] - w[0]) * f(fa - fb);
        }
        acc
    }

    #[test]
    fn wasserstein_1d_unequal_sizes_by_hand() {
        // Quantile functions of a = {0, 1} and b = {0, 0.5, 1} differ by 0.5 on
        // (1/3, 2/3] only: W1 = 0.5 * 1/3 = 1/6, W2^2 = 0.25 * 1/3 = 1/12.
        let a = [0.0, 1.0];
        let b = [1.0, 0.0, 0.5];
        assert!((wasserstein_1d(&a, &b, 1).unwrap() - 1.0 / 6.0).abs() < 1e-15);
        assert!((wasserstein_1d(&b, &a, 1).unwrap() - 1.0 / 6.0).abs() < 1e-15);
        assert!((wasserstein_1d(&a, &b, 2).unwrap() - (1.0f64 / 12.0).sqrt()).abs() < 1e-15);
        // A point mass at 0 against {1, 3}: W1 = (1 + 3) / 2, W2 = sqrt((1 + 9) / 2).
        assert!((wasserstein_1d(&[0.0], &[3.0, 1.0], 1).unwrap() - 2.0).abs() < 1e-15);
        assert!((wasserstein_1d(&[0.0], &[3.0, 1.0], 2).unwrap() - 5f64.sqrt()).abs() < 1e-15);
        // Random unequal sizes: W1 = int |F - G| dx computed from the CDFs instead. Both are
        // exact sums of ~90 O(1) terms, so they agree to round-off (1e-12).
        let a = normals(1, 37, 1);
        let b: Vec<f64> = normals(2, 53, 1).iter().map(|x| 0.3 + 1.5 * x).collect();
        let via_cdf = cdf_integral(&a, &b, f64::abs);
        let w = wasserstein_1d(&a, &b, 1).unwrap();
        assert!((w - via_cdf).abs() < 1e-12, "{w} vs {via_cdf}");
    }

    #[test]
    fn shift_gives_exact_distances() {
        // Adding c keeps the order, so every matched pair differs by c (up to round-off of
        // one addition, ~1e-16): W1 = W2 = |c|.
        let x = normals(3, 1000, 1);
        let c = -0.7;
        let y: Vec<f64> = x.iter().map(|v| v + c).collect();
        assert!((wasserstein_1d(&x, &y, 1).unwrap() - 0.7).abs() < 1e-12);
        assert!((wasserstein_1d(&x, &y, 2).unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(wasserstein_1d(&x, &x, 1).unwrap(), 0.0);
    }

    #[test]
    fn sliced_identity_shift_and_one_dimension() {
        let (n, d) = (500, 3);
        let x = normals(4, n, d);
        let tx = tensor(x.clone(), n, d);
        let o1 = SlicedOptions::default();
        let o2 = SlicedOptions { p: 2, ..o1 };
        // Identical sets project identically: exactly 0.
        assert_eq!(sliced_wasserstein(&tx, &tx, &o1).unwrap(), 0.0);
        assert_eq!(sliced_wasserstein(&tx, &tx, &o2).unwrap(), 0.0);
        // Shift by c e_1: along u every projection moves by c u_1, so per direction
        // W1 = W2 = |c u_1| and SW = |c| mean_u |u_1| over the very same directions.
        let c = 2.0;
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| if i % d == 0 { v + c } else { *v })
            .collect();
        let ty = tensor(y, n, d);
        let dirs = unit_directions(d, 100, 0);
        let mean_u1 = dirs.chunks(d).map(|u| u[0].abs()).sum::<f64>() / 100.0;
        let sw1 = sliced_wasserstein(&tx, &ty, &o1).unwrap();
        let sw2 = sliced_wasserstein(&tx, &ty, &o2).unwrap();
        assert!((sw1 - c * mean_u1).abs() < 1e-12, "{sw1} vs {}", c * mean_u1);
        assert!((sw2 - c * mean_u1).abs() < 1e-12, "{sw2} vs {}", c * mean_u1);
        // The directions are uniform on the sphere: in d = 3, u_1 is uniform on [-1, 1], so
        // |u_1| has mean 1/2 and sd 1/sqrt(12); 4 standard errors over 100 directions.
        let tol = 4.0 / (12.0f64).sqrt() / 10.0;
        assert!((sw1 / c - 0.5).abs() < tol, "{}", sw1 / c);
        // Another seed, other directions.
        let o3 = SlicedOptions { seed: 1, ..o1 };
        assert_ne!(sliced_wasserstein(&tx, &ty, &o3).unwrap(), sw1);
        // In d = 1 every direction is +-1 and W_p is invariant under flipping both sets,
        // so SW equals the 1-D distance, for unequal sizes too.
        let a = normals(5, 70, 1);
        let b: Vec<f64> = normals(6, 45, 1).iter().map(|v| 1.0 + 0.5 * v).collect();
        let (ta, tb) = (tensor(a.clone(), 70, 1), tensor(b.clone(), 45, 1));
        for (o, p) in [(o1, 1), (o2, 2)] {
            let s = sliced_wasserstein(&ta, &tb, &o).unwrap();
            let w = wasserstein_1d(&a, &b, p).unwrap();
            assert!((s - w).abs() < 1e-12, "p={p}: {s} vs {w}");
        }
        // f32 input gives the same value as its f64 widening.
        let ta32 = ta.to_dtype(DType::F32).unwrap();
        let a32: Vec<f64> = a.iter().map(|&v| v as f32 as f64).collect();
        let s = sliced_wasserstein(&ta32, &tb, &o1).unwrap();
        assert!((s - wasserstein_1d(&a32, &b, 1).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn energy_distance_identities_and_unbiasedness() {
        // 1-D: the V-statistic 2 E|X-Y| - E|X-X'| - E|Y-Y'| of the empirical measures equals
        // 2 int (F - G)^2 exactly; agreement to round-off (1e-12 relative).
        let a = normals(7, 40, 1);
        let b: Vec<f64> = normals(8, 65, 1).iter().map(|v| 0.5 + 1.2 * v).collect();
        let (cross, wa, wb) = distance_sums(&pts(a.clone(), 40, 1), &pts(b.clone(), 65, 1));
        let (n, m) = (40.0, 65.0);
        let v_stat = 2.0 * cross / (n * m) - 2.0 * wa / (n * n) - 2.0 * wb / (m * m);
        let exact = 2.0 * cdf_integral(&a, &b, |t| t * t);
        assert!(
            (v_stat - exact).abs() < 1e-12 * exact.abs().max(1.0),
            "{v_stat} vs {exact}"
        );
        // The public U-statistic of a set with itself is -2 E|X - X'| / n (documented).
        let ta = tensor(a, 40, 1);
        let e = energy_distance(&ta, &ta).unwrap();
        let mean_pair = 2.0 * wa / (n * (n - 1.0));
        assert!((e + 2.0 * mean_pair / n).abs() < 1e-12, "{e}");
        // Unbiased: over 200 replicate pairs (n = 50, d = 2) from N(0, I) the mean is within
        // 4 of its standard errors of 0; under a unit shift it is positive by far more.
        let (h0, h1) = null_and_shifted(100, &|x, y| energy_distance(x, y).unwrap());
        let (m0, se0) = mean_se(&h0);
        let (m1, se1) = mean_se(&h1);
        assert!(m0.abs() < 4.0 * se0, "H0 mean {m0} se {se0}");
        assert!(
            m1 > 10.0 * se1 && m1 > 10.0 * (m0.abs() + 4.0 * se0),
            "H1 mean {m1} se {se1}"
        );
    }

    /// A two-sample statistic over 200 replicate pairs of 50 points from `N(0, I_2)` (streams
    /// `first_seed + r`): under the null, and with the second set shifted by
    /// `delta = (1, 0)`.
    fn null_and_shifted(first_seed: u64, stat: &dyn Fn(&Tensor, &Tensor) -> f64) -> (Vec<f64>, Vec<f64>) {
        let mut h0 = Vec::new();
        let mut h1 = Vec::new();
        for r in 0..200 {
            let z = normals(first_seed + r, 100, 2);
            let x = tensor(z[..100].to_vec(), 50, 2);
            let y = tensor(z[100..].to_vec(), 50, 2);
            let ys: Vec<f64> = z[100..]
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 2 == 0 { v + 1.0 } else { *v })
                .collect();
            h0.push(stat(&x, &y));
            h1.push(stat(&x, &tensor(ys, 50, 2)));
        }
        (h0, h1)
    }

    #[test]
    fn mmd_by_hand_and_median_heuristic() {
        // a = {0, 1}, b = {0, 2}, h = 1: within a k(0,1) = e^{-1/2}, within b e^{-2}, cross
        // sum 1 + e^{-2} + 2 e^{-1/2} weighted 2 / (2 * 2), so
        // MMD_u^2 = e^{-1/2} + e^{-2} - (1 + e^{-2} + 2 e^{-1/2}) / 2 = (e^{-2} - 1) / 2.
        let a = tensor(vec![0.0, 1.0], 2, 1);
        let b = tensor(vec![0.0, 2.0], 2, 1);
        let r = mmd_rbf(&a, &b, Some(1.0)).unwrap();
        let exact = ((-2.0f64).exp() - 1.0) / 2.0;
        assert!((r.mmd2_unbiased - exact).abs() < 1e-15);
        assert_eq!(r.bandwidth, 1.0);
        // Pooled {0, 1, 3, 7}: distances 1, 3, 7, 2, 6, 4 -> median (3 + 4) / 2.
        let r = mmd_rbf(&a, &tensor(vec![3.0, 7.0], 2, 1), None).unwrap();
        assert_eq!(r.bandwidth, 3.5);
        // Pooled {0, 1, 3, 6, 10, 15}: 15 distances, the 8th smallest is 6.
        let a3 = tensor(vec![0.0, 1.0, 3.0], 3, 1);
        let r = mmd_rbf(&a3, &tensor(vec![6.0, 10.0, 15.0], 3, 1), None).unwrap();
        assert_eq!(r.bandwidth, 6.0);
        // All points equal: bandwidth falls back to 1 and every kernel value is 1, so 0.
        let c = tensor(vec![2.0; 6], 3, 2);
        let r = mmd_rbf(&c, &c, None).unwrap();
        assert_eq!((r.mmd2_unbiased, r.bandwidth), (0.0, 1.0));
        // Only the first 500 rows of each sample enter the heuristic.
        let x = normals(9, 500, 2);
        let mut x_far = x.clone();
        x_far.extend(vec![1e3; 200]);
        let y = tensor(normals(10, 300, 2), 300, 2);
        let h = mmd_rbf(&tensor(x, 500, 2), &y, None).unwrap().bandwidth;
        let h_far = mmd_rbf(&tensor(x_far, 600, 2), &y, None).unwrap().bandwidth;
        assert_eq!(h, h_far);
    }

    #[test]
    fn mmd_is_unbiased_under_null_and_alternative() {
        // Population MMD^2 for N(0, I_2) against N(delta, I_2), h = 1: with Z ~ N(mu, 2 I),
        // E exp(-|Z|^2 / 2) = (1/3) exp(-|mu|^2 / 6), so MMD^2 = 2/3 (1 - exp(-|delta|^2/6)).
        // The unbiased estimator's replicate mean must be within 4 standard errors of it.
        let (h0, h1) = null_and_shifted(1000, &|x, y| mmd_rbf(x, y, Some(1.0)).unwrap().mmd2_unbiased);
        let (m0, se0) = mean_se(&h0);
        let (m1, se1) = mean_se(&h1);
        let pop1 = 2.0 / 3.0 * (1.0 - (-1.0f64 / 6.0).exp());
        assert!(m0.abs() < 4.0 * se0, "H0 mean {m0} se {se0}");
        assert!((m1 - pop1).abs() < 4.0 * se1, "H1 mean {m1} se {se1} vs {pop1}");
        assert!(m1 > 4.0 * se1);
    }

    fn rotate(theta: f64, diag: [f64; 2]) -> Vec<f64> {
        let (c, s) = (theta.cos(), theta.sin());
        // R diag R^T with R = [[c, -s], [s, c]].
        vec![
            c * c * diag[0] + s * s * diag[1],
            c * s * (diag[0] - diag[1]),
            c * s * (diag[0] - diag[1]),
            s * s * diag[0] + c * c * diag[1],
        ]
    }

    #[test]
    fn gaussian_w2_closed_forms() {
        // Commuting (diagonal): W2^2 = |dm|^2 + sum (sqrt a_i - sqrt b_i)^2.
        let (m1, m2) = ([0.0, 1.0, 2.0], [1.0, -1.0, 0.5]);
        let (a, b) = ([1.0, 4.0, 0.25], [9.0, 1.0, 2.0]);
        let diag = |v: &[f64; 3]| {
            let mut s = vec![0.0; 9];
            (0..3).for_each(|i| s[i * 4] = v[i]);
            s
        };
        let exact = |dm2: f64, a: &[f64], b: &[f64]| {
            (dm2 + a.iter().zip(b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>()).sqrt()
        };
        let w = gaussian_w2(&m1, &diag(&a), &m2, &diag(&b), 3).unwrap();
        assert!((w - exact(sq_dist(&m1, &m2), &a, &b)).abs() < 1e-12);
        // Commuting but rotated (same eigenvectors): the same formula.
        let th = 0.7;
        let w = gaussian_w2(
            &[0.0, 0.0],
            &rotate(th, [1.0, 4.0]),
            &[0.0, 3.0],
            &rotate(th, [9.0, 0.5]),
            2,
        )
        .unwrap();
        assert!((w - exact(9.0, &[1.0, 4.0], &[9.0, 0.5])).abs() < 1e-12);
        // Non-commuting 2-D: for 2x2 SPD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), and
        // M = S2^{1/2} S1 S2^{1/2} has tr M = tr(S1 S2), det M = det S1 det S2.
        let s1 = vec![2.0, 0.6, 0.6, 1.0];
        let s2 = rotate(0.4, [3.0, 0.5]);
        let tr12 = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let det = |s: &[f64]| s[0] * s[3] - s[1] * s[2];
        let tr_sqrt = (tr12 + 2.0 * (det(&s1) * det(&s2)).sqrt()).sqrt();
        let (ma, mb) = ([1.0, -0.5], [0.2, 0.4]);
        let w2 = sq_dist(&ma, &mb) + s1[0] + s1[3] + s2[0] + s2[3] - 2.0 * tr_sqrt;
        let w = gaussian_w2(&ma, &s1, &mb, &s2, 2).unwrap();
        assert!((w - w2.sqrt()).abs() < 1e-12, "{w} vs {}", w2.sqrt());
        let w_rev = gaussian_w2(&mb, &s2, &ma, &s1, 2).unwrap();
        assert!((w - w_rev).abs() < 1e-12);
        // A point mass against N(m, S): W2^2 = |dm|^2 + tr S (singular covariance allowed).
        let w = gaussian_w2(&ma, &[0.0; 4], &mb, &s2, 2).unwrap();
        assert!((w - (sq_dist(&ma, &mb) + s2[0] + s2[3]).sqrt()).abs() < 1e-12);
        // Equal laws: the trace term cancels to round-off, sqrt(1e-15 tr S) ~ 1e-7.
        assert!(gaussian_w2(&ma, &s1, &ma, &s1, 2).unwrap() < 1e-6);
        // Bad input.
        assert!(gaussian_w2(&ma, &[1.0, 2.0, 2.0, 1.0], &mb, &s2, 2).is_err());
        assert!(gaussian_w2(&ma, &s1, &mb, &s2[..3], 2).is_err());
        assert!(gaussian_w2(&[f64::NAN, 0.0], &s1, &mb, &s2, 2).is_err());
        assert!(gaussian_w2(&ma, &[1.0, 0.5, 0.0, 1.0], &mb, &s2, 2).is_err());
    }

    #[test]
    fn moments_by_hand() {
        // Square corners: mean (1, 1), unbiased variances 4 / 3, no correlation.
        let x = tensor(vec![0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0], 4, 2);
        let (m, c) = moments(&x).unwrap();
        assert_eq!(m, vec![1.0, 1.0]);
        let expect = [4.0 / 3.0, 0.0, 0.0, 4.0 / 3.0];
        assert!(c.iter().zip(&expect).all(|(p, q)| (p - q).abs() < 1e-15), "{c:?}");
        // Against N(0, I): |dm| = sqrt 2, |C - I|_F = sqrt(2) / 3, relative (sqrt(2)/3)/sqrt(2).
        let e = moment_errors(&x, &[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]).unwrap();
        assert!((e.mean_err - 2f64.sqrt()).abs() < 1e-15);
        assert!((e.cov_err - 2f64.sqrt() / 3.0).abs() < 1e-15);
        assert!((e.cov_rel - 1.0 / 3.0).abs() < 1e-15);
        assert!(moment_errors(&x, &[0.0], &[1.0, 0.0, 0.0, 1.0]).is_err());
        assert!(moments(&tensor(vec![1.0, 2.0], 1, 2)).is_err());
    }

    fn three_components() -> GaussianMixture {
        GaussianMixture::new(
            vec![2.0, 3.0, 5.0],
            vec![vec![-10.0, 0.0], vec![0.0, 10.0], vec![10.0, 0.0]],
            vec![Covariance::Scalar(1.0); 3],
        )
        .unwrap()
    }

    #[test]
    fn mixture_weight_error_exact_cases() {
        let law = three_components();
        let means = law.means();
        // 2, 3, 5 points at the component means: shares equal the weights (0.2, 0.3, 0.5)
        // exactly, up to the round-off of the normalised weights.
        let mut v = Vec::new();
        for (k, c) in [2, 3, 5].iter().enumerate() {
            for _ in 0..*c {
                v.extend(&means[k]);
            }
        }
        let e = mixture_weight_error(&tensor(v, 10, 2), &law).unwrap();
        assert!(e < 1e-12, "{e}");
        // Everything at the first mean: |1 - 0.2| + 0.3 + 0.5 = 1.6.
        let x = tensor(vec![-10.0, 0.0, -9.0, 1.0], 2, 2);
        assert!((mixture_weight_error(&x, &law).unwrap() - 1.6).abs() < 1e-12);
        assert!(mixture_weight_error(&tensor(vec![0.0; 3], 1, 3), &law).is_err());
    }

    #[test]
    fn compare_collects_everything() {
        let law = three_components();
        let x = law.sample(400, &Noise::new(3), 0);
        let tx = tensor(x.clone(), 400, 2);
        let same = compare(&tx, &tx, Some(&law)).unwrap();
        assert_eq!((same.sw1, same.sw2, same.mean_err, same.cov_err), (0.0, 0.0, 0.0, 0.0));
        assert!(same.gaussian_w2 < 1e-6, "{}", same.gaussian_w2);
        assert!(same.energy_distance < 0.0 && same.mmd2_unbiased < 0.0);
        // Shift by (3, 4): the means move by exactly 5 (round-off 1e-12), covariances not
        // at all, so the fitted-Gaussian W2 is 5 too (floor sqrt(1e-15 tr S) on top).
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 3.0 } else { 4.0 })
            .collect();
        let c = compare(&tx, &tensor(y, 400, 2), None).unwrap();
        assert!((c.mean_err - 5.0).abs() < 1e-12);
        assert!(c.cov_err < 1e-10 && c.cov_rel < 1e-10);
        assert!((c.gaussian_w2 - 5.0).abs() < 1e-6);
        assert!(c.sw1 > 1.0 && c.sw2 >= c.sw1 - 1e-12 && c.energy_distance > 1.0);
        assert_eq!(c.mixture_weight_err, None);
        assert_eq!(c.rows().len(), 9);
        assert_eq!(same.rows().len(), 10);
        assert_eq!(same.mixture_weight_err, Some(same.rows()[9].1));
        let json = serde_json::to_string(&same).unwrap();
        assert!(
            json.contains("\"sw1\":0.0") && json.contains("\"mixture_weight_err\""),
            "{json}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let a = tensor(normals(20, 10, 2), 10, 2);
        let b3 = tensor(normals(21, 10, 3), 10, 3);
        let mut nan = normals(22, 10, 2);
        nan[7] = f64::NAN;
        let tn = tensor(nan.clone(), 10, 2);
        let o = SlicedOptions::default();
        let is_invalid = |r: Result<f64>| matches!(r, Err(Error::InvalidInput(_)));
        assert!(is_invalid(sliced_wasserstein(&a, &b3, &o)));
        assert!(is_invalid(sliced_wasserstein(&a, &tn, &o)));
        assert!(is_invalid(sliced_wasserstein(&a, &a, &SlicedOptions { p: 3, ..o })));
        assert!(is_invalid(sliced_wasserstein(
            &a,
            &a,
            &SlicedOptions { directions: 0, ..o }
        )));
        let flat = Tensor::from_vec(vec![1.0f64; 4], 4, &Device::Cpu).unwrap();
        assert!(is_invalid(sliced_wasserstein(&flat, &flat, &o)));
        assert!(is_invalid(energy_distance(&a, &b3)));
        assert!(is_invalid(energy_distance(&tn, &a)));
        let one = tensor(vec![0.0, 0.0], 1, 2);
        assert!(is_invalid(energy_distance(&one, &a)));
        assert!(mmd_rbf(&a, &b3, None).is_err());
        assert!(mmd_rbf(&a, &tn, Some(1.0)).is_err());
        assert!(mmd_rbf(&one, &a, None).is_err());
        assert!(mmd_rbf(&a, &a, Some(0.0)).is_err());
        assert!(mmd_rbf(&a, &a, Some(f64::NAN)).is_err());
        assert!(is_invalid(wasserstein_1d(&[], &[1.0], 1)));
        assert!(is_invalid(wasserstein_1d(&[f64::NAN], &[1.0], 1)));
        assert!(is_invalid(wasserstein_1d(&[0.0], &[1.0], 0)));
        assert!(moments(&tn).is_err());
        assert!(compare(&a, &b3, None).is_err());
        assert!(compare(&a, &tn, None).is_err());
        assert!(mixture_weight_error(&tn, &three_components()).is_err());
        let msg = energy_distance(&a, &b3).unwrap_err().to_string();
        assert!(msg.contains("dimensions") && !msg.contains('\n'), "{msg}");
    }
}
