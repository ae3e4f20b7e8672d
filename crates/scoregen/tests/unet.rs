//! The U-Net through the trainer, checkpoints and `LearnedScore`, on the real digits 8x8.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use scoregen::data::builtin;
use scoregen::nn::train::{load_model, read_meta};
use scoregen::nn::{train, Arch, MlpConfig, TrainConfig, TrainSetup, UnetConfig};
use scoregen::process::Process;
use scoregen::score::{Parametrisation, Score};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scoregen-unet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn setup<'a>(arch: impl Into<Arch>, cfg: &TrainConfig, dir: Option<&'a Path>, resume: bool) -> TrainSetup<'a> {
    TrainSetup {
        arch: arch.into(),
        process: Process::ou(2.0, 8.0),
        config: cfg.clone(),
        checkpoint_dir: dir,
        resume,
        device: candle_core::Device::Cpu,
    }
}

/// A U-Net small enough for a few seconds of training on one core.
fn small_unet(n_classes: usize) -> UnetConfig {
    UnetConfig {
        channels: vec![16, 32],
        groups: 4,
        time_dim: 64,
        n_classes,
        ..UnetConfig::for_image(8, 8)
    }
}

fn digits() -> (Tensor, Vec<u32>) {
    let ds = builtin::load("digits", None, 0).unwrap();
    assert_eq!(ds.image_shape, Some((8, 8)));
    (ds.x, ds.labels.unwrap())
}

#[test]
fn unet_dsm_loss_decreases_on_digits() {
    let (x, labels) = digits();
    let cfg = TrainConfig {
        steps: 40,
        batch: 32,
        lr: 2e-3,
        warmup: 5,
        eval_every: 40,
        ..Default::default()
    };
    let dir = tmp("smoke");
    let mut losses = vec![];
    let r = train(
        &x,
        Some(&labels),
        &setup(small_unet(10), &cfg, Some(&dir), false),
        &mut |p| losses.push(p.loss),
    )
    .unwrap();
    assert_eq!(r.step, 40);
    // eps-prediction starts at E|eps|^2 ~ 1 per coordinate (output layer scaled by 0.1).
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[35..].iter().sum::<f64>() / 5.0;
    assert!(first > 0.8, "initial loss {first}");
    assert!(last < 0.75 * first, "loss {first:.3} -> {last:.3}");
    // The checkpoint is an image model, usable as a Score on flat rows.
    let (model, meta) = load_model(&dir).unwrap();
    assert_eq!(meta.arch.image_shape(), Some((8, 8)));
    assert_eq!(meta.arch.kind(), "unet");
    // Pooled normalisation for images: one mean and std for every pixel.
    assert!(meta.normalisation.std.iter().all(|s| *s == meta.normalisation.std[0]));
    let z = Tensor::zeros((7, 64), DType::F64, &Device::Cpu).unwrap();
    let model = model.conditional(3, 1.0).unwrap();
    let s = model.score(0.5, &z).unwrap();
    assert_eq!(s.dims(), &[7, 64]);
    assert_eq!(s.dtype(), DType::F64);
    let v: Vec<f64> = s.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|v| v.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn unet_resume_after_an_interruption_is_bit_exact() {
    let (x, labels) = digits();
    let n = 300;
    let x = x.narrow(0, 0, n).unwrap();
    let labels = &labels[..n];
    let arch = UnetConfig {
        channels: vec![8, 16],
        time_dim: 16,
        ..small_unet(10)
    };
    let cfg = TrainConfig {
        steps: 12,
        batch: 16,
        warmup: 3,
        checkpoint_every: 6,
        eval_every: 4,
        ..Default::default()
    };
    let (full, snap, resumed) = (tmp("full"), tmp("snap"), tmp("resumed"));
    train(
        &x,
        Some(labels),
        &setup(arch.clone(), &cfg, Some(&full), false),
        &mut |p| {
            if p.step == 6 {
                copy_dir(&full, &snap);
            }
        },
    )
    .unwrap();
    assert_eq!(read_meta(&snap).unwrap().step, 6);
    copy_dir(&snap, &resumed);
    let r = train(
        &x,
        Some(labels),
        &setup(arch.clone(), &cfg, Some(&resumed), true),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.step, 12);
    let a = std::fs::read(full.join(read_meta(&full).unwrap().weights)).unwrap();
    let b = std::fs::read(resumed.join(read_meta(&resumed).unwrap().weights)).unwrap();
    assert_eq!(a, b, "resumed U-Net weights (params, EMA, Adam moments) differ");
    // Resuming with another architecture is refused.
    let other = UnetConfig { blocks: 2, ..arch };
    let e = train(&x, Some(labels), &setup(other, &cfg, Some(&resumed), true), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("architecture"), "{e}");
    for d in [full, snap, resumed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn format_1_checkpoints_of_the_mlp_still_load() {
    let x = Tensor::from_vec(
        (0..200).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(),
        (100, 2),
        &Device::Cpu,
    )
    .unwrap();
    let arch = MlpConfig {
        dim: 2,
        hidden: 16,
        depth: 2,
        fourier: 16,
        n_classes: 0,
        param: Parametrisation::Eps,
    };
    let cfg = TrainConfig {
        steps: 3,
        batch: 8,
        ..Default::default()
    };
    let dir = tmp("format1");
    train(&x, None, &setup(arch.clone(), &cfg, Some(&dir), false), &mut |_| {}).unwrap();
    let (now, _) = load_model(&dir).unwrap();
    // Rewrite the JSON as format 1 wrote it: a bare MLP config, no `kind`.
    let path = dir.join("checkpoint.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["format"], "scoregen-checkpoint-2");
    assert_eq!(v["arch"]["kind"], "mlp");
    v["format"] = "scoregen-checkpoint-1".into();
    v["arch"].as_object_mut().unwrap().remove("kind");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let (old, meta) = load_model(&dir).unwrap();
    assert_eq!(meta.arch, Arch::Mlp(arch));
    let z = Tensor::from_vec(vec![0.3, -0.2, 1.0, 0.5], (2, 2), &Device::Cpu).unwrap();
    let a: Vec<f64> = now.score(0.7, &z).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = old.score(0.7, &z).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
    v["format"] = "scoregen-checkpoint-9".into();
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    assert!(load_model(&dir)
        .err()
        .unwrap()
        .to_string()
        .contains("unknown checkpoint format"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Training twice with the same seed gives bit-identical weights (parameters, EMA, Adam
/// moments), also when the second run's rayon pool (where the GEMM convolutions and the
/// fused GroupNorm split their work) has another number of threads.
#[test]
fn unet_training_is_bit_reproducible() {
    let (x, labels) = digits();
    let x = x.narrow(0, 0, 200).unwrap();
    let labels = &labels[..200];
    let arch = UnetConfig {
        channels: vec![8, 16],
        time_dim: 16,
        ..small_unet(10)
    };
    let cfg = TrainConfig {
        steps: 6,
        batch: 16,
        warmup: 2,
        eval_every: 3,
        ..Default::default()
    };
    let mut weights = vec![];
    for (run, threads) in [(0, 1), (1, 2), (2, 3)] {
        let dir = tmp(&format!("repro{run}"));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            train(
                &x,
                Some(labels),
                &setup(arch.clone(), &cfg, Some(&dir), false),
                &mut |_| {},
            )
        })
        .unwrap();
        weights.push(std::fs::read(dir.join(read_meta(&dir).unwrap().weights)).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_eq!(weights[0], weights[1], "1 and 2 threads");
    assert_eq!(weights[0], weights[2], "1 and 3 threads");
}
