//! Learned scores: networks, losses and the trainer (papers in `docs/methods.md`).
//!
//! * [`mlp`]: the MLP score network `s(t, x[, c])` with Fourier time features and an
//!   optional class embedding (with a null class for classifier-free guidance);
//! * [`fused`]: the MLP's fast CPU engine — explicit forward / backward over preallocated
//!   workspaces on the `gemm` kernels, flat parameters, one AdamW + clipping + EMA pass; the
//!   trainer uses it for the MLP with the DSM loss (masked, class-conditional or not) and
//!   [`LearnedScore`] for scores and denoiser VJPs; candle's [`Mlp`] is its reference;
//! * [`unet`]: a small convolutional U-Net for images (residual blocks, GroupNorm, time and
//!   class embeddings, skip connections between resolutions);
//! * [`network`]: the [`ScoreNet`] interface, the serialisable [`Arch`] and the [`Network`]
//!   of either architecture that the trainer, checkpoints and [`LearnedScore`] use;
//! * [`loss`]: denoising score matching (Vincent 2011; Ho et al. 2020) in the score / eps /
//!   x0 parametrisations;
//! * [`train`](mod@train): AdamW ([`optim`]) with warm-up and cosine decay, gradient
//!   clipping, EMA, validation, atomic checkpoints and exact resume (the MLP with DSM on
//!   [`fused`]; the U-Net and the SSM / ESM / NCSN losses, whose JVP terms have no
//!   hand-written backward, on candle's autograd);
//! * [`conv`]: 2-D convolutions and their gradients on GEMM (im2col), for the U-Net;
//! * [`groupnorm`]: GroupNorm (+ SiLU) as one op with a hand-written backward, for the U-Net;
//! * [`model`]: a trained network as a [`crate::score::Score`], with its data normalisation;
//! * [`jvp`]: explicit Jacobian-vector products of the MLP (candle's second backward is wrong);
//! * [`score_matching`]: sliced, exact and NCSN noise-conditional score matching (Song et al.
//!   2019; Hyvärinen 2005; Song & Ermon 2019);
//! * [`energy`]: energy networks `f_theta(t, x)` with explicit input gradients and
//!   Hessian-vector products, as a [`crate::score::Score`];
//! * [`ebm`]: contrastive-divergence and score-matching training of energy models (Du & Mordatch
//!   2019);
//! * [`rbm`]: the Bernoulli restricted Boltzmann machine trained by CD-k (Hinton 2002);
//! * [`optim`]: the one optimiser, AdamW with global-norm clipping and an EMA
//!   (Loshchilov & Hutter 2019).
//!
//! Parameters are initialised from [`crate::rng::Noise`] streams, so training is
//! bit-reproducible for a seed on the CPU.

pub mod conv;
pub mod ebm;
pub mod energy;
pub mod fused;
pub mod groupnorm;
pub mod jvp;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod network;
pub mod optim;
pub mod rbm;
pub mod score_matching;
#[cfg(test)]
mod test_util;
pub mod train;
pub mod unet;

pub use energy::{EnergyConfig, EnergyNet, EnergyScore};
pub use mlp::{Mlp, MlpConfig};
pub use model::LearnedScore;
pub use network::{Arch, Network, ScoreNet};
pub use score_matching::Loss;
pub use train::{
    load_model, load_model_on, train, train_masked, CheckpointMeta, TimeSampling, TrainConfig, TrainProgress,
    TrainReport, TrainSetup,
};
pub use unet::{Unet, UnetConfig};

/// Sets `vars` (named `names`) to `values`, checking their count and shapes; `what` names
/// the network in errors. Shared by the `with_values` constructors of every network.
pub(crate) fn set_parameters(
    what: &str,
    vars: &[candle_core::Var],
    names: &[String],
    values: &[candle_core::Tensor],
) -> crate::Result<()> {
    if values.len() != vars.len() {
        return Err(crate::Error::invalid(format!(
            "{what}: {} parameter tensors for {} parameters",
            values.len(),
            vars.len()
        )));
    }
    for ((var, v), name) in vars.iter().zip(values).zip(names) {
        if var.dims() != v.dims() {
            return Err(crate::Error::invalid(format!(
                "{what}: parameter {name} of shape {:?}, expected {:?}",
                v.dims(),
                var.dims()
            )));
        }
        var.set(&v.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
