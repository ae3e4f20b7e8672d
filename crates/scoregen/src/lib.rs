//! # scoregen
//!
//! Score-based generative models (diffusion models) and posterior sampling with them.
//!
//! The library is layered (DESIGN.md §2): [`process`] (forward processes, time grids),
//! [`score`] (the [`score::Score`] trait, Tweedie conversions, exact Gaussian-mixture
//! scores), [`sample`] (the reverse-time sampler family), [`metrics`] (sliced Wasserstein,
//! MMD, ...), [`data`] (files). One tensor type, `candle_core::Tensor` of shape `[n, d]`,
//! flows through every layer. The library never prints.

#![warn(missing_docs)]
// Index loops read like the formulas they implement in the numerical kernels.
#![allow(clippy::needless_range_loop)]

pub mod data;
pub mod error;
pub mod inverse;
pub mod linalg;
pub mod metrics;
pub mod process;
pub mod rng;
pub mod sample;
pub mod score;

pub use error::{Error, Result};
