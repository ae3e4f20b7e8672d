//! The quality benchmark (`scoregen bench quality`): for each built-in data set, train a
//! model with the trainer's defaults, sample it with the sampler's defaults, and compare the
//! samples with held-out data of the same law.
//!
//! Per set:
//! * the sliced W1 distance (100 directions) of `n` samples to `n` held-out points, next to
//!   its **two-sample floor**, the same statistic between two independent held-out sets of
//!   the same size (what a perfect model would score); both are means over [`COMPARISONS`]
//!   paired comparisons, each with its own set of model samples, its own held-out set and
//!   its own floor partner, and their ratio comes with a delta-method standard error;
//! * the unbiased RBF MMD^2 between the first set of samples and one held-out set, and its
//!   floor;
//! * the held-out negative log-likelihood in nats per dimension, by the probability-flow ODE
//!   ([`crate::likelihood::model_log_likelihood`], exact divergence), with its standard error
//!   over rows, next to the true density's NLL where the law has one in closed form (gmm25,
//!   mixture); for digits, bits per dimension of the dequantised pixels (Theis et al. 2016)
//!   from Hutchinson estimates;
//! * per set, on all `COMPARISONS x n` samples: for the Gaussian mixtures (gmm25 and
//!   `mixture`, a random mixture drawn from the seed, see [`random_mixture`]), each mode's
//!   share of the samples against its weight
//!   (worst relative error; modes off by more than 30%, by more than 4.5 binomial standard
//!   errors, and by both); for two-spheres, the mean radius of each sphere's samples relative
//!   to the true radius (1 or 2), the radial spread relative to the radius and a chi^2
//!   isotropy statistic of the mean direction; for digits, the accuracy of a
//!   softmax-regression classifier trained on real digits, on class-conditional samples and
//!   on real held-out digits.
//!
//! Synthetic sets train unconditionally (as a plain unlabelled file would) unless
//! [`QualityOptions::conditional`]; digits is always class-conditional.
//!
//! Seeds: the training set is `builtin::load(set, n_train, seed)`, the held-out sets
//! `seed + 1, seed + 3, ...` and their floor partners `seed + 2, seed + 4, ...`; the
//! `mixture` law is drawn from `seed` and its points from `Noise::new(seed + i)`; digits (a
//! fixed table of 1,797 images) holds out every fifth row. Training and sampling use `seed`.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::classes::{sample_model, ClassChoice};
use crate::data::builtin;
use crate::likelihood::{dequantise, model_log_likelihood, Divergence, LikelihoodOptions};
use crate::metrics::{mmd_rbf, sliced_wasserstein, SlicedOptions};
use crate::nn::mlp::MlpConfig;
use crate::nn::model::Normalisation;
use crate::nn::train::{load_model_on, train, TimeSampling, TrainConfig, TrainSetup};
use crate::nn::unet::UnetConfig;
use crate::nn::{Arch, LearnedScore};
use crate::rng::{stream, Noise, Purpose};
use crate::sample::{standardised_process, SampleOptions, Sampler, SamplerParams};
use crate::score::{Covariance, GaussianMixture, Parametrisation};
use crate::{Error, Result};

/// The sets of the benchmark, in the order of its table.
pub const QUALITY_SETS: [&str; 8] = [
    "two-spheres",
    "gmm25",
    "mixture",
    "moons",
    "swiss-roll",
    "checkerboard",
    "funnel",
    "digits",
];

/// Independent comparisons behind the sliced W1 and its floor: this many independent sets
/// of `n_eval` model samples, each against its own held-out set, and as many independent
/// pairs of held-out sets for the floor. On a mixture whose modes lie far apart, the SW1 of
/// one pair of 2,000-point sets is dominated by the two sets' random mode shares and varies
/// by a factor of 4 from pair to pair (0.064 to 0.296 on the `mixture` of seed 4), so one
/// model set against several held-out sets is not enough: the ratio's standard error
/// ([`QualityRow::sw_ratio_se`]) comes from the spread of the paired comparisons.
pub const COMPARISONS: u64 = 20;

/// Settings of [`run_quality`].
#[derive(Clone, Debug)]
pub struct QualityOptions {
    /// Sets to run (names of [`QUALITY_SETS`]).
    pub sets: Vec<String>,
    /// Training points of the synthetic sets.
    pub n_train: usize,
    /// Samples and held-out points compared (synthetic sets; digits uses its 359 held-out
    /// images and as many samples, spread evenly over the classes).
    pub n_eval: usize,
    /// Training steps; `None`: the trainer's defaults (4,000 for the MLP, 1,500 for the
    /// U-Net).
    pub steps: Option<usize>,
    /// Reverse steps of the sampler (Euler–Maruyama, the sampler's default).
    pub sample_steps: usize,
    /// Held-out rows whose log-likelihood is computed (0: none).
    pub likelihood_rows: usize,
    /// Seed.
    pub seed: u64,
    /// Where the networks train and run.
    pub device: Device,
    /// What the networks output (the trainer's default: EDM).
    pub param: Parametrisation,
    /// How training times are drawn (the trainer's default: log-normal).
    pub time_sampling: TimeSampling,
    /// Train the synthetic sets that have labels (two-spheres, gmm25, moons) on them, as
    /// `scoregen train` does by default, and sample the class mixture of the training
    /// frequencies; `false`: unconditional models, as for a plain unlabelled file.
    pub conditional: bool,
    /// The time cut `t_min` of training and sampling (`None`: the trainer's and the sampler's
    /// default, `1e-3`).
    pub t_min: Option<f64>,
}

impl Default for QualityOptions {
    fn default() -> Self {
        QualityOptions {
            sets: QUALITY_SETS.iter().map(|s| s.to_string()).collect(),
            n_train: 20_000,
            n_eval: 2000,
            steps: None,
            sample_steps: 1000,
            likelihood_rows: 200,
            seed: 0,
            device: Device::Cpu,
            param: Parametrisation::Edm,
            time_sampling: TimeSampling::LogNormal,
            conditional: false,
            t_min: None,
        }
    }
}

/// One set's results.
#[derive(Clone, Debug)]
pub struct QualityRow {
    /// The set.
    pub set: String,
    /// Its dimension.
    pub dim: usize,
    /// Training steps done.
    pub steps: usize,
    /// Seconds of training, of sampling and of the likelihood.
    pub seconds: (f64, f64, f64),
    /// Sliced W1 of the samples to held-out data, and its two-sample floor: means over the
    /// [`COMPARISONS`] paired comparisons (digits: one).
    pub sw: (f64, f64),
    /// Standard error of [`QualityRow::sw_ratio`] by the delta method over the paired
    /// comparisons `(a_k, b_k)` (model, floor): `sqrt(sum_k (a_k - R b_k)^2 / (K (K - 1))) /
    /// mean(b)`, `R` the ratio of the means; `None` for a single comparison (digits).
    pub sw_ratio_se: Option<f64>,
    /// Unbiased RBF MMD^2 of the samples to held-out data, and the same of a second held-out
    /// set (its two-sample floor, about 0), with one bandwidth.
    pub mmd: (f64, f64),
    /// Held-out NLL per dimension (nats, or bits for digits) and its standard error; `None`
    /// with `likelihood_rows = 0`.
    pub nll: Option<(f64, f64)>,
    /// The true density's NLL per dimension on the same rows, where it is known.
    pub true_nll: Option<f64>,
    /// Whether the NLL is in bits per dimension (digits) rather than nats.
    pub bits: bool,
    /// Set-specific statistics, `(name, value)`.
    pub extra: Vec<(String, f64)>,
}

impl QualityRow {
    /// Sliced W1 over its floor.
    pub fn sw_ratio(&self) -> f64 {
        self.sw.0 / self.sw.1
    }
}

fn rows_of(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
}

fn tensor(x: Vec<f64>, d: usize) -> Result<Tensor> {
    let n = x.len() / d;
    Ok(Tensor::from_vec(x, (n, d), &Device::Cpu)?)
}

/// The unbiased MMD^2 of `x` and of `other` to `held`, with one bandwidth (the median
/// heuristic of the first pair) for both.
fn mmd_pair(x: &Tensor, other: &Tensor, held: &Tensor) -> Result<(f64, f64)> {
    let a = mmd_rbf(x, held, None)?;
    let b = mmd_rbf(other, held, Some(a.bandwidth))?;
    Ok((a.mmd2_unbiased, b.mmd2_unbiased))
}

/// Mean and standard error of `v`.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

/// Runs the benchmark, one set after another, training each model into a subdirectory of
/// `dir`. `progress(set, stage)` names what is running.
pub fn run_quality(opts: &QualityOptions, dir: &Path, progress: &mut dyn FnMut(&str, &str)) -> Result<Vec<QualityRow>> {
    for s in &opts.sets {
        if !QUALITY_SETS.contains(&s.as_str()) {
            return Err(Error::invalid(format!(
                "bench quality: unknown set '{s}' (expected some of: {})",
                QUALITY_SETS.join(", ")
            )));
        }
    }
    if opts.t_min.is_some_and(|t| !(t > 0.0 && t < 1.0)) {
        return Err(Error::invalid("bench quality: t_min must be in (0, 1)"));
    }
    if opts.n_eval < 2 || opts.n_train < 2 || opts.sample_steps == 0 || opts.steps == Some(0) {
        return Err(Error::invalid(
            "bench quality: n-train and n-eval must be >= 2, steps and sample steps >= 1",
        ));
    }
    opts.sets
        .iter()
        .map(|s| {
            if s == "digits" {
                run_digits(opts, &dir.join(s), progress)
            } else {
                run_synthetic(s, opts, &dir.join(s), progress)
            }
        })
        .collect()
}

fn sampler_opts(opts: &QualityOptions) -> SampleOptions {
    let d = SampleOptions::default();
    SampleOptions {
        steps: opts.sample_steps,
        seed: opts.seed,
        t_min: opts.t_min.unwrap_or(d.t_min),
        ..d
    }
}

/// Trains `arch` on `x` (with `labels`) into `dir` with the trainer's defaults and the
/// options' overrides, then samples `n` rows per `choice` by Euler–Maruyama. Returns the
/// training report, the model, its normalisation, the samples (data units, `f64`) and the
/// seconds of training and of sampling.
#[allow(clippy::too_many_arguments)]
fn fit_and_sample(
    opts: &QualityOptions,
    dir: &Path,
    what: &str,
    x: &Tensor,
    labels: Option<&[u32]>,
    arch: Arch,
    config: TrainConfig,
    choice: &ClassChoice,
    n: usize,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<Fitted> {
    let d = x.dims2()?.1;
    let config = TrainConfig {
        seed: opts.seed,
        time_sampling: opts.time_sampling,
        t_min: opts.t_min.unwrap_or(config.t_min),
        ..config
    };
    let setup = TrainSetup {
        arch,
        process: standardised_process(d),
        config,
        checkpoint_dir: Some(dir),
        resume: false,
        device: opts.device.clone(),
    };
    progress(what, "train");
    let t0 = Instant::now();
    let report = train(x, labels, &setup, &mut |_| {})?;
    let train_s = t0.elapsed().as_secs_f64();
    let (score, meta) = load_model_on(dir, &opts.device)?;
    progress(what, "sample");
    let t0 = Instant::now();
    let sampler = Sampler::from_name("em", &SamplerParams::default())?;
    let (samples, score) = sample_model(
        score,
        &meta.normalisation,
        choice,
        &sampler,
        &sampler_opts(opts),
        n,
        &mut |_, _, _| {},
    )?;
    Ok(Fitted {
        steps: report.step,
        score,
        normalisation: meta.normalisation,
        samples: samples.to_dtype(DType::F64)?,
        seconds: (train_s, t0.elapsed().as_secs_f64()),
    })
}

/// What [`fit_and_sample`] returns.
struct Fitted {
    steps: usize,
    score: LearnedScore,
    normalisation: Normalisation,
    samples: Tensor,
    seconds: (f64, f64),
}

fn run_synthetic(
    set: &str,
    opts: &QualityOptions,
    dir: &Path,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<QualityRow> {
    let law = match set {
        "gmm25" => Some(builtin::gmm25_law()),
        "mixture" => Some(random_mixture(opts.seed)?),
        _ => None,
    };
    let points = |n: usize, seed: u64| -> Result<(Tensor, Option<Vec<u32>>)> {
        match (&law, set) {
            // A plain unlabelled file of the random mixture.
            (Some(law), "mixture") => Ok((tensor(law.sample(n, &Noise::new(seed), 0), 2)?, None)),
            _ => {
                let data = builtin::load(set, Some(n), seed)?;
                Ok((data.x, data.labels))
            }
        }
    };
    let (train_x, labels) = points(opts.n_train, opts.seed)?;
    let d = train_x.dims2()?.1;
    let mut held = Vec::new();
    let mut others = Vec::new();
    for k in 0..COMPARISONS {
        held.push(points(opts.n_eval, opts.seed + 1 + 2 * k)?.0);
        others.push(points(opts.n_eval, opts.seed + 2 + 2 * k)?.0);
    }
    let config = TrainConfig {
        steps: opts.steps.unwrap_or(TrainConfig::default().steps),
        ..Default::default()
    };
    let labels = labels.filter(|_| opts.conditional);
    let n_classes = labels
        .as_ref()
        .map_or(0, |l| l.iter().max().map_or(0, |&m| m as usize + 1));
    let choice = match &labels {
        Some(l) => ClassChoice::Mixture(
            (0..n_classes as u32)
                .map(|c| l.iter().filter(|&&v| v == c).count() as f64)
                .collect(),
        ),
        None => ClassChoice::Null,
    };
    let arch = MlpConfig {
        param: opts.param,
        n_classes,
        ..MlpConfig::reference(d)
    };
    let fit = fit_and_sample(
        opts,
        dir,
        set,
        &train_x,
        labels.as_deref(),
        arch.into(),
        config,
        &choice,
        opts.n_eval * COMPARISONS as usize,
        progress,
    )?;
    let (x, score, norm) = (&fit.samples, &fit.score, &fit.normalisation);
    let (train_s, sample_s) = fit.seconds;
    let sw_opts = SlicedOptions::default();
    let mut pairs = Vec::new();
    for (k, (h, o)) in held.iter().zip(&others).enumerate() {
        let xk = x.narrow(0, k * opts.n_eval, opts.n_eval)?;
        pairs.push((
            sliced_wasserstein(&xk, h, &sw_opts)?,
            sliced_wasserstein(o, h, &sw_opts)?,
        ));
    }
    let (sw_model, sw_floor, sw_ratio_se) = paired_ratio(&pairs);
    let mmd = mmd_pair(&x.narrow(0, 0, opts.n_eval)?, &others[0], &held[0])?;
    let held_rows = rows_of(&held[0])?;
    let k = opts.likelihood_rows.min(opts.n_eval);
    let mut true_nll = None;
    let (nll, ll_s) = if k > 0 {
        progress(set, "likelihood");
        let t0 = Instant::now();
        let rows = &held_rows[..k * d];
        let lopts = LikelihoodOptions::default();
        let log_p = match &choice {
            // The class mixture's density: log sum_c pi_c p(x | c), one PF-ODE per class.
            ClassChoice::Mixture(pi) => {
                let total: f64 = pi.iter().sum();
                let per_class = (0..pi.len())
                    .map(|c| {
                        let s = load_model_on(dir, &opts.device)?.0.conditional(c as u32, 0.0)?;
                        Ok(model_log_likelihood(&s, norm, rows, &lopts)?.log_p)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (0..k)
                    .map(|i| {
                        let terms: Vec<f64> = (0..pi.len()).map(|c| (pi[c] / total).ln() + per_class[c][i]).collect();
                        let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()
                    })
                    .collect()
            }
            _ => model_log_likelihood(score, norm, rows, &lopts)?.log_p,
        };
        let per_dim: Vec<f64> = log_p.iter().map(|l| -l / d as f64).collect();
        if let Some(law) = &law {
            let lp = law.log_prob(rows)?;
            true_nll = Some(-lp.iter().sum::<f64>() / (k * d) as f64);
        }
        (Some(mean_se(&per_dim)), t0.elapsed().as_secs_f64())
    } else {
        (None, 0.0)
    };
    let xs = rows_of(x)?;
    let extra = match (&law, set) {
        (Some(law), _) => mode_shares(law, &xs),
        (None, "two-spheres") => sphere_stats(&xs),
        _ => Vec::new(),
    };
    Ok(QualityRow {
        set: set.to_string(),
        dim: d,
        steps: fit.steps,
        seconds: (train_s, sample_s, ll_s),
        sw: (sw_model, sw_floor),
        sw_ratio_se: Some(sw_ratio_se),
        mmd,
        nll,
        true_nll,
        bits: false,
        extra,
    })
}

/// Means of paired values `(a_k, b_k)` and the delta-method standard error of the ratio of
/// the means, `sqrt(sum_k (a_k - R b_k)^2 / (K (K - 1))) / mean(b)` (0 for one pair).
fn paired_ratio(pairs: &[(f64, f64)]) -> (f64, f64, f64) {
    let k = pairs.len() as f64;
    let a = pairs.iter().map(|p| p.0).sum::<f64>() / k;
    let b = pairs.iter().map(|p| p.1).sum::<f64>() / k;
    let r = a / b;
    let ss: f64 = pairs.iter().map(|p| (p.0 - r * p.1).powi(2)).sum();
    let se = if pairs.len() > 1 {
        (ss / (k * (k - 1.0))).sqrt() / b
    } else {
        0.0
    };
    (a, b, se)
}

/// The `mixture` set's law, drawn from `seed`: a 2-d Gaussian mixture of `K` components,
/// `K` uniform on `3..=10`, weights `Dirichlet(1, ..., 1)`, covariances `R diag(s_1^2, s_2^2)
/// R^T` with `s_i` uniform on `[0.3, 1]` and a uniform rotation `R`, means uniform on
/// `[-8, 8]^2` and kept only when `|mu_j - mu_k| >= 3 (s_max,j + s_max,k)` from every
/// earlier mean (so that the modes' 3-sd ellipses do not overlap). The defaults must not be
/// tuned to the built-in sets: these laws check them on mixtures nobody chose.
pub fn random_mixture(seed: u64) -> Result<GaussianMixture> {
    let noise = Noise::new(seed);
    let u = noise.uniforms(stream(Purpose::Exact, 1 << 41), 1 + 4 * 10);
    let k = 3 + ((u[0] * 8.0) as usize).min(7);
    let candidates = noise.uniforms(stream(Purpose::Exact, (1 << 41) + 1), 2 * 10_000);
    let (mut weights, mut means, mut covs) = (Vec::new(), Vec::<Vec<f64>>::new(), Vec::new());
    let mut s_max = Vec::new();
    let mut next = candidates.chunks(2);
    for j in 0..k {
        let v = &u[1 + 4 * j..5 + 4 * j];
        let (s1, s2) = (0.3 + 0.7 * v[0], 0.3 + 0.7 * v[1]);
        let (c, s) = ((std::f64::consts::PI * v[2]).cos(), (std::f64::consts::PI * v[2]).sin());
        let sm = s1.max(s2);
        let mean = loop {
            let Some(p) = next.next() else {
                return Err(Error::Numerical(
                    "bench quality: could not place the random mixture's means".into(),
                ));
            };
            let m = vec![16.0 * p[0] - 8.0, 16.0 * p[1] - 8.0];
            let far = means
                .iter()
                .zip(&s_max)
                .all(|(q, &sq): (&Vec<f64>, &f64)| (m[0] - q[0]).hypot(m[1] - q[1]) >= 3.0 * (sm + sq));
            if far {
                break m;
            }
        };
        // R diag(s1^2, s2^2) R^T with R the rotation by pi v.
        let (a, b) = (s1 * s1, s2 * s2);
        covs.push(Covariance::Full(vec![
            a * c * c + b * s * s,
            (a - b) * c * s,
            (a - b) * c * s,
            a * s * s + b * c * c,
        ]));
        weights.push(-(1.0 - v[3]).ln());
        means.push(mean);
        s_max.push(sm);
    }
    GaussianMixture::new(weights, means, covs)
}

/// Each mode's share of the samples of a 2-d mixture against its expected share: a sample
/// counts for the component of largest responsibility when its squared Mahalanobis distance
/// to it is below `11.83` (the 99.73% point of chi^2_2, "3 sd"), so a component of weight
/// `w` expects the share `p = 0.9973 w` when the components do not overlap. A mode fails the
/// quality bar when it is off by more than 30% of `p` and by more than 4.5 binomial standard
/// errors `sqrt(p (1 - p) / n)`. Reports the worst `|share / p - 1|`, the number of modes off
/// by more than 30%, by more than 4.5 standard errors, by both (failing), and the share of
/// samples inside some mode's ellipse.
fn mode_shares(law: &GaussianMixture, x: &[f64]) -> Vec<(String, f64)> {
    const R2: f64 = 11.83;
    let inside = 1.0 - (-R2 / 2.0f64).exp();
    let w = law.weights();
    let means = law.means();
    // Inverse covariances and log-determinants (2 x 2).
    let inv: Vec<([f64; 3], f64)> = (0..w.len())
        .map(|k| {
            let c = law.covariance_matrix(k);
            let det = c[0] * c[3] - c[1] * c[2];
            ([c[3] / det, -c[1] / det, c[0] / det], det.ln())
        })
        .collect();
    let mut counts = vec![0usize; w.len()];
    for p in x.chunks(2) {
        let mut best = (f64::NEG_INFINITY, 0, 0.0);
        for (k, ((ic, ld), mu)) in inv.iter().zip(&means).enumerate() {
            let (a, b) = (p[0] - mu[0], p[1] - mu[1]);
            let m2 = ic[0] * a * a + 2.0 * ic[1] * a * b + ic[2] * b * b;
            let lr = w[k].ln() - 0.5 * ld - 0.5 * m2;
            if lr > best.0 {
                best = (lr, k, m2);
            }
        }
        if best.2 < R2 {
            counts[best.1] += 1;
        }
    }
    let n = (x.len() / 2) as f64;
    let (mut worst, mut off30, mut off_se, mut failing, mut failing_exact) = (0.0f64, 0usize, 0usize, 0usize, 0usize);
    for (c, w) in counts.iter().zip(&w) {
        let p = w * inside;
        let share = *c as f64 / n;
        let rel = (share / p - 1.0).abs();
        let by_se = (share - p).abs() > 4.5 * (p * (1.0 - p) / n).sqrt();
        worst = worst.max(rel);
        off30 += usize::from(rel > 0.3);
        off_se += usize::from(by_se);
        failing += usize::from(rel > 0.3 && by_se);
        failing_exact += usize::from(rel > 0.3 && binomial_two_sided(x.len() / 2, p, *c) < TAIL_4_5_SD);
    }
    vec![
        ("modes".into(), w.len() as f64),
        ("worst mode share error".into(), worst),
        ("modes off by > 30%".into(), off30 as f64),
        ("modes off by > 4.5 se".into(), off_se as f64),
        ("modes failing (> 30% and > 4.5 se)".into(), failing as f64),
        (
            "modes failing (> 30% and exact binomial tail < 6.8e-6)".into(),
            failing_exact as f64,
        ),
        (
            "share inside a mode's 3-sd ellipse (exact: 0.9973)".into(),
            counts.iter().sum::<usize>() as f64 / n,
        ),
    ]
}

/// The two-sided tail probability of 4.5 standard deviations of a normal law, `2 (1 -
/// Phi(4.5))`.
const TAIL_4_5_SD: f64 = 6.8e-6;

/// The exact two-sided binomial tail `2 min(P(X <= c), P(X >= c))` (at most 1) of a count
/// `c` of `X ~ Binomial(n, p)`: the "4.5 standard errors" test for modes whose expected
/// count `n p` is too small for the normal approximation (a mode of weight `1e-5` among
/// 2,000 samples expects 0.02 samples, and a single sample is 55 "standard errors" off,
/// yet happens with probability 0.02). Summed in log space from the pmf's recurrence.
pub fn binomial_two_sided(n: usize, p: f64, c: usize) -> f64 {
    if p <= 0.0 {
        return if c == 0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return if c == n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let mut log_pmf = Vec::with_capacity(n + 1);
    let mut l = n as f64 * lq;
    for k in 0..=n {
        log_pmf.push(l);
        l += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + lp - lq;
    }
    let lse = |v: &[f64]| {
        let top = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        top + v.iter().map(|x| (x - top).exp()).sum::<f64>().ln()
    };
    let lower = lse(&log_pmf[..=c.min(n)]).exp();
    let upper = lse(&log_pmf[c.min(n)..]).exp();
    (2.0 * lower.min(upper)).min(1.0)
}

/// Radius statistics of samples of the two spheres (radii 1 and 2, split at 1.5): per sphere
/// the mean radius over the true one minus 1 and the radial sd over the radius; and the
/// isotropy statistic `3 n |mean unit direction|^2`, chi^2 with 3 degrees of freedom for an
/// isotropic law (99% point 11.34).
fn sphere_stats(x: &[f64]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut dir = [0.0; 3];
    let mut sums = [(0.0, 0.0, 0usize); 2];
    for p in x.chunks(3) {
        let r = p.iter().map(|v| v * v).sum::<f64>().sqrt();
        let k = usize::from(r > 1.5);
        sums[k].0 += r;
        sums[k].1 += r * r;
        sums[k].2 += 1;
        for j in 0..3 {
            dir[j] += p[j] / r.max(1e-12);
        }
    }
    for (k, (s, s2, c)) in sums.iter().enumerate() {
        let c = (*c).max(1) as f64;
        let mean = s / c;
        let sd = (s2 / c - mean * mean).max(0.0).sqrt();
        let r = (k + 1) as f64;
        out.push((format!("radius {r}: mean / r - 1"), mean / r - 1.0));
        out.push((format!("radius {r}: sd / r"), sd / r));
    }
    let n = (x.len() / 3) as f64;
    out.push((
        "direction chi^2 (3 dof, 99% point 11.34)".into(),
        3.0 * n * dir.iter().map(|v| (v / n).powi(2)).sum::<f64>(),
    ));
    out
}

fn run_digits(opts: &QualityOptions, dir: &Path, progress: &mut dyn FnMut(&str, &str)) -> Result<QualityRow> {
    let data = builtin::load("digits", None, opts.seed)?;
    let (n, d) = data.x.dims2()?;
    let labels = data
        .labels
        .clone()
        .ok_or_else(|| Error::invalid("digits without labels"))?;
    let all = rows_of(&data.x)?;
    let (mut train_x, mut train_y, mut held_x, mut held_y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let row = &all[i * d..(i + 1) * d];
        if i % 5 == 0 {
            held_x.extend_from_slice(row);
            held_y.push(labels[i]);
        } else {
            train_x.extend_from_slice(row);
            train_y.push(labels[i]);
        }
    }
    let n_held = held_y.len();
    let (h, w) = data.image_shape.unwrap_or((8, 8));
    let config = TrainConfig {
        steps: opts.steps.unwrap_or(1500),
        batch: 64,
        lr: 2e-3,
        ..Default::default()
    };
    let arch = UnetConfig {
        n_classes: data.n_classes,
        param: opts.param,
        ..UnetConfig::for_image(h, w)
    };
    let per_class = n_held.div_ceil(data.n_classes);
    let fit = fit_and_sample(
        opts,
        dir,
        "digits",
        &tensor(train_x.clone(), d)?,
        Some(&train_y),
        arch.into(),
        config,
        &ClassChoice::Each { guidance: 0.0 },
        per_class,
        progress,
    )?;
    let (x, score, norm) = (&fit.samples, &fit.score, &fit.normalisation);
    let (train_s, sample_s) = fit.seconds;
    let xs = rows_of(x)?;
    let sample_y: Vec<u32> = (0..data.n_classes as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect();
    // The floor: real training images against the held-out ones, same count.
    let real = tensor(train_x[..n_held * d].to_vec(), d)?;
    let held = tensor(held_x.clone(), d)?;
    let xs_eval = tensor(xs[..n_held * d].to_vec(), d)?;
    let sw_opts = SlicedOptions::default();
    let sw = (
        sliced_wasserstein(&xs_eval, &held, &sw_opts)?,
        sliced_wasserstein(&real, &held, &sw_opts)?,
    );
    let mmd = mmd_pair(&xs_eval, &real, &held)?;
    let clf = SoftmaxRegression::fit(&train_x, &train_y, d, data.n_classes);
    let extra = vec![
        (
            "classifier accuracy on real held-out digits".into(),
            clf.accuracy(&held_x, &held_y),
        ),
        (
            "classifier accuracy on class-conditional samples".into(),
            clf.accuracy(&xs, &sample_y),
        ),
    ];
    let k = opts.likelihood_rows.min(n_held);
    let (nll, ll_s) = if k > 0 {
        progress("digits", "likelihood");
        let t0 = Instant::now();
        // Pixels are integers 0..16: dequantise with width 1, so bits/dim = -log p / (d ln 2).
        let rows = dequantise(&held_x[..k * d], 1.0, opts.seed)?;
        let lopts = LikelihoodOptions {
            divergence: Divergence::Hutchinson { probes: 1 },
            seed: opts.seed,
            ..Default::default()
        };
        let ll = model_log_likelihood(score, norm, &rows, &lopts)?;
        let per_dim: Vec<f64> = ll
            .log_p
            .iter()
            .map(|l| -l / (d as f64 * std::f64::consts::LN_2))
            .collect();
        (Some(mean_se(&per_dim)), t0.elapsed().as_secs_f64())
    } else {
        (None, 0.0)
    };
    Ok(QualityRow {
        set: "digits".into(),
        dim: d,
        steps: fit.steps,
        seconds: (train_s, sample_s, ll_s),
        sw,
        sw_ratio_se: None,
        mmd,
        nll,
        true_nll: None,
        bits: true,
        extra,
    })
}

/// Multinomial logistic regression on standardised features, fitted by full-batch gradient
/// descent on the mean cross-entropy plus `1e-3 |W|^2 / 2`: the simple classifier of the
/// digits check.
pub struct SoftmaxRegression {
    mean: Vec<f64>,
    sd: Vec<f64>,
    /// `[k, d + 1]`: weights then bias per class.
    w: Vec<f64>,
    d: usize,
    k: usize,
}

impl SoftmaxRegression {
    /// Fits on row-major `x` (`[n, d]`) with labels in `0..k` (500 steps of gradient descent
    /// with step 0.5; the objective is convex).
    pub fn fit(x: &[f64], y: &[u32], d: usize, k: usize) -> Self {
        let n = y.len();
        let (mean, sd) = crate::data::column_mean_sd(x, d, 0);
        let sd: Vec<f64> = sd.iter().map(|s| if *s > 1e-12 { *s } else { 1.0 }).collect();
        let z: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| (v - mean[i % d]) / sd[i % d])
            .collect();
        let mut m = SoftmaxRegression {
            mean,
            sd,
            w: vec![0.0; k * (d + 1)],
            d,
            k,
        };
        let mut grad = vec![0.0; k * (d + 1)];
        let mut p = vec![0.0; k];
        for _ in 0..500 {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (row, &label) in z.chunks(d).zip(y) {
                m.probabilities(row, &mut p);
                for c in 0..k {
                    let e = p[c] - f64::from(u8::from(c == label as usize));
                    let g = &mut grad[c * (d + 1)..(c + 1) * (d + 1)];
                    for j in 0..d {
                        g[j] += e * row[j];
                    }
                    g[d] += e;
                }
            }
            for (i, g) in grad.iter().enumerate() {
                let l2 = if i % (d + 1) < d { 1e-3 * m.w[i] } else { 0.0 };
                m.w[i] -= 0.5 * (g / n as f64 + l2);
            }
        }
        m
    }

    /// Class probabilities of one standardised row.
    fn probabilities(&self, z: &[f64], p: &mut [f64]) {
        let d = self.d;
        for (c, pc) in p.iter_mut().enumerate() {
            let w = &self.w[c * (d + 1)..(c + 1) * (d + 1)];
            *pc = w[d] + z.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        }
        let mx = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = p
            .iter_mut()
            .map(|v| {
                *v = (*v - mx).exp();
                *v
            })
            .sum();
        p.iter_mut().for_each(|v| *v /= s);
    }

    /// The most probable class of each row of `x` (`[n, d]`, raw features).
    pub fn predict(&self, x: &[f64]) -> Vec<u32> {
        let mut p = vec![0.0; self.k];
        x.chunks(self.d)
            .map(|row| {
                let z: Vec<f64> = row
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (v - self.mean[j]) / self.sd[j])
                    .collect();
                self.probabilities(&z, &mut p);
                (0..self.k).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap_or(0) as u32
            })
            .collect()
    }

    /// The share of rows of `x` predicted as their label `y`.
    pub fn accuracy(&self, x: &[f64], y: &[u32]) -> f64 {
        let pred = self.predict(x);
        pred.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratio_standard_error_matches_the_spread_of_the_ratio() {
        // Exact pairs a = 2 b: ratio 2, no error.
        let (a, b, se) = paired_ratio(&[(2.0, 1.0), (4.0, 2.0), (1.0, 0.5)]);
        assert!((a / b - 2.0).abs() < 1e-15 && se.abs() < 1e-15);
        // K = 4 noisy pairs b ~ 1 + 0.1 z, a = 1.5 b + 0.2 z': the delta method's se against
        // the sd of the ratio over 20,000 replicates (first order: 0.2 / sqrt(K) = 0.1). The sd
        // estimate's relative error is 1 / sqrt(2 x 20000) = 0.5%, the delta method's bias at
        // this noise about 1%, hence 4%; dividing by K^2 instead of K (K - 1) would be 13% low.
        let noise = crate::rng::Noise::new(11);
        let (reps, k) = (20_000, 4);
        let z = noise.normals(crate::rng::stream(crate::rng::Purpose::User, 0), reps * k, 2);
        let (mut ratios, mut ses) = (Vec::new(), Vec::new());
        for r in z.chunks(2 * k) {
            let pairs: Vec<(f64, f64)> = r
                .chunks(2)
                .map(|p| {
                    let b = 1.0 + 0.1 * p[0];
                    (1.5 * b + 0.2 * p[1], b)
                })
                .collect();
            let (a, b, se) = paired_ratio(&pairs);
            ratios.push(a / b);
            ses.push(se);
        }
        let mean = ratios.iter().sum::<f64>() / reps as f64;
        let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (reps - 1) as f64).sqrt();
        let se_rms = (ses.iter().map(|s| s * s).sum::<f64>() / reps as f64).sqrt();
        assert!(
            (mean - 1.5).abs() < 4.0 * sd / (reps as f64).sqrt() + 0.01,
            "mean {mean}"
        );
        assert!((se_rms / sd - 1.0).abs() < 0.04, "rms se {se_rms} against sd {sd}");
    }

    #[test]
    fn softmax_regression_separates_two_gaussian_classes_at_the_bayes_rate() {
        // Two classes N(-mu, I) and N(mu, I) in 2-D, mu = (1, 0): the Bayes classifier is
        // sign(x_1), with accuracy Phi(1) = 0.8413. With 4,000 test points the accuracy's sd
        // is sqrt(0.84 0.16 / 4000) = 0.0058; a fitted linear rule loses little (the
        // estimated boundary is off by O(1/sqrt(n_train))).
        let noise = crate::rng::Noise::new(5);
        let make = |n: usize, s: u64| {
            let z = noise.normals(crate::rng::stream(crate::rng::Purpose::User, s), n, 2);
            let y: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
            let x: Vec<f64> = z
                .chunks(2)
                .zip(&y)
                .flat_map(|(r, &c)| [r[0] + if c == 1 { 1.0 } else { -1.0 }, r[1]])
                .collect();
            (x, y)
        };
        let (x, y) = make(2000, 0);
        let (xt, yt) = make(4000, 1);
        let m = SoftmaxRegression::fit(&x, &y, 2, 2);
        let acc = m.accuracy(&xt, &yt);
        assert!((acc - 0.8413).abs() < 4.0 * 0.0058 + 0.005, "accuracy {acc}");
    }

    #[test]
    fn sphere_and_mode_statistics_of_exact_samples() {
        // Exact draws: radii exact (error 0, spread 0), and the isotropy statistic, chi^2 with
        // 3 degrees of freedom, below its 99.9% point 16.27.
        let s = builtin::load("two-spheres", Some(4000), 3).unwrap();
        let st = sphere_stats(&rows_of(&s.x).unwrap());
        assert!(st[..4].iter().all(|(_, v)| v.abs() < 1e-12), "{st:?}");
        assert!(st[4].1 < 16.27, "{st:?}");
        // gmm25: no mode off by 4.5 se, and the share inside the ellipses 0.9973 within
        // 4.5 se (sqrt(0.0027 * 0.9973 / 20000) = 0.00037).
        let g = builtin::load("gmm25", Some(20_000), 4).unwrap();
        let m = mode_shares(&builtin::gmm25_law(), &rows_of(&g.x).unwrap());
        assert_eq!((m[0].1, m[3].1, m[4].1), (25.0, 0.0, 0.0), "{m:?}");
        assert_eq!(m[5].1, 0.0, "{m:?}");
        assert!((m[6].1 - 0.9973).abs() < 4.5 * 0.00037, "{m:?}");
    }

    #[test]
    fn binomial_tails_match_closed_forms() {
        // P(X >= 1) = 1 - (1 - p)^n; P(X <= 0) = (1 - p)^n.
        let (n, p) = (2000, 8.9e-6f64);
        let q0 = (1.0 - p).powi(n as i32);
        assert!((binomial_two_sided(n, p, 1) - 2.0 * (1.0 - q0)).abs() < 1e-12);
        assert!((binomial_two_sided(n, p, 0) - 1.0).abs() < 1e-12);
        // Binomial(4, 1/2): P(X >= 4) = 1/16, two-sided 1/8; the median count gives 1.
        assert!((binomial_two_sided(4, 0.5, 4) - 0.125).abs() < 1e-12);
        assert_eq!(binomial_two_sided(4, 0.5, 2), 1.0);
        // Far in the tail of Binomial(2000, 0.07) (mean 140, sd 11.4): 200 is 5.3 sd out.
        let t = binomial_two_sided(2000, 0.07, 200);
        assert!(t > 0.0 && t < TAIL_4_5_SD, "{t}");
    }

    #[test]
    fn random_mixtures_are_valid_and_exact_samples_pass_their_checks() {
        let mut sizes = Vec::new();
        for seed in 0..12 {
            let law = random_mixture(seed).unwrap();
            let k = law.n_components();
            assert!((3..=10).contains(&k), "{k}");
            sizes.push(k);
            // The means are separated by 3 (s_j + s_k) at least.
            let means = law.means();
            for a in 0..k {
                for b in 0..a {
                    let dist = (means[a][0] - means[b][0]).hypot(means[a][1] - means[b][1]);
                    assert!(dist >= 1.8 - 1e-12, "seed {seed}: {dist}");
                }
            }
            let x = law.sample(10_000, &Noise::new(seed + 100), 0);
            let m = mode_shares(&law, &x);
            assert_eq!((m[4].1, m[5].1), (0.0, 0.0), "seed {seed}: {m:?}");
            assert!((m[6].1 - 0.9973).abs() < 4.5 * 0.00052, "seed {seed}: {m:?}");
        }
        // The component count varies with the seed.
        assert!(sizes.iter().min() < sizes.iter().max(), "{sizes:?}");
        assert_eq!(random_mixture(5).unwrap().means(), random_mixture(5).unwrap().means());
    }

    #[test]
    fn a_short_run_reports_every_statistic() {
        let dir = std::env::temp_dir().join(format!("scoregen-quality-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = QualityOptions {
            sets: vec!["moons".into(), "gmm25".into()],
            n_train: 500,
            n_eval: 200,
            steps: Some(30),
            sample_steps: 20,
            likelihood_rows: 10,
            ..Default::default()
        };
        let rows = run_quality(&opts, &dir, &mut |_, _| {}).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(r.sw.0 > 0.0 && r.sw.1 > 0.0 && r.nll.unwrap().0.is_finite(), "{r:?}");
        }
        assert!(rows[1].true_nll.unwrap() > 0.0 && rows[1].extra.len() == 7);
        // Class-conditional: the mixture of the two moons' classes, its NLL the mixture's.
        let cond = QualityOptions {
            sets: vec!["moons".into()],
            conditional: true,
            ..opts.clone()
        };
        let c = run_quality(&cond, &dir.join("conditional"), &mut |_, _| {}).unwrap();
        assert!(c[0].sw.0 > 0.0 && c[0].nll.unwrap().0.is_finite(), "{c:?}");
        let bad = QualityOptions {
            sets: vec!["nope".into()],
            ..opts
        };
        assert!(run_quality(&bad, &dir, &mut |_, _| {}).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
