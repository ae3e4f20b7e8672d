//! `scoregen bench ...`: benchmarks that print numbers (recorded in BENCHMARKS.md), one file
//! per benchmark; the recipes and their evaluation are [`scoregen::benchmarks`].

pub mod digits;
pub mod gmm;
pub mod impute;
pub mod impute_gauss;
pub mod quality;
pub mod sample;
pub mod train;

use clap::{Args, Subcommand};

use crate::CliResult;

/// `scoregen bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Particle-steps per second of a sampler on the exact mixture score.
    Sample(sample::BenchSampleArgs),
    /// Training steps/s and network evaluations/s of the reference MLP.
    Train(train::BenchTrainArgs),
    /// The Gaussian-mixture posterior benchmark of Cardoso et al. 2024 (MCGdiff) and Janati
    /// et al. 2024 (DCPS): sliced Wasserstein, weight error, time.
    Gmm(gmm::BenchGmmArgs),
    /// Imputation of a 2-D Gaussian: exact vs replacement vs SMC, convergence in N.
    ImputeGauss(impute_gauss::BenchImputeGaussArgs),
    /// Tabular imputation: mask complete tables (MCAR / MAR / MNAR), impute, RMSE and MAE
    /// next to mean and kNN imputation.
    Impute(impute::BenchImputeArgs),
    /// Inpainting, outpainting and super-resolution figures with a trained digits model.
    Digits(digits::BenchDigitsArgs),
    /// Learned-model quality on every built-in set: sliced W1 and MMD against held-out data
    /// with their two-sample floors, held-out NLL, mode weights, sphere radii, digit
    /// classifier accuracy.
    Quality(quality::BenchQualityArgs),
}

/// Runs a benchmark.
pub fn run(a: BenchArgs, quiet: bool) -> CliResult<()> {
    match a.what {
        BenchWhat::Sample(b) => sample::run(b, quiet),
        BenchWhat::Train(b) => train::run(b),
        BenchWhat::Gmm(b) => gmm::run(b, quiet),
        BenchWhat::ImputeGauss(b) => impute_gauss::run(b),
        BenchWhat::Impute(b) => impute::run(b, quiet),
        BenchWhat::Digits(b) => digits::run(b, quiet),
        BenchWhat::Quality(b) => quality::run(b, quiet),
    }
}
