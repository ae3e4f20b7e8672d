//! The Gaussian-mixture posterior benchmark of Cardoso et al. 2024 (MCGdiff) and Janati et
//! al. 2024 (DCPS), as their code builds it (docs/methods.md), with the statistics that rank
//! the methods over the problems.
//!
//! * prior: 25 components, means `(8i, 8j, 8i, 8j, ...)` for `i, j in {-2..2}`, identity
//!   covariances, weights `w_k ∝ g_k^2`, `g_k ~ N(0, 1)` ([`GaussianMixture::grid25`]);
//! * operator: `A = randn(dy, dx)`, whose singular values are replaced by `sort(U(0, 1))`
//!   descending; `sigma_y = U(0, 1) max(s)`; `y = A x* + sigma_y z` with `x* ~ prior`;
//! * reference: `n` exact samples of the posterior, a Gaussian mixture ([`ExactPosterior`]);
//! * metrics: the sliced Wasserstein distance `SW1` (100 random directions) between `n`
//!   method samples and the reference, and the mixture-weight error (L1 distance between
//!   the posterior weights and the shares of samples whose most responsible posterior
//!   component is `k`);
//! * two baselines scored like a method: `exact`, a second independent exact posterior set
//!   (the noise floor: no method can be expected below it), and `prior`, `n` exact samples
//!   of the prior that ignore `y` (every method must beat it to have used the observation).
//!
//! **Statistics** ([`GmmBench::summary`], [`GmmBench::pairs`], [`super::stats`]): per
//! (method, particles) setting, the median and mean `SW1` and the mean weight error over the
//! problems with 95% percentile bootstrap intervals over problems; per pair of settings
//! (A, B), on the problems both ran, the share of problems where A's `SW1` is below B's
//! (ties one half) with its Wilson interval, and the medians of the per-problem difference
//! `SW1_A - SW1_B` and ratio `SW1_A / SW1_B` with bootstrap intervals. The bootstrap draws
//! its resamples from its own seed ([`StatsOptions`]), so the tables are a function of the
//! per-problem records only.
//!
//! **Random streams** (all of `Noise::new(seed)`, `seed` the run's seed): problem `i`
//! depends on `(seed, i, dx, dy)` only, never on the other problems, the methods or the
//! number of problems, so `--only-problem i` reruns it exactly:
//!
//! * its prior weights: `GaussianMixture::grid25` of `Noise::new(seed ^ (i * 0x9E3779B9))`;
//! * its operator: streams `(User, 4i)` (`A`), `(User, 4i + 1)` (singular values),
//!   `(User, 4i + 2)` (`sigma_y`), `(User, 4i + 3)` (`z`);
//! * `x*`: `prior.sample(1, noise, 1000 + i)`;
//! * the reference and the floor's second set: `posterior.sample(n, noise, 2i)` and
//!   `(.., 2i + 1)`; the `prior` row: `prior.sample(n, noise, 2^32 + i)`
//!   (`sample(.., index)` reads streams `(Exact, 2 index)` and `(Exact, 2 index + 1)`;
//!   the streams of different problems are disjoint for `i < 500`);
//! * every method runs with `PosteriorOptions::seed = seed + i`.

use std::time::Instant;

use candle_core::{Device, Tensor};

use std::collections::{BTreeSet, HashMap};

use super::stats::{self, Bootstrap, Interval};
use crate::inverse::{sample_posterior, ExactPosterior, Method, Observation, Operator, PosteriorOptions, METHOD_NAMES};
use crate::metrics::{mixture_weight_error, sliced_wasserstein, SlicedOptions};
use crate::rng::{stream, Noise, Purpose};
use crate::score::GaussianMixture;
use crate::solve::prior_score;
use crate::{Error, Result};

/// The methods of `all`: those that take any (dense) operator.
pub const GMM_METHODS: [&str; 9] = [
    "mcgdiff",
    "mcgdiff-paper",
    "tds",
    "dcps",
    "dps",
    "pigdm",
    "pigdm-score",
    "tmpd",
    "ddrm",
];

/// The stream index of the exact posterior samples of problem 0's figure.
const FIGURE_INDEX: u64 = 9999;

/// One random problem of the recipe (problem `index` of `noise`): the prior and the
/// observation `y = A x* + sigma_y z`.
pub fn gmm_problem(dx: usize, dy: usize, noise: &Noise, index: u64) -> Result<(GaussianMixture, Observation)> {
    let prior = GaussianMixture::grid25(dx, &Noise::new(noise.seed() ^ (index.wrapping_mul(0x9E37_79B9))))?;
    let a = noise.normals(stream(Purpose::User, 4 * index), dy, dx);
    let f = Operator::Dense { rows: dy, cols: dx, a }.svd()?;
    let mut s = noise.uniforms(stream(Purpose::User, 4 * index + 1), f.rank());
    s.sort_by(|a, b| b.total_cmp(a));
    let u2 = noise.uniforms(stream(Purpose::User, 4 * index + 2), 1)[0];
    let sigma_y = u2 * s[0];
    let op = Operator::Svd {
        rows: dy,
        cols: dx,
        u: f.u,
        s,
        v: f.v,
    };
    let x_star = prior.sample(1, noise, 1000 + index);
    let z = noise.normals(stream(Purpose::User, 4 * index + 3), 1, dy);
    let y: Vec<f64> = op
        .apply_rows(&x_star)
        .iter()
        .zip(&z)
        .map(|(a, z)| a + sigma_y * z)
        .collect();
    Ok((prior, Observation { op, y, sigma_y }))
}

/// The medians / means of the sliced Wasserstein distance published by Janati et al. 2024
/// (DCPS) for this benchmark at `dx = 10` and `100`, `dy = 1`; `"-"` where there is none.
pub fn published(method: &str, dx: usize) -> &'static str {
    match (method, dx) {
        ("mcgdiff" | "mcgdiff-paper", 10) => "2.25 / 2.69",
        ("mcgdiff" | "mcgdiff-paper", 100) => "2.72 / 3.13",
        ("dps", 10) => "3.12 / 5.64",
        ("dps", 100) => "4.29 / 4.93",
        ("ddrm", 10) => "2.66 / 3.06",
        ("ddrm", 100) => "5.97 / 6.26",
        ("dcps", 10) => "1.26 / 2.59",
        ("dcps", 100) => "2.81 / 3.22",
        ("dcps50", 10) => "1.95 / 2.70",
        _ => "-",
    }
}

/// The methods named by a comma-separated list (or `all`: [`GMM_METHODS`]); methods that
/// need a mask (exact, replacement, smc-impute) are refused, and so are two names of the
/// same method (e.g. `dcps` and `dcps500`: the tables key the records by method name).
pub fn gmm_methods(list: &str) -> Result<Vec<Method>> {
    let names: Vec<&str> = if list == "all" {
        GMM_METHODS.to_vec()
    } else {
        list.split(',').map(str::trim).collect()
    };
    let mut seen: Vec<&str> = Vec::new();
    names
        .into_iter()
        .map(|n| {
            let m: Method = n.parse()?;
            if matches!(m, Method::Exact | Method::Replacement { .. } | Method::SmcImpute) {
                return Err(Error::invalid(format!(
                    "bench gmm: '{n}' does not apply (the operators are dense); choose among {}",
                    METHOD_NAMES.join(", ")
                )));
            }
            if seen.contains(&m.name()) {
                return Err(Error::invalid(format!(
                    "bench gmm: '{n}' names a method already in the list ({})",
                    m.name()
                )));
            }
            seen.push(m.name());
            Ok(m)
        })
        .collect()
}

/// The sample index of the `prior` row of problem `i` is `PRIOR_INDEX + i`.
const PRIOR_INDEX: u64 = 1 << 32;

/// The settings of a run of the benchmark.
#[derive(Clone, Debug)]
pub struct GmmBenchOptions {
    /// Dimension of `x` (`>= 2`).
    pub dx: usize,
    /// Dimension of `y` (`1 <= dy <= dx`).
    pub dy: usize,
    /// Number of random problems: problems `0 .. problems`.
    pub problems: usize,
    /// Run only this problem (exactly as in a full run) instead of `0 .. problems`.
    pub only_problem: Option<usize>,
    /// Problems not to run (already done, e.g. read back from a CSV by [`resume_records`]).
    pub skip: BTreeSet<usize>,
    /// Problems run at once (`>= 1`). Every problem's numbers are the same whatever the
    /// count; with more than one, the measured seconds include the other problems'
    /// competition for the cores.
    pub jobs: usize,
    /// The methods ([`gmm_methods`]).
    pub methods: Vec<Method>,
    /// Particles per SMC run; each SMC method runs once per count (the other methods once).
    pub particles: Vec<usize>,
    /// Reverse steps.
    pub steps: usize,
    /// Samples per method and problem, and exact samples of the reference.
    pub n: usize,
    /// Seed of the problems and the methods.
    pub seed: u64,
}

impl GmmBenchOptions {
    /// Checks `dx >= 2`, `1 <= dy <= dx`, that the counts are positive and that
    /// `only_problem` is one of the problems.
    pub fn validate(&self) -> Result<()> {
        if self.dx < 2
            || self.dy == 0
            || self.dy > self.dx
            || self.problems == 0
            || self.n == 0
            || self.jobs == 0
            || self.particles.is_empty()
            || self.particles.contains(&0)
        {
            return Err(Error::invalid(
                "need dx >= 2, 1 <= dy <= dx, problems, n, jobs and particles >= 1",
            ));
        }
        if let Some(i) = self.only_problem.filter(|&i| i >= self.problems) {
            return Err(Error::invalid(format!(
                "problem {i} is not one of the {} problems (0 .. {}); raise the number of problems",
                self.problems,
                self.problems - 1
            )));
        }
        Ok(())
    }

    /// The problems to run, in order: `only_problem`, or `0 .. problems`, less `skip`.
    pub fn indices(&self) -> Vec<usize> {
        let all: Vec<usize> = match self.only_problem {
            Some(i) => vec![i],
            None => (0..self.problems).collect(),
        };
        all.into_iter().filter(|i| !self.skip.contains(i)).collect()
    }

    /// The (method, particles) settings of each problem, in run order: `exact` and `prior`
    /// (particles 0), then each method (each SMC method at each particle count, the others
    /// with particles `n`).
    pub fn settings(&self) -> Vec<(String, usize)> {
        let mut s = vec![("exact".to_string(), 0), ("prior".to_string(), 0)];
        for m in &self.methods {
            let counts: Vec<usize> = if m.is_smc() {
                self.particles.clone()
            } else {
                vec![self.n]
            };
            s.extend(counts.into_iter().map(|np| (m.name().to_string(), np)));
        }
        s
    }
}

/// One evaluation of a setting on a problem: a method, or the baselines `exact` (the noise
/// floor) and `prior` (particles 0).
#[derive(Clone, Debug, PartialEq)]
pub struct GmmRecord {
    /// The problem's index.
    pub problem: usize,
    /// The method's name (`exact`, `prior` or a [`Method`]'s name).
    pub method: String,
    /// Particles per run (SMC methods), else the sample count (0 for `exact` and `prior`).
    pub particles: usize,
    /// Sliced Wasserstein distance to the exact reference.
    pub sw: f64,
    /// Mixture-weight error.
    pub weight_error: f64,
    /// Wall-clock seconds of the method (of the sampling for `prior`, 0 for `exact`).
    pub seconds: f64,
    /// The problem's noise floor (the `sw` of the `exact` record).
    pub floor: f64,
    /// Smallest ESS / N and mean resamplings per run (SMC methods).
    pub ess: Option<(f64, f64)>,
}

/// The header of the per-problem CSV ([`csv_rows`]).
pub const CSV_HEADER: &str =
    "problem,seed,dx,dy,n,steps,method,particles,sw,weight_error,seconds,floor,ess_min,resamplings";

/// The records as CSV rows (no header; see [`CSV_HEADER`]), with the run's settings on
/// every row (`seed`, `dx`, `dy`, `n`, `steps`: with the problem index they name the
/// problem, and the method seed `seed + problem`). Numbers are written in the shortest form
/// that reads back to the same `f64`, so statistics of a resumed run equal those of an
/// uninterrupted one. `ess_min` and `resamplings` are empty for non-SMC settings.
pub fn csv_rows(opts: &GmmBenchOptions, records: &[GmmRecord]) -> String {
    let mut s = String::new();
    for r in records {
        let (ess, res) = match r.ess {
            Some((e, k)) => (e.to_string(), k.to_string()),
            None => (String::new(), String::new()),
        };
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.problem,
            opts.seed,
            opts.dx,
            opts.dy,
            opts.n,
            opts.steps,
            r.method,
            r.particles,
            r.sw,
            r.weight_error,
            r.seconds,
            r.floor,
            ess,
            res
        ));
    }
    s
}

/// Reads back a CSV written by [`CSV_HEADER`] and [`csv_rows`] for a `--resume`: fails
/// when the header differs or a row was written with other settings (`seed`, `dx`, `dy`,
/// `n`, `steps`); returns the rows of the problems `0 .. opts.problems` that are complete
/// for `opts` (a row for every one of [`GmmBenchOptions::settings`]), which the run can
/// then skip. Rows of incomplete problems are dropped (those problems run again), and so
/// are those of problems beyond `opts.problems`.
pub fn resume_records(text: &str, opts: &GmmBenchOptions) -> Result<Vec<GmmRecord>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim() == CSV_HEADER => {}
        _ => {
            return Err(Error::invalid(format!(
                "not a bench gmm CSV (expected the header {CSV_HEADER})"
            )))
        }
    }
    let mut records = Vec::new();
    for (k, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::invalid(format!("CSV line {}: {what}", k + 2));
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 14 {
            return Err(bad("expected 14 fields"));
        }
        let int = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| bad(&format!("'{}' is not a count", f[i])))
        };
        let num = |i: usize| {
            f[i].parse::<f64>()
                .map_err(|_| bad(&format!("'{}' is not a number", f[i])))
        };
        let settings = [int(1)?, int(2)?, int(3)?, int(4)?, int(5)?];
        let want = [
            opts.seed,
            opts.dx as u64,
            opts.dy as u64,
            opts.n as u64,
            opts.steps as u64,
        ];
        if settings != want {
            return Err(bad(&format!(
                "written with seed, dx, dy, n, steps = {settings:?}, not {want:?}; start a new file instead of resuming"
            )));
        }
        let ess = if f[12].is_empty() {
            None
        } else {
            Some((num(12)?, num(13)?))
        };
        records.push(GmmRecord {
            problem: int(0)? as usize,
            method: f[6].to_string(),
            particles: int(7)? as usize,
            sw: num(8)?,
            weight_error: num(9)?,
            seconds: num(10)?,
            floor: num(11)?,
            ess,
        });
    }
    let settings = opts.settings();
    let complete: BTreeSet<usize> = records
        .iter()
        .map(|r| r.problem)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|&p| p < opts.problems)
        .filter(|&p| {
            settings.iter().all(|(m, np)| {
                records
                    .iter()
                    .any(|r| r.problem == p && &r.method == m && r.particles == *np)
            })
        })
        .collect();
    records.retain(|r| complete.contains(&r.problem));
    Ok(records)
}

/// Settings of the statistics: bootstrap resamples, their seed, and the confidence level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsOptions {
    /// Bootstrap resamples (default 2000).
    pub resamples: usize,
    /// Seed of the resamples (default 0), independent of the benchmark's seed.
    pub seed: u64,
    /// Confidence level of every interval (default 0.95).
    pub level: f64,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            resamples: 2000,
            seed: 0,
            level: 0.95,
        }
    }
}

impl StatsOptions {
    /// The normal quantile `z` of the Wilson intervals at `level` (`Phi^{-1}((1 + level) / 2)`,
    /// by bisection of `erfc`).
    pub fn z(&self) -> f64 {
        if (self.level - 0.95).abs() < 1e-12 {
            return stats::Z95;
        }
        let target = 1.0 - self.level; // two-sided tail: erfc(z / sqrt 2)
        let (mut lo, mut hi) = (0.0f64, 40.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if libm_erfc(mid / std::f64::consts::SQRT_2) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
}

/// `erfc(x)` for `x >= 0` (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn libm_erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    t * (-x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
        .exp()
}

/// The aggregate of one (method, particles) setting over the problems, with percentile
/// bootstrap intervals over problems.
#[derive(Clone, Debug, PartialEq)]
pub struct GmmSummary {
    /// The method's name (`exact`, `prior` or a method).
    pub method: String,
    /// Particles (SMC methods) or samples (0 for the baselines).
    pub particles: usize,
    /// Whether the method is an SMC method (the particle count matters).
    pub smc: bool,
    /// Number of problems.
    pub problems: usize,
    /// Median of the sliced Wasserstein distances.
    pub sw_median: Interval,
    /// Mean of the sliced Wasserstein distances.
    pub sw_mean: Interval,
    /// Mean mixture-weight error.
    pub weight_error_mean: Interval,
    /// Mean seconds per problem.
    pub seconds_mean: f64,
}

impl GmmSummary {
    /// `method` (`method@particles` for SMC methods).
    pub fn label(&self) -> String {
        setting_label(&self.method, self.particles, self.smc)
    }
}

fn is_smc(method: &str) -> bool {
    method.parse::<Method>().map(|m| m.is_smc()).unwrap_or(false)
}

fn setting_label(method: &str, particles: usize, smc: bool) -> String {
    if smc {
        format!("{method}@{particles}")
    } else {
        method.to_string()
    }
}

/// A paired comparison of settings A and B on the problems both ran (smaller `SW1` is
/// better).
#[derive(Clone, Debug, PartialEq)]
pub struct GmmPair {
    /// A's label ([`GmmSummary::label`]).
    pub a: String,
    /// B's label.
    pub b: String,
    /// Problems in common.
    pub problems: usize,
    /// Problems where `SW1_A < SW1_B` (ties one half).
    pub wins: f64,
    /// `wins / problems` with its Wilson interval.
    pub share: Interval,
    /// Median over problems of `SW1_A - SW1_B`, with a bootstrap interval.
    pub diff_median: Interval,
    /// Median over problems of `SW1_A / SW1_B`, with a bootstrap interval.
    pub ratio_median: Interval,
}

/// The outcome of [`run_gmm_bench`].
#[derive(Clone, Debug, Default)]
pub struct GmmBench {
    /// Every evaluation, in run order (per problem: `exact`, `prior`, then each method and
    /// particle count); a resumed run puts the records read back first.
    pub records: Vec<GmmRecord>,
    /// Problem 0 projected on `(v_1 . x, x_1)` (`v_1` the top right singular vector of its
    /// operator): the exact posterior first, then each method's samples at its last
    /// particle count; each row-major `[n, 2]`. Empty when problem 0 did not run.
    pub figure: Vec<(String, Vec<f64>)>,
}

/// Per setting, its records by problem.
type Table<'a> = Vec<((String, usize), Vec<&'a GmmRecord>)>;

impl GmmBench {
    /// The noise floors, one per problem.
    pub fn floors(&self) -> Vec<f64> {
        self.records
            .iter()
            .filter(|r| r.method == "exact")
            .map(|r| r.sw)
            .collect()
    }

    /// Median and mean of the noise floors.
    pub fn floor_median_mean(&self) -> (f64, f64) {
        let f = self.floors();
        (stats::median_of(&f), stats::mean(&f))
    }

    /// Per (method, particles), in order of first appearance, its records sorted by problem.
    fn table(&self) -> Table<'_> {
        let mut t: Table<'_> = Vec::new();
        for r in &self.records {
            let key = (r.method.clone(), r.particles);
            match t.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(r),
                None => t.push((key, vec![r])),
            }
        }
        for (_, v) in t.iter_mut() {
            v.sort_by_key(|r| r.problem);
        }
        t
    }

    /// One summary per (method, particles) — `exact` and `prior` included — in order of
    /// first appearance, with percentile bootstrap intervals over problems.
    pub fn summary(&self, so: &StatsOptions) -> Vec<GmmSummary> {
        let mut boots: HashMap<usize, Bootstrap> = HashMap::new();
        self.table()
            .into_iter()
            .map(|((m, np), v)| {
                let boot = boots
                    .entry(v.len())
                    .or_insert_with(|| Bootstrap::new(v.len(), so.resamples, so.seed));
                let sws: Vec<f64> = v.iter().map(|r| r.sw).collect();
                let dws: Vec<f64> = v.iter().map(|r| r.weight_error).collect();
                GmmSummary {
                    smc: is_smc(&m),
                    problems: v.len(),
                    sw_median: boot.interval(&sws, &stats::median_of, so.level),
                    sw_mean: boot.interval(&sws, &stats::mean, so.level),
                    weight_error_mean: boot.interval(&dws, &stats::mean, so.level),
                    seconds_mean: stats::mean(&v.iter().map(|r| r.seconds).collect::<Vec<_>>()),
                    method: m,
                    particles: np,
                }
            })
            .collect()
    }

    /// Paired comparisons of every ordered pair (A, B) of distinct settings, in the order of
    /// [`GmmBench::summary`] (A major): on the problems both ran, the share of problems
    /// where A's `SW1` is below B's (Wilson interval at `so.level`), and the medians of
    /// `SW1_A - SW1_B` and `SW1_A / SW1_B` (percentile bootstrap over those problems).
    pub fn pairs(&self, so: &StatsOptions) -> Vec<GmmPair> {
        let t = self.table();
        let mut boots: HashMap<usize, Bootstrap> = HashMap::new();
        let z = so.z();
        let mut out = Vec::new();
        for (ka, va) in &t {
            for (kb, vb) in &t {
                if ka == kb {
                    continue;
                }
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for ra in va {
                    if let Some(rb) = vb.iter().find(|r| r.problem == ra.problem) {
                        a.push(ra.sw);
                        b.push(rb.sw);
                    }
                }
                let n = a.len();
                let boot = boots
                    .entry(n)
                    .or_insert_with(|| Bootstrap::new(n, so.resamples, so.seed));
                let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                let ratio: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
                let wins = stats::paired_wins(&a, &b);
                out.push(GmmPair {
                    a: setting_label(&ka.0, ka.1, is_smc(&ka.0)),
                    b: setting_label(&kb.0, kb.1, is_smc(&kb.0)),
                    problems: n,
                    wins,
                    share: stats::wilson(wins, n, z),
                    diff_median: boot.interval(&diff, &stats::median_of, so.level),
                    ratio_median: boot.interval(&ratio, &stats::median_of, so.level),
                });
            }
        }
        out
    }

    /// The records as CSV ([`CSV_HEADER`] and [`csv_rows`]).
    pub fn csv(&self, opts: &GmmBenchOptions) -> String {
        format!("{CSV_HEADER}\n{}", csv_rows(opts, &self.records))
    }
}

/// The summaries as CSV: `method,particles,problems,` then value, lower and upper end of
/// the median `SW1`, the mean `SW1` and the mean weight error, then mean seconds.
pub fn summary_csv(summary: &[GmmSummary]) -> String {
    let mut s = String::from(
        "method,particles,problems,sw_median,sw_median_lo,sw_median_hi,sw_mean,sw_mean_lo,sw_mean_hi,weight_error_mean,weight_error_mean_lo,weight_error_mean_hi,seconds_mean\n",
    );
    for r in summary {
        let iv = |i: &Interval| format!("{},{},{}", i.value, i.lo, i.hi);
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            r.method,
            r.particles,
            r.problems,
            iv(&r.sw_median),
            iv(&r.sw_mean),
            iv(&r.weight_error_mean),
            r.seconds_mean
        ));
    }
    s
}

/// The paired comparisons as CSV: `a,b,problems,wins,` then value, lower and upper end of
/// the share of A wins, the median difference and the median ratio.
pub fn pairs_csv(pairs: &[GmmPair]) -> String {
    let mut s = String::from(
        "a,b,problems,wins,share,share_lo,share_hi,diff_median,diff_median_lo,diff_median_hi,ratio_median,ratio_median_lo,ratio_median_hi\n",
    );
    for p in pairs {
        let iv = |i: &Interval| format!("{},{},{}", i.value, i.lo, i.hi);
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            p.a,
            p.b,
            p.problems,
            p.wins,
            iv(&p.share),
            iv(&p.diff_median),
            iv(&p.ratio_median)
        ));
    }
    s
}

fn tensor(x: Vec<f64>, d: usize) -> Result<Tensor> {
    let n = x.len() / d;
    Ok(Tensor::from_vec(x, (n, d), &Device::Cpu)?)
}

/// The records of one problem (and problem 0's figure series).
type ProblemOut = (Vec<GmmRecord>, Vec<(String, Vec<f64>)>);

/// Runs problem `pi`: the `exact` floor, the `prior` baseline, then each method (each SMC
/// method at each particle count), evaluated against the exact posterior.
fn run_problem(opts: &GmmBenchOptions, pi: usize, on_record: &mut dyn FnMut(&GmmRecord)) -> Result<ProblemOut> {
    let (dx, n) = (opts.dx, opts.n);
    let noise = Noise::new(opts.seed);
    let sw_opts = SlicedOptions::default();
    let mut records = Vec::new();
    let (prior, obs) = gmm_problem(dx, opts.dy, &noise, pi as u64)?;
    let post = ExactPosterior::new(&prior, &obs.op, &obs.y, obs.sigma_y)?;
    let post_law = post.mixture()?;
    let reference = tensor(post.sample(n, &noise, 2 * pi as u64), dx)?;
    let second = tensor(post.sample(n, &noise, 2 * pi as u64 + 1), dx)?;
    let floor = sliced_wasserstein(&reference, &second, &sw_opts)?;
    let mut push = |r: GmmRecord, records: &mut Vec<GmmRecord>| {
        on_record(&r);
        records.push(r);
    };
    push(
        GmmRecord {
            problem: pi,
            method: "exact".into(),
            particles: 0,
            sw: floor,
            weight_error: mixture_weight_error(&second, &post_law)?,
            seconds: 0.0,
            floor,
            ess: None,
        },
        &mut records,
    );
    let t0 = Instant::now();
    let xp = tensor(prior.sample(n, &noise, PRIOR_INDEX + pi as u64), dx)?;
    let seconds = t0.elapsed().as_secs_f64();
    push(
        GmmRecord {
            problem: pi,
            method: "prior".into(),
            particles: 0,
            sw: sliced_wasserstein(&xp, &reference, &sw_opts)?,
            weight_error: mixture_weight_error(&xp, &post_law)?,
            seconds,
            floor,
            ess: None,
        },
        &mut records,
    );
    let score = prior_score(&prior);
    let mut fig_series: Vec<(String, Vec<f64>)> = Vec::new();
    for m in &opts.methods {
        let counts: Vec<usize> = if m.is_smc() { opts.particles.clone() } else { vec![n] };
        for &np in &counts {
            let popts = PosteriorOptions {
                n,
                particles: np,
                steps: opts.steps,
                seed: opts.seed.wrapping_add(pi as u64),
                ..Default::default()
            };
            let t0 = Instant::now();
            let rep = sample_posterior(&score, &obs, m, &popts, &mut |_, _| {})?;
            let seconds = t0.elapsed().as_secs_f64();
            let xs = tensor(rep.samples.clone(), dx)?;
            push(
                GmmRecord {
                    problem: pi,
                    method: m.name().to_string(),
                    particles: np,
                    sw: sliced_wasserstein(&xs, &reference, &sw_opts)?,
                    weight_error: mixture_weight_error(&xs, &post_law)?,
                    seconds,
                    floor,
                    ess: m.is_smc().then_some((rep.ess_min, rep.resamplings)),
                },
                &mut records,
            );
            if pi == 0 && Some(&np) == counts.last() {
                fig_series.push((m.name().to_string(), rep.samples));
            }
        }
    }
    let mut figure = Vec::new();
    if pi == 0 {
        let f = obs.op.svd()?;
        let r = f.rank();
        let proj = |x: &[f64]| -> Vec<f64> {
            x.chunks(dx)
                .flat_map(|row| {
                    let p1: f64 = (0..dx).map(|c| row[c] * f.v[c * r]).sum();
                    [p1, row[0]]
                })
                .collect()
        };
        figure.push(("exact posterior".into(), proj(&post.sample(n, &noise, FIGURE_INDEX))));
        figure.extend(fig_series.iter().map(|(m, x)| (m.clone(), proj(x))));
    }
    Ok((records, figure))
}

/// Runs the benchmark on the problems of [`GmmBenchOptions::indices`]: for each, the noise
/// floor (`exact`), the `prior` baseline, then each method (each SMC method at each
/// particle count), evaluated against the exact posterior. `opts.jobs` problems run at
/// once (each problem's numbers do not depend on it). `on_record` sees each record as it
/// is made (for a log; with `jobs > 1`, after its group of problems); `on_problem` sees
/// each finished problem's records in problem order (to append them to a file, so that a
/// run that stops keeps the problems done); an error it returns stops the run.
pub fn run_gmm_bench(
    opts: &GmmBenchOptions,
    on_record: &mut dyn FnMut(&GmmRecord),
    on_problem: &mut dyn FnMut(&[GmmRecord]) -> Result<()>,
) -> Result<GmmBench> {
    opts.validate()?;
    let mut out = GmmBench::default();
    for group in opts.indices().chunks(opts.jobs) {
        let done: Vec<ProblemOut> = if group.len() == 1 {
            vec![run_problem(opts, group[0], on_record)?]
        } else {
            // Plain threads, not rayon tasks: a rayon worker waiting inside one problem's
            // parallel loop could steal (and be timed with) another whole problem.
            let v: Vec<ProblemOut> = std::thread::scope(|sc| {
                let hs: Vec<_> = group
                    .iter()
                    .map(|&pi| sc.spawn(move || run_problem(opts, pi, &mut |_| {})))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect::<Result<_>>()
            })?;
            for r in v.iter().flat_map(|(recs, _)| recs) {
                on_record(r);
            }
            v
        };
        for (records, figure) in done {
            on_problem(&records)?;
            out.records.extend(records);
            if !figure.is_empty() {
                out.figure = figure;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_follow_the_recipe() {
        let noise = Noise::new(3);
        let (prior, obs) = gmm_problem(4, 2, &noise, 1).unwrap();
        assert_eq!((prior.dim(), prior.n_components()), (4, 25));
        let f = obs.op.svd().unwrap();
        // Singular values in (0, 1), descending; sigma_y in [0, max s).
        assert!(f.s.windows(2).all(|w| w[0] >= w[1]) && f.s.iter().all(|&s| s > 0.0 && s < 1.0));
        assert!(obs.sigma_y >= 0.0 && obs.sigma_y < f.s[0]);
        assert_eq!(obs.y.len(), 2);
        // The same index gives the same problem; another index another.
        let (_, again) = gmm_problem(4, 2, &noise, 1).unwrap();
        assert_eq!(again.y, obs.y);
        assert_ne!(gmm_problem(4, 2, &noise, 2).unwrap().1.y, obs.y);
    }

    #[test]
    fn methods_are_checked() {
        assert_eq!(gmm_methods("all").unwrap().len(), 9);
        assert_eq!(published("mcgdiff-paper", 100), published("mcgdiff", 100));
        assert_eq!(gmm_methods("dps, ddrm").unwrap().len(), 2);
        assert!(gmm_methods("replacement").is_err());
        assert!(gmm_methods("nope").is_err());
        assert!(gmm_methods("dps,dps").is_err());
        assert_eq!(published("dcps50", 10), "1.95 / 2.70");
        assert_eq!(published("dcps", 10), "1.26 / 2.59");
    }

    fn small(problems: usize) -> GmmBenchOptions {
        GmmBenchOptions {
            dx: 3,
            dy: 1,
            problems,
            only_problem: None,
            skip: BTreeSet::new(),
            jobs: 1,
            methods: gmm_methods("mcgdiff,ddrm").unwrap(),
            particles: vec![20, 40],
            steps: 20,
            n: 60,
            seed: 1,
        }
    }

    #[test]
    fn run_records_baselines_methods_and_statistics() {
        let opts = small(3);
        let (mut seen, mut problems) = (0, Vec::new());
        let b = run_gmm_bench(&opts, &mut |_| seen += 1, &mut |recs| {
            problems.push(recs[0].problem);
            Ok(())
        })
        .unwrap();
        // Per problem: exact, prior, mcgdiff x 2 particle counts, ddrm.
        assert_eq!((b.records.len(), seen), (15, 15));
        assert_eq!(problems, vec![0, 1, 2]);
        assert_eq!(b.floors().len(), 3);
        let so = StatsOptions {
            resamples: 200,
            ..Default::default()
        };
        let s = b.summary(&so);
        let labels: Vec<String> = s.iter().map(GmmSummary::label).collect();
        assert_eq!(labels, ["exact", "prior", "mcgdiff@20", "mcgdiff@40", "ddrm"]);
        assert!(s[2].smc && s[2].particles == 20 && !s[4].smc && s[4].particles == 60);
        for r in &s {
            assert_eq!(r.problems, 3);
            for i in [r.sw_median, r.sw_mean, r.weight_error_mean] {
                assert!(i.lo <= i.value && i.value <= i.hi, "{} {i:?}", r.label());
            }
        }
        // The floor is the distance between two exact sets: a distance, and the prior,
        // which ignores y, is farther from the posterior than a second exact set.
        assert!(b.floors().iter().all(|f| *f > 0.0));
        assert!(s[1].sw_median.value > s[0].sw_median.value);
        // The floor's summary is the floor.
        assert_eq!(s[0].sw_median.value, b.floor_median_mean().0);
        let pairs = b.pairs(&so);
        assert_eq!(pairs.len(), 5 * 4);
        let ep = pairs.iter().find(|p| p.a == "exact" && p.b == "prior").unwrap();
        let pe = pairs.iter().find(|p| p.a == "prior" && p.b == "exact").unwrap();
        assert_eq!(ep.wins + pe.wins, 3.0);
        assert!((ep.share.value + pe.share.value - 1.0).abs() < 1e-15);
        assert!((ep.diff_median.value + pe.diff_median.value).abs() < 1e-12);
        assert!(ep.share.lo <= ep.share.value && ep.share.value <= ep.share.hi);
        assert_eq!(summary_csv(&s).lines().count(), 6);
        assert_eq!(pairs_csv(&pairs).lines().count(), 21);
        assert_eq!(b.figure.len(), 3);
        assert!(b.figure.iter().all(|(_, x)| x.len() == 2 * 60));
        // The CSV reads back exactly, and one problem reruns exactly as in the full run,
        // alone or two at a time.
        let csv = b.csv(&opts);
        assert_eq!(csv.lines().count(), 16);
        assert_eq!(resume_records(&csv, &opts).unwrap(), b.records);
        let one = GmmBenchOptions {
            only_problem: Some(2),
            ..small(3)
        };
        // (Everything but the measured seconds.)
        let strip = |v: &[GmmRecord]| -> Vec<GmmRecord> {
            v.iter()
                .map(|r| GmmRecord {
                    seconds: 0.0,
                    ..r.clone()
                })
                .collect()
        };
        let again = run_gmm_bench(&one, &mut |_| {}, &mut |_| Ok(())).unwrap();
        assert_eq!(strip(&again.records), strip(&b.records[10..]));
        assert!(again.figure.is_empty());
        let par = GmmBenchOptions { jobs: 2, ..small(3) };
        let mut order = Vec::new();
        let pb = run_gmm_bench(&par, &mut |_| {}, &mut |recs| {
            order.push(recs[0].problem);
            Ok(())
        })
        .unwrap();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(strip(&pb.records), strip(&b.records));
        let bad = GmmBenchOptions { dy: 4, ..small(3) };
        assert!(run_gmm_bench(&bad, &mut |_| {}, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn resume_keeps_complete_problems_and_checks_settings() {
        let opts = small(2);
        let rec = |problem: usize, method: &str, particles: usize| GmmRecord {
            problem,
            method: method.into(),
            particles,
            sw: 0.1 + problem as f64 / 3.0,
            weight_error: 0.2,
            seconds: 1.5,
            floor: 0.1,
            ess: (method == "mcgdiff").then_some((0.25, 3.0)),
        };
        let mut records: Vec<GmmRecord> = opts.settings().iter().map(|(m, np)| rec(0, m, *np)).collect();
        // Problem 1 stopped after its ddrm row was lost.
        records.extend(opts.settings().iter().take(4).map(|(m, np)| rec(1, m, *np)));
        let b = GmmBench {
            records: records.clone(),
            figure: Vec::new(),
        };
        let back = resume_records(&b.csv(&opts), &opts).unwrap();
        assert_eq!(back, records[..5]);
        // Other settings, another header, a malformed row: refused.
        let other = GmmBenchOptions { seed: 2, ..small(2) };
        assert!(resume_records(&b.csv(&other), &opts).is_err());
        assert!(resume_records("problem,method\n", &opts).is_err());
        assert!(resume_records(&format!("{CSV_HEADER}\n0,1,3\n"), &opts).is_err());
        // The skipped problems are not run.
        assert!(resume_records(&b.csv(&opts), &small(1))
            .unwrap()
            .iter()
            .all(|r| r.problem == 0));
        assert!(GmmBenchOptions {
            only_problem: Some(2),
            ..small(2)
        }
        .validate()
        .is_err());
        let rest = GmmBenchOptions {
            skip: back.iter().map(|r| r.problem).collect(),
            ..small(2)
        };
        assert_eq!(rest.indices(), vec![1]);
    }

    #[test]
    fn wilson_z_follows_the_level() {
        assert_eq!(StatsOptions::default().z(), stats::Z95);
        let z = |level| {
            StatsOptions {
                level,
                ..Default::default()
            }
            .z()
        };
        assert!((z(0.682_689_492_137_086) - 1.0).abs() < 1e-6);
        assert!((z(0.99) - 2.575_829_303_548_901).abs() < 1e-6);
    }
}
