//! # scoregen
//!
//! Score-based generative models (diffusion models) and posterior sampling with them.
//!
//! The library is layered (DESIGN.md §2): [`process`] (forward processes, time grids),
//! [`score`] (the [`score::Score`] trait, Tweedie conversions, exact Gaussian-mixture
//! scores), [`sample`] (the reverse-time sampler family), [`metrics`] (sliced Wasserstein,
//! MMD, ...), [`data`] (files), and on top of [`nn`] and [`inverse`], [`impute`] (tables
//! with missing cells: training on incomplete data and row-wise posterior imputation; a
//! module DESIGN.md §2 does not list, added for tabular imputation). One tensor type, `candle_core::Tensor` of shape `[n, d]`,
//! flows through every layer. The library never prints.
//!
//! ```
//! # fn main() -> scoregen::Result<()> {
//! use std::sync::Arc;
//! use scoregen::process::Process;
//! use scoregen::sample::{sample, BFn, SampleOptions, Sampler};
//! use scoregen::score::{Covariance, GaussianMixture, MixtureScore};
//!
//! // N(mu, Sigma) data, diffused by the decks' OU process dX = -X dt + sqrt(2) dB on [0, 6].
//! let law = GaussianMixture::gaussian(vec![1.0, -2.0], Covariance::Full(vec![2.0, 0.6, 0.6, 1.0]))?;
//! let score = MixtureScore::new(Arc::new(law), Process::ou(2.0, 6.0));
//! // The reverse SDE (b = 1) by Euler–Maruyama, 1000 steps, 2000 particles.
//! let sampler = Sampler::EulerMaruyama { b: BFn::Const(1.0) };
//! let x = sample(&score, &sampler, &SampleOptions::default(), 2000, &mut |_, _| {})?;
//! assert_eq!(x.dims(), &[2000, 2]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Index loops read like the formulas they implement in the numerical kernels.
#![allow(clippy::needless_range_loop)]

pub mod benchmarks;
pub mod budget;
pub mod classes;
pub mod data;
pub mod device;
pub mod ebm;
pub mod error;
pub mod impute;
pub mod inverse;
pub mod io;
pub mod likelihood;
pub mod linalg;
pub mod mcmc;
pub mod metrics;
pub mod nn;
pub mod process;
pub mod rng;
pub mod sample;
pub mod score;
pub mod smc;
pub mod solve;

pub use error::{Error, Result};
