//! Small statistics for ranking methods over a set of benchmark problems: percentile
//! bootstrap intervals, Wilson score intervals and paired win shares. Pure functions of
//! their inputs and a seed, so that a table built from the same per-problem numbers is the
//! same bit for bit.
//!
//! * Percentile bootstrap (Efron 1979, *Bootstrap methods: another look at the jackknife*,
//!   Ann. Statist.; Efron & Tibshirani 1993, *An introduction to the bootstrap*, §13.3):
//!   draw `B` resamples of the `n` problems with replacement, compute the statistic on
//!   each, and report the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the `B`
//!   values ([`Bootstrap::interval`]).
//! * Wilson score interval (Wilson 1927, *Probable inference, the law of succession, and
//!   statistical inference*, JASA) for a proportion `p^ = k / n`:
//!   `(p^ + z^2 / 2n ± z sqrt(p^ (1 - p^) / n + z^2 / 4n^2)) / (1 + z^2 / n)` ([`wilson`]).
//! * Paired share: over problems solved by both A and B, the number of problems where A's
//!   error is below B's, ties counting one half ([`paired_wins`]).

use crate::rng::{stream, Noise, Purpose};

/// `z` of a two-sided 95% normal interval, `Phi^{-1}(0.975)`.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A point estimate with an interval `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The statistic on the whole sample.
    pub value: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` lies in `[lo, hi]`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// The quantile `p` of sorted values by linear interpolation between order statistics
/// (Hyndman & Fan 1996, definition 7: position `p (n - 1)`); `NaN` for no values.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = p.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The mean of `v` (`NaN` when empty).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The median of `v` without reordering it (see [`super::median`]).
pub fn median_of(v: &[f64]) -> f64 {
    super::median(&mut v.to_vec())
}

/// The resampled indices of a percentile bootstrap over `n` items: resample `b` is
/// `ceil(u n) - 1` for the uniforms `u` in `(0, 1]` of stream `(Metric, b)` of
/// `Noise::new(seed)`, so the same `(n, resamples, seed)` always gives the same resamples
/// and statistics of the same items share them.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    n: usize,
    idx: Vec<Vec<usize>>,
}

impl Bootstrap {
    /// `resamples` resamples of `n` items with replacement.
    pub fn new(n: usize, resamples: usize, seed: u64) -> Self {
        let noise = Noise::new(seed);
        let idx = (0..resamples as u64)
            .map(|b| {
                noise
                    .uniforms(stream(Purpose::Metric, b), n)
                    .into_iter()
                    .map(|u| ((u * n as f64).ceil() as usize).clamp(1, n) - 1)
                    .collect()
            })
            .collect();
        Bootstrap { n, idx }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The percentile interval of `stat` at `level` (e.g. 0.95): `stat(values)` and the
    /// `(1 - level) / 2`, `(1 + level) / 2` quantiles ([`quantile_sorted`]) of `stat` over
    /// the resamples of `values` (one value per item, `values.len() == self.len()`).
    pub fn interval(&self, values: &[f64], stat: &dyn Fn(&[f64]) -> f64, level: f64) -> Interval {
        assert_eq!(values.len(), self.n, "one value per bootstrap item");
        let value = stat(values);
        if self.idx.is_empty() || self.n == 0 {
            return Interval {
                value,
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        let mut buf = vec![0.0; self.n];
        let mut stats: Vec<f64> = self
            .idx
            .iter()
            .map(|ix| {
                for (b, &i) in buf.iter_mut().zip(ix) {
                    *b = values[i];
                }
                stat(&buf)
            })
            .collect();
        stats.sort_by(f64::total_cmp);
        let a = 0.5 * (1.0 - level);
        Interval {
            value,
            lo: quantile_sorted(&stats, a),
            hi: quantile_sorted(&stats, 1.0 - a),
        }
    }
}

/// The Wilson score interval of a proportion with `k` successes out of `n` (`k` may be
/// fractional, e.g. ties counted one half) at normal quantile `z` ([`Z95`] for 95%); the
/// value is `k / n`. `NaN`s for `n = 0`.
pub fn wilson(k: f64, n: usize, z: f64) -> Interval {
    if n == 0 {
        return Interval {
            value: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let nf = n as f64;
    let p = k / nf;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * nf);
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    let den = 1.0 + z2 / nf;
    Interval {
        value: p,
        lo: ((centre - half) / den).max(0.0),
        hi: ((centre + half) / den).min(1.0),
    }
}

/// The number of pairs `(a_i, b_i)` with `a_i < b_i`, ties counting one half: the paired
/// wins of A over B when smaller is better. `a` and `b` have the same length.
pub fn paired_wins(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "paired values");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x < y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_hand() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 8.0);
        // Position 0.5 * 3 = 1.5: halfway between 2 and 4.
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        // Position 0.25 * 3 = 0.75.
        assert_eq!(quantile_sorted(&v, 0.25), 1.75);
        assert!(quantile_sorted(&[], 0.5).is_nan());
        assert_eq!(median_of(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
    }

    #[test]
    fn wilson_matches_the_closed_form() {
        // 50 / 100: (0.5 + z^2/200 ± z sqrt(0.0025 + z^2/40000)) / (1 + z^2/100)
        // = [0.40383, 0.59617] (the textbook value).
        let w = wilson(50.0, 100, Z95);
        assert!((w.lo - 0.403_831_7).abs() < 1e-6 && (w.hi - 0.596_168_3).abs() < 1e-6);
        assert_eq!(w.value, 0.5);
        // 0 / 10: [0, z^2 / (n + z^2)] = [0, 0.27753].
        let w = wilson(0.0, 10, Z95);
        let z2 = Z95 * Z95;
        assert_eq!(w.lo, 0.0);
        assert!((w.hi - z2 / (10.0 + z2)).abs() < 1e-15 && (w.hi - 0.277_533).abs() < 1e-6);
        // 10 / 10 mirrors 0 / 10.
        let w = wilson(10.0, 10, Z95);
        assert!((w.lo - 10.0 / (10.0 + z2)).abs() < 1e-14 && (w.hi - 1.0).abs() < 1e-15);
        // 3 / 10 at z = 1 by hand: centre 0.35, half sqrt(0.021 + 0.0025) = 0.153297;
        // divided by 1.1.
        let w = wilson(3.0, 10, 1.0);
        let h = (0.021f64 + 0.0025).sqrt();
        assert!((w.lo - (0.35 - h) / 1.1).abs() < 1e-15 && (w.hi - (0.35 + h) / 1.1).abs() < 1e-15);
        assert!(wilson(0.0, 0, Z95).value.is_nan());
    }

    #[test]
    fn paired_wins_count_ties_half() {
        assert_eq!(paired_wins(&[1.0, 2.0, 3.0, 4.0], &[2.0, 2.0, 1.0, 5.0]), 2.5);
        assert_eq!(paired_wins(&[], &[]), 0.0);
    }

    #[test]
    fn bootstrap_is_reproducible_and_exact_on_a_small_case() {
        // Resamples of [1, 2, 3] have mean 1 with probability 1/27 > 2.5% and mean 3 with
        // probability 1/27: the 95% percentile interval of the mean is exactly [1, 3].
        let b = Bootstrap::new(3, 2000, 7);
        let i = b.interval(&[1.0, 2.0, 3.0], &mean, 0.95);
        assert_eq!((i.value, i.lo, i.hi), (2.0, 1.0, 3.0));
        // Indices cover 0..n and nothing else; the same seed gives the same resamples.
        assert!(b.idx.iter().flatten().all(|&k| k < 3));
        assert!((0..3).all(|k| b.idx.iter().flatten().any(|&j| j == k)));
        let again = Bootstrap::new(3, 2000, 7).interval(&[1.0, 2.0, 3.0], &median_of, 0.9);
        assert_eq!(again, b.interval(&[1.0, 2.0, 3.0], &median_of, 0.9));
        // One item: a degenerate interval.
        let one = Bootstrap::new(1, 10, 0).interval(&[4.0], &mean, 0.95);
        assert_eq!((one.lo, one.hi), (4.0, 4.0));
    }

    #[test]
    fn bootstrap_mean_interval_covers_at_the_nominal_rate() {
        // 400 samples of 40 standard normals (mean 0), 500 resamples each: the percentile
        // interval of the mean covers 0 about 95% of the time (a little less for n = 40:
        // its width is (n-1)/n of the t interval's variance and uses z, not t_39 -> ~94%).
        // Binomial sd of the coverage over 400 replications: 0.011.
        let noise = Noise::new(11);
        let (reps, n) = (400u64, 40);
        let boot = Bootstrap::new(n, 500, 3);
        let covered = (0..reps)
            .filter(|&r| {
                let x = noise.normals(stream(Purpose::User, r), n, 1);
                boot.interval(&x, &mean, 0.95).contains(0.0)
            })
            .count() as f64
            / reps as f64;
        assert!((0.905..=0.985).contains(&covered), "coverage {covered}");
    }
}
