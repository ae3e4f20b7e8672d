//! The Gaussian-mixture posterior benchmark of Cardoso et al. 2024 (MCGdiff) and Janati et
//! al. 2024 (DCPS), as their code builds it (docs/methods.md):
//!
//! * prior: 25 components, means `(8i, 8j, 8i, 8j, ...)` for `i, j in {-2..2}`, identity
//!   covariances, weights `w_k ∝ g_k^2`, `g_k ~ N(0, 1)` ([`GaussianMixture::grid25`]);
//! * operator: `A = randn(dy, dx)`, whose singular values are replaced by `sort(U(0, 1))`
//!   descending; `sigma_y = U(0, 1) max(s)`; `y = A x* + sigma_y z` with `x* ~ prior`;
//! * reference: the exact posterior, a Gaussian mixture ([`ExactPosterior`]);
//! * metrics: the sliced Wasserstein distance (100 random directions) between `n` method
//!   samples and `n` exact posterior samples, and the mixture-weight error (L1 distance
//!   between the posterior weights and the shares of samples whose most responsible
//!   posterior component is `k`); the noise floor is the same distance between two
//!   independent exact sets.
//!
//! Random streams (all of `Noise::new(seed)`): problem `i` draws its operator from streams
//! `(User, 4i .. 4i + 3)`, `x*` from index `1000 + i` and its prior weights from
//! `Noise::new(seed ^ (i * 0x9E3779B9))`; the exact reference and the floor's second set are
//! stream indices `2i` and `2i + 1`; every method runs with seed `seed + i`.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::inverse::{sample_posterior, ExactPosterior, Method, Observation, Operator, PosteriorOptions, METHOD_NAMES};
use crate::metrics::{mixture_weight_error, sliced_wasserstein, SlicedOptions};
use crate::rng::{stream, Noise, Purpose};
use crate::score::GaussianMixture;
use crate::solve::prior_score;
use crate::{Error, Result};

/// The methods of `all`: those that take any (dense) operator.
pub const GMM_METHODS: [&str; 7] = ["mcgdiff", "tds", "dcps", "dps", "pigdm", "tmpd", "ddrm"];

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
        ("mcgdiff", 10) => "2.25 / 2.69",
        ("mcgdiff", 100) => "2.72 / 3.13",
        ("dps", 10) => "3.12 / 5.64",
        ("dps", 100) => "4.29 / 4.93",
        ("ddrm", 10) => "2.66 / 3.06",
        ("ddrm", 100) => "5.97 / 6.26",
        ("dcps", 10) => "1.26 / 2.59",
        ("dcps", 100) => "2.81 / 3.22",
        _ => "-",
    }
}

/// The methods named by a comma-separated list (or `all`: [`GMM_METHODS`]); methods that
/// need a mask (exact, replacement, smc-impute) are refused.
pub fn gmm_methods(list: &str) -> Result<Vec<Method>> {
    let names: Vec<&str> = if list == "all" {
        GMM_METHODS.to_vec()
    } else {
        list.split(',').map(str::trim).collect()
    };
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
            Ok(m)
        })
        .collect()
}

/// The settings of a run of the benchmark.
#[derive(Clone, Debug)]
pub struct GmmBenchOptions {
    /// Dimension of `x` (`>= 2`).
    pub dx: usize,
    /// Dimension of `y` (`1 <= dy <= dx`).
    pub dy: usize,
    /// Number of random problems.
    pub problems: usize,
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
    /// Checks `dx >= 2`, `1 <= dy <= dx` and that the counts are positive.
    pub fn validate(&self) -> Result<()> {
        if self.dx < 2
            || self.dy == 0
            || self.dy > self.dx
            || self.problems == 0
            || self.n == 0
            || self.particles.is_empty()
            || self.particles.contains(&0)
        {
            return Err(Error::invalid(
                "need dx >= 2, 1 <= dy <= dx, problems, n and particles >= 1",
            ));
        }
        Ok(())
    }
}

/// One evaluation: a method on a problem (or the exact posterior's noise floor, method
/// `exact`, particles 0).
#[derive(Clone, Debug, PartialEq)]
pub struct GmmRecord {
    /// The problem's index.
    pub problem: usize,
    /// The method's name.
    pub method: String,
    /// Particles per run (SMC methods), else the sample count (0 for `exact`).
    pub particles: usize,
    /// Sliced Wasserstein distance to the exact reference.
    pub sw: f64,
    /// Mixture-weight error.
    pub weight_error: f64,
    /// Wall-clock seconds of the method (0 for `exact`).
    pub seconds: f64,
    /// The problem's noise floor (the `sw` of the `exact` record).
    pub floor: f64,
    /// Smallest ESS / N and mean resamplings per run (SMC methods).
    pub ess: Option<(f64, f64)>,
}

/// The aggregate of one (method, particles) setting over the problems.
#[derive(Clone, Debug, PartialEq)]
pub struct GmmSummary {
    /// The method's name.
    pub method: String,
    /// Particles (SMC methods) or samples.
    pub particles: usize,
    /// Whether the method is an SMC method (the particle count matters).
    pub smc: bool,
    /// Median of the sliced Wasserstein distances.
    pub sw_median: f64,
    /// Mean of the sliced Wasserstein distances.
    pub sw_mean: f64,
    /// Mean mixture-weight error.
    pub weight_error_mean: f64,
    /// Mean seconds per problem.
    pub seconds_mean: f64,
}

/// The outcome of [`run_gmm_bench`].
#[derive(Clone, Debug, Default)]
pub struct GmmBench {
    /// Every evaluation, in run order (per problem: the `exact` floor, then each method and
    /// particle count).
    pub records: Vec<GmmRecord>,
    /// Problem 0 projected on `(v_1 . x, x_1)` (`v_1` the top right singular vector of its
    /// operator): the exact posterior first, then each method's samples at its last
    /// particle count; each row-major `[n, 2]`.
    pub figure: Vec<(String, Vec<f64>)>,
}

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
        let mut f = self.floors();
        let mean = f.iter().sum::<f64>() / f.len() as f64;
        (super::median(&mut f), mean)
    }

    /// One summary per (method, particles), in order of first appearance.
    pub fn summary(&self) -> Vec<GmmSummary> {
        let mut keys: Vec<(&str, usize)> = Vec::new();
        for r in self.records.iter().filter(|r| r.method != "exact") {
            if !keys.contains(&(r.method.as_str(), r.particles)) {
                keys.push((r.method.as_str(), r.particles));
            }
        }
        keys.into_iter()
            .map(|(m, np)| {
                let v: Vec<&GmmRecord> = self
                    .records
                    .iter()
                    .filter(|r| r.method == m && r.particles == np)
                    .collect();
                let mut sws: Vec<f64> = v.iter().map(|r| r.sw).collect();
                let k = v.len() as f64;
                let sw_mean = sws.iter().sum::<f64>() / k;
                GmmSummary {
                    method: m.to_string(),
                    particles: np,
                    smc: m.parse::<Method>().map(|m| m.is_smc()).unwrap_or(false),
                    sw_median: super::median(&mut sws),
                    sw_mean,
                    weight_error_mean: v.iter().map(|r| r.weight_error).sum::<f64>() / k,
                    seconds_mean: v.iter().map(|r| r.seconds).sum::<f64>() / k,
                }
            })
            .collect()
    }

    /// The records as CSV, `problem,method,particles,sw,weight_error,seconds`.
    pub fn csv(&self) -> String {
        let mut s = String::from("problem,method,particles,sw,weight_error,seconds\n");
        for r in &self.records {
            s.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r.problem, r.method, r.particles, r.sw, r.weight_error, r.seconds
            ));
        }
        s
    }
}

fn tensor(x: Vec<f64>, d: usize) -> Result<Tensor> {
    let n = x.len() / d;
    Ok(Tensor::from_vec(x, (n, d), &Device::Cpu)?)
}

/// Runs the benchmark: for each problem, the noise floor, then each method (each SMC
/// method at each particle count), evaluated against the exact posterior.
/// `on_record` sees each record as it is made (for a log).
pub fn run_gmm_bench(opts: &GmmBenchOptions, on_record: &mut dyn FnMut(&GmmRecord)) -> Result<GmmBench> {
    opts.validate()?;
    let (dx, n) = (opts.dx, opts.n);
    let noise = Noise::new(opts.seed);
    let sw_opts = SlicedOptions::default();
    let mut out = GmmBench::default();
    for pi in 0..opts.problems {
        let (prior, obs) = gmm_problem(dx, opts.dy, &noise, pi as u64)?;
        let post = ExactPosterior::new(&prior, &obs.op, &obs.y, obs.sigma_y)?;
        let post_law = post.mixture()?;
        let reference = tensor(post.sample(n, &noise, 2 * pi as u64), dx)?;
        let second = tensor(post.sample(n, &noise, 2 * pi as u64 + 1), dx)?;
        let floor = sliced_wasserstein(&reference, &second, &sw_opts)?;
        let exact = GmmRecord {
            problem: pi,
            method: "exact".into(),
            particles: 0,
            sw: floor,
            weight_error: mixture_weight_error(&second, &post_law)?,
            seconds: 0.0,
            floor,
            ess: None,
        };
        on_record(&exact);
        out.records.push(exact);
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
                let r = GmmRecord {
                    problem: pi,
                    method: m.name().to_string(),
                    particles: np,
                    sw: sliced_wasserstein(&xs, &reference, &sw_opts)?,
                    weight_error: mixture_weight_error(&xs, &post_law)?,
                    seconds,
                    floor,
                    ess: m.is_smc().then_some((rep.ess_min, rep.resamplings)),
                };
                on_record(&r);
                out.records.push(r);
                if pi == 0 && Some(&np) == counts.last() {
                    fig_series.push((m.name().to_string(), rep.samples));
                }
            }
        }
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
            out.figure
                .push(("exact posterior".into(), proj(&post.sample(n, &noise, FIGURE_INDEX))));
            out.figure.extend(fig_series.iter().map(|(m, x)| (m.clone(), proj(x))));
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
        assert_eq!(gmm_methods("all").unwrap().len(), 7);
        assert_eq!(gmm_methods("dps, ddrm").unwrap().len(), 2);
        assert!(gmm_methods("replacement").is_err());
        assert!(gmm_methods("nope").is_err());
        assert_eq!(published("dcps", 10), "1.26 / 2.59");
    }

    #[test]
    fn run_records_floor_and_methods() {
        let opts = GmmBenchOptions {
            dx: 3,
            dy: 1,
            problems: 2,
            methods: gmm_methods("mcgdiff,ddrm").unwrap(),
            particles: vec![20, 40],
            steps: 20,
            n: 60,
            seed: 1,
        };
        let mut seen = 0;
        let b = run_gmm_bench(&opts, &mut |_| seen += 1).unwrap();
        // Per problem: exact, mcgdiff x 2 particle counts, ddrm.
        assert_eq!((b.records.len(), seen), (8, 8));
        assert_eq!(b.floors().len(), 2);
        let s = b.summary();
        assert_eq!(s.len(), 3);
        assert!(s[0].smc && s[0].particles == 20 && !s[2].smc && s[2].particles == 60);
        assert!(s.iter().all(|r| r.sw_mean > 0.0 && r.weight_error_mean >= 0.0));
        assert_eq!(b.figure.len(), 3);
        assert!(b.figure.iter().all(|(_, x)| x.len() == 2 * 60));
        assert_eq!(b.csv().lines().count(), 9);
        // The floor is the distance between two exact sets: the sliced W1 is a distance.
        assert!(b.floors().iter().all(|f| *f > 0.0));
        let bad = GmmBenchOptions { dy: 4, ..opts };
        assert!(run_gmm_bench(&bad, &mut |_| {}).is_err());
    }
}
