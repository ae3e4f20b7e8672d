//! Scoring an imputation method on a complete table: standardise the table, hide cells by
//! a missingness mask ([`super::mechanism::make_mask`]), impute, and measure the error on
//! the hidden cells in standardised units, as the tabular imputation benchmarks of
//! DiffPuter (Zhang et al. 2025) and HyperImpute (Jarrett et al. 2022) do.

use super::table::{ColumnKind, MixedTable};
use crate::{Error, Result};

/// A numeric table in standardised units `z = (v - mean) / sd` (population `sd`; a
/// constant column keeps `sd = 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Standardised {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations `sqrt(sum (v - mean)^2 / n)` (1 where that is below
    /// `1e-12`).
    pub sd: Vec<f64>,
    /// The standardised cells, row-major.
    pub z: Vec<f64>,
}

impl Standardised {
    /// Standardises a complete numeric table (an error for a table with label columns or
    /// missing cells).
    pub fn fit(table: &MixedTable) -> Result<Self> {
        if table.kinds.iter().any(|k| matches!(k, ColumnKind::Categorical { .. })) {
            return Err(Error::invalid("scoring needs a numeric table (it has label columns)"));
        }
        if table.n_missing() > 0 {
            return Err(Error::invalid("scoring needs a complete table (it has missing cells)"));
        }
        let (n, d) = (table.rows, table.cols);
        let mut mean = vec![0.0; d];
        let mut sd = vec![1.0; d];
        for j in 0..d {
            let col: Vec<f64> = (0..n).map(|i| table.cells[i * d + j]).collect();
            let m = col.iter().sum::<f64>() / n as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            mean[j] = m;
            sd[j] = if v > 1e-24 { v.sqrt() } else { 1.0 };
        }
        let z = table
            .cells
            .iter()
            .enumerate()
            .map(|(c, v)| (v - mean[c % d]) / sd[c % d])
            .collect();
        Ok(Standardised { mean, sd, z })
    }

    /// Standardised values `z` (row-major, this table's columns) back in data units,
    /// `v = mean + sd z`.
    pub fn unstandardise(&self, z: &[f64]) -> Vec<f64> {
        let d = self.sd.len();
        z.iter()
            .enumerate()
            .map(|(c, v)| self.mean[c % d] + self.sd[c % d] * v)
            .collect()
    }

    /// The standardised cells with the masked ones (`mask[c]` true) set to `NaN`.
    pub fn masked(&self, mask: &[bool]) -> Vec<f64> {
        self.z
            .iter()
            .zip(mask)
            .map(|(v, &m)| if m { f64::NAN } else { *v })
            .collect()
    }
}

/// `table` with the cells of `mask` (row-major, `true` = hidden) made missing.
pub fn apply_mask(table: &MixedTable, mask: &[bool]) -> MixedTable {
    let d = table.cols;
    let mut masked = table.clone();
    for (c, &m) in mask.iter().enumerate() {
        if m {
            masked.cells[c] = f64::NAN;
            masked.raw[c / d][c % d].clear();
        }
    }
    masked
}

/// Root-mean-square and mean absolute error over the hidden cells (`mask[c]` true) in
/// standardised units: `e_c = (imputed_c - truth_c) / sd_j` for cell `c` in column `j`,
/// `RMSE = sqrt(mean e_c^2)`, `MAE = mean |e_c|` (`NaN` when no cell is hidden).
pub fn errors(imputed: &[f64], truth: &[f64], mask: &[bool], sd: &[f64]) -> (f64, f64) {
    let d = sd.len();
    let (mut se, mut ae, mut k) = (0.0, 0.0, 0.0);
    for (c, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let e = (imputed[c] - truth[c]) / sd[c % d];
        se += e * e;
        ae += e.abs();
        k += 1.0;
    }
    ((se / k).sqrt(), ae / k)
}

/// Per column with missing cells: `(column, missing cells, mean of uncertainty over
/// them)`, where `uncertainty` is an imputation's per-cell uncertainty (row-major: the
/// posterior sd of a numeric cell, `1 - p(mode)` of a label).
pub fn column_uncertainty(table: &MixedTable, uncertainty: &[f64]) -> Vec<(usize, usize, f64)> {
    let (n, d) = (table.rows, table.cols);
    (0..d)
        .filter_map(|j| {
            let u: Vec<f64> = (0..n)
                .filter(|&i| table.is_missing(i, j))
                .map(|i| uncertainty[i * d + j])
                .collect();
            (!u.is_empty()).then(|| (j, u.len(), u.iter().sum::<f64>() / u.len() as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MixedTable {
        MixedTable::parse("t", b"a,b\n1,10\n2,10\n3,10\n", &[]).unwrap()
    }

    #[test]
    fn standardise_mask_and_score() {
        let t = table();
        let s = Standardised::fit(&t).unwrap();
        let sd0 = (2.0f64 / 3.0).sqrt();
        assert_eq!(s.mean, vec![2.0, 10.0]);
        assert!((s.sd[0] - sd0).abs() < 1e-15 && s.sd[1] == 1.0);
        assert!((s.z[0] + 1.0 / sd0).abs() < 1e-12 && s.z[1] == 0.0);
        let back = s.unstandardise(&s.z);
        assert!(back.iter().zip(&t.cells).all(|(a, b)| (a - b).abs() < 1e-12));
        let mask = vec![true, false, false, true, false, false];
        let m = apply_mask(&t, &mask);
        assert!(m.cells[0].is_nan() && m.cells[3].is_nan() && m.n_missing() == 2);
        assert!(s.masked(&mask)[0].is_nan() && !s.masked(&mask)[1].is_nan());
        // Errors of 1 sd in column 0 and 2 in column 1: RMSE sqrt((1 + 4) / 2), MAE 1.5.
        let mut imputed = t.cells.clone();
        imputed[0] += sd0;
        imputed[3] -= 2.0;
        let (rmse, mae) = errors(&imputed, &t.cells, &mask, &s.sd);
        assert!((rmse - 2.5f64.sqrt()).abs() < 1e-12 && (mae - 1.5).abs() < 1e-12);
        let u = column_uncertainty(&m, &[0.5, 0.0, 0.0, 0.25, 0.0, 0.0]);
        assert_eq!(u, vec![(0, 1, 0.5), (1, 1, 0.25)]);
        assert!(Standardised::fit(&m).is_err());
    }
}
