//! Scoring an imputation method on a complete table: standardise the table, hide cells by
//! a missingness mask ([`super::mechanism::make_mask`]), impute, and measure the error on
//! the hidden cells in standardised units, as the tabular imputation benchmarks of
//! DiffPuter (Zhang et al. 2025) and HyperImpute (Jarrett et al. 2022) do. [`score_repeat`]
//! runs one mask against the mean and kNN baselines and a model's imputation;
//! [`summarise`] aggregates repeats.

use std::time::Instant;

use super::baseline::{knn_impute, mean_impute, DEFAULT_K};
use super::mechanism::{make_mask, Mechanism};
use super::sampler::Imputation;
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

/// One method's score on one mask.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodScore {
    /// `mean`, `knn` or `model`.
    pub method: &'static str,
    /// RMSE over the hidden cells, standardised units ([`errors`]).
    pub rmse: f64,
    /// MAE over the hidden cells, standardised units.
    pub mae: f64,
    /// Wall-clock seconds of the imputation (for the model: its training too).
    pub seconds: f64,
}

/// One repeat of [`score_repeat`].
#[derive(Clone, Debug)]
pub struct Repeat {
    /// The mask (row-major, `true` = hidden).
    pub mask: Vec<bool>,
    /// Hidden cells.
    pub missing: usize,
    /// Mean imputation, kNN imputation (`k = DEFAULT_K`), then the model.
    pub scores: Vec<MethodScore>,
    /// The model's imputation of the masked table.
    pub imputation: Imputation,
    /// Rows of the masked table that were imputed (had a hidden cell).
    pub sampled_rows: usize,
}

impl Repeat {
    /// Rows whose particle system's ESS fell below `fraction` of the particles at some step.
    pub fn low_ess_rows(&self, fraction: f64) -> usize {
        self.imputation.ess_min.iter().filter(|&&e| e < fraction).count()
    }
}

/// One repeat of the benchmark on the complete numeric table `full` (standardised as
/// `st`): a mask by `mechanism` at `rate` with `seed` ([`make_mask`], on the standardised
/// cells), the mean and kNN baselines on the standardised masked table (kNN distances
/// would otherwise be dominated by the widest column), and `impute(masked)`, the model's
/// imputation of the masked table in data units (typically: train on it, then impute it).
/// Every imputation is scored by [`errors`].
pub fn score_repeat<E: From<Error>>(
    full: &MixedTable,
    st: &Standardised,
    mechanism: Mechanism,
    rate: f64,
    seed: u64,
    impute: &mut dyn FnMut(&MixedTable) -> std::result::Result<Imputation, E>,
) -> std::result::Result<Repeat, E> {
    let (n, d) = (full.rows, full.cols);
    let mask = make_mask(&st.z, n, d, mechanism, rate, seed)?;
    let masked = apply_mask(full, &mask);
    let zmasked = st.masked(&mask);
    let score = |method, imputed: &[f64], t: Instant| {
        let (rmse, mae) = errors(imputed, &full.cells, &mask, &st.sd);
        MethodScore {
            method,
            rmse,
            mae,
            seconds: t.elapsed().as_secs_f64(),
        }
    };
    let t = Instant::now();
    let mean = score("mean", &st.unstandardise(&mean_impute(&zmasked, n, d)?), t);
    let t = Instant::now();
    let knn = score("knn", &st.unstandardise(&knn_impute(&zmasked, n, d, DEFAULT_K)?), t);
    let t = Instant::now();
    let imputation = impute(&masked)?;
    let model = score("model", &imputation.completed, t);
    Ok(Repeat {
        missing: mask.iter().filter(|&&m| m).count(),
        mask,
        scores: vec![mean, knn, model],
        imputation,
        sampled_rows: masked.incomplete_rows().len(),
    })
}

/// Mean and sample standard deviation over repeats of one (table, method): `(rmse, mae,
/// seconds)`, each `(mean, sd)` ([`crate::benchmarks::mean_sd`]).
pub fn summarise(scores: &[&MethodScore]) -> [(f64, f64); 3] {
    let stat = |f: fn(&MethodScore) -> f64| {
        let v: Vec<f64> = scores.iter().map(|s| f(s)).collect();
        crate::benchmarks::mean_sd(&v)
    };
    [stat(|s| s.rmse), stat(|s| s.mae), stat(|s| s.seconds)]
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

    #[test]
    fn a_repeat_scores_baselines_and_the_model() {
        let text: String = std::iter::once("a,b,c\n".to_string())
            .chain((0..40).map(|i| format!("{},{},{}\n", i % 7, (i * 3) % 11, i % 5)))
            .collect();
        let t = MixedTable::parse("t", text.as_bytes(), &[]).unwrap();
        let st = Standardised::fit(&t).unwrap();
        // A "model" that imputes the truth: error 0, every hidden cell counted.
        let truth = t.cells.clone();
        let rep = score_repeat::<Error>(&t, &st, Mechanism::Mcar, 0.3, 1, &mut |masked| {
            assert_eq!(masked.n_missing(), masked.cells.iter().filter(|v| v.is_nan()).count());
            Ok(Imputation {
                completed: truth.clone(),
                uncertainty: vec![0.0; truth.len()],
                draws: Vec::new(),
                ess_min: vec![1.0, 0.01],
                prior_rows: 0,
            })
        })
        .unwrap();
        assert_eq!(rep.missing, rep.mask.iter().filter(|&&m| m).count());
        assert!(rep.missing > 0);
        assert_eq!(
            rep.scores.iter().map(|s| s.method).collect::<Vec<_>>(),
            ["mean", "knn", "model"]
        );
        assert_eq!((rep.scores[2].rmse, rep.scores[2].mae), (0.0, 0.0));
        assert!(rep.scores[0].rmse > 0.0);
        assert_eq!(rep.low_ess_rows(0.05), 1);
        let s = summarise(&[&rep.scores[0], &rep.scores[0]]);
        assert_eq!((s[0].0, s[0].1), (rep.scores[0].rmse, 0.0));
    }
}
