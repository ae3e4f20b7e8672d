//! Missingness mechanisms: masks of a complete table for imputation benchmarks.
//!
//! A complete table is a row-major `&[f64]` of `n * d` finite values, already standardised
//! per column by the caller; a mask is a `Vec<bool>` of `n * d` cells, `true` where the cell
//! is **missing**. Three mechanisms, following the protocol of Muzellec et al. (2020),
//! *Missing data imputation using optimal transport* (ICML), which DiffPuter (Zhang et al.
//! 2024, *Unleashing the potential of diffusion models for incomplete data imputation*)
//! uses for its benchmarks:
//!
//! * [`Mechanism::Mcar`]: every cell is missing independently with probability `p`.
//! * [`Mechanism::Mar`] (Muzellec's `MAR_mask(X, p, p_obs = 0.5)`): a random set `O` of
//!   `d_obs = max(⌊0.5 d⌋, 1)` columns (see [`MAR_OBSERVED_FRACTION`]) is always observed;
//!   cell `(i, j)` of every other column is missing with probability
//!   `σ(X[i, O] · w_j + b_j)`, a logistic model of the row's observed cells.
//! * [`Mechanism::Mnar`] (Muzellec's `MNAR_mask_logistic(X, p, p_params = 0.3,
//!   exclude_inputs = True)`): the same logistic model with a random set `I` of
//!   `d_params = max(⌊0.3 d⌋, 1)` input columns (see [`MNAR_INPUT_FRACTION`]), after which
//!   the input columns themselves are masked completely at random with probability `p`, so
//!   the missingness of the other columns depends on values that may be missing.
//!
//! The logistic weights are `w_j = u_j / sd_i(X[i, S] · u_j)` with `u_j` iid Uniform(0, 1)
//! entries and the population standard deviation over rows (a zero deviation is replaced by
//! one), as in the NumPy version of the protocol; the intercept `b_j` solves
//! `mean_i σ(X[i, S] · w_j + b_j) = p` by bisection on `[-50, 50]`.
//!
//! Every random draw comes from [`crate::rng::Noise`] with `Purpose::User` streams, so a mask
//! is bit-reproducible for a seed whatever the number of threads.

use crate::data::column_mean_sd;
use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// The fraction of the columns that the MAR mechanism keeps always observed:
/// `d_obs = max(⌊MAR_OBSERVED_FRACTION · d⌋, 1)` (Muzellec et al. 2020, `p_obs = 0.5`).
pub const MAR_OBSERVED_FRACTION: f64 = 0.5;

/// The fraction of the columns that are the inputs of the MNAR logistic model:
/// `d_params = max(⌊MNAR_INPUT_FRACTION · d⌋, 1)` (Muzellec et al. 2020, `p_params = 0.3`).
pub const MNAR_INPUT_FRACTION: f64 = 0.3;

/// The intercept of each logistic model is searched for in `[-BOUND, BOUND]`.
const INTERCEPT_BOUND: f64 = 50.0;

// Stream indices (under `Purpose::User`) of the distinct kinds of draw of this module.
// A private block of indices, so that a caller's own `User` streams with small indices
// do not coincide with them.
const STREAM_BASE: u64 = 0x494d_5055_0000; // "IMPU"
const STREAM_COLUMNS: u64 = STREAM_BASE;
const STREAM_WEIGHTS: u64 = STREAM_BASE + 1;
const STREAM_CELLS: u64 = STREAM_BASE + 2;

/// A missingness mechanism (see the module documentation for the formulas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// Missing completely at random: each cell independently with probability `p`.
    Mcar,
    /// Missing at random: half of the columns are always observed, the others are missing
    /// through a logistic model of the observed ones.
    Mar,
    /// Missing not at random: a logistic model of 30% of the columns masks the others, and
    /// those input columns are then masked completely at random.
    Mnar,
}

impl Mechanism {
    /// The mechanism's lower-case name, as accepted by [`std::str::FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Mcar => "mcar",
            Mechanism::Mar => "mar",
            Mechanism::Mnar => "mnar",
        }
    }
}

impl std::str::FromStr for Mechanism {
    type Err = Error;

    /// Parses `mcar`, `mar` or `mnar`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mcar" => Ok(Mechanism::Mcar),
            "mar" => Ok(Mechanism::Mar),
            "mnar" => Ok(Mechanism::Mnar),
            _ => Err(Error::invalid(format!(
                "unknown missingness mechanism {s:?}: expected one of mcar, mar, mnar"
            ))),
        }
    }
}

/// The numerically stable logistic function `σ(t) = 1 / (1 + e^{-t})`.
fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// `k` columns of `0..d` drawn uniformly without replacement, and the others, both in
/// increasing order. The draw is the order of `d` uniforms (ties broken by index).
fn choose_columns(d: usize, k: usize, noise: &Noise) -> (Vec<usize>, Vec<usize>) {
    let u = noise.uniforms(stream(Purpose::User, STREAM_COLUMNS), d);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| u[a].total_cmp(&u[b]).then(a.cmp(&b)));
    let mut chosen = order[..k].to_vec();
    let mut rest = order[k..].to_vec();
    chosen.sort_unstable();
    rest.sort_unstable();
    (chosen, rest)
}

/// The intercept `b` with `mean_i σ(z_i + b) = rate`, by bisection on `[-50, 50]` (the
/// left side increases with `b`).
fn fit_intercept(z: &[f64], rate: f64) -> f64 {
    let excess = |b: f64| z.iter().map(|&zi| sigmoid(zi + b)).sum::<f64>() / z.len() as f64 - rate;
    let (mut lo, mut hi) = (-INTERCEPT_BOUND, INTERCEPT_BOUND);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if hi - lo <= 1e-12 {
            break;
        }
        if excess(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Masks the `targets` columns of `mask` by the logistic model of the `inputs` columns
/// (Muzellec et al. 2020): for target `j`, `z_ij = X[i, inputs] · u_j / sd_i(X[i, inputs] · u_j)`
/// with `u_j` iid Uniform(0, 1), the intercept `b_j` fitted so that the mean probability is
/// `rate`, and cell `(i, j)` missing when its uniform `v_ij < σ(z_ij + b_j)`.
#[allow(clippy::too_many_arguments)]
fn logistic_mask(
    x: &[f64],
    n: usize,
    d: usize,
    inputs: &[usize],
    targets: &[usize],
    rate: f64,
    noise: &Noise,
    cells: &[f64],
    mask: &mut [bool],
) {
    let n_in = inputs.len();
    let n_out = targets.len();
    // Weights as in the reference: an [n_in, n_out] row-major matrix.
    let u = noise.uniforms(stream(Purpose::User, STREAM_WEIGHTS), n_in * n_out);
    let mut z = vec![0.0; n];
    for (t, &j) in targets.iter().enumerate() {
        for (i, zi) in z.iter_mut().enumerate() {
            let row = &x[i * d..(i + 1) * d];
            *zi = inputs.iter().enumerate().map(|(a, &c)| row[c] * u[a * n_out + t]).sum();
        }
        // Standardise the logits (population sd; a constant column is left as it is).
        let scale = 1.0 / column_mean_sd(&z, 1, 0).1[0];
        for zi in z.iter_mut() {
            *zi *= scale;
        }
        let b = fit_intercept(&z, rate);
        for (i, &zi) in z.iter().enumerate() {
            mask[i * d + j] = cells[i * d + j] < sigmoid(zi + b);
        }
    }
}

/// A missingness mask of the complete table `x` (`n * d` row-major, standardised per
/// column) under `mech`, with target missing rate `rate`; `true` = missing.
///
/// * MCAR: `P(cell missing) = rate`, independently.
/// * MAR: `d_obs = max(⌊0.5 d⌋, 1)` random columns `O` have no missing cell; cell `(i, j)`
///   of another column is missing with probability `σ(X[i, O] · w_j + b_j)`, where
///   `w_j = u_j / sd_i(X[i, O] · u_j)`, `u_j` iid Uniform(0, 1), and `b_j` (bisection on
///   `[-50, 50]`) makes the mean probability over rows equal `rate` (Muzellec et al. 2020,
///   `MAR_mask`; the MAR setting of DiffPuter, Zhang et al. 2024).
/// * MNAR: the same logistic model with `d_params = max(⌊0.3 d⌋, 1)` random input columns
///   `I` in place of `O`, then the cells of the input columns are missing independently
///   with probability `rate` (Muzellec et al. 2020, `MNAR_mask_logistic` with
///   `exclude_inputs = True`).
///
/// The overall missing share is `rate` in expectation for MCAR and MNAR, and
/// `rate · (d - d_obs) / d` for MAR. The mask is a function of `(x, mech, rate, seed)`
/// only.
///
/// Errors when `rate` is not in `(0, 1)`, `n == 0`, `d == 0`, `x.len() != n * d`, a value
/// is not finite, or `d < 2` for MAR / MNAR.
pub fn make_mask(x: &[f64], n: usize, d: usize, mech: Mechanism, rate: f64, seed: u64) -> Result<Vec<bool>> {
    // `!(0 < rate < 1)` also rejects NaN.
    if !(rate > 0.0 && rate < 1.0) {
        return Err(Error::invalid(format!("missing rate must be in (0, 1), got {rate}")));
    }
    let cells = super::baseline::check_shape(x.len(), n, d)?;
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "a complete table must be finite: row {}, column {} is {}",
            k / d + 1,
            k % d + 1,
            x[k]
        )));
    }
    if mech != Mechanism::Mcar && d < 2 {
        return Err(Error::invalid(format!(
            "the {} mechanism needs at least 2 columns, got {d}",
            mech.name()
        )));
    }

    let noise = Noise::new(seed);
    // One uniform per cell; each cell reads its own uniform at most once.
    let u = noise.uniforms(stream(Purpose::User, STREAM_CELLS), cells);
    let mut mask = vec![false; cells];
    match mech {
        Mechanism::Mcar => {
            for (m, &v) in mask.iter_mut().zip(&u) {
                *m = v < rate;
            }
        }
        Mechanism::Mar => {
            let d_obs = ((MAR_OBSERVED_FRACTION * d as f64).floor() as usize).max(1);
            let (obs, nas) = choose_columns(d, d_obs, &noise);
            logistic_mask(x, n, d, &obs, &nas, rate, &noise, &u, &mut mask);
        }
        Mechanism::Mnar => {
            let d_params = ((MNAR_INPUT_FRACTION * d as f64).floor() as usize).max(1);
            let (inputs, nas) = choose_columns(d, d_params, &noise);
            logistic_mask(x, n, d, &inputs, &nas, rate, &noise, &u, &mut mask);
            for i in 0..n {
                for &j in &inputs {
                    mask[i * d + j] = u[i * d + j] < rate;
                }
            }
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of `d` iid standard normals.
    fn gaussian_table(n: usize, d: usize, seed: u64) -> Vec<f64> {
        Noise::new(seed).normals(stream(Purpose::User, 0), n, d)
    }

    /// A 2-column table with correlation 0.8.
    fn correlated_pair(n: usize, seed: u64) -> Vec<f64> {
        let z = gaussian_table(n, 2, seed);
        let mut x = vec![0.0; 2 * n];
        for i in 0..n {
            x[2 * i] = z[2 * i];
            x[2 * i + 1] = 0.8 * z[2 * i] + 0.6 * z[2 * i + 1];
        }
        x
    }

    fn column_share(mask: &[bool], n: usize, d: usize, j: usize) -> f64 {
        (0..n).filter(|&i| mask[i * d + j]).count() as f64 / n as f64
    }

    fn binomial_se(p: f64, count: usize) -> f64 {
        (p * (1.0 - p) / count as f64).sqrt()
    }

    /// Mean of column `of` over the rows where column `by` is missing, minus over the rows
    /// where it is observed.
    fn mean_gap(x: &[f64], mask: &[bool], n: usize, d: usize, of: usize, by: usize) -> f64 {
        let (mut s1, mut c1, mut s0, mut c0) = (0.0, 0usize, 0.0, 0usize);
        for i in 0..n {
            if mask[i * d + by] {
                s1 += x[i * d + of];
                c1 += 1;
            } else {
                s0 += x[i * d + of];
                c0 += 1;
            }
        }
        s1 / c1 as f64 - s0 / c0 as f64
    }

    #[test]
    fn names_parse_and_round_trip() {
        for m in [Mechanism::Mcar, Mechanism::Mar, Mechanism::Mnar] {
            assert_eq!(m.name().parse::<Mechanism>().unwrap(), m);
            assert_eq!(m.name().to_uppercase().parse::<Mechanism>().unwrap(), m);
        }
        assert_eq!("MNar".parse::<Mechanism>().unwrap(), Mechanism::Mnar);
        let err = "mnr".parse::<Mechanism>().unwrap_err();
        assert!(err.is_user_error());
        let msg = err.to_string();
        assert!(
            msg.contains("mcar") && msg.contains("mar") && msg.contains("mnar"),
            "{msg}"
        );
    }

    #[test]
    fn mcar_rate_within_binomial_error() {
        let (n, d, rate) = (3000, 7, 0.3);
        let x = gaussian_table(n, d, 1);
        let mask = make_mask(&x, n, d, Mechanism::Mcar, rate, 11).unwrap();
        let share = mask.iter().filter(|&&m| m).count() as f64 / (n * d) as f64;
        assert!((share - rate).abs() < 4.0 * binomial_se(rate, n * d), "share {share}");
        // A one-column table is fine for MCAR.
        let m1 = make_mask(&x[..n], n, 1, Mechanism::Mcar, 0.5, 3).unwrap();
        assert!(m1.iter().any(|&m| m) && m1.iter().any(|&m| !m));
    }

    #[test]
    fn mar_keeps_half_the_columns_observed_and_hits_the_rate() {
        let (n, d, rate) = (4000, 7, 0.3);
        let x = gaussian_table(n, d, 2);
        let mask = make_mask(&x, n, d, Mechanism::Mar, rate, 5).unwrap();
        let shares: Vec<f64> = (0..d).map(|j| column_share(&mask, n, d, j)).collect();
        let observed: Vec<usize> = (0..d).filter(|&j| shares[j] == 0.0).collect();
        assert_eq!(observed.len(), 3, "d_obs = floor(0.5 * 7) = 3; shares {shares:?}");
        assert_eq!(observed, choose_columns(d, 3, &Noise::new(5)).0);
        // The other columns: the intercepts make each column's mean probability `rate`
        // exactly, so the share is binomial-like around it.
        let others: Vec<usize> = (0..d).filter(|j| !observed.contains(j)).collect();
        let total = others.iter().map(|&j| shares[j]).sum::<f64>() / others.len() as f64;
        assert!(
            (total - rate).abs() < 4.0 * binomial_se(rate, n * others.len()),
            "share {total}"
        );
        for &j in &others {
            assert!(
                (shares[j] - rate).abs() < 5.0 * binomial_se(rate, n),
                "column {j}: {}",
                shares[j]
            );
        }
    }

    #[test]
    fn mar_missingness_depends_on_the_observed_column() {
        let n = 4000;
        let x = correlated_pair(n, 3);
        let mask = make_mask(&x, n, 2, Mechanism::Mar, 0.3, 9).unwrap();
        let obs = if column_share(&mask, n, 2, 0) == 0.0 { 0 } else { 1 };
        let other = 1 - obs;
        assert_eq!(column_share(&mask, n, 2, obs), 0.0);
        // P(missing) = σ(x_obs / sd + b) increases with the observed value: the rows whose
        // other cell is missing have a clearly larger observed value (about 0.5 sd here;
        // the standard error of the gap is about 0.035).
        let gap = mean_gap(&x, &mask, n, 2, obs, other);
        assert!(gap > 0.25, "gap {gap}");
        // Under MCAR the same gap is noise.
        let mcar = make_mask(&x, n, 2, Mechanism::Mcar, 0.3, 9).unwrap();
        let gap0 = mean_gap(&x, &mcar, n, 2, obs, other);
        assert!(gap0.abs() < 0.15, "MCAR gap {gap0}");
    }

    #[test]
    fn mnar_masks_inputs_at_random_and_others_by_the_inputs() {
        let (n, d, rate) = (4000, 10, 0.3);
        // Column 0 drives everything: every column is correlated with it.
        let z = gaussian_table(n, d, 4);
        let mut x = z.clone();
        for i in 0..n {
            for j in 1..d {
                x[i * d + j] = 0.7 * z[i * d] + 0.7141428 * z[i * d + j];
            }
        }
        let seed = 21;
        let mask = make_mask(&x, n, d, Mechanism::Mnar, rate, seed).unwrap();
        let (inputs, others) = choose_columns(d, 3, &Noise::new(seed));
        assert_eq!(inputs.len(), 3, "d_params = floor(0.3 * 10) = 3");
        let input_share = inputs.iter().map(|&j| column_share(&mask, n, d, j)).sum::<f64>() / 3.0;
        assert!(
            (input_share - rate).abs() < 4.0 * binomial_se(rate, 3 * n),
            "inputs' share {input_share}"
        );
        let other_share = others.iter().map(|&j| column_share(&mask, n, d, j)).sum::<f64>() / others.len() as f64;
        assert!(
            (other_share - rate).abs() < 4.0 * binomial_se(rate, others.len() * n),
            "others' share {other_share}"
        );
        // Input columns are MCAR: their missingness does not depend on the data.
        for &j in &inputs {
            let g = mean_gap(&x, &mask, n, d, j, j);
            assert!(g.abs() < 0.15, "input column {j} self gap {g}");
        }
        // The other columns' missingness depends on the (complete) values of the inputs,
        // which are positively weighted and correlated, so the sum of the inputs is larger
        // where a non-input cell is missing.
        let s: Vec<f64> = (0..n).map(|i| inputs.iter().map(|&c| x[i * d + c]).sum()).collect();
        for &j in &others {
            let m: Vec<bool> = (0..n).map(|i| mask[i * d + j]).collect();
            let gap = mean_gap(&s, &m, n, 1, 0, 0);
            assert!(gap > 0.5, "column {j}: gap {gap}");
        }
    }

    #[test]
    fn masks_are_reproducible_for_a_seed() {
        let (n, d) = (500, 6);
        let x = gaussian_table(n, d, 6);
        for mech in [Mechanism::Mcar, Mechanism::Mar, Mechanism::Mnar] {
            let a = make_mask(&x, n, d, mech, 0.4, 17).unwrap();
            let b = make_mask(&x, n, d, mech, 0.4, 17).unwrap();
            assert_eq!(a, b, "{mech:?}");
            let c = make_mask(&x, n, d, mech, 0.4, 18).unwrap();
            assert_ne!(a, c, "{mech:?}");
            // Same seed in a one-thread pool: identical bits.
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let e = pool.install(|| make_mask(&x, n, d, mech, 0.4, 17).unwrap());
            assert_eq!(a, e, "{mech:?}");
        }
    }

    #[test]
    fn constant_inputs_still_give_the_rate() {
        // A zero standard deviation of the logistic score must not divide by zero.
        let (n, d) = (2000, 2);
        let mut x = vec![0.0; n * d];
        for i in 0..n {
            x[i * d + 1] = if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        let mask = make_mask(&x, n, d, Mechanism::Mar, 0.2, 1).unwrap();
        let obs = if column_share(&mask, n, d, 0) == 0.0 { 0 } else { 1 };
        let share = column_share(&mask, n, d, 1 - obs);
        assert!((share - 0.2).abs() < 4.0 * binomial_se(0.2, n), "share {share}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = vec![0.5; 12];
        for rate in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(make_mask(&x, 4, 3, Mechanism::Mcar, rate, 0)
                .unwrap_err()
                .is_user_error());
        }
        assert!(make_mask(&x, 0, 3, Mechanism::Mcar, 0.3, 0).is_err());
        assert!(make_mask(&[], 0, 0, Mechanism::Mcar, 0.3, 0).is_err());
        assert!(make_mask(&x, 4, 0, Mechanism::Mcar, 0.3, 0).is_err());
        assert!(make_mask(&x, 5, 3, Mechanism::Mcar, 0.3, 0).is_err());
        assert!(make_mask(&x, usize::MAX, 3, Mechanism::Mcar, 0.3, 0).is_err());
        let mut y = x.clone();
        y[4] = f64::NAN;
        let msg = make_mask(&y, 4, 3, Mechanism::Mcar, 0.3, 0).unwrap_err().to_string();
        assert!(msg.contains("row 2, column 2"), "{msg}");
        y[4] = f64::NEG_INFINITY;
        assert!(make_mask(&y, 4, 3, Mechanism::Mar, 0.3, 0).is_err());
        for mech in [Mechanism::Mar, Mechanism::Mnar] {
            let msg = make_mask(&x, 12, 1, mech, 0.3, 0).unwrap_err().to_string();
            assert!(msg.contains("at least 2 columns"), "{msg}");
            assert!(make_mask(&x, 6, 2, mech, 0.3, 0).is_ok());
        }
    }
}
