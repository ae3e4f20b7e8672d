//! The exact mixture score as a per-row kernel on host `f64` rows (no tensors, no
//! allocation per row): the fast path of [`super::GaussianMixture::score_diffused`] and of
//! the samplers ([`crate::score::RowScore`]).
//!
//! For the law `sum_k w_k N(m mu_k, C_k)` of `x_t = m x_0 + s eps`, `C_k = m^2 Sigma_k + s^2 I`,
//! each row `x` gets
//!
//! `l_k = log w_k - (log det C_k + d log 2 pi) / 2 - |x - m mu_k|^2_{C_k^{-1}} / 2`,
//! `r_k = exp(l_k - max_j l_j) / sum_j exp(l_j - max_j l_j)` (log-sum-exp),
//! `score(x) = sum_k r_k C_k^{-1} (m mu_k - x)`.
//!
//! Distances are formed as differences `x - m mu_k` (never as `|x|^2 - 2 x.mu + |mu|^2`), so
//! rows far from every mean keep full relative accuracy and a finite score. Three layouts:
//!
//! * *isotropic* (every `C_k = v_k I`): `l_k` needs `|x - m mu_k|^2`, the score is
//!   `sum_k (r_k / v_k) (m mu_k - x)`; the distances are vectorised across components
//!   (means stored transposed, `[d, K]`, `K` padded to [`LANES`]);
//! * *diagonal*: the same with `C_k^{-1} = diag(1 / v_ki)`;
//! * *full*: in each component's eigenbasis `Sigma_k = Q_k diag(lambda_k) Q_k^T`,
//!   `z = Q_k^T (x - m mu_k)`, `|.|^2 = sum_i z_i^2 / v_ki` and the component's score is
//!   `-Q_k (z / v_k)`, `v_k = m^2 lambda_k + s^2`.
//!
//! Every row's result depends on that row alone (no sums across rows), in a fixed order of
//! operations, so results do not depend on how rows are split into blocks or threads.

use super::{Component, GaussianMixture, LN_2PI};

/// Components are processed in groups of this many lanes (padded with zero-weight ones).
pub(crate) const LANES: usize = 8;

#[derive(Clone, Debug)]
enum Layout {
    /// `C_k = v_k I`: `alpha[k] = 1 / v_k`.
    Isotropic,
    /// `C_k = diag(v_k)`: `at[i * kp + k] = 1 / v_ki` and `a[k * d + i] = 1 / v_ki`.
    Diagonal { at: Vec<f64>, a: Vec<f64> },
    /// Eigenbases: `q[k]` row-major `d x d` (columns are eigenvectors; identity when `None`),
    /// `inv_var[k * d + i] = 1 / v_ki`.
    Full { inv_var: Vec<f64> },
}

/// The exact score of the law of `m x_0 + s eps` at one `(m, s)`, with every per-component
/// constant precomputed; evaluate it on blocks of rows with [`MixtureRows::score_rows`].
#[derive(Clone, Debug)]
pub struct MixtureRows<'a> {
    comps: &'a [Component],
    d: usize,
    kk: usize,
    /// `kk` rounded up to a multiple of [`LANES`].
    kp: usize,
    /// `m mu_k`, row-major `[K, d]`.
    mm: Vec<f64>,
    /// `m mu_ki` transposed and padded: `mmt[i * kp + k]`.
    mmt: Vec<f64>,
    /// `1 / v_k` for isotropic components (padded with 0).
    alpha: Vec<f64>,
    /// `log w_k - (log det C_k + d log 2 pi) / 2` (padded with `-inf`).
    lnorm: Vec<f64>,
    layout: Layout,
}

impl GaussianMixture {
    /// The per-row score kernel of the law of `m x_0 + s eps` (see [`MixtureRows`]).
    pub fn rows(&self, m: f64, s: f64) -> MixtureRows<'_> {
        let d = self.d;
        let kk = self.comps.len();
        let kp = kk.div_ceil(LANES) * LANES;
        let s2 = s * s;
        let mut mm = vec![0.0; kk * d];
        let mut mmt = vec![0.0; d * kp];
        let mut lnorm = vec![f64::NEG_INFINITY; kp];
        let mut alpha = vec![0.0; kp];
        for (k, c) in self.comps.iter().enumerate() {
            for i in 0..d {
                mm[k * d + i] = m * c.mean[i];
                mmt[i * kp + k] = m * c.mean[i];
            }
            let logdet: f64 = c.lam.iter().map(|l| (m * m * l + s2).ln()).sum();
            lnorm[k] = c.log_w - 0.5 * (logdet + d as f64 * LN_2PI);
        }
        let full = self.comps.iter().any(|c| c.q.is_some());
        let isotropic = !full && self.comps.iter().all(|c| c.lam.iter().all(|&l| l == c.lam[0]));
        let layout = if full {
            let inv_var = self
                .comps
                .iter()
                .flat_map(|c| c.lam.iter().map(|l| 1.0 / (m * m * l + s2)))
                .collect();
            Layout::Full { inv_var }
        } else if isotropic {
            for (k, c) in self.comps.iter().enumerate() {
                alpha[k] = 1.0 / (m * m * c.lam[0] + s2);
            }
            Layout::Isotropic
        } else {
            let mut at = vec![0.0; d * kp];
            let mut a = vec![0.0; kk * d];
            for (k, c) in self.comps.iter().enumerate() {
                for i in 0..d {
                    let v = 1.0 / (m * m * c.lam[i] + s2);
                    at[i * kp + k] = v;
                    a[k * d + i] = v;
                }
            }
            Layout::Diagonal { at, a }
        };
        MixtureRows {
            comps: &self.comps,
            d,
            kk,
            kp,
            mm,
            mmt,
            alpha,
            lnorm,
            layout,
        }
    }
}

impl MixtureRows<'_> {
    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The score at each row of `x` (row-major `[rows, d]`) into `out` (same shape), on the
    /// calling thread. Row `i` of `out` is a function of row `i` of `x` alone.
    pub fn score_rows(&self, x: &[f64], out: &mut [f64]) {
        assert_eq!(x.len(), out.len(), "score_rows: x and out differ in length");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked above). The kernel uses plain
                // multiplications and additions (never fused), so it rounds exactly as the
                // generic build does: same bits on every x86-64 machine.
                unsafe { self.score_rows_avx2(x, out) };
                return;
            }
        }
        self.score_rows_generic(x, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn score_rows_avx2(&self, x: &[f64], out: &mut [f64]) {
        self.score_rows_generic(x, out);
    }

    #[inline(always)]
    fn score_rows_generic(&self, x: &[f64], out: &mut [f64]) {
        let (d, kp) = (self.d, self.kp);
        let mut l = vec![0.0; kp];
        let mut scratch = match self.layout {
            Layout::Full { .. } => vec![0.0; (self.kk + 2) * d],
            _ => Vec::new(),
        };
        for (xr, g) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            match &self.layout {
                Layout::Isotropic => {
                    self.sq_dist(xr, None, &mut l);
                    for k in 0..kp {
                        l[k] = self.lnorm[k] - 0.5 * self.alpha[k] * l[k];
                    }
                    softmax(&mut l[..self.kk]);
                    l[self.kk..].iter_mut().for_each(|v| *v = 0.0);
                    for k in 0..self.kk {
                        l[k] *= self.alpha[k];
                    }
                    self.weighted_pull(xr, &l, None, g);
                }
                Layout::Diagonal { at, a } => {
                    self.sq_dist(xr, Some(at), &mut l);
                    for k in 0..kp {
                        l[k] = self.lnorm[k] - 0.5 * l[k];
                    }
                    softmax(&mut l[..self.kk]);
                    l[self.kk..].iter_mut().for_each(|v| *v = 0.0);
                    self.weighted_pull(xr, &l, Some((a, at)), g);
                }
                Layout::Full { inv_var } => self.full_row(xr, g, inv_var, &mut l, &mut scratch),
            }
        }
    }

    /// `out[k] = sum_i a_ki (x_i - m mu_ki)^2` (`a = 1` when `at` is `None`) for all padded
    /// components, vectorised across components in groups of [`LANES`], up to four groups
    /// at a time (independent accumulators, so the additions pipeline).
    #[inline(always)]
    fn sq_dist(&self, xr: &[f64], at: Option<&Vec<f64>>, out: &mut [f64]) {
        let groups = self.kp / LANES;
        let mut c = 0;
        while c < groups {
            match groups - c {
                1 => self.sq_dist_groups::<1>(xr, at, c, out),
                2 => self.sq_dist_groups::<2>(xr, at, c, out),
                3 => self.sq_dist_groups::<3>(xr, at, c, out),
                _ => self.sq_dist_groups::<4>(xr, at, c, out),
            }
            c += 4;
        }
    }

    #[inline(always)]
    fn sq_dist_groups<const G: usize>(&self, xr: &[f64], at: Option<&Vec<f64>>, c0: usize, out: &mut [f64]) {
        let kp = self.kp;
        let mut acc = [[0.0f64; LANES]; G];
        for (i, &xi) in xr.iter().enumerate() {
            let off = i * kp + c0 * LANES;
            let m = &self.mmt[off..off + G * LANES];
            match at {
                None => {
                    for g in 0..G {
                        for j in 0..LANES {
                            let e = xi - m[g * LANES + j];
                            acc[g][j] += e * e;
                        }
                    }
                }
                Some(at) => {
                    let a = &at[off..off + G * LANES];
                    for g in 0..G {
                        for j in 0..LANES {
                            let e = xi - m[g * LANES + j];
                            acc[g][j] += a[g * LANES + j] * (e * e);
                        }
                    }
                }
            }
        }
        for g in 0..G {
            out[(c0 + g) * LANES..(c0 + g + 1) * LANES].copy_from_slice(&acc[g]);
        }
    }

    /// `g_i = sum_k w_k a_ki (m mu_ki - x_i)` (`a = 1` when `a` is `None`; `w` padded to
    /// `kp` with zeros, `at` the transposed `a`): blocks of 32 coordinates sum over `k` in
    /// order with their sums in registers, the remaining coordinates are vectorised across
    /// components.
    #[inline(always)]
    fn weighted_pull(&self, xr: &[f64], w: &[f64], a: Option<(&Vec<f64>, &Vec<f64>)>, g: &mut [f64]) {
        let (a, at) = match a {
            Some((a, at)) => (Some(a), Some(at)),
            None => (None, None),
        };
        const B: usize = 32;
        let d = self.d;
        let mut i0 = 0;
        while i0 + B <= d {
            let mut acc = [0.0f64; B];
            let xb: &[f64; B] = xr[i0..i0 + B].try_into().unwrap();
            for (k, &wk) in w[..self.kk].iter().enumerate() {
                if wk == 0.0 {
                    continue;
                }
                let mk: &[f64; B] = self.mm[k * d + i0..k * d + i0 + B].try_into().unwrap();
                match a {
                    None => {
                        for j in 0..B {
                            acc[j] += wk * (mk[j] - xb[j]);
                        }
                    }
                    Some(a) => {
                        let ak: &[f64; B] = a[k * d + i0..k * d + i0 + B].try_into().unwrap();
                        for j in 0..B {
                            acc[j] += wk * (ak[j] * (mk[j] - xb[j]));
                        }
                    }
                }
            }
            g[i0..i0 + B].copy_from_slice(&acc);
            i0 += B;
        }
        // The remaining coordinates one at a time, vectorised across components (means
        // transposed): `g_i = sum over lanes of sum over groups of w_k a_ki (m mu_ki - x_i)`.
        let kp = self.kp;
        for i in i0..d {
            let xi = xr[i];
            let mut acc = [0.0f64; LANES];
            for c in 0..kp / LANES {
                let off = i * kp + c * LANES;
                let m: &[f64; LANES] = self.mmt[off..off + LANES].try_into().unwrap();
                let wc: &[f64; LANES] = w[c * LANES..(c + 1) * LANES].try_into().unwrap();
                match at {
                    None => {
                        for j in 0..LANES {
                            acc[j] += wc[j] * (m[j] - xi);
                        }
                    }
                    Some(at) => {
                        let a: &[f64; LANES] = at[off..off + LANES].try_into().unwrap();
                        for j in 0..LANES {
                            acc[j] += wc[j] * (a[j] * (m[j] - xi));
                        }
                    }
                }
            }
            g[i] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
    }

    /// One row with full covariances: per component `z = Q^T (x - m mu)` (or `x - m mu`
    /// when axis-aligned), `zs = z / v`, `l = lnorm - z.zs / 2`; then the score
    /// `-sum_k r_k Q_k zs_k`.
    #[inline(always)]
    fn full_row(&self, xr: &[f64], g: &mut [f64], inv_var: &[f64], l: &mut [f64], scratch: &mut [f64]) {
        let d = self.d;
        let (zs, rest) = scratch.split_at_mut(self.kk * d);
        let c = &mut rest[..d];
        for (k, comp) in self.comps.iter().enumerate() {
            let mk = &self.mm[k * d..(k + 1) * d];
            let iv = &inv_var[k * d..(k + 1) * d];
            let zk = &mut zs[k * d..(k + 1) * d];
            match &comp.q {
                Some(q) => {
                    for i in 0..d {
                        c[i] = xr[i] - mk[i];
                    }
                    // z = Q^T c, as a sum of the rows of Q scaled by c_i.
                    zk.iter_mut().for_each(|v| *v = 0.0);
                    for i in 0..d {
                        let ci = c[i];
                        let qi = &q[i * d..(i + 1) * d];
                        for j in 0..d {
                            zk[j] += ci * qi[j];
                        }
                    }
                }
                None => {
                    for i in 0..d {
                        zk[i] = xr[i] - mk[i];
                    }
                }
            }
            let mut quad = 0.0;
            for i in 0..d {
                let z = zk[i];
                zk[i] = z * iv[i];
                quad += z * zk[i];
            }
            l[k] = self.lnorm[k] - 0.5 * quad;
        }
        softmax(&mut l[..self.kk]);
        g.iter_mut().for_each(|v| *v = 0.0);
        for (k, comp) in self.comps.iter().enumerate() {
            let w = l[k];
            if w == 0.0 {
                continue;
            }
            let zk = &zs[k * d..(k + 1) * d];
            match &comp.qt {
                // g -= w Q zs = sum_j (-w zs_j) (row j of Q^T).
                Some(qt) => {
                    for j in 0..d {
                        let c = -w * zk[j];
                        let qj = &qt[j * d..(j + 1) * d];
                        for i in 0..d {
                            g[i] += c * qj[i];
                        }
                    }
                }
                None => {
                    for i in 0..d {
                        g[i] -= w * zk[i];
                    }
                }
            }
        }
    }
}

/// In place: `l <- exp(l - max l) / sum exp(l - max l)` (responsibilities from log-weights),
/// with the branch-free [`exp_nonpositive`] so that the components vectorise.
#[inline(always)]
fn softmax(l: &mut [f64]) {
    let mx = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    for v in l.iter_mut() {
        *v = exp_nonpositive(*v - mx);
    }
    let sum: f64 = l.iter().sum();
    let inv = 1.0 / sum;
    for v in l.iter_mut() {
        *v *= inv;
    }
}

// fdlibm notice:
//
// The polynomial coefficients of the `ln`, `sin`, `cos` and `exp` kernels below come from
// fdlibm, whose notice is kept as it asks: "Copyright (C) 1993 by Sun Microsystems, Inc.
// All rights reserved. Developed at SunPro, a Sun Microsystems, Inc. business. Permission
// to use, copy, modify, and distribute this software is freely granted, provided that
// this notice is preserved."

/// `exp x` for `x <= 0` (NaN stays NaN; below `-708` it returns 0, which is below
/// `1e-307` of the largest responsibility, 1): fdlibm's `e_exp.c` (Sun Microsystems 1993),
/// `x = k ln 2 + r`, `|r| <= ln 2 / 2`, `exp r = 1 + r + r c / (2 - c)` with its degree-5
/// minimax `c` (error below 1 ulp), branch-free.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 0.6931471803691238;
    const LN2_LO: f64 = 1.9082149292705877e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const P1: f64 = 0.16666666666666602;
    const P2: f64 = -0.0027777777777015593;
    const P3: f64 = 6.613756321437934e-05;
    const P4: f64 = -1.6533902205465252e-06;
    const P5: f64 = 4.1381367970572385e-08;
    // Round x / ln 2 to the nearest integer by adding 1.5 2^52 (exact for |k| < 2^51).
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let big = x * INV_LN2 + MAGIC;
    let kf = big - MAGIC;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let t = r * r;
    let c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    // 2^k from k's low bits in `big` (k >= -1022 wherever the result is kept).
    let k_biased = big.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(1023);
    let scaled = y * f64::from_bits(k_biased << 52);
    if x < -708.0 {
        0.0
    } else {
        scaled
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    /// Within 1 ulp of libm on `[-708, 0]` (and 0 below, NaN kept).
    #[test]
    fn exp_matches_libm() {
        for i in 0..=200_000 {
            let x = -708.0 * (i as f64 / 200_000.0).powi(3);
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!((a - b).abs() <= f64::EPSILON * b, "exp({x}): {a} vs {b}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f64::NAN).is_nan());
    }
}
