//! Small dense f64 linear algebra on row-major slices, backed by faer.

use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use crate::{Error, Result};

/// Eigen-decomposition of a symmetric `d x d` matrix (row-major): returns the eigenvalues
/// (ascending) and the eigenvectors as the columns of a row-major `d x d` matrix `Q`, so
/// that `A = Q diag(lambda) Q^T`.
pub fn sym_eigen(d: usize, a: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let m = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (a[i * d + j] + a[j * d + i]));
    let e = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::Numerical("eigen-decomposition did not converge".into()))?;
    let lam: Vec<f64> = (0..d).map(|i| e.S().column_vector()[i]).collect();
    let u = e.U();
    let mut q = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            q[i * d + j] = u[(i, j)];
        }
    }
    Ok((lam, q))
}

/// Checks that a row-major `d x d` matrix is finite, symmetric (to a relative 1e-8) and
/// positive definite; `what` names it in the error.
pub fn check_spd(d: usize, a: &[f64], what: &str) -> Result<()> {
    if a.len() != d * d {
        return Err(Error::invalid(format!(
            "{what}: expected a {d}x{d} matrix, got {} entries",
            a.len()
        )));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("{what}: contains NaN or infinite entries")));
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    for i in 0..d {
        for j in 0..i {
            if (a[i * d + j] - a[j * d + i]).abs() > 1e-8 * scale {
                return Err(Error::invalid(format!("{what}: not symmetric (entry {i},{j})")));
            }
        }
    }
    let m = Mat::<f64>::from_fn(d, d, |i, j| a[i * d + j]);
    if m.llt(Side::Lower).is_err() {
        return Err(Error::invalid(format!("{what}: not positive definite")));
    }
    Ok(())
}

/// `out = alpha * A B^T (+ out if accumulate)` for row-major `A` (`m x k`), `B` (`n x k`),
/// `out` (`m x n`): a dense product through faer's blocked kernels.
pub fn gemm_abt(out: &mut [f64], a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), alpha: f64, accumulate: bool) {
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(b, n, k).transpose();
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    let acc = if accumulate { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(dst, acc, lhs, rhs, alpha, Par::rayon(0));
}

/// `out = alpha * A B (+ out if accumulate)` for row-major `A` (`m x k`), `B` (`k x n`),
/// `out` (`m x n`).
pub fn gemm_ab(out: &mut [f64], a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), alpha: f64, accumulate: bool) {
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(b, k, n);
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    let acc = if accumulate { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(dst, acc, lhs, rhs, alpha, Par::rayon(0));
}

/// Row-major `d x d` identity.
pub fn eye(d: usize) -> Vec<f64> {
    let mut a = vec![0.0; d * d];
    for i in 0..d {
        a[i * d + i] = 1.0;
    }
    a
}

/// `y = A x` for row-major `A` (`r x c`).
pub fn matvec(r: usize, c: usize, a: &[f64], x: &[f64], y: &mut [f64]) {
    for i in 0..r {
        let row = &a[i * c..(i + 1) * c];
        y[i] = row.iter().zip(x).map(|(p, q)| p * q).sum();
    }
}

/// `y = A^T x` for row-major `A` (`r x c`).
pub fn matvec_t(r: usize, c: usize, a: &[f64], x: &[f64], y: &mut [f64]) {
    y[..c].iter_mut().for_each(|v| *v = 0.0);
    for i in 0..r {
        let xi = x[i];
        let row = &a[i * c..(i + 1) * c];
        for (yj, aij) in y.iter_mut().zip(row) {
            *yj += aij * xi;
        }
    }
}

/// `log(sum(exp(v)))`, stable; `-inf` for an empty or all `-inf` slice.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let (l, q) = sym_eigen(3, &a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| q[i * 3 + k] * l[k] * q[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        assert!(check_spd(3, &a, "A").is_ok());
        assert!(check_spd(2, &[1.0, 2.0, 2.0, 1.0], "B").is_err());
        assert!(check_spd(2, &[1.0, 0.5, 0.4, 1.0], "C").is_err());
        assert!(log_sum_exp(&[-1000.0, -1000.0]) - (-1000.0 + 2f64.ln()) < 1e-12);
    }

    #[test]
    fn gemm_helpers_match_naive_products() {
        let (m, k, n) = (5, 3, 4);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.71).cos()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c1 = vec![1.0; m * n];
        let mut c2 = vec![1.0; m * n];
        gemm_ab(&mut c1, &a, &b, (m, k, n), 2.0, true);
        gemm_abt(&mut c2, &a, &bt, (m, k, n), 2.0, false);
        for i in 0..m {
            for j in 0..n {
                let e: f64 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>() * 2.0;
                assert!((c1[i * n + j] - (e + 1.0)).abs() < 1e-12);
                assert!((c2[i * n + j] - e).abs() < 1e-12);
            }
        }
    }
}
