//! Tweedie conversions between the score, noise and data parametrisations — the one place
//! where they are converted (docs/conventions.md):
//!
//! `eps_hat = -s(t) score`, `score = -eps_hat / s(t)`,
//! `x0_hat = (x + s(t)^2 score) / m(t)`, `score = (m(t) x0_hat - x) / s(t)^2`.
//!
//! It also holds what each parametrisation feeds the network and what it trains it on
//! ([`net_input_scale`], [`net_time`], [`score_coefficients`], [`dsm_coefficients`]), so that
//! the candle path, the fused engine and the JVP paths share one definition. The EDM
//! parametrisation (Karras et al. 2022, "Elucidating the design space of diffusion-based
//! generative models", Table 1) is written for `x_t = m x_0 + s eps` with `sigma = s / m`,
//! `x_hat = x_t / m` and data of unit scale (`sigma_data = 1`, what the trainer's
//! normalisation gives): with `kappa = sqrt(s^2 + m^2)`,
//! * `c_in x_hat = x_t / kappa` (the network's input has unit scale at every noise level),
//! * `c_noise = ln(sigma) / 4` (the network's time input),
//! * `D = c_skip x_hat + c_out F = m x_t / kappa^2 + (s / kappa) F` (the denoiser `x0_hat`),
//! * loss `lambda(sigma) |D - x_0|^2 = |F - (s x_0 - m eps) / kappa|^2` (EDM's weighting
//!   `lambda = (sigma^2 + 1) / sigma^2` makes the network's target unit-scale).
//!
//! For a VP process (`kappa = 1`) this is the v-parametrisation of Salimans & Ho 2022 up to
//! sign; for VE (`m = 1`) it is EDM's own.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::process::Process;
use crate::{Error, Result};

/// What a network outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parametrisation {
    /// The score itself.
    Score,
    /// The noise `eps` (DDPM).
    Eps,
    /// The clean data `x_0`.
    X0,
    /// EDM's preconditioned network `F` (Karras et al. 2022): input `x_t / kappa`, time
    /// `ln(sigma) / 4`, denoiser `m x_t / kappa^2 + (s / kappa) F` (module docs).
    Edm,
}

impl std::str::FromStr for Parametrisation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "score" => Ok(Parametrisation::Score),
            "eps" => Ok(Parametrisation::Eps),
            "x0" => Ok(Parametrisation::X0),
            "edm" => Ok(Parametrisation::Edm),
            _ => Err(Error::invalid(format!(
                "unknown parametrisation '{s}' (expected score, eps, x0, edm)"
            ))),
        }
    }
}

/// `eps_hat = -s(t) score`.
pub fn eps_from_score(p: &Process, t: f64, score: &Tensor) -> Result<Tensor> {
    Ok(score.affine(-p.s(t), 0.0)?)
}

/// `score = -eps_hat / s(t)`.
pub fn score_from_eps(p: &Process, t: f64, eps: &Tensor) -> Result<Tensor> {
    Ok(eps.affine(-1.0 / p.s(t), 0.0)?)
}

/// `x0_hat = (x + s(t)^2 score) / m(t)`.
pub fn x0_from_score(p: &Process, t: f64, x: &Tensor, score: &Tensor) -> Result<Tensor> {
    let (m, s) = (p.m(t), p.s(t));
    Ok((x + score.affine(s * s, 0.0)?)?.affine(1.0 / m, 0.0)?)
}

/// `score = (m(t) x0_hat - x) / s(t)^2`.
pub fn score_from_x0(p: &Process, t: f64, x: &Tensor, x0: &Tensor) -> Result<Tensor> {
    let (m, s) = (p.m(t), p.s(t));
    Ok((x0.affine(m, 0.0)? - x)?.affine(1.0 / (s * s), 0.0)?)
}

/// Converts a network output in parametrisation `param` to the score (`x` is `x_t`, not the
/// network's scaled input).
pub fn to_score(param: Parametrisation, p: &Process, t: f64, x: &Tensor, out: &Tensor) -> Result<Tensor> {
    match param {
        Parametrisation::Score => Ok(out.clone()),
        Parametrisation::Eps => score_from_eps(p, t, out),
        Parametrisation::X0 => score_from_x0(p, t, x, out),
        Parametrisation::Edm => {
            let (a, b) = score_coefficients(param, p.m(t), p.s(t));
            Ok((out.affine(a, 0.0)? + x.affine(b, 0.0)?)?)
        }
    }
}

/// The factor `c` of the network's input `c x_t`: `1 / sqrt(s^2 + m^2)` for EDM, else 1.
pub fn net_input_scale(param: Parametrisation, m: f64, s: f64) -> f64 {
    match param {
        Parametrisation::Edm => 1.0 / (s * s + m * m).sqrt(),
        _ => 1.0,
    }
}

/// The network's time input at time `t`: `ln(sigma(t)) / 4` for EDM (`c_noise`), else
/// `t / T`.
pub fn net_time(param: Parametrisation, p: &Process, t: f64) -> f64 {
    match param {
        Parametrisation::Edm => p.sigma(t).ln() / 4.0,
        _ => t / p.t_max(),
    }
}

/// `(a, b)` with `score = a f + b x_t` for the network output `f`:
/// eps `(-1/s, 0)`; score `(1, 0)`; x0 `(m / s^2, -1 / s^2)`; EDM
/// `(m / (s kappa), -1 / kappa^2)`.
pub fn score_coefficients(param: Parametrisation, m: f64, s: f64) -> (f64, f64) {
    match param {
        Parametrisation::Eps => (-1.0 / s, 0.0),
        Parametrisation::Score => (1.0, 0.0),
        Parametrisation::X0 => (m / (s * s), -1.0 / (s * s)),
        Parametrisation::Edm => {
            let k2 = s * s + m * m;
            (m / (s * k2.sqrt()), -1.0 / k2)
        }
    }
}

/// The denoising score-matching residual of a parametrisation, per row: with the network's
/// output `f` at `x_t = m x_0 + s eps`, `r = weight (f - (target_x0 x_0 + target_eps eps))`,
/// and the loss is the mean of `r^2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DsmCoefficients {
    /// The residual's weight (`s` for the score parametrisation, else 1).
    pub weight: f64,
    /// The target's coefficient on `x_0`.
    pub target_x0: f64,
    /// The target's coefficient on `eps`.
    pub target_eps: f64,
}

/// [`DsmCoefficients`] per parametrisation: eps `(1; 0, 1)`; x0 `(1; 1, 0)`; score
/// `(s; 0, -1/s)` (the residual `s f + eps`); EDM `(1; s / kappa, -m / kappa)`.
pub fn dsm_coefficients(param: Parametrisation, m: f64, s: f64) -> DsmCoefficients {
    let c = |weight, target_x0, target_eps| DsmCoefficients {
        weight,
        target_x0,
        target_eps,
    };
    match param {
        Parametrisation::Eps => c(1.0, 0.0, 1.0),
        Parametrisation::X0 => c(1.0, 1.0, 0.0),
        Parametrisation::Score => c(s, 0.0, -1.0 / s),
        Parametrisation::Edm => {
            let k = (s * s + m * m).sqrt();
            c(1.0, s / k, -m / k)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn round_trips() {
        let p = Process::ddpm_linear();
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.1]], &dev).unwrap();
        let sc = Tensor::new(&[[1.0f64, 0.5], [-0.7, 0.2]], &dev).unwrap();
        let t = 0.37;
        let e = eps_from_score(&p, t, &sc).unwrap();
        let x0 = x0_from_score(&p, t, &x, &sc).unwrap();
        for back in [
            to_score(Parametrisation::Eps, &p, t, &x, &e).unwrap(),
            to_score(Parametrisation::X0, &p, t, &x, &x0).unwrap(),
        ] {
            let d: f64 = (back - &sc)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-12);
        }
    }

    #[test]
    fn the_dsm_optimum_of_every_parametrisation_is_the_exact_score() {
        // x_0 ~ N(0, v) in 1-D, x_t = m x_0 + s eps: E[x_0 | x_t] = m v x_t / q and
        // E[eps | x_t] = s x_t / q with q = m^2 v + s^2, and the score of p_t is -x_t / q. The
        // DSM loss is minimised by f* = E[target | x_t] (the weight only scales it), so
        // `score_coefficients` applied to f* must give -x_t / q.
        let dev = Device::Cpu;
        for p in [Process::ou(2.0, 6.0), Process::ve(0.01, 20.0), Process::sub_vp_linear()] {
            for v in [0.3, 1.0, 4.0] {
                for t in [0.004, 0.3, 0.9] {
                    let (m, s) = (p.m(t), p.s(t));
                    let q = m * m * v + s * s;
                    let xt = 0.7;
                    for param in [
                        Parametrisation::Eps,
                        Parametrisation::X0,
                        Parametrisation::Score,
                        Parametrisation::Edm,
                    ] {
                        let c = dsm_coefficients(param, m, s);
                        let f_opt = c.target_x0 * m * v * xt / q + c.target_eps * s * xt / q;
                        let (a, b) = score_coefficients(param, m, s);
                        let want = -xt / q;
                        // The x0 form cancels terms of size 1 / s^2 (s ~ 4e-4 for sub-VP at
                        // t = 0.004): rounding grows to ~1e-9 relative there.
                        let got = a * f_opt + b * xt;
                        assert!(
                            (got - want).abs() < 1e-7 * want.abs(),
                            "{param:?} {p:?} v {v} t {t}: {got} vs {want}"
                        );
                        // The tensor conversion agrees with the coefficients.
                        let x = Tensor::new(&[xt], &dev).unwrap();
                        let f = Tensor::new(&[f_opt], &dev).unwrap();
                        let sc: Vec<f64> = to_score(param, &p, t, &x, &f).unwrap().to_vec1().unwrap();
                        assert!(
                            (sc[0] - want).abs() < 1e-7 * want.abs(),
                            "{param:?}: {} vs {want}",
                            sc[0]
                        );
                    }
                }
            }
        }
        // EDM's network input has unit scale for unit data at every noise level:
        // Var(c x_t) = (m^2 + s^2) / kappa^2 = 1.
        let p = Process::ve(0.01, 20.0);
        for t in [0.01, 0.5, 1.0] {
            let c = net_input_scale(Parametrisation::Edm, p.m(t), p.s(t));
            assert!(((p.m(t).powi(2) + p.s(t).powi(2)) * c * c - 1.0).abs() < 1e-12);
            assert!((net_time(Parametrisation::Edm, &p, t) - p.sigma(t).ln() / 4.0).abs() < 1e-12);
        }
    }
}
