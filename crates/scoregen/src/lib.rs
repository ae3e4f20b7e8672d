//! # scoregen
//!
//! Score-based generative models (diffusion models) and posterior sampling with them.
//!
//! The library is layered (a diagram of who calls whom is in `docs/architecture.md`):
//! [`process`] (forward processes, time grids), [`score`] (the [`score::Score`] trait,
//! Tweedie conversions, exact Gaussian-mixture scores), [`sample`] (the reverse-time sampler
//! family), [`nn`] (networks, losses, the trainer), [`mcmc`] (Langevin samplers), [`smc`]
//! (particle machinery), [`inverse`] (posterior sampling for `y = A x + sigma_y z`),
//! [`impute`] (tables with missing cells), [`metrics`] (sliced Wasserstein, MMD, ...) and
//! [`data`] (files, built-in data sets).
//!
//! One data type per layer: candle [`candle_core::Tensor`]s of shape `[n, d]` in the model
//! layer ([`process`], [`score`], [`sample`], [`nn`], [`mcmc`]), row-major `Vec<f64>` in the
//! posterior layer ([`inverse`], [`smc`], [`impute`]), converted in one place,
//! [`data::to_rows`] and [`data::from_rows`]. The conventions (time runs forward `0 -> T`,
//! `x_t = m(t) x_0 + s(t) z`, Tweedie, the `b_t` family) are in `docs/conventions.md`, the
//! file formats in `docs/formats.md`, every method with its paper in `docs/methods.md`.
//! The library never prints.
//!
//! ```
//! # fn main() -> scoregen::Result<()> {
//! use std::sync::Arc;
//! use scoregen::process::Process;
//! use scoregen::sample::{sample, BFn, SampleOptions, Sampler};
//! use scoregen::score::{Covariance, GaussianMixture, MixtureScore};
//!
//! // N(mu, Sigma) data, diffused by the OU process dX = -X dt + sqrt(2) dB on [0, 6].
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
pub mod ode;
pub mod process;
pub mod rng;
pub mod sample;
pub mod score;
pub mod smc;
pub mod solve;

pub use error::{Error, Result};
