//! The fused host loop of the samplers (scores with a row kernel, f64 particles) against
//! the tensor path, and its independence of the number of threads.

use std::sync::Arc;

use candle_core::Tensor;
use scoregen::process::Process;
use scoregen::sample::{sample, BFn, SampleOptions, Sampler};
use scoregen::score::{Covariance, GaussianMixture, MixtureScore, Score};

/// The same score without its row kernel: samplers step it with tensors.
struct TensorOnly(MixtureScore);

impl Score for TensorOnly {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn process(&self) -> &Process {
        self.0.process()
    }
    fn score(&self, t: f64, x: &Tensor) -> scoregen::Result<Tensor> {
        self.0.score(t, x)
    }
}

fn law() -> GaussianMixture {
    GaussianMixture::new(
        vec![1.0, 2.0, 1.5],
        vec![vec![2.0, 0.0, -1.0], vec![-2.0, 1.0, 0.5], vec![0.0, -2.0, 2.0]],
        vec![
            Covariance::Diagonal(vec![0.5, 0.3, 0.8]),
            Covariance::Scalar(0.4),
            Covariance::Full(vec![0.6, 0.2, 0.0, 0.2, 0.5, 0.1, 0.0, 0.1, 0.7]),
        ],
    )
    .unwrap()
}

fn samplers() -> Vec<(&'static str, Sampler)> {
    vec![
        ("em", Sampler::EulerMaruyama { b: BFn::Const(1.0) }),
        ("pf-ode em", Sampler::EulerMaruyama { b: BFn::Const(0.0) }),
        ("ei", Sampler::ExpIntegrator { b: BFn::Const(1.0) }),
        ("heun", Sampler::Heun),
        ("ddpm", Sampler::Ddpm),
        ("ddim", Sampler::Ddim { eta: 0.0 }),
        ("ddim 0.5", Sampler::Ddim { eta: 0.5 }),
        (
            "ald",
            Sampler::AnnealedLangevin {
                steps_per_level: 3,
                step_ratio: 0.2,
            },
        ),
    ]
}

fn run(score: &dyn Score, sampler: &Sampler, n: usize, steps: usize) -> Vec<f64> {
    let opts = SampleOptions {
        steps,
        seed: 9,
        ..Default::default()
    };
    sample(score, sampler, &opts, n, &mut |_, _| {})
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Every single-step sampler and annealed Langevin: the host loop and the tensor path take
/// the same steps with the same noise, so they agree up to the rounding of the score
/// (which differs between the row kernel and the generic evaluation by ~1e-16 relative,
/// and is not amplified by these contracting chains beyond 1e-10).
#[test]
fn host_loop_matches_the_tensor_path() {
    let fast = MixtureScore::new(Arc::new(law()), Process::ou(2.0, 6.0));
    let slow = TensorOnly(fast.clone());
    assert!(fast.rows_at(1.0).is_some() && slow.rows_at(1.0).is_none());
    for (name, s) in samplers() {
        let (a, b) = (run(&fast, &s, 200, 30), run(&slow, &s, 200, 30));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-10, "{name}: host loop and tensor path differ by {worst:e}");
    }
}

/// Bit-identical results in rayon pools of 1 and 2 threads (isotropic 25-component grid,
/// and the mixed diagonal / full law), and the prefix property (the first particles of a
/// larger run equal a smaller run).
#[test]
fn host_loop_does_not_depend_on_the_number_of_threads() {
    let grid = GaussianMixture::grid25(10, &scoregen::rng::Noise::new(0)).unwrap();
    let cases = [
        (MixtureScore::new(Arc::new(grid), Process::ou(2.0, 8.0)), 10),
        (MixtureScore::new(Arc::new(law()), Process::ou(2.0, 6.0)), 3),
    ];
    for (score, d) in &cases {
        for (name, s) in samplers() {
            let in_pool = |threads: usize, n: usize| -> Vec<u64> {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| run(score, &s, n, 12))
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            let one = in_pool(1, 1500);
            let two = in_pool(2, 1500);
            assert!(one == two, "{name} d={d}: 1 and 2 threads differ");
            let prefix = in_pool(2, 700);
            assert!(one[..700 * d] == prefix[..], "{name} d={d}: prefix property");
        }
    }
}
