//! Acceptance: on the 2-D 25-component mixture of Cardoso et al. 2024, the reverse SDE with 1000
//! steps reaches a sliced Wasserstein distance to exact prior samples within 1.5x the
//! two-sample noise floor (both averaged over 4 independent replicates, 2000 points each).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use scoregen::metrics::{mixture_weight_error, sliced_wasserstein, SlicedOptions};
use scoregen::rng::Noise;
use scoregen::sample::{default_process, sample, BFn, SampleOptions, Sampler};
use scoregen::score::{GaussianMixture, MixtureScore};

#[test]
fn reverse_sde_on_the_25_component_mixture_is_at_the_noise_floor() {
    let law = GaussianMixture::grid25(2, &Noise::new(0)).unwrap();
    let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
    let n = 2000;
    let t = |v: Vec<f64>| Tensor::from_vec(v, (n, 2), &Device::Cpu).unwrap();
    let sw = SlicedOptions::default();
    let (mut floor, mut ours, mut werr) = (0.0, 0.0, 0.0);
    let reps = 4;
    for r in 0..reps {
        let reference = t(law.sample(n, &Noise::new(1000 + r), 0));
        let other = t(law.sample(n, &Noise::new(2000 + r), 0));
        let opts = SampleOptions {
            steps: 1000,
            seed: 3000 + r,
            ..Default::default()
        };
        let x = sample(
            &score,
            &Sampler::EulerMaruyama { b: BFn::Const(1.0) },
            &opts,
            n,
            &mut |_, _| {},
        )
        .unwrap();
        floor += sliced_wasserstein(&other, &reference, &sw).unwrap() / reps as f64;
        ours += sliced_wasserstein(&x, &reference, &sw).unwrap() / reps as f64;
        werr += mixture_weight_error(&x, &law).unwrap() / reps as f64;
    }
    eprintln!("noise floor {floor:.4}, reverse SDE {ours:.4}, weight error {werr:.4}");
    assert!(ours <= 1.5 * floor, "SW {ours} vs floor {floor}");
    // Mixture-weight error of n exact samples is about sum_k sqrt(2 w_k (1 - w_k) / (pi n)).
    let w = law.weights();
    let expected: f64 = w
        .iter()
        .map(|wk| (2.0 * wk * (1.0 - wk) / (std::f64::consts::PI * n as f64)).sqrt())
        .sum();
    assert!(
        werr < 2.0 * expected,
        "weight error {werr} vs exact-sample level {expected}"
    );
}
