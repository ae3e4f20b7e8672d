//! Input gradients of learned scores (the guidance methods' first-order derivative) against
//! central differences, and detached scores for sampling.

use candle_core::{DType, Device, Tensor};
use scoregen::nn::{EnergyConfig, EnergyNet, EnergyScore, LearnedScore, Mlp, MlpConfig};
use scoregen::process::Process;
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::score::Score;

fn normals(i: u64, n: usize, d: usize) -> Tensor {
    Noise::new(3)
        .normal_tensor(stream(Purpose::User, i), n, d, DType::F64, &Device::Cpu)
        .unwrap()
}

fn rows(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `<J^T v, u> = <v, J u>` with `J u` by central differences of the denoiser along `u`.
fn check(score: &dyn Score, t: f64) {
    let (n, d) = (3, score.dim());
    let (x, v, u) = (normals(1, n, d), normals(2, n, d), normals(3, n, d));
    let (x0, jtv) = score.denoise_vjp(t, &x, &v).unwrap();
    let x0_direct = score.denoise(t, &x).unwrap();
    for (a, b) in rows(&x0).iter().zip(rows(&x0_direct)) {
        assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()));
    }
    let h = 1e-5;
    let xp = (&x + u.affine(h, 0.0).unwrap()).unwrap();
    let xm = (&x - u.affine(h, 0.0).unwrap()).unwrap();
    let ju: Vec<f64> = rows(&score.denoise(t, &xp).unwrap())
        .iter()
        .zip(rows(&score.denoise(t, &xm).unwrap()))
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();
    let (jtv, v, u) = (rows(&jtv), rows(&v), rows(&u));
    for r in 0..n {
        let lhs: f64 = (0..d).map(|i| jtv[r * d + i] * u[r * d + i]).sum();
        let rhs: f64 = (0..d).map(|i| v[r * d + i] * ju[r * d + i]).sum();
        assert!((lhs - rhs).abs() < 1e-6 * (1.0 + rhs.abs()), "row {r}: {lhs} vs {rhs}");
    }
    // The sampler-facing score is detached (no autograd graph kept across steps).
    assert!(!score.score(t, &x).unwrap().track_op());
}

#[test]
fn learned_and_energy_denoiser_vjps_match_differences() {
    let p = Process::ou(2.0, 5.0);
    let cfg = MlpConfig {
        hidden: 16,
        depth: 2,
        ..MlpConfig::reference(3)
    };
    let net = Mlp::new(cfg, 4, DType::F64, &Device::Cpu).unwrap();
    let learned = LearnedScore::new(net, p.clone());
    let energy = EnergyNet::new(
        EnergyConfig {
            hidden: 16,
            depth: 2,
            ..EnergyConfig::small(3)
        },
        5,
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let energy = EnergyScore::new(energy, p, false);
    for t in [0.05, 0.5, 2.0] {
        check(&learned, t);
        check(&energy, t);
    }
}
