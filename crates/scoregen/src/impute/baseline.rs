//! Classical imputers, the reference points of the imputation benchmarks.
//!
//! A table is a row-major `&[f64]` of `n * d` values with `NaN` for a missing cell; every
//! other value must be finite. The imputers return a copy with the missing cells filled in;
//! observed cells are returned unchanged, bit for bit.
//!
//! * [`mean_impute`]: each missing cell gets its column's mean over the observed cells.
//! * [`knn_impute`]: scikit-learn's `KNNImputer(n_neighbors = k, weights = "uniform",
//!   metric = "nan_euclidean")`: the mean of the `k` nearest rows that observe the column,
//!   under the Euclidean distance over the coordinates both rows observe, rescaled to the
//!   full dimension.

use rayon::prelude::*;

use crate::{Error, Result};

/// The number of neighbours of [`knn_impute`] by default (scikit-learn's default).
pub const DEFAULT_K: usize = 5;

/// Checks that a row-major table of `len` values has shape `n x d` with `n, d >= 1`;
/// returns the number of cells. Shared by the imputers and the masking mechanisms.
pub(super) fn check_shape(len: usize, n: usize, d: usize) -> Result<usize> {
    if n == 0 || d == 0 {
        return Err(Error::invalid(format!(
            "a table needs at least one row and one column, got {n} x {d}"
        )));
    }
    let cells = n
        .checked_mul(d)
        .ok_or_else(|| Error::invalid(format!("table size {n} x {d} overflows")))?;
    if len != cells {
        return Err(Error::invalid(format!(
            "table has {len} values, expected {n} x {d} = {cells}"
        )));
    }
    Ok(cells)
}

/// Checks the shape and values of a table with missing cells.
fn check_table(x: &[f64], n: usize, d: usize) -> Result<()> {
    check_shape(x.len(), n, d)?;
    if let Some(k) = x.iter().position(|v| v.is_infinite()) {
        return Err(Error::invalid(format!(
            "row {}, column {} is {}: values must be finite (NaN marks a missing cell)",
            k / d + 1,
            k % d + 1,
            x[k]
        )));
    }
    Ok(())
}

/// Each column's mean over its observed cells; errors on a column with none.
fn column_means(x: &[f64], n: usize, d: usize) -> Result<Vec<f64>> {
    let mut sum = vec![0.0; d];
    let mut count = vec![0usize; d];
    for row in x.chunks_exact(d).take(n) {
        for (j, &v) in row.iter().enumerate() {
            if !v.is_nan() {
                sum[j] += v;
                count[j] += 1;
            }
        }
    }
    if let Some(j) = count.iter().position(|&c| c == 0) {
        return Err(Error::invalid(format!(
            "column {} has no observed value: it cannot be imputed",
            j + 1
        )));
    }
    Ok(sum.iter().zip(&count).map(|(s, &c)| s / c as f64).collect())
}

/// Mean imputation: every missing (`NaN`) cell of column `j` becomes the mean of the
/// observed cells of column `j`.
///
/// Errors on a bad shape, an infinite value, or a column without any observed cell (named,
/// 1-based, in the message).
pub fn mean_impute(x: &[f64], n: usize, d: usize) -> Result<Vec<f64>> {
    check_table(x, n, d)?;
    let means = column_means(x, n, d)?;
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(d) {
        for (v, &m) in row.iter_mut().zip(&means) {
            if v.is_nan() {
                *v = m;
            }
        }
    }
    Ok(out)
}

/// The `nan_euclidean` distance of scikit-learn between rows `a` and `b`:
/// `sqrt(d / c · Σ_{j observed in both} (a_j - b_j)²)` with `c` the number of coordinates
/// observed in both, and `+∞` when `c = 0`.
fn nan_euclidean(a: &[f64], b: &[f64]) -> f64 {
    let mut ssq = 0.0;
    let mut common = 0usize;
    for (&u, &v) in a.iter().zip(b) {
        if !u.is_nan() && !v.is_nan() {
            let t = u - v;
            ssq += t * t;
            common += 1;
        }
    }
    if common == 0 {
        f64::INFINITY
    } else {
        // scikit-learn's order: divide by the common count, then multiply by d.
        (ssq / common as f64 * a.len() as f64).sqrt()
    }
}

/// k-nearest-neighbour imputation, as scikit-learn's
/// `KNNImputer(n_neighbors = k, weights = "uniform", metric = "nan_euclidean")`.
///
/// The distance between rows `a` and `b` is
/// `dist(a, b) = sqrt(d / c · Σ_{j ∈ C} (a_j - b_j)²)`, where `C` is the set of the `c`
/// coordinates observed in both rows (infinite when `c = 0`). A missing cell `(i, j)` is
/// the plain mean of column `j` over the `k` nearest *donors*, the rows with column `j`
/// observed and a finite distance to row `i` (fewer when there are fewer such donors; ties
/// broken by the lower row index). When no donor is at a finite distance, the cell gets
/// the column's observed mean, as scikit-learn does.
///
/// Each row's distances to all rows are computed once (`O(n² d)` in all), rows in parallel;
/// the result does not depend on the number of threads.
///
/// Errors when `k == 0`, on a bad shape, an infinite value, or a column without any
/// observed cell (named, 1-based, in the message).
pub fn knn_impute(x: &[f64], n: usize, d: usize, k: usize) -> Result<Vec<f64>> {
    if k == 0 {
        return Err(Error::invalid("kNN imputation needs at least one neighbour (k >= 1)"));
    }
    check_table(x, n, d)?;
    let means = column_means(x, n, d)?;
    let mut out = x.to_vec();
    out.par_chunks_mut(d).enumerate().for_each(|(i, row_out)| {
        let row = &x[i * d..(i + 1) * d];
        if !row.iter().any(|v| v.is_nan()) {
            return;
        }
        let dist: Vec<f64> = (0..n)
            .map(|r| {
                if r == i {
                    f64::INFINITY
                } else {
                    nan_euclidean(row, &x[r * d..(r + 1) * d])
                }
            })
            .collect();
        let mut donors: Vec<(f64, usize)> = Vec::with_capacity(n);
        for j in 0..d {
            if !row[j].is_nan() {
                continue;
            }
            donors.clear();
            donors.extend(
                (0..n)
                    .filter(|&r| dist[r].is_finite() && !x[r * d + j].is_nan())
                    .map(|r| (dist[r], r)),
            );
            if donors.is_empty() {
                row_out[j] = means[j];
                continue;
            }
            let by_distance = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            let m = k.min(donors.len());
            if m < donors.len() {
                donors.select_nth_unstable_by(m - 1, by_distance);
                donors.truncate(m);
            }
            // Sum in a fixed order, so the value is a function of the chosen set only.
            donors.sort_unstable_by(by_distance);
            let sum: f64 = donors.iter().map(|&(_, r)| x[r * d + j]).sum();
            row_out[j] = sum / m as f64;
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, Noise, Purpose};

    const NAN: f64 = f64::NAN;

    /// Observed cells of `x` are bit-identical in `y`, and `y` has no NaN.
    fn assert_observed_unchanged(x: &[f64], y: &[f64]) {
        assert_eq!(x.len(), y.len());
        for (a, b) in x.iter().zip(y) {
            assert!(!b.is_nan());
            if !a.is_nan() {
                assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }

    /// A random table with a share `rate` of its cells missing.
    fn holey_table(n: usize, d: usize, rate: f64, seed: u64) -> Vec<f64> {
        let noise = Noise::new(seed);
        let mut x = noise.normals(stream(Purpose::User, 0), n, d);
        let u = noise.uniforms(stream(Purpose::User, 1), n * d);
        for (v, &w) in x.iter_mut().zip(&u) {
            if w < rate {
                *v = NAN;
            }
        }
        x
    }

    /// A direct transcription of the definition, one cell at a time.
    fn knn_reference(x: &[f64], n: usize, d: usize, k: usize) -> Vec<f64> {
        let means = column_means(x, n, d).unwrap();
        let mut out = x.to_vec();
        for i in 0..n {
            for j in 0..d {
                if !x[i * d + j].is_nan() {
                    continue;
                }
                let mut cand = Vec::new();
                for r in 0..n {
                    if r == i || x[r * d + j].is_nan() {
                        continue;
                    }
                    let (mut s, mut c) = (0.0, 0);
                    for t in 0..d {
                        let (a, b) = (x[i * d + t], x[r * d + t]);
                        if !a.is_nan() && !b.is_nan() {
                            s += (a - b) * (a - b);
                            c += 1;
                        }
                    }
                    if c > 0 {
                        cand.push(((s / c as f64 * d as f64).sqrt(), r));
                    }
                }
                if cand.is_empty() {
                    out[i * d + j] = means[j];
                    continue;
                }
                cand.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
                cand.truncate(k);
                out[i * d + j] = cand.iter().map(|&(_, r)| x[r * d + j]).sum::<f64>() / cand.len() as f64;
            }
        }
        out
    }

    #[test]
    fn mean_imputation_by_hand() {
        #[rustfmt::skip]
        let x = [
            1.0, NAN, -0.0,
            3.0, 4.0, NAN,
            NAN, 8.0, 2.5,
        ];
        let y = mean_impute(&x, 3, 3).unwrap();
        assert_eq!(y, vec![1.0, 6.0, -0.0, 3.0, 4.0, 1.25, 2.0, 8.0, 2.5]);
        assert_observed_unchanged(&x, &y);
        assert!(y[2].is_sign_negative());
    }

    /// Target row 0 = (0, 0, 0, ?), donors of column 3 (distance with the d / c rescaling,
    /// and without it):
    /// * A (row 1) = (1, 1, ·, 10): c = 2, ssq 2, dist sqrt(4/2 · 2) = 2 (raw 1.414);
    /// * B (row 2) = (1.2, ·, ·, 20): c = 1, dist sqrt(4 · 1.44) = 2.4 (raw 1.2);
    /// * C (row 3) = (1, 1, 1, 60): c = 3, dist sqrt(4/3 · 3) = 2 (raw 1.732), a tie with A;
    /// * D (row 4) = (·, ·, ·, 40): no common coordinate, infinite: never a donor;
    /// * E (row 5) = (0.5, 0.5, 0.5, 50): dist sqrt(4/3 · 0.75) = 1 (raw 0.866).
    ///
    /// Rescaled order E, A, C (A before C by index), B; the raw order would be E, B, A, C.
    #[test]
    fn knn_by_hand_with_rescaling_ties_and_few_donors() {
        #[rustfmt::skip]
        let x = [
            0.0, 0.0, 0.0, NAN,
            1.0, 1.0, NAN, 10.0,
            1.2, NAN, NAN, 20.0,
            1.0, 1.0, 1.0, 60.0,
            NAN, NAN, NAN, 40.0,
            0.5, 0.5, 0.5, 50.0,
        ];
        let cell = |k: usize| knn_impute(&x, 6, 4, k).unwrap()[3];
        assert_eq!(cell(1), 50.0);
        assert_eq!(cell(2), (50.0 + 10.0) / 2.0); // raw distances would give (50 + 20) / 2
        assert_eq!(cell(3), (50.0 + 10.0 + 60.0) / 3.0);
        // k beyond the finite donors: all four of them, D excluded.
        assert_eq!(cell(4), (50.0 + 10.0 + 60.0 + 20.0) / 4.0);
        assert_eq!(cell(100), (50.0 + 10.0 + 60.0 + 20.0) / 4.0);
        let y = knn_impute(&x, 6, 4, 2).unwrap();
        assert_observed_unchanged(&x, &y);
        // Row 4 only observes column 3: distances 2 |40 - v| to rows 1, 2, 3, 5 (60, 40, 40,
        // 20), row 0 infinite. Column 0, k = 2: row 5, then row 2 wins the tie with row 3.
        assert_eq!(y[16], (0.5 + 1.2) / 2.0);
        // Columns 1 and 2 (row 2 does not observe them): rows 5 and 3.
        assert_eq!(y[17], (0.5 + 1.0) / 2.0);
        assert_eq!(y[18], (0.5 + 1.0) / 2.0);
        // Row 2 = (1.2, ·, ·, 20), column 1: row 0 at sqrt(4 · 1.44) = 2.4 (c = 1), row 1 at
        // sqrt(4/2 · 100.04) = 14.1, row 5 at 42.4, row 3 at 56.6: k = 2 → rows 0 and 1.
        assert_eq!(y[9], (0.0 + 1.0) / 2.0);
        // Column 2: row 0 (2.4), row 5 (42.4), row 3 (56.6): rows 0 and 5.
        assert_eq!(y[10], (0.0 + 0.5) / 2.0);
    }

    #[test]
    fn knn_falls_back_to_the_column_mean() {
        // No donor shares a coordinate with the receiver.
        #[rustfmt::skip]
        let x = [
            1.0, NAN,
            NAN, 2.0,
            NAN, 6.0,
        ];
        let y = knn_impute(&x, 3, 2, DEFAULT_K).unwrap();
        assert_eq!(y, vec![1.0, 4.0, 1.0, 2.0, 1.0, 6.0]);
    }

    #[test]
    fn knn_matches_the_definition_and_ignores_thread_count() {
        let (n, d) = (300, 9);
        let x = holey_table(n, d, 0.4, 3);
        for k in [1, DEFAULT_K, 17] {
            let y = knn_impute(&x, n, d, k).unwrap();
            assert_observed_unchanged(&x, &y);
            let r = knn_reference(&x, n, d, k);
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let y1 = pool.install(|| knn_impute(&x, n, d, k).unwrap());
            assert!(y.iter().zip(&y1).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn knn_on_a_digits_sized_table() {
        // 1797 x 64 with 30% missing, the size of the digits benchmark.
        let (n, d) = (1797, 64);
        let x = holey_table(n, d, 0.3, 4);
        let t = std::time::Instant::now();
        let y = knn_impute(&x, n, d, DEFAULT_K).unwrap();
        assert_observed_unchanged(&x, &y);
        // Generous: well under a second on two cores in release builds.
        assert!(t.elapsed().as_secs_f64() < 60.0, "{:?}", t.elapsed());
    }

    #[test]
    fn complete_tables_are_returned_as_is() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mean_impute(&x, 2, 2).unwrap(), x.to_vec());
        assert_eq!(knn_impute(&x, 2, 2, 3).unwrap(), x.to_vec());
        // A single complete row.
        assert_eq!(knn_impute(&[5.0], 1, 1, 1).unwrap(), vec![5.0]);
    }

    #[test]
    fn bad_tables_are_errors() {
        #[rustfmt::skip]
        let x = [
            1.0, NAN, 3.0,
            4.0, NAN, 6.0,
        ];
        for r in [mean_impute(&x, 2, 3), knn_impute(&x, 2, 3, 2)] {
            let e = r.unwrap_err();
            assert!(e.is_user_error());
            assert!(e.to_string().contains("column 2"), "{e}");
        }
        assert!(knn_impute(&[1.0, NAN, 2.0, 3.0], 2, 2, 0).is_err());
        assert!(mean_impute(&x, 3, 3).is_err());
        assert!(knn_impute(&x, 0, 3, 1).is_err());
        assert!(mean_impute(&x, 2, 0).is_err());
        assert!(mean_impute(&x, usize::MAX, 2).is_err());
        let y = [1.0, f64::INFINITY, 3.0, 4.0];
        let e = knn_impute(&y, 2, 2, 1).unwrap_err().to_string();
        assert!(e.contains("row 1, column 2"), "{e}");
        assert!(mean_impute(&y, 2, 2).is_err());
    }
}
