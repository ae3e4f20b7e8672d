//! `scoregen bench train`: training steps/s and network evaluations/s of the reference MLP
//! (d + 16 Fourier features, 3 x 256 SiLU; docs/architecture.md).

use std::time::Instant;

use clap::Args;
use scoregen::rng::{stream, Noise, Purpose};

use crate::CliResult;

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
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

/// `scoregen bench train`.
pub fn run(b: BenchTrainArgs) -> CliResult<()> {
    use candle_core::{DType, Device};
    use scoregen::nn::{train, LearnedScore, Mlp, MlpConfig, TimeSampling, TrainConfig, TrainSetup};
    use scoregen::process::Process;
    use scoregen::score::{Parametrisation, Score};
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
                    // The JAX peer's model (bench/peers/jax_mlp.py): eps output, mixed times.
                    time_sampling: TimeSampling::Mixed,
                    ..Default::default()
                };
                let setup = TrainSetup {
                    arch: MlpConfig {
                        param: Parametrisation::Eps,
                        ..MlpConfig::reference(d)
                    }
                    .into(),
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
                Mlp::new(
                    MlpConfig {
                        param: Parametrisation::Eps,
                        ..MlpConfig::reference(d)
                    },
                    0,
                    DType::F32,
                    &crate::device::get(),
                )?,
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
