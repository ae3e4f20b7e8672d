//! Acceptance (the two-spheres class-conditional example): a class-conditional model trained with the
//! default settings on the two spheres (radius 1 and 2 in R^3) generates, for each class,
//! radii with mean within 3% of 1 and 2 and uniform directions (mean unit vector within 4
//! standard errors, `1/sqrt(3n)` per coordinate, of 0). About 80 s on 2 cores.

use scoregen::data::builtin;
use scoregen::nn::{train, LearnedScore, MlpConfig, TrainConfig, TrainSetup};
use scoregen::sample::{default_process, sample, SampleOptions, Sampler, SamplerParams};

#[test]
fn class_conditional_two_spheres() {
    let ds = builtin::load("two-spheres", None, 0).unwrap();
    let arch = MlpConfig {
        n_classes: 2,
        ..MlpConfig::reference(3)
    };
    let dir = std::env::temp_dir().join(format!("scoregen-spheres-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let setup = TrainSetup {
        arch: arch.into(),
        process: default_process(3.0 * 3f64.sqrt()),
        config: TrainConfig::default(),
        checkpoint_dir: Some(&dir),
        resume: false,
        device: candle_core::Device::Cpu,
    };
    train(&ds.x, ds.labels.as_deref(), &setup, &mut |_| {}).unwrap();
    let meta = scoregen::nn::train::read_meta(&dir).unwrap();
    let net_score = |c: u32| -> LearnedScore { scoregen::nn::load_model(&dir).unwrap().0.conditional(c, 0.0).unwrap() };
    let n = 2000;
    let sampler = Sampler::from_name("em", &SamplerParams::default()).unwrap();
    for c in 0..2u32 {
        let score = net_score(c);
        let opts = SampleOptions {
            seed: 10 + c as u64,
            ..Default::default()
        };
        let z = sample(&score, &sampler, &opts, n, &mut |_, _| {}).unwrap();
        let x: Vec<Vec<f64>> = meta.normalisation.denormalise(&z).unwrap().to_vec2().unwrap();
        let r: Vec<f64> = x.iter().map(|v| v.iter().map(|a| a * a).sum::<f64>().sqrt()).collect();
        let mean_r = r.iter().sum::<f64>() / n as f64;
        let target = (c + 1) as f64;
        assert!(
            (mean_r - target).abs() < 0.03 * target,
            "class {c}: mean radius {mean_r}"
        );
        let se = 1.0 / (3.0 * n as f64).sqrt();
        for j in 0..3 {
            let m: f64 = x.iter().zip(&r).map(|(v, ri)| v[j] / ri).sum::<f64>() / n as f64;
            assert!(m.abs() < 4.0 * se, "class {c}: mean unit vector[{j}] = {m}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
