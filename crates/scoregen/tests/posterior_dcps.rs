//! DCPS (Janati et al. 2024) against exact posteriors: a Gaussian prior, whose posterior is
//! Gaussian in closed form, and a small Gaussian-mixture problem scored by the sliced
//! Wasserstein distance against exact posterior samples.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use scoregen::inverse::{
    sample_posterior, DcpsOptions, ExactPosterior, Method, Observation, Operator, PosteriorOptions,
};
use scoregen::metrics::{sliced_wasserstein, SlicedOptions};
use scoregen::rng::Noise;
use scoregen::sample::default_process;
use scoregen::score::{Covariance, GaussianMixture, MixtureScore};

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0))
}

fn column(x: &[f64], d: usize, j: usize) -> Vec<f64> {
    x.chunks(d).map(|r| r[j]).collect()
}

fn run(score: &MixtureScore, obs: &Observation, dc: DcpsOptions, n: usize, steps: usize, seed: u64) -> Vec<f64> {
    let opts = PosteriorOptions {
        n,
        particles: n,
        steps,
        seed,
        ..Default::default()
    };
    sample_posterior(score, obs, &Method::Dcps(dc), &opts, &mut |_, _| {})
        .unwrap()
        .samples
}

/// The Gaussian problem: prior `N(0, I_2)`, `y = x_1 + 0.5 x_2 + sigma_y z` with
/// `sigma_y = 0.5`, `y = 1.5`.
fn gaussian_problem() -> (MixtureScore, GaussianMixture, Observation) {
    let law = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 0.0, 0.0, 1.0])).unwrap();
    let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
    let obs = Observation {
        op: Operator::Dense {
            rows: 1,
            cols: 2,
            a: vec![1.0, 0.5],
        },
        y: vec![1.5],
        sigma_y: 0.5,
    };
    (score, law, obs)
}

/// Measurement aid (ignored): DCPS's mean and variance error on the Gaussian problem for
/// several settings, with a large sample.
#[test]
#[ignore]
fn measure_gaussian_bias() {
    let (score, law, obs) = gaussian_problem();
    let post = ExactPosterior::new(&law, &obs.op, &obs.y, obs.sigma_y).unwrap();
    let (pm, pc) = post.moments();
    println!("exact mean {pm:?} cov {pc:?}");
    for (name, dc) in [
        ("dcps", DcpsOptions::default()),
        ("dcps50", DcpsOptions::dcps50()),
        (
            "lr0.05",
            DcpsOptions {
                lr: 0.05,
                ..DcpsOptions::default()
            },
        ),
    ] {
        let x = run(&score, &obs, dc, 4000, 200, 1);
        for j in 0..2 {
            let (m, v) = mean_var(&column(&x, 2, j));
            println!(
                "{name} x{j}: mean {m:.4} (exact {:.4}) var {v:.4} (exact {:.4})",
                pm[j],
                pc[j * 2 + j]
            );
        }
    }
}
