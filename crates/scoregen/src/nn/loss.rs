//! Denoising score matching (Vincent 2011; Ho et al. 2020): with `x_t = m(t) x_0 + s(t) eps`,
//! `score(t, x) = E[-eps / s(t) | x_t = x]`, so regressing on `eps` recovers the score.
//!
//! | parametrisation | loss per sample (mean over coordinates) | weighting of the score loss |
//! |---|---|---|
//! | `eps` | `|f - eps|^2` | `s(t)^2` |
//! | `score` | `|s(t) f + eps|^2` | `s(t)^2` (NCSN's `lambda = sigma^2`, Song & Ermon 2019) |
//! | `x0` | `|f - x_0|^2` | `s(t)^4 / m(t)^2` |
//! | `edm` | `|f - (s x_0 - m eps) / kappa|^2`, input `x_t / kappa`, `kappa^2 = s^2 + m^2` | `s(t)^2 kappa^2 / m(t)^2` (Karras et al. 2022's `lambda(sigma)`) |
//!
//! The per-parametrisation coefficients are [`crate::score::tweedie`]'s.

use candle_core::Tensor;

use super::network::ScoreNet;
use crate::process::Process;
use crate::score::{tweedie, Parametrisation};
use crate::Result;

/// Per-sample `m(t)` and `s(t)` as `[n, 1]` tensors of `like`'s dtype and device.
pub fn coefficients(process: &Process, t: &[f64], like: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = t.len();
    let m: Vec<f64> = t.iter().map(|&t| process.m(t)).collect();
    let s: Vec<f64> = t.iter().map(|&t| process.s(t)).collect();
    let mk =
        |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, 1), like.device())?.to_dtype(like.dtype())?) };
    Ok((mk(m)?, mk(s)?))
}

/// The networks' time inputs of the per-row times `t` in parametrisation `param`
/// ([`tweedie::net_time`]: `t / T`, or EDM's `ln(sigma) / 4`), as an `[n, 1]` tensor of
/// `like`'s dtype and device.
pub fn taus(process: &Process, param: Parametrisation, t: &[f64], like: &Tensor) -> Result<Tensor> {
    let tau: Vec<f64> = t.iter().map(|&t| tweedie::net_time(param, process, t)).collect();
    Ok(Tensor::from_vec(tau, (t.len(), 1), like.device())?.to_dtype(like.dtype())?)
}

/// Per-row `[n, 1]` columns of `f(m(t), s(t))` for the times `t`, of `like`'s dtype and device.
fn per_row(process: &Process, t: &[f64], like: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
    let v: Vec<f64> = t.iter().map(|&t| f(process.m(t), process.s(t))).collect();
    Ok(Tensor::from_vec(v, (t.len(), 1), like.device())?.to_dtype(like.dtype())?)
}

/// The mean denoising score-matching loss of `net` on clean data `x0` (`[n, d]`) at times
/// `t` (`n` values) with noise `eps` (`[n, d]`), in the network's parametrisation.
pub fn dsm_loss<N: ScoreNet + ?Sized>(
    net: &N,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    Ok(dsm_residual(net, process, x0, t, eps, classes)?.sqr()?.mean_all()?)
}

/// [`dsm_loss`] restricted to observed cells (MissDiff, Ouyang et al. 2023): with the
/// `[n, d]` 1/0 tensor `observed`, `sum(observed * residual^2) / max(sum(observed), 1)`.
/// Missing cells of `x0` hold any finite fill; they enter `x_t` (the network's input) but
/// not the loss.
pub fn masked_dsm_loss<N: ScoreNet + ?Sized>(
    net: &N,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    classes: Option<&Tensor>,
    observed: &Tensor,
) -> Result<Tensor> {
    let resid = dsm_residual(net, process, x0, t, eps, classes)?;
    let w = observed.to_dtype(resid.dtype())?;
    let count = w
        .to_dtype(candle_core::DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?
        .max(1.0);
    Ok((resid.sqr()? * w)?.sum_all()?.affine(1.0 / count, 0.0)?)
}

/// The per-cell DSM residual `[n, d]` in the network's parametrisation (see the table above).
fn dsm_residual<N: ScoreNet + ?Sized>(
    net: &N,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    let param = net.param();
    // The network's input `c (m x_0 + s eps)` ([`tweedie::net_input_scale`]).
    let (m, s) = coefficients(process, t, x0)?;
    let c = per_row(process, t, x0, |m, s| tweedie::net_input_scale(param, m, s))?;
    let xt = (x0.broadcast_mul(&m)? + eps.broadcast_mul(&s)?)?.broadcast_mul(&c)?;
    let out = net.forward(&xt, &taus(process, param, t, x0)?, classes)?;
    // `weight (f - target_x0 x_0 - target_eps eps)` ([`tweedie::dsm_coefficients`]).
    let k = |f: fn(&tweedie::DsmCoefficients) -> f64| {
        per_row(process, t, x0, |m, s| f(&tweedie::dsm_coefficients(param, m, s)))
    };
    let target = (x0.broadcast_mul(&k(|c| c.target_x0)?)? + eps.broadcast_mul(&k(|c| c.target_eps)?)?)?;
    Ok((out - target)?.broadcast_mul(&k(|c| c.weight)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Mlp, MlpConfig};
    use crate::rng::{stream, Noise, Purpose};
    use candle_core::{DType, Device};

    #[test]
    fn masked_dsm_is_the_mean_squared_residual_over_observed_cells() {
        let (n, d) = (7, 3);
        let dev = Device::Cpu;
        let net = Mlp::new(MlpConfig::reference(d), 1, DType::F64, &dev).unwrap();
        let p = Process::ou(2.0, 5.0);
        let noise = Noise::new(2);
        let x0 = noise
            .normal_tensor(stream(Purpose::User, 0), n, d, DType::F64, &dev)
            .unwrap();
        let eps = noise
            .normal_tensor(stream(Purpose::User, 1), n, d, DType::F64, &dev)
            .unwrap();
        let t: Vec<f64> = noise
            .uniforms(stream(Purpose::User, 2), n)
            .iter()
            .map(|u| 0.01 + 4.0 * u)
            .collect();
        // All observed: the plain DSM loss.
        let ones = Tensor::ones((n, d), DType::F64, &dev).unwrap();
        let a = masked_dsm_loss(&net, &p, &x0, &t, &eps, None, &ones)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let b = dsm_loss(&net, &p, &x0, &t, &eps, None)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((a - b).abs() < 1e-12 * b, "{a} vs {b}");
        // A mask: the mean of the squared residuals of the kept cells, computed by hand.
        let keep: Vec<f64> = (0..n * d).map(|k| f64::from(u8::from(k % 3 != 1))).collect();
        let m = Tensor::from_vec(keep.clone(), (n, d), &dev).unwrap();
        let got = masked_dsm_loss(&net, &p, &x0, &t, &eps, None, &m)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let r: Vec<f64> = dsm_residual(&net, &p, &x0, &t, &eps, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = r.iter().zip(&keep).map(|(r, k)| k * r * r).sum::<f64>() / keep.iter().sum::<f64>();
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
    }
}
