//! `scoregen bench ...`: benchmarks that print numbers (recorded in BENCHMARKS.md).

use std::time::Instant;

use clap::{Args, Subcommand};
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::sample::{SampleOptions, Sampler, SamplerParams};
use scoregen::score::{Covariance, GaussianMixture};

use crate::commands::sample_mixture;
use crate::CliResult;

/// `scoregen bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Particle-steps per second of a sampler on the exact mixture score.
    Sample(BenchSampleArgs),
    /// Training steps/s and network evaluations/s of the reference MLP (DESIGN.md §5).
    Train(BenchTrainArgs),
    /// Deck 003's Gaussian-mixture posterior table (DESIGN.md §4): SW, weight error, time.
    Gmm(crate::bench_posterior::BenchGmmArgs),
    /// Deck 000's Gaussian imputation example: exact vs replacement vs SMC, convergence in N.
    ImputeGauss(crate::bench_posterior::BenchImputeGaussArgs),
    /// Tabular imputation: mask complete tables (MCAR / MAR / MNAR), impute, RMSE and MAE
    /// next to mean and kNN imputation.
    Impute(crate::bench_impute::BenchImputeArgs),
    /// Inpainting, outpainting and super-resolution figures with a trained digits model.
    Digits(crate::bench_posterior::BenchDigitsArgs),
}

#[derive(Args, Debug)]
struct BenchTrainArgs {
    /// Dimensions for the training benchmark, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,64")]
    dims: Vec<usize>,
    /// Training steps timed per dimension (after 20 warm-up steps).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Batch size of the inference benchmark (d = 64).
    #[arg(long, default_value_t = 4096)]
    infer_batch: usize,
    /// What to time: train, infer or both.
    #[arg(long, default_value = "both")]
    only: String,
    /// Also time candle's reference path (training through autograd, inference through
    /// candle's ops), for comparison.
    #[arg(long)]
    reference: bool,
}

fn bench_train(b: BenchTrainArgs) -> CliResult<()> {
    use candle_core::{DType, Device};
    use scoregen::nn::{train, LearnedScore, Mlp, MlpConfig, TrainConfig, TrainSetup};
    use scoregen::process::Process;
    use scoregen::score::Score;
    let (do_train, do_infer) = match b.only.as_str() {
        "train" => (true, false),
        "infer" => (false, true),
        "both" => (true, true),
        o => {
            return Err(crate::CliError::user(format!(
                "--only '{o}': expected train, infer or both"
            )))
        }
    };
    for &d in &b.dims {
        crate::limits::count("--dims", d, 1, 4096)?;
    }
    crate::limits::count("--steps", b.steps, 1, crate::limits::MAX_TRAIN_STEPS)?;
    crate::limits::count("--infer-batch", b.infer_batch, 1, 1 << 20)?;
    println!(
        "bench train: reference MLP (d + 16 Fourier features -> 3 x 256 SiLU -> d), f32, batch 512, AdamW, {} threads, device {}",
        rayon::current_num_threads(),
        scoregen::device::name(&crate::device::get())
    );
    if do_train {
        println!("{:<6} {:>12} {:>14}", "d", "steps", "steps/s");
        for &d in &b.dims {
            let n = 10_000;
            let x = Noise::new(0).normal_tensor(stream(Purpose::User, 0), n, d, DType::F64, &Device::Cpu)?;
            let run = |steps: usize| -> CliResult<f64> {
                let config = TrainConfig {
                    steps,
                    batch: 512,
                    val_fraction: 0.0,
                    eval_every: usize::MAX,
                    ..Default::default()
                };
                let setup = TrainSetup {
                    arch: MlpConfig::reference(d).into(),
                    process: Process::ou(2.0, 5.0),
                    config,
                    checkpoint_dir: None,
                    resume: false,
                    device: crate::device::get(),
                };
                Ok(train(&x, None, &setup, &mut |_| {})?.steps_per_sec)
            };
            run(20)?;
            let sps = run(b.steps)?;
            println!("{:<6} {:>12} {:>14.1}", d, b.steps, sps);
        }
    }
    if do_infer {
        let d = 64;
        let x = Noise::new(1).normal_tensor(stream(Purpose::User, 1), b.infer_batch, d, DType::F32, &Device::Cpu)?;
        let mk = || -> CliResult<LearnedScore> {
            Ok(LearnedScore::new(
                Mlp::new(MlpConfig::reference(d), 0, DType::F32, &crate::device::get())?,
                Process::ou(2.0, 5.0),
            ))
        };
        let device = crate::device::get();
        let mut paths = vec![(
            if device.is_cpu() {
                "fused"
            } else {
                "candle, on the device"
            },
            mk()?,
        )];
        if b.reference && device.is_cpu() {
            paths.push(("candle", mk()?.without_engine()));
        }
        for (name, score) in paths {
            score.score(2.5, &x)?;
            let reps = 30;
            let t0 = Instant::now();
            for _ in 0..reps {
                score.score(2.5, &x)?;
            }
            let s = t0.elapsed().as_secs_f64();
            println!(
                "inference ({name}): batch {} x d = {d}: {:.0} evaluations/s ({:.2} ms per batch)",
                b.infer_batch,
                (reps * b.infer_batch) as f64 / s,
                1e3 * s / reps as f64
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
struct BenchSampleArgs {
    /// Dimensions, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    dims: Vec<usize>,
    /// Particles.
    #[arg(long, default_value_t = 10_000)]
    particles: usize,
    /// Steps per run.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Sampler name.
    #[arg(long, default_value = "em")]
    sampler: String,
    /// Also time 25 full (non-diagonal) covariances.
    #[arg(long)]
    full_cov: bool,
}

fn full_cov_mixture(d: usize) -> scoregen::Result<GaussianMixture> {
    let iso = GaussianMixture::grid25(d, &Noise::new(0))?;
    let noise = Noise::new(1);
    let covs = (0..25)
        .map(|k| {
            let a = noise.normals(stream(Purpose::User, k), d, d);
            let mut c = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] = (0..d).map(|l| a[i * d + l] * a[j * d + l]).sum::<f64>() / d as f64;
                }
                c[i * d + i] += 0.5;
            }
            Covariance::Full(c)
        })
        .collect();
    GaussianMixture::new(iso.weights(), iso.means(), covs)
}

/// Runs a benchmark.
pub fn run(a: BenchArgs, quiet: bool) -> CliResult<()> {
    match a.what {
        BenchWhat::Train(b) => bench_train(b),
        BenchWhat::Gmm(b) => crate::bench_posterior::bench_gmm(b, quiet),
        BenchWhat::ImputeGauss(b) => crate::bench_posterior::bench_impute_gauss(b),
        BenchWhat::Digits(b) => crate::bench_posterior::bench_digits(b, quiet),
        BenchWhat::Impute(b) => crate::bench_impute::run(b, quiet),
        BenchWhat::Sample(b) => {
            crate::limits::count("--steps", b.steps, 1, crate::limits::MAX_STEPS)?;
            let widest = b.dims.iter().copied().max().unwrap_or(2);
            crate::limits::check_memory(
                &crate::limits::rows(
                    scoregen::budget::Estimate::new(),
                    "--particles",
                    b.particles,
                    widest,
                    12,
                )
                .add(
                    "--particles",
                    "responsibilities over 25 components",
                    b.particles as f64 * 25.0,
                    32.0,
                ),
            )?;
            let sampler = Sampler::from_name(&b.sampler, &SamplerParams::default())?;
            println!(
                "bench sample: sampler {}, {} particles, {} steps, 25-component mixture, exact score, f64, {} threads",
                b.sampler,
                b.particles,
                b.steps,
                rayon::current_num_threads()
            );
            println!(
                "{:<6} {:<10} {:>10} {:>18} {:>14}",
                "d", "covariance", "seconds", "particle-steps/s", "ms/step"
            );
            for &d in &b.dims {
                let mut laws = vec![("isotropic", GaussianMixture::grid25(d, &Noise::new(0))?)];
                if b.full_cov {
                    laws.push(("full", full_cov_mixture(d)?));
                }
                for (kind, law) in laws {
                    let opts = SampleOptions {
                        steps: b.steps,
                        ..Default::default()
                    };
                    let t0 = Instant::now();
                    sample_mixture(&law, &sampler, &opts, b.particles, "bench", quiet)?;
                    let s = t0.elapsed().as_secs_f64();
                    println!(
                        "{:<6} {:<10} {:>10.3} {:>18.0} {:>14.2}",
                        d,
                        kind,
                        s,
                        (b.particles * b.steps) as f64 / s,
                        1e3 * s / b.steps as f64
                    );
                }
            }
            Ok(())
        }
    }
}
