//! The evaluation behind `scoregen demo`: every sampler of [`crate::sample`] on a 2-D
//! 25-component mixture ([`GaussianMixture::grid25`]) against exact samples, measured by
//! the sliced Wasserstein distance (SW1), the unbiased MMD^2 and the mixture-weight error,
//! next to the two-sample noise floor of SW1 ([`noise_floor`]); SW1 against the number of
//! steps; a small score network learned on the two moons ([`learned_moons`]); and one
//! linear inverse problem on the same prior solved by MCGdiff (Cardoso et
//! al. 2024) and DPS (Chung et al. 2023) beside the exact posterior.
//!
//! Seeds (`seed` the demo's): exact reference `Noise::new(seed + 1)`; floor pairs
//! `seed + 1000 + 2r` and `seed + 1001 + 2r`; sampler `i`, repetition `r`: seed
//! `seed + 10 + reps i + r`, its fresh reference (for `r > 0`) `seed + reps i + r + 510`.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::data::builtin;
use crate::inverse::{sample_posterior, ExactPosterior, Method, Observation, Operator, PosteriorOptions};
use crate::metrics::{mixture_weight_error, mmd_rbf, sliced_wasserstein, SlicedOptions};
use crate::nn::{load_model_on, train, MlpConfig, TimeSampling, TrainConfig, TrainReport, TrainSetup};
use crate::rng::Noise;
use crate::sample::{sample, standardised_process, SampleOptions, Sampler, SamplerParams};
use crate::score::{GaussianMixture, Parametrisation};
use crate::solve::{prior_score, sample_prior};
use crate::Result;

fn rows2(v: Vec<f64>) -> Result<Tensor> {
    let n = v.len() / 2;
    Ok(Tensor::from_vec(v, (n, 2), &Device::Cpu)?)
}

/// The two-sample noise floor of SW1: the mean and sample standard deviation over `pairs`
/// pairs of independent exact sets of `n` draws of `law` (pair `r`: seeds `seed + 1000 +
/// 2r` and `seed + 1001 + 2r`). A sampler cannot be told from exact sampling below it.
pub fn noise_floor(law: &GaussianMixture, n: usize, seed: u64, pairs: u64) -> Result<(f64, f64)> {
    let d = law.dim();
    let sw = SlicedOptions::default();
    let t = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?) };
    let floors = (0..pairs)
        .map(|r| {
            let x = t(law.sample(n, &Noise::new(seed + 1000 + 2 * r), 0))?;
            let y = t(law.sample(n, &Noise::new(seed + 1001 + 2 * r), 0))?;
            sliced_wasserstein(&x, &y, &sw)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(super::mean_sd(&floors))
}

/// A sampler of the demo's table.
#[derive(Clone, Debug)]
pub struct DemoSampler {
    /// The label of the table.
    pub label: &'static str,
    /// The file-name slug of its figure.
    pub slug: &'static str,
    /// The sampler.
    pub sampler: Sampler,
    /// Steps.
    pub steps: usize,
    /// Score evaluations per step.
    pub nfe_per_step: usize,
}

/// The demo's samplers: Euler–Maruyama of the reverse SDE (b = 1) and of the PF-ODE
/// (b = 0), the exponential integrator, Heun, DDPM, DDIM (eta = 0), annealed Langevin and
/// the predictor–corrector (Song et al. 2021).
pub fn samplers() -> Result<Vec<DemoSampler>> {
    let params = |b: f64, eta: f64| SamplerParams {
        b,
        eta,
        ..Default::default()
    };
    let s = |label, slug, sampler, steps, nfe_per_step| DemoSampler {
        label,
        slug,
        sampler,
        steps,
        nfe_per_step,
    };
    Ok(vec![
        s(
            "em b=1 (reverse SDE)",
            "em_b1",
            Sampler::from_name("em", &params(1.0, 0.0))?,
            1000,
            1,
        ),
        s(
            "em b=0 (PF-ODE)",
            "em_b0",
            Sampler::from_name("em", &params(0.0, 0.0))?,
            1000,
            1,
        ),
        s("ei b=1", "ei_b1", Sampler::from_name("ei", &params(1.0, 0.0))?, 1000, 1),
        s("heun (PF-ODE)", "heun", Sampler::Heun, 500, 2),
        s("ddpm", "ddpm", Sampler::Ddpm, 1000, 1),
        s(
            "ddim eta=0",
            "ddim",
            Sampler::from_name("ddim", &params(1.0, 0.0))?,
            1000,
            1,
        ),
        s(
            "ald",
            "ald",
            Sampler::from_name("ald", &SamplerParams::default())?,
            1000,
            1,
        ),
        s(
            "pc (em + langevin)",
            "pc",
            Sampler::from_name("pc", &SamplerParams::default())?,
            1000,
            2,
        ),
    ])
}

/// The metrics of one sampler, each the mean over the repetitions.
#[derive(Clone, Debug)]
pub struct DemoRow {
    /// SW1 to the exact reference.
    pub sw: f64,
    /// Unbiased MMD^2 (RBF kernel, median bandwidth).
    pub mmd2: f64,
    /// Mixture-weight error.
    pub weight_error: f64,
    /// Seconds per run.
    pub seconds: f64,
    /// The first repetition's samples, row-major `[n, 2]`.
    pub first: Vec<f64>,
}

/// Runs `s` `reps` times (seeds `seed0 + r`) for `n` draws of `law` and compares each run
/// with an exact set: `reference` for the first, a fresh one (`Noise::new(seed0 + r +
/// 500)`) for the others. `progress(k, total)` as in [`crate::sample::sample`].
pub fn evaluate_sampler(
    law: &GaussianMixture,
    s: &DemoSampler,
    n: usize,
    seed0: u64,
    reps: u64,
    reference: &Tensor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DemoRow> {
    let sw = SlicedOptions::default();
    let k = reps as f64;
    let mut row = DemoRow {
        sw: 0.0,
        mmd2: 0.0,
        weight_error: 0.0,
        seconds: 0.0,
        first: Vec::new(),
    };
    for r in 0..reps {
        let seed = seed0 + r;
        let opts = SampleOptions {
            steps: s.steps,
            seed,
            ..Default::default()
        };
        let t0 = Instant::now();
        let x = sample_prior(law, &s.sampler, &opts, n, progress)?;
        row.seconds += t0.elapsed().as_secs_f64() / k;
        let x = x.to_dtype(DType::F64)?;
        let fresh;
        let reference_r = if r == 0 {
            reference
        } else {
            fresh = rows2(law.sample(n, &Noise::new(seed + 500), 0))?;
            &fresh
        };
        row.sw += sliced_wasserstein(&x, reference_r, &sw)? / k;
        row.mmd2 += mmd_rbf(&x, reference_r, None)?.mmd2_unbiased / k;
        row.weight_error += mixture_weight_error(&x, law)? / k;
        if r == 0 {
            row.first = x.flatten_all()?.to_vec1()?;
        }
    }
    Ok(row)
}

/// SW1 to `reference` of Euler–Maruyama with `b` at each step count of `steps`, each the
/// mean over 4 runs (seeds `seed + 100 + 10 steps + r`).
pub fn convergence(
    law: &GaussianMixture,
    b: f64,
    steps: &[usize],
    n: usize,
    seed: u64,
    reference: &Tensor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(f64, f64)>> {
    let sampler = Sampler::from_name(
        "em",
        &SamplerParams {
            b,
            ..Default::default()
        },
    )?;
    let sw = SlicedOptions::default();
    let mut out = Vec::with_capacity(steps.len());
    for &k in steps {
        let mut m = 0.0;
        for r in 0..4u64 {
            let opts = SampleOptions {
                steps: k,
                seed: seed + 100 + 10 * k as u64 + r,
                ..Default::default()
            };
            let x = sample_prior(law, &sampler, &opts, n, progress)?;
            m += sliced_wasserstein(&x.to_dtype(DType::F64)?, reference, &sw)? / 4.0;
        }
        out.push((k as f64, m));
    }
    Ok(out)
}

/// The demo's inverse problem and its solutions.
#[derive(Clone, Debug)]
pub struct DemoInverse {
    /// The observation `y = 0.8 x_1 + 0.6 x_2 + 2 z` of a prior draw.
    pub y: f64,
    /// `sigma_y = 2`.
    pub sigma_y: f64,
    /// Posterior components above 1% weight.
    pub modes: usize,
    /// Exact posterior samples (row-major `[n, 2]`).
    pub exact: Vec<f64>,
    /// `(name, SW1, weight error, seconds, samples)`: `exact` (a second exact set), then
    /// MCGdiff and DPS.
    pub rows: Vec<(&'static str, f64, f64, f64, Vec<f64>)>,
}

/// One linear inverse problem on `law`: `y = A x* + sigma_y z` with `A = (0.8, 0.6)`,
/// `sigma_y = 2`, `x* ~ law` (seed `seed + 50`), `z = 0.3`; the exact posterior (seeds
/// `seed + 51`, `seed + 52`) against MCGdiff and DPS (`n` samples, `n` particles, 500
/// steps, seed `seed + 53`).
pub fn inverse_problem(law: &GaussianMixture, n: usize, seed: u64) -> Result<DemoInverse> {
    let op = Operator::Dense {
        rows: 1,
        cols: 2,
        a: vec![0.8, 0.6],
    };
    let sigma_y = 2.0;
    let x_star = law.sample(1, &Noise::new(seed + 50), 0);
    let y = vec![0.8 * x_star[0] + 0.6 * x_star[1] + sigma_y * 0.3];
    let post = ExactPosterior::new(law, &op, &y, sigma_y)?;
    let post_law = post.mixture()?;
    let exact = post.sample(n, &Noise::new(seed + 51), 0);
    let exact2 = post.sample(n, &Noise::new(seed + 52), 0);
    let et = rows2(exact.clone())?;
    let sw = SlicedOptions::default();
    let e2 = rows2(exact2.clone())?;
    let mut rows = vec![(
        "exact",
        sliced_wasserstein(&e2, &et, &sw)?,
        mixture_weight_error(&e2, &post_law)?,
        0.0,
        exact2,
    )];
    let score = prior_score(law);
    let obs = Observation { op, y, sigma_y };
    for name in ["mcgdiff", "dps"] {
        let method: Method = name.parse()?;
        let opts = PosteriorOptions {
            n,
            particles: n,
            steps: 500,
            seed: seed + 53,
            ..Default::default()
        };
        let t0 = Instant::now();
        let rep = sample_posterior(&score, &obs, &method, &opts, &mut |_, _| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let xt = rows2(rep.samples.clone())?;
        rows.push((
            name,
            sliced_wasserstein(&xt, &et, &sw)?,
            mixture_weight_error(&xt, &post_law)?,
            secs,
            rep.samples,
        ));
    }
    Ok(DemoInverse {
        y: obs.y[0],
        sigma_y,
        modes: post.weights.iter().filter(|w| **w > 0.01).count(),
        exact,
        rows,
    })
}

/// The learned-score part of the demo.
#[derive(Clone, Debug)]
pub struct LearnedMoons {
    /// The training report.
    pub train: TrainReport,
    /// The first `n` draws of the model (500 Euler–Maruyama steps of the reverse SDE),
    /// row-major `[n, 2]`, data units.
    pub samples: Vec<f64>,
    /// `n` fresh data points (seed `seed + 1`), row-major.
    pub fresh: Vec<f64>,
    /// SW1 of `n` model draws to `n` fresh data points, the mean over
    /// [`LEARNED_MOONS_PAIRS`] x [`LEARNED_MOONS_REFS`] comparisons: batch `k` of the
    /// model's `n x LEARNED_MOONS_PAIRS` draws against each of the fresh sets `a_{k,j}`,
    /// `j < LEARNED_MOONS_REFS`, of seeds `seed + 1 + 2 i`, `i = k LEARNED_MOONS_REFS + j`.
    pub sw: f64,
    /// The floor: SW1 between two fresh sets of `n` points, the mean over the same
    /// comparisons with the model's batch replaced by a second fresh set `b_{k,j}` (seed
    /// `seed + 2 + 2 i`), so that both sides average over the same reference sets.
    pub floor: f64,
}

/// Batches of model draws that [`learned_moons`] compares with fresh data: a single pair
/// of 2000 points gives a floor that varies by a factor of 1.6 between seeds.
pub const LEARNED_MOONS_PAIRS: u64 = 10;

/// Fresh reference sets per batch of model draws in [`learned_moons`]: with 10 pairs the
/// floor's mean still moved by about 10% between seeds; 50 comparisons halve that.
pub const LEARNED_MOONS_REFS: u64 = 5;

/// Training points of [`learned_moons`] (a fresh draw of the two moons, seed `seed`).
pub const LEARNED_MOONS_TRAIN: usize = 20_000;

/// Training steps of [`learned_moons`].
pub const LEARNED_MOONS_STEPS: usize = 16_000;

/// Trains the reference MLP of width 128 by denoising score matching with EDM's
/// preconditioning and log-normal noise levels (Karras et al. 2022;
/// [`LEARNED_MOONS_STEPS`] steps, batch 256, seed `seed`) on [`LEARNED_MOONS_TRAIN`] points of the two moons
/// (seed `seed`), with checkpoints in
/// `dir` (which must hold no checkpoint), reads it back and samples it
/// (`n x LEARNED_MOONS_PAIRS` draws, seed `seed + 7`), and compares the draws, batch by
/// batch, with fresh data. `progress(step)` reports training.
/// The network trains and runs on `device` ([`crate::device`]).
pub fn learned_moons(
    n: usize,
    seed: u64,
    dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<LearnedMoons> {
    let ds = builtin::load("moons", Some(LEARNED_MOONS_TRAIN), seed)?;
    let arch = MlpConfig {
        hidden: 128,
        param: Parametrisation::Edm,
        ..MlpConfig::reference(2)
    };
    let config = TrainConfig {
        steps: LEARNED_MOONS_STEPS,
        batch: 256,
        seed,
        time_sampling: TimeSampling::LogNormal,
        ..Default::default()
    };
    let setup = TrainSetup {
        arch: arch.into(),
        process: standardised_process(2),
        config,
        checkpoint_dir: Some(dir),
        resume: false,
        device: device.clone(),
    };
    let report = train(&ds.x, None, &setup, &mut |p| progress(p.step))?;
    let (score, meta) = load_model_on(dir, device)?;
    let opts = SampleOptions {
        steps: 500,
        seed: seed + 7,
        ..Default::default()
    };
    let sampler = Sampler::from_name("em", &SamplerParams::default())?;
    let pairs = LEARNED_MOONS_PAIRS as usize;
    let z = sample(&score, &sampler, &opts, n * pairs, &mut |_, _| {})?;
    let all = meta.normalisation.denormalise(&z)?.to_dtype(DType::F64)?;
    let so = SlicedOptions::default();
    let (mut sw, mut floor) = (0.0, 0.0);
    let total = (LEARNED_MOONS_PAIRS * LEARNED_MOONS_REFS) as f64;
    for k in 0..LEARNED_MOONS_PAIRS {
        let batch = all.narrow(0, k as usize * n, n)?;
        for j in 0..LEARNED_MOONS_REFS {
            let i = k * LEARNED_MOONS_REFS + j;
            let a = builtin::load("moons", Some(n), seed + 1 + 2 * i)?.x;
            let b = builtin::load("moons", Some(n), seed + 2 + 2 * i)?.x;
            sw += sliced_wasserstein(&batch, &a, &so)? / total;
            floor += sliced_wasserstein(&b, &a, &so)? / total;
        }
    }
    let x = all.narrow(0, 0, n)?;
    let fresh = builtin::load("moons", Some(n), seed + 1)?.x;
    Ok(LearnedMoons {
        train: report,
        sw,
        floor,
        samples: x.flatten_all()?.to_vec1()?,
        fresh: fresh.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_distance_of_two_exact_sets() {
        let law = GaussianMixture::grid25(2, &Noise::new(0)).unwrap();
        let (m, s) = noise_floor(&law, 300, 0, 3).unwrap();
        assert!(m > 0.0 && s >= 0.0);
        // Pair 0 by hand.
        let t = |seed| Tensor::from_vec(law.sample(300, &Noise::new(seed), 0), (300, 2), &Device::Cpu).unwrap();
        let f0 = sliced_wasserstein(&t(1000), &t(1001), &SlicedOptions::default()).unwrap();
        let (m1, s1) = noise_floor(&law, 300, 0, 1).unwrap();
        assert_eq!((m1, s1), (f0, 0.0));
        assert_eq!(samplers().unwrap().len(), 8);
    }

    #[test]
    fn inverse_problem_rows() {
        let law = GaussianMixture::grid25(2, &Noise::new(0)).unwrap();
        let inv = inverse_problem(&law, 50, 0).unwrap();
        assert_eq!(
            inv.rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ["exact", "mcgdiff", "dps"]
        );
        assert!(inv.modes >= 1 && inv.exact.len() == 100);
        assert!(inv.rows.iter().all(|r| r.1 > 0.0 && r.4.len() == 100));
    }
}
