//! Sliced, exact and NCSN score matching through the trainer recover an exact score.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use scoregen::nn::model::Normalisation;
use scoregen::nn::{train, Loss, MlpConfig, TimeSampling, TrainConfig, TrainSetup};
use scoregen::process::Process;
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::score::{Covariance, GaussianMixture, MixtureScore, Parametrisation, Score};

/// Relative L2 error of the learned score (EMA weights) against the exact one at times `ts`,
/// on 2000 held-out points of each diffused law.
fn score_errors(loss: Loss, steps: usize, ts: &[f64]) -> Vec<f64> {
    let (mu, sigma) = ([2.0, -1.0], [1.5, 0.6, 0.6, 0.8]);
    let law = GaussianMixture::gaussian(mu.to_vec(), Covariance::Full(sigma.to_vec())).unwrap();
    let n = 4000;
    let x = Tensor::from_vec(law.sample(n, &Noise::new(1), 0), (n, 2), &Device::Cpu).unwrap();
    let process = Process::ou(2.0, 5.0);
    let dir = std::env::temp_dir().join(format!("scoregen-sm-{}-{loss:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let setup = TrainSetup {
        arch: MlpConfig {
            dim: 2,
            hidden: 64,
            depth: 3,
            fourier: 16,
            n_classes: 0,
            param: Parametrisation::Eps,
        }
        .into(),
        process: process.clone(),
        config: TrainConfig {
            steps,
            batch: 256,
            lr: 2e-3,
            eval_every: steps,
            loss,
            time_sampling: TimeSampling::default_for(Parametrisation::Eps),
            ..Default::default()
        },
        checkpoint_dir: Some(&dir),
        resume: false,
        device: candle_core::Device::Cpu,
    };
    train(&x, None, &setup, &mut |_| {}).unwrap();
    let (model, meta) = scoregen::nn::load_model(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(meta.train.loss, loss);
    let Normalisation { mean: a, std: b } = &meta.normalisation;
    let zmu: Vec<f64> = (0..2).map(|i| (mu[i] - a[i]) / b[i]).collect();
    let zs: Vec<f64> = (0..4).map(|k| sigma[k] / (b[k / 2] * b[k % 2])).collect();
    let zlaw = GaussianMixture::gaussian(zmu, Covariance::Full(zs)).unwrap();
    let exact = MixtureScore::new(Arc::new(zlaw.clone()), process.clone());
    ts.iter()
        .enumerate()
        .map(|(j, &t)| {
            let (m, s) = (process.m(t), process.s(t));
            let z0 = zlaw.sample(2000, &Noise::new(50 + j as u64), 0);
            let e = Noise::new(60 + j as u64).normals(stream(Purpose::User, 0), 2000, 2);
            let zt: Vec<f64> = z0.iter().zip(&e).map(|(z, e)| m * z + s * e).collect();
            let zt = Tensor::from_vec(zt, (2000, 2), &Device::Cpu).unwrap();
            let got = model.score(t, &zt).unwrap().to_dtype(DType::F64).unwrap();
            let want = exact.score(t, &zt).unwrap();
            let err: f64 = (&got - &want)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            let norm: f64 = want.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            (err / norm).sqrt()
        })
        .collect()
}

/// The quality bar of `training.rs`'s DSM test, with the same network, steps and batch:
/// 5% relative L2 error where the score is smooth (t >= 0.3), 25% at t = 0.05.
fn check(loss: Loss) {
    let errs = score_errors(loss, 3000, &[0.05, 0.3, 1.0, 3.0]);
    eprintln!("{loss:?}: relative score errors {errs:.3?}");
    for (e, bar) in errs.iter().zip([0.25, 0.05, 0.05, 0.05]) {
        assert!(*e < bar, "{loss:?}: relative errors {errs:?}");
    }
}

/// SSM-VR, one Rademacher projection a point.
#[test]
fn ssm_on_gaussian_data_recovers_the_exact_score() {
    check(Loss::Ssm);
}

/// Exact score matching (trace from 2 JVPs).
#[test]
fn esm_on_gaussian_data_recovers_the_exact_score() {
    check(Loss::Esm);
}

/// NCSN's ladder loss (10 geometric levels of the OU process).
#[test]
fn ncsn_on_gaussian_data_recovers_the_exact_score_at_its_levels() {
    let process = Process::ou(2.0, 5.0);
    let ladder = scoregen::nn::score_matching::SigmaLadder::for_process(&process, 1e-3, 10).unwrap();
    // Levels 3, 5, 6 of the ladder: sigma 10, 1.6, 0.67, at t = 2.3, 0.65, 0.18. The
    // network only ever sees the 10 ladder times, so it is checked there.
    let ts = ladder.times(&process, &[3, 5, 6]);
    let errs = score_errors(Loss::Ncsn, 3000, &ts);
    eprintln!("Ncsn at t = {ts:.3?}: relative score errors {errs:.3?}");
    assert!(errs.iter().all(|e| *e < 0.1), "{errs:?}");
}
