//! Energy-based models on a 2-D mixture: trained by contrastive divergence or score
//! matching, sampled by Langevin; every mode is populated.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use scoregen::mcmc::{annealed_langevin, mala, ula, EnergyTarget, LangevinOptions};
use scoregen::nn::ebm::{train_cd, train_energy_sm, CdConfig, SmConfig, SmMethod};
use scoregen::nn::score_matching::SigmaLadder;
use scoregen::nn::{EnergyConfig, EnergyNet, EnergyScore};
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::score::{Covariance, GaussianMixture};

const MODES: [[f64; 2]; 4] = [[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]];

fn data(n: usize) -> Tensor {
    let law = GaussianMixture::new(
        vec![0.25; 4],
        MODES.iter().map(|m| m.to_vec()).collect(),
        vec![Covariance::Scalar(0.15f64.powi(2)); 4],
    )
    .unwrap();
    Tensor::from_vec(law.sample(n, &Noise::new(1), 0), (n, 2), &Device::Cpu).unwrap()
}

/// Share of the samples within 0.5 of each mode (mode std 0.15: 3.3 std).
fn shares(x: &Tensor) -> [f64; 4] {
    let v: Vec<f64> = x
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = v.len() / 2;
    let mut c = [0.0; 4];
    for r in v.chunks(2) {
        for (k, m) in MODES.iter().enumerate() {
            if (r[0] - m[0]).hypot(r[1] - m[1]) < 0.5 {
                c[k] += 1.0 / n as f64;
            }
        }
    }
    c
}

fn net() -> EnergyNet {
    let cfg = EnergyConfig {
        dim: 2,
        hidden: 64,
        depth: 2,
        fourier: 4,
    };
    EnergyNet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap()
}

fn uniform_start(n: usize) -> Tensor {
    let u: Vec<f64> = Noise::new(7)
        .uniforms(stream(Purpose::Init, 0), 2 * n)
        .iter()
        .map(|u| 2.5 * (2.0 * u - 1.0))
        .collect();
    Tensor::from_vec(u, (n, 2), &Device::Cpu).unwrap()
}

/// CD with persistent SGLD chains, then MALA (and ULA) from a uniform start: each of the 4
/// modes holds more than 15% of the chains (ideal 25%; measured 20-23%), and more than 80%
/// are within 0.5 of a mode (measured 86-87%: ULA's O(h) bias and unconverged chains).
#[test]
fn cd_trained_ebm_populates_every_mode() {
    let x = data(2000);
    let net = net();
    let started = Instant::now();
    let cfg = CdConfig {
        steps: 800,
        batch: 128,
        lr: 2e-3,
        sgld_steps: 20,
        sgld_step: 5e-3,
        buffer: 2000,
        ..Default::default()
    };
    let rep = train_cd(&net, &x, &cfg, &mut |_, _| {}).unwrap();
    let train_s = started.elapsed().as_secs_f64();
    let target = EnergyTarget { net: &net, tau: 0.0 };
    let opts = LangevinOptions {
        step: 5e-3,
        steps: 500,
        seed: 1,
    };
    let r = mala(&target, &uniform_start(500), &opts).unwrap();
    let s = shares(&r.x);
    let su = shares(&ula(&target, &uniform_start(500), &opts).unwrap());
    eprintln!(
        "CD: train {train_s:.1}s, last loss {:.3}, f data {:.2} neg {:.2}; MALA acc {:.3} shares {s:.3?}; ULA shares {su:.3?}",
        rep.losses.last().unwrap(),
        rep.f_data.last().unwrap(),
        rep.f_neg.last().unwrap(),
        r.acceptance_rate
    );
    for sh in [s, su] {
        assert!(sh.iter().all(|&c| c > 0.15), "{sh:?}");
        assert!(sh.iter().sum::<f64>() > 0.8, "{sh:?}");
    }
}

/// A noise-conditional energy trained by NCSN's ladder loss (VE, sigma 0.05 .. 3), sampled by
/// annealed Langevin from N(0, 3^2): every mode holds more than 10% of the samples (measured
/// 12-28%: annealed Langevin with 100 steps a level does not keep the mixture weights exactly,
/// a known bias of ALD, and the 1500-step energy is rough).
#[test]
fn ncsn_trained_energy_with_annealed_langevin_populates_every_mode() {
    let x = data(2000);
    let net = net();
    let method = SmMethod::Ncsn {
        sigma_min: 0.05,
        sigma_max: 3.0,
        levels: 10,
    };
    let process = method.process().unwrap();
    let cfg = SmConfig {
        method,
        steps: 1500,
        batch: 256,
        lr: 2e-3,
        clip: 10.0,
        seed: 0,
    };
    let started = Instant::now();
    let rep = train_energy_sm(&net, &x, &cfg, &mut |_, _| {}).unwrap();
    let train_s = started.elapsed().as_secs_f64();
    let score = EnergyScore::new(net, process.clone(), false);
    let ladder = SigmaLadder::geometric(3.0, 0.05, 10).unwrap();
    let x0 = Noise::new(3)
        .normal_tensor(stream(Purpose::Init, 0), 1000, 2, DType::F32, &Device::Cpu)
        .unwrap()
        .affine(3.0, 0.0)
        .unwrap();
    // NCSN's step: alpha_L = eps = 0.2 sigma_L^2.
    let xs = annealed_langevin(&score, &ladder, 100, 0.2 * 0.05 * 0.05, &x0, 2).unwrap();
    let s = shares(&xs);
    eprintln!(
        "NCSN energy: train {train_s:.1}s, last loss {:.3}; ALD shares {s:.3?}",
        rep.losses.last().unwrap()
    );
    assert!(s.iter().all(|&c| c > 0.1), "{s:?}");
}

/// SSM on clean data and DSM at one small noise, time-free: MALA from a uniform start
/// populates every mode.
#[test]
fn score_matching_trained_energies_populate_every_mode() {
    let x = data(2000);
    for method in [SmMethod::Ssm, SmMethod::Dsm { sigma: 0.1 }] {
        let net = net();
        let cfg = SmConfig {
            method: method.clone(),
            steps: 800,
            batch: 256,
            lr: 2e-3,
            clip: 10.0,
            seed: 0,
        };
        let rep = train_energy_sm(&net, &x, &cfg, &mut |_, _| {}).unwrap();
        let target = EnergyTarget { net: &net, tau: 0.0 };
        let opts = LangevinOptions {
            step: 2e-3,
            steps: 300,
            seed: 1,
        };
        let r = mala(&target, &uniform_start(1000), &opts).unwrap();
        let s = shares(&r.x);
        eprintln!(
            "{method:?}: last loss {:.3}, MALA acc {:.3}, shares {s:.3?}",
            rep.losses.last().unwrap(),
            r.acceptance_rate
        );
        assert!(s.iter().all(|&c| c > 0.15), "{method:?}: {s:?}");
    }
}
