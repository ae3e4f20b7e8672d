//! Tweedie conversions between the score, noise and data parametrisations — the one place
//! where they are converted (docs/conventions.md):
//!
//! `eps_hat = -s(t) score`, `score = -eps_hat / s(t)`,
//! `x0_hat = (x + s(t)^2 score) / m(t)`, `score = (m(t) x0_hat - x) / s(t)^2`.

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
}

impl std::str::FromStr for Parametrisation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "score" => Ok(Parametrisation::Score),
            "eps" => Ok(Parametrisation::Eps),
            "x0" => Ok(Parametrisation::X0),
            _ => Err(Error::invalid(format!(
                "unknown parametrisation '{s}' (expected score, eps, x0)"
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

/// Converts a network output in parametrisation `param` to the score.
pub fn to_score(param: Parametrisation, p: &Process, t: f64, x: &Tensor, out: &Tensor) -> Result<Tensor> {
    match param {
        Parametrisation::Score => Ok(out.clone()),
        Parametrisation::Eps => score_from_eps(p, t, out),
        Parametrisation::X0 => score_from_x0(p, t, x, out),
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
}
