//! `scoregen bench sample`: particle-steps per second of a sampler on the exact score of
//! a 25-component mixture ([`scoregen::benchmarks::full_cov_grid25`] for full covariances).

use std::time::Instant;

use clap::Args;
use scoregen::benchmarks::full_cov_grid25;
use scoregen::rng::Noise;
use scoregen::sample::{SampleOptions, Sampler, SamplerParams};
use scoregen::score::GaussianMixture;
use scoregen::solve::sample_prior;

use crate::progress::Steps;
use crate::CliResult;

#[derive(Args, Debug)]
pub struct BenchSampleArgs {
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

/// `scoregen bench sample`.
pub fn run(b: BenchSampleArgs, quiet: bool) -> CliResult<()> {
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
            laws.push(("full", full_cov_grid25(d)?));
        }
        for (kind, law) in laws {
            let opts = SampleOptions {
                steps: b.steps,
                ..Default::default()
            };
            let t0 = Instant::now();
            let bar = Steps::new(opts.steps, "bench", quiet);
            sample_prior(&law, &sampler, &opts, b.particles, &mut |k, t| bar.tick(k, t))?;
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
