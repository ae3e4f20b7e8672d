//! Learned scores: networks, losses and the trainer (decks 001–003).
//!
//! * [`mlp`]: the MLP score network `s(t, x[, c])` with Fourier time features and an
//!   optional class embedding (with a null class for classifier-free guidance);
//! * [`loss`]: denoising score matching (deck 001) in the score / eps / x0 parametrisations;
//! * [`train`]: Adam with warm-up and cosine decay, gradient clipping, EMA, validation,
//!   atomic checkpoints and exact resume;
//! * [`model`]: a trained network as a [`crate::score::Score`], with its data normalisation.
//!
//! Parameters are initialised from [`crate::rng::Noise`] streams, so training is
//! bit-reproducible for a seed on the CPU.

pub mod loss;
pub mod mlp;
pub mod model;
pub mod train;

pub use mlp::{Mlp, MlpConfig};
pub use model::LearnedScore;
pub use train::{load_model, train, CheckpointMeta, TimeSampling, TrainConfig, TrainProgress, TrainReport, TrainSetup};
