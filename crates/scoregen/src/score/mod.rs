//! Scores `score(t, x) = grad_x log p_t(x)` and their parametrisations.
//!
//! The [`Score`] trait is what every sampler consumes: a batched map `[n, d] -> [n, d]` at a
//! forward time `t` of the score's own [`Process`]. Analytic scores ([`mixture`]) and
//! learned networks implement it alike; a conditional or guided model is wrapped into a
//! `Score` by fixing its class and guidance scale.
//!
//! The three parametrisations are one quantity (Tweedie's formula, Efron 2011;
//! docs/conventions.md):
//! `eps_hat = -s(t) score`, `x0_hat = (x + s(t)^2 score) / m(t)`; [`tweedie`] converts.

pub mod mixture;
pub mod tweedie;

use candle_core::Tensor;

use crate::process::Process;
use crate::{Error, Result};

/// The message of [`Score::denoise_vjp`] for a score without gradients.
pub const NO_GRADIENTS: &str =
    "this score has no gradients: dps, pigdm, tmpd, tds and dcps need gradients of the score \
     (the vector-Jacobian product of its denoiser); use smc-impute, mcgdiff, replacement or ddrm";

pub use mixture::{Covariance, GaussianMixture, MixtureRows, MixtureScore};
pub use tweedie::Parametrisation;

/// A score at one time `t`, evaluated on host `f64` rows without tensors, one block of rows
/// at a time on the calling thread (callers parallelise over blocks). Samplers use it to
/// fuse the score, the noise draw and the update per block of particles, with no tensor
/// allocated per step.
pub trait RowScore: Send + Sync {
    /// `score(t, x)` at each row of `x` (row-major `[rows, d]`) into `out` (same shape).
    /// Row `i` of `out` must depend on row `i` of `x` alone, so that results do not depend
    /// on how rows are split into blocks and threads.
    fn score_rows(&self, x: &[f64], out: &mut [f64]);
}

impl RowScore for MixtureRows<'_> {
    fn score_rows(&self, x: &[f64], out: &mut [f64]) {
        MixtureRows::score_rows(self, x, out)
    }
}

/// A batched score of the law of `x_t` under a forward process.
pub trait Score: Send + Sync {
    /// The dimension `d` of `x`.
    fn dim(&self) -> usize;

    /// The forward process this score belongs to.
    fn process(&self) -> &Process;

    /// `grad_x log p_t(x)` for each row of `x` (`[n, d]`), returned with `x`'s dtype.
    fn score(&self, t: f64, x: &Tensor) -> Result<Tensor>;

    /// The Tweedie denoiser `x0_hat = E[x_0 | x_t = x] = (x + s^2 score) / m`.
    fn denoise(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let s = self.score(t, x)?;
        tweedie::x0_from_score(self.process(), t, x, &s)
    }

    /// The denoiser and its vector–Jacobian product: `(x0_hat(x), (d x0_hat / d x)^T v)`
    /// for each row (`v` is `[n, d]`). This is the input gradient that guidance methods
    /// (DPS, Pi-GDM, TMPD, the twisted SMC, DCPS) need. The default uses candle's
    /// (first-order, hence correct) backward pass, which suits networks built from tensor
    /// ops, on the Tweedie denoiser `(x + s^2 score)/m` of [`Score::score`]; analytic scores
    /// override it with the exact Jacobian. A score that is not a function of `x` in
    /// candle's graph (computed on the host, say) has no gradients: the default then fails
    /// with [`NO_GRADIENTS`] rather than return zeros, which would silently turn guidance off.
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let xv = candle_core::Var::from_tensor(&x.detach())?;
        let sc = self.score(t, xv.as_tensor())?;
        if !sc.track_op() {
            return Err(Error::invalid(NO_GRADIENTS));
        }
        let x0 = tweedie::x0_from_score(self.process(), t, xv.as_tensor(), &sc)?;
        let grads = (x0.clone() * v.detach())?.sum_all()?.backward()?;
        match grads.get(xv.as_tensor()) {
            Some(g) => Ok((x0.detach(), g.clone())),
            None => Err(Error::invalid(NO_GRADIENTS)),
        }
    }

    /// The score at time `t` as a [`RowScore`] on host `f64` rows, when this score has one
    /// that agrees with [`Score::score`] (the exact mixture score does). The default is
    /// `None`: samplers then step with tensors.
    fn rows_at(&self, _t: f64) -> Option<Box<dyn RowScore + '_>> {
        None
    }

    /// The noise prediction `eps_hat = E[eps | x_t = x] = -s(t) score`.
    fn eps(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let s = self.score(t, x)?;
        tweedie::eps_from_score(self.process(), t, &s)
    }
}
