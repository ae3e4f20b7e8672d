//! Linear operators `A` (DESIGN.md §1): application to batches, the dense matrix, and the
//! thin SVD `A = U diag(s) V^T` that the SVD-based methods (MCGdiff, DDRM) work in.

use super::problem::Operator;
use crate::linalg::{gemm_abt, sym_eigen};
use crate::{Error, Result};

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

impl Operator {
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
