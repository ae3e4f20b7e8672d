//! Scores `score(t, x) = grad_x log p_t(x)` and their parametrisations.
//!
//! The [`Score`] trait is what every sampler consumes: a batched map `[n, d] -> [n, d]` at a
//! forward time `t` of the score's own [`Process`]. Analytic scores ([`mixture`]) and
//! learned networks implement it alike; a conditional or guided model is wrapped into a
//! `Score` by fixing its class and guidance scale.
//!
//! The three parametrisations are one quantity (Tweedie, DESIGN.md §1):
//! `eps_hat = -s(t) score`, `x0_hat = (x + s(t)^2 score) / m(t)`; [`tweedie`] converts.

pub mod mixture;
pub mod tweedie;

use candle_core::Tensor;

use crate::process::Process;
use crate::Result;

pub use mixture::{Covariance, GaussianMixture, MixtureScore};
pub use tweedie::Parametrisation;

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
    /// (DPS, Pi-GDM, TMPD, twisted SMC) need. The default differentiates [`Score::denoise`]
    /// with candle's (first-order, hence correct) backward pass, which suits networks built
    /// from tensor ops; analytic scores override it with the exact Jacobian.
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let xv = candle_core::Var::from_tensor(&x.detach())?;
        let x0 = self.denoise(t, xv.as_tensor())?;
        let grads = (x0.clone() * v.detach())?.sum_all()?.backward()?;
        let g = match grads.get(xv.as_tensor()) {
            Some(g) => g.clone(),
            None => xv.as_tensor().zeros_like()?,
        };
        Ok((x0.detach(), g))
    }

    /// The noise prediction `eps_hat = E[eps | x_t = x] = -s(t) score`.
    fn eps(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let s = self.score(t, x)?;
        tweedie::eps_from_score(self.process(), t, &s)
    }
}
