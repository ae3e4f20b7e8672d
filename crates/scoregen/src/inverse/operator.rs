//! Linear operators `A` (docs/formats.md): application to batches, the dense matrix, and the
//! thin SVD `A = U diag(s) V^T` that the SVD-based methods (MCGdiff, DDRM) work in.

use super::problem::{Operator, MAX_MATRIX_ENTRIES};
use crate::error::{excerpt, number};
use crate::linalg::{gemm_abt, sym_eigen};
use crate::{Error, Result};

/// The largest blur `sigma` (pixels) [`Operator::gaussian_blur`] accepts: its kernel is
/// normalised over `2 ceil(3 sigma) + 1` taps.
pub const MAX_BLUR_SIGMA: f64 = 1e6;

/// `h * w` pixels, and `rows(h w) x h w` entries of the operator built from them, within
/// [`MAX_MATRIX_ENTRIES`]; `what` names the operator.
fn image_pixels(h: usize, w: usize, rows: impl Fn(usize) -> usize, what: &str) -> Result<usize> {
    let dx = h.checked_mul(w).filter(|&n| n <= MAX_MATRIX_ENTRIES);
    let entries = dx
        .and_then(|n| rows(n).checked_mul(n))
        .filter(|&n| n <= MAX_MATRIX_ENTRIES);
    match (dx, entries) {
        (Some(dx), Some(_)) => Ok(dx),
        _ => Err(Error::invalid(format!(
            "{what}: a {h}x{w} image is too large (its operator would have more than {MAX_MATRIX_ENTRIES} entries)"
        ))),
    }
}

/// The thin SVD of an operator: `A = U diag(s) V^T`, `U` (`dy x r`) and `V` (`dx x r`)
/// with orthonormal columns, `s > 0` descending (rank `r`; zero singular values dropped).
#[derive(Clone, Debug)]
pub struct SvdForm {
    /// `dy`.
    pub dy: usize,
    /// `dx`.
    pub dx: usize,
    /// Left singular vectors, row-major `dy x r`.
    pub u: Vec<f64>,
    /// Singular values, `r`.
    pub s: Vec<f64>,
    /// Right singular vectors, row-major `dx x r`.
    pub v: Vec<f64>,
}

impl SvdForm {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// `U^T y` (length `r`).
    pub fn ut(&self, y: &[f64]) -> Vec<f64> {
        let r = self.rank();
        let mut out = vec![0.0; r];
        for i in 0..self.dy {
            for j in 0..r {
                out[j] += self.u[i * r + j] * y[i];
            }
        }
        out
    }

    /// `V^T x` for each row of `x` (`[n, dx]` → `[n, r]`).
    pub fn vt_rows(&self, x: &[f64]) -> Vec<f64> {
        let (r, dx) = (self.rank(), self.dx);
        let n = x.len() / dx;
        let mut out = vec![0.0; n * r];
        // out = X V  (n x dx times dx x r).
        crate::linalg::gemm_ab(&mut out, x, &self.v, (n, dx, r), 1.0, false);
        out
    }

    /// `x += V c` for each row (`c` is `[n, r]`).
    pub fn add_v_rows(&self, x: &mut [f64], c: &[f64]) {
        let (r, dx) = (self.rank(), self.dx);
        let n = x.len() / dx;
        // x += C V^T  (n x r times r x dx).
        gemm_abt(x, c, &self.v, (n, r, dx), 1.0, true);
    }
}

/// Image operators on `h x w` single-channel images flattened row-major (`dx = h w`), as
/// used for inpainting, outpainting, super-resolution and deblurring with an image prior.
impl Operator {
    /// Box inpainting: observe every pixel outside the box (`top`, `left`, `height`,
    /// `width`).
    pub fn inpaint_box(h: usize, w: usize, top: usize, left: usize, bh: usize, bw: usize) -> Result<Operator> {
        let fits = |a: usize, b: usize, n: usize| a.checked_add(b).is_some_and(|e| e <= n);
        if h == 0 || w == 0 || bh == 0 || bw == 0 || !fits(top, bh, h) || !fits(left, bw, w) {
            return Err(Error::invalid(format!(
                "inpainting box ({top}, {left}, {bh}, {bw}) does not fit a {h}x{w} image"
            )));
        }
        if bh == h && bw == w {
            return Err(Error::invalid(
                "inpainting box covers the whole image: nothing is observed",
            ));
        }
        let dx = image_pixels(h, w, |_| 0, "inpainting")?;
        let observed = (0..dx)
            .filter(|&i| {
                let (r, c) = (i / w, i % w);
                !(r >= top && r < top + bh && c >= left && c < left + bw)
            })
            .collect();
        Ok(Operator::Mask { dim: dx, observed })
    }

    /// Outpainting: observe one half (`"left"`, `"right"`, `"top"` or `"bottom"`).
    pub fn outpaint_half(h: usize, w: usize, keep: &str) -> Result<Operator> {
        let keep_px = |r: usize, c: usize| match keep {
            "left" => Some(c < w / 2),
            "right" => Some(c >= w / 2),
            "top" => Some(r < h / 2),
            "bottom" => Some(r >= h / 2),
            _ => None,
        };
        if keep_px(0, 0).is_none() {
            return Err(Error::invalid(format!(
                "outpainting: unknown half '{}' (expected left, right, top or bottom)",
                excerpt(keep)
            )));
        }
        if h < 2 || w < 2 {
            return Err(Error::invalid("outpainting needs an image of at least 2x2"));
        }
        let dx = image_pixels(h, w, |_| 0, "outpainting")?;
        let observed = (0..dx).filter(|&i| keep_px(i / w, i % w) == Some(true)).collect();
        Ok(Operator::Mask { dim: dx, observed })
    }

    /// Super-resolution: `factor x factor` average pooling (`h`, `w` multiples of `factor`),
    /// given by its exact SVD (orthogonal rows of norm `1/factor`).
    pub fn avg_pool(h: usize, w: usize, factor: usize) -> Result<Operator> {
        if factor < 2 || !h.is_multiple_of(factor) || !w.is_multiple_of(factor) {
            return Err(Error::invalid(format!(
                "super-resolution factor {factor} must be >= 2 and divide the image size {h}x{w}"
            )));
        }
        let (ho, wo) = (h / factor, w / factor);
        let dx = image_pixels(h, w, |n| n / (factor * factor), "super-resolution")?;
        let dy = ho * wo;
        let mut u = vec![0.0; dy * dy];
        let mut v = vec![0.0; dx * dy];
        for j in 0..dy {
            u[j * dy + j] = 1.0;
            let (r0, c0) = ((j / wo) * factor, (j % wo) * factor);
            for r in r0..r0 + factor {
                for c in c0..c0 + factor {
                    v[(r * w + c) * dy + j] = 1.0 / factor as f64;
                }
            }
        }
        Ok(Operator::Svd {
            rows: dy,
            cols: dx,
            u,
            s: vec![1.0 / factor as f64; dy],
            v,
        })
    }

    /// Gaussian blur with standard deviation `sigma` pixels (kernel radius `ceil(3 sigma)`,
    /// normalised, zero padding) as a dense `hw x hw` matrix: entry `(p, q)` is
    /// `k(r_p - r_q) k(c_p - c_q)` with `k(i) = exp(-i^2 / (2 sigma^2)) / sum_{|j| <= rad} exp(-j^2 / (2 sigma^2))`.
    ///
    /// Offsets beyond the image never meet a pixel, so the double loop runs over
    /// `min(rad, max(h, w) - 1)` only (the normalisation still sums the whole kernel): a
    /// sigma far larger than the image costs no more than one as large as the image.
    /// `sigma` must be in `(0, MAX_BLUR_SIGMA]`, and `(hw)^2` within [`MAX_MATRIX_ENTRIES`].
    pub fn gaussian_blur(h: usize, w: usize, sigma: f64) -> Result<Operator> {
        if !(sigma > 0.0 && sigma.is_finite()) || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "blur: need sigma > 0 and a non-empty image, got {}",
                number(sigma)
            )));
        }
        if sigma > MAX_BLUR_SIGMA {
            return Err(Error::invalid(format!(
                "blur: sigma {} is too large (at most {MAX_BLUR_SIGMA:e} pixels)",
                number(sigma)
            )));
        }
        let dx = image_pixels(h, w, |n| n, "blur")?;
        let rad = (3.0 * sigma).ceil() as i64;
        let tap = |i: i64| (-0.5 * (i as f64 / sigma).powi(2)).exp();
        let ks: f64 = (-rad..=rad).map(tap).sum();
        // Offsets that can reach another pixel of the image.
        let rad = rad.min(h.max(w) as i64 - 1);
        let k: Vec<f64> = (-rad..=rad).map(|i| tap(i) / ks).collect();
        let mut a = vec![0.0; dx * dx];
        for r in 0..h as i64 {
            for c in 0..w as i64 {
                let row = (r * w as i64 + c) as usize;
                for i in -rad..=rad {
                    for j in -rad..=rad {
                        let (rr, cc) = (r + i, c + j);
                        if rr >= 0 && rr < h as i64 && cc >= 0 && cc < w as i64 {
                            a[row * dx + (rr * w as i64 + cc) as usize] +=
                                k[(i + rad) as usize] * k[(j + rad) as usize];
                        }
                    }
                }
            }
        }
        Ok(Operator::Dense { rows: dx, cols: dx, a })
    }

    /// The dense `dy x dx` matrix, row-major.
    pub fn matrix(&self) -> Vec<f64> {
        let (dy, dx) = self.shape();
        match self {
            Operator::Dense { a, .. } => a.clone(),
            Operator::Mask { observed, .. } => {
                let mut a = vec![0.0; dy * dx];
                for (j, &i) in observed.iter().enumerate() {
                    a[j * dx + i] = 1.0;
                }
                a
            }
            Operator::Svd { u, s, v, .. } => {
                let r = s.len();
                let mut us = u.clone();
                for i in 0..dy {
                    for j in 0..r {
                        us[i * r + j] *= s[j];
                    }
                }
                let mut a = vec![0.0; dy * dx];
                gemm_abt(&mut a, &us, v, (dy, r, dx), 1.0, false);
                a
            }
        }
    }

    /// `A x` for each row of `x` (row-major `[n, dx]` → `[n, dy]`).
    pub fn apply_rows(&self, x: &[f64]) -> Vec<f64> {
        let (dy, dx) = self.shape();
        let n = x.len() / dx;
        match self {
            Operator::Mask { observed, .. } => {
                let mut out = Vec::with_capacity(n * dy);
                for row in x.chunks(dx) {
                    out.extend(observed.iter().map(|&i| row[i]));
                }
                out
            }
            _ => {
                let a = self.matrix();
                let mut out = vec![0.0; n * dy];
                gemm_abt(&mut out, x, &a, (n, dx, dy), 1.0, false);
                out
            }
        }
    }

    /// `A^T r` for each row of `r` (`[n, dy]` → `[n, dx]`).
    pub fn adjoint_rows(&self, r: &[f64]) -> Vec<f64> {
        let (dy, dx) = self.shape();
        let n = r.len() / dy.max(1);
        match self {
            Operator::Mask { observed, .. } => {
                let mut out = vec![0.0; n * dx];
                for (row, rr) in out.chunks_mut(dx).zip(r.chunks(dy)) {
                    for (j, &i) in observed.iter().enumerate() {
                        row[i] += rr[j];
                    }
                }
                out
            }
            _ => {
                let a = self.matrix();
                let mut out = vec![0.0; n * dx];
                crate::linalg::gemm_ab(&mut out, r, &a, (n, dy, dx), 1.0, false);
                out
            }
        }
    }

    /// The thin SVD. Masks and given SVDs are exact; a dense matrix is decomposed through
    /// the eigen-decomposition of `A A^T = U S^2 U^T`, `V = A^T U S^{-1}`, dropping singular
    /// values below `1e-10 max(s)`.
    pub fn svd(&self) -> Result<SvdForm> {
        let (dy, dx) = self.shape();
        match self {
            Operator::Mask { observed, .. } => {
                let mut u = vec![0.0; dy * dy];
                let mut v = vec![0.0; dx * dy];
                for (j, &i) in observed.iter().enumerate() {
                    u[j * dy + j] = 1.0;
                    v[i * dy + j] = 1.0;
                }
                Ok(SvdForm {
                    dy,
                    dx,
                    u,
                    s: vec![1.0; dy],
                    v,
                })
            }
            Operator::Svd { u, s, v, .. } => {
                // Sort descending, drop zeros.
                let r = s.len();
                let mut order: Vec<usize> = (0..r).filter(|&j| s[j] > 0.0).collect();
                order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
                let rr = order.len();
                let mut uu = vec![0.0; dy * rr];
                let mut vv = vec![0.0; dx * rr];
                for (jn, &j) in order.iter().enumerate() {
                    for i in 0..dy {
                        uu[i * rr + jn] = u[i * r + j];
                    }
                    for i in 0..dx {
                        vv[i * rr + jn] = v[i * r + j];
                    }
                }
                Ok(SvdForm {
                    dy,
                    dx,
                    u: uu,
                    s: order.iter().map(|&j| s[j]).collect(),
                    v: vv,
                })
            }
            Operator::Dense { a, .. } => {
                let mut aat = vec![0.0; dy * dy];
                gemm_abt(&mut aat, a, a, (dy, dx, dy), 1.0, false);
                let (lam, q) = sym_eigen(dy, &aat)?;
                let smax = lam.iter().fold(0.0f64, |m, v| m.max(*v)).sqrt();
                if smax == 0.0 {
                    return Err(Error::invalid("operator: the matrix A is zero"));
                }
                // Descending.
                let keep: Vec<usize> = (0..dy)
                    .rev()
                    .filter(|&j| lam[j].max(0.0).sqrt() > 1e-10 * smax)
                    .collect();
                let r = keep.len();
                let mut u = vec![0.0; dy * r];
                let mut s = vec![0.0; r];
                let mut v = vec![0.0; dx * r];
                for (jn, &j) in keep.iter().enumerate() {
                    s[jn] = lam[j].sqrt();
                    for i in 0..dy {
                        u[i * r + jn] = q[i * dy + j];
                    }
                    // v_j = A^T u_j / s_j.
                    for c in 0..dx {
                        let mut acc = 0.0;
                        for i in 0..dy {
                            acc += a[i * dx + c] * q[i * dy + j];
                        }
                        v[c * r + jn] = acc / s[jn];
                    }
                }
                Ok(SvdForm { dy, dx, u, s, v })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, Noise, Purpose};

    #[test]
    fn image_operators() {
        let x: Vec<f64> = (0..16).map(|i| i as f64).collect();
        // 2x2 average pooling of a 4x4 ramp.
        let sr = Operator::avg_pool(4, 4, 2).unwrap();
        assert_eq!(sr.shape(), (4, 16));
        let y = sr.apply_rows(&x);
        assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
        let f = sr.svd().unwrap();
        assert_eq!(f.rank(), 4);
        let back = Operator::Dense {
            rows: 4,
            cols: 16,
            a: sr.matrix(),
        }
        .svd()
        .unwrap();
        for (a, b) in f.s.iter().zip(&back.s) {
            assert!((a - b).abs() < 1e-12);
        }
        let inp = Operator::inpaint_box(4, 4, 1, 1, 2, 2).unwrap();
        assert_eq!(inp.shape(), (12, 16));
        assert!(!inp.apply_rows(&x).contains(&5.0));
        let out = Operator::outpaint_half(4, 4, "left").unwrap();
        assert_eq!(out.apply_rows(&x), vec![0.0, 1.0, 4.0, 5.0, 8.0, 9.0, 12.0, 13.0]);
        let blur = Operator::gaussian_blur(4, 4, 0.8).unwrap();
        // Rows of an interior pixel sum to one; a constant image stays constant inside.
        let a = blur.matrix();
        let s5: f64 = a[5 * 16..6 * 16].iter().sum();
        assert!(s5 < 1.0 + 1e-12 && s5 > 0.5);
        assert!(Operator::avg_pool(5, 4, 2).is_err());
        assert!(Operator::inpaint_box(4, 4, 3, 3, 2, 2).is_err());
        assert!(Operator::outpaint_half(4, 4, "middle").is_err());
        assert!(Operator::gaussian_blur(4, 4, 0.0).is_err());
    }

    #[test]
    fn svd_reconstructs_dense_and_mask() {
        let noise = Noise::new(5);
        let (dy, dx) = (3, 7);
        let a = noise.normals(stream(Purpose::User, 0), dy, dx);
        let op = Operator::Dense {
            rows: dy,
            cols: dx,
            a: a.clone(),
        };
        let f = op.svd().unwrap();
        assert_eq!(f.rank(), 3);
        let back = Operator::Svd {
            rows: dy,
            cols: dx,
            u: f.u.clone(),
            s: f.s.clone(),
            v: f.v.clone(),
        }
        .matrix();
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).abs() < 1e-10);
        }
        // V^T V = I.
        for i in 0..3 {
            for j in 0..3 {
                let d: f64 = (0..dx).map(|c| f.v[c * 3 + i] * f.v[c * 3 + j]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        let m = Operator::Mask {
            dim: 4,
            observed: vec![2, 0],
        };
        let x = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(m.apply_rows(&x), vec![3.0, 1.0]);
        assert_eq!(m.adjoint_rows(&[3.0, 1.0]), vec![1.0, 0.0, 3.0, 0.0]);
        let mf = m.svd().unwrap();
        let via = Operator::Svd {
            rows: 2,
            cols: 4,
            u: mf.u,
            s: mf.s,
            v: mf.v,
        }
        .apply_rows(&x);
        assert_eq!(via, vec![3.0, 1.0]);
    }
}
