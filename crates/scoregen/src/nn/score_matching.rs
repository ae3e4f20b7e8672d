//! Score-matching losses beyond plain DSM: sliced (SSM), exact (ESM) and NCSN's
//! noise-conditional DSM over a geometric sigma ladder, for any model whose score and
//! Jacobian-vector products are explicit tensor ops ([`TangentScore`]: the score MLP via
//! [`super::jvp`], the energy network via its Hessian-vector product).
//!
//! **Objectives** (per point, Hyvärinen 2005; Song et al. 2019):
//! * ESM: `tr(∂s/∂x) + 1/2 |s|^2`, the trace from `d` JVPs with the basis vectors;
//! * SSM: `v^T (∂s/∂x) v + 1/2 (v^T s)^2`, or the variance-reduced SSM-VR
//!   `v^T (∂s/∂x) v + 1/2 |s|^2`, with `E[v v^T] = I`, `v` Gaussian or Rademacher.
//!
//! By integration by parts both equal `1/2 E|s - grad log p|^2` up to a constant.
//!
//! **Noise-conditional losses** (what the trainer uses; like score_sde / NCSN): the objective
//! is evaluated on noised data `x_t = m(t) x_0 + s(t) eps` at per-row times `t`, for the law
//! `p_t` (whose score is what the network learns), weighted by `lambda(t) = s(t)^2` and
//! divided by `d`:
//! `L = mean_rows 2 s(t)^2 / d * objective(t, x_t)`.
//! With this scaling, `L` equals the DSM loss of [`super::loss`] in the score / eps
//! parametrisation (`mean |s(t) s_theta + eps|^2 / d`) **up to an additive constant**: the
//! three losses have the same minimiser and comparable values. Since `x_t` has a smooth
//! density for `t > 0`, integration by parts holds even when the data lie on a manifold.
//!
//! **NCSN** (Song & Ermon 2019): `sigma_1 > ... > sigma_L` geometric, a level `i` uniform per row,
//! loss `|sigma_i s_theta(x + sigma_i z, sigma_i) + z|^2` (weighting `lambda = sigma^2`).
//! For a VE process this is DSM at the ladder's times `t_i = t(sigma_i)`; for a VP process the
//! ladder is of `sigma(t) = s(t) / m(t)` (the VE-equivalent noise level) and the loss is
//! `|s(t_i) s_theta + eps|^2` at those times.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::energy::EnergyNet;
use super::jvp::mlp_jvp;
use super::loss::{coefficients, dsm_loss, masked_dsm_loss, taus};
use super::mlp::Mlp;
use super::network::Network;
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::score::{tweedie, Parametrisation};
use crate::{Error, Result};

/// A score model `s_theta(t, x)` whose JVPs `(∂s/∂x) v` are explicit tensor ops, so that
/// candle's first-order backward through them is exact.
pub trait TangentScore {
    /// The data dimension `d`.
    fn dim(&self) -> usize;

    /// The score at per-row times `t` (`n` values) of `x` (`[n, d]`).
    fn score_rows(&self, process: &Process, t: &[f64], x: &Tensor, classes: Option<&Tensor>) -> Result<Tensor>;

    /// The score and the JVPs for tangents `v` (`[n, d]` or `[k, n, d]`; the JVPs have
    /// `v`'s shape).
    fn score_jvp(
        &self,
        process: &Process,
        t: &[f64],
        x: &Tensor,
        classes: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)>;
}

/// The MLP as a [`TangentScore`]: the score `s_theta(t, x)` (its output converted by
/// Tweedie) and its JVPs `(∂s_theta/∂x) v`, with one time `t` per row and tangents as in
/// [`mlp_jvp`].
impl TangentScore for Mlp {
    fn dim(&self) -> usize {
        self.config.dim
    }

    fn score_rows(&self, process: &Process, t: &[f64], x: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        let param = self.config.param;
        let (a, b, c) = mlp_coefficients(process, param, t, x)?;
        let out = self.forward(&x.broadcast_mul(&c)?, &taus(process, param, t, x)?, classes)?;
        Ok((out.broadcast_mul(&a)? + x.broadcast_mul(&b)?)?)
    }

    /// With the network's input `c x`: `score = a f(c x) + b x` and
    /// `(∂score/∂x) v = a c J_f(c x) v + b v` ([`tweedie::score_coefficients`]).
    fn score_jvp(
        &self,
        process: &Process,
        t: &[f64],
        x: &Tensor,
        classes: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = x.dims2()?.0;
        if t.len() != n {
            return Err(Error::invalid(format!("{} times for {n} points", t.len())));
        }
        let param = self.config.param;
        let (a, b, c) = mlp_coefficients(process, param, t, x)?;
        let (out, jv) = mlp_jvp(
            self,
            &x.broadcast_mul(&c)?,
            &taus(process, param, t, x)?,
            classes,
            &v.broadcast_mul(&c)?,
        )?;
        let score = (out.broadcast_mul(&a)? + x.broadcast_mul(&b)?)?;
        let j = (jv.broadcast_mul(&a)? + v.broadcast_mul(&b)?)?;
        Ok((score, j))
    }
}

/// Per-row `[n, 1]` columns `(a, b, c)`: `score = a f + b x` ([`tweedie::score_coefficients`])
/// and the network's input scale `c` ([`tweedie::net_input_scale`]).
fn mlp_coefficients(
    process: &Process,
    param: Parametrisation,
    t: &[f64],
    like: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let n = t.len();
    let (mut a, mut b, mut c) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for &t in t {
        let (m, s) = (process.m(t), process.s(t));
        let (ai, bi) = tweedie::score_coefficients(param, m, s);
        a.push(ai);
        b.push(bi);
        c.push(tweedie::net_input_scale(param, m, s));
    }
    let col =
        |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, 1), like.device())?.to_dtype(like.dtype())?) };
    Ok((col(a)?, col(b)?, col(c)?))
}

/// The energy network's score `grad_x f(t / T, x)` (classes are not supported and ignored).
impl TangentScore for EnergyNet {
    fn dim(&self) -> usize {
        self.config.dim
    }

    fn score_rows(&self, process: &Process, t: &[f64], x: &Tensor, _classes: Option<&Tensor>) -> Result<Tensor> {
        // Energy networks take `t / T` (the time input of every parametrisation but EDM).
        Ok(self.grad(x, &taus(process, Parametrisation::Score, t, x)?)?.1)
    }

    fn score_jvp(
        &self,
        process: &Process,
        t: &[f64],
        x: &Tensor,
        _classes: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (_, g, hv) = self.grad_hvp(x, &taus(process, Parametrisation::Score, t, x)?, v)?;
        Ok((g, hv))
    }
}

/// The law of the SSM projection vectors `v` (`E[v v^T] = I`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// `v ~ N(0, I)`.
    Gaussian,
    /// Independent signs `±1`: the Hutchinson estimator of lowest variance
    /// (`Var v^T A v = 2 sum_{i != j} A_ij^2`, against `2 |A|_F^2` for Gaussian `v`).
    Rademacher,
}

impl Projection {
    /// `k` projections for each of `n` points in dimension `d`, `[k, n, d]`, from the
    /// stream `stream_id` of `noise` (point `i`'s vectors depend only on the stream and `i`'s
    /// position).
    #[allow(clippy::too_many_arguments)]
    pub fn draw(
        self,
        noise: &Noise,
        stream_id: u64,
        k: usize,
        n: usize,
        d: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let v: Vec<f64> = match self {
            Projection::Gaussian => noise.normals(stream_id, k * n, d),
            Projection::Rademacher => noise
                .uniforms(stream_id, k * n * d)
                .iter()
                .map(|&u| if u <= 0.5 { -1.0 } else { 1.0 })
                .collect(),
        };
        Ok(Tensor::from_vec(v, (k, n, d), device)?.to_dtype(dtype)?)
    }
}

/// Which SSM estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsmEstimator {
    /// `v^T J v + 1/2 (v^T s)^2` (Song et al. 2019, eq. 8).
    Plain,
    /// `v^T J v + 1/2 |s|^2` (SSM-VR: the second term in closed form, lower variance).
    VarianceReduced,
}

/// Per-row sliced objective (`[n]`) from the score `s` (`[n, d]`), projections `v` and
/// JVPs `jv` (both `[k, n, d]`), averaged over the `k` projections.
pub fn ssm_objective(s: &Tensor, v: &Tensor, jv: &Tensor, estimator: SsmEstimator) -> Result<Tensor> {
    let vjv = (v * jv)?.sum(2)?.mean(0)?;
    let quad = match estimator {
        SsmEstimator::Plain => v.broadcast_mul(s)?.sum(2)?.sqr()?.mean(0)?,
        SsmEstimator::VarianceReduced => s.sqr()?.sum(1)?,
    };
    Ok((vjv + quad.affine(0.5, 0.0)?)?)
}

/// `d` basis tangents `e_j` for `n` points, `[d, n, d]`.
pub fn basis_tangents(n: usize, d: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut e = vec![0.0f64; d * n * d];
    for j in 0..d {
        for i in 0..n {
            e[(j * n + i) * d + j] = 1.0;
        }
    }
    Ok(Tensor::from_vec(e, (d, n, d), device)?.to_dtype(dtype)?)
}

/// Per-row exact objective `tr(∂s/∂x) + 1/2 |s|^2` (`[n]`) from the score and the JVPs
/// `jv` with the basis tangents `e` of [`basis_tangents`].
pub fn esm_objective(s: &Tensor, e: &Tensor, jv: &Tensor) -> Result<Tensor> {
    let tr = (e * jv)?.sum(2)?.sum(0)?;
    Ok((tr + s.sqr()?.sum(1)?.affine(0.5, 0.0)?)?)
}

/// Noised points `x_t = m(t) x0 + s(t) eps` and the per-row weights `2 s(t)^2 / d`.
fn noised(process: &Process, x0: &Tensor, t: &[f64], eps: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d) = x0.dims2()?;
    if t.len() != n || eps.dims() != x0.dims() {
        return Err(Error::invalid(format!(
            "{} times and noise of shape {:?} for data of shape [{n}, {d}]",
            t.len(),
            eps.dims()
        )));
    }
    let (m, s) = coefficients(process, t, x0)?;
    let xt = (x0.broadcast_mul(&m)? + eps.broadcast_mul(&s)?)?;
    let w = s.sqr()?.affine(2.0 / d as f64, 0.0)?.squeeze(1)?;
    Ok((xt, w))
}

/// Noise-conditional sliced score matching: `mean_rows 2 s(t)^2 / d * [v^T J v + 1/2 (v^T s)^2]`
/// (or SSM-VR) at `x_t = m(t) x0 + s(t) eps`, with projections `v` (`[n, d]` or `[k, n, d]`).
#[allow(clippy::too_many_arguments)]
pub fn ssm_loss(
    model: &dyn TangentScore,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    v: &Tensor,
    estimator: SsmEstimator,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    let (xt, w) = noised(process, x0, t, eps)?;
    let v = if v.rank() == 2 { v.unsqueeze(0)? } else { v.clone() };
    let (s, jv) = model.score_jvp(process, t, &xt, classes, &v)?;
    Ok((ssm_objective(&s, &v, &jv, estimator)? * w)?.mean_all()?)
}

/// Noise-conditional exact score matching: `mean_rows 2 s(t)^2 / d * [tr(∂s/∂x) + 1/2 |s|^2]`
/// at `x_t = m(t) x0 + s(t) eps`; the trace costs `d` JVPs (for low dimensions).
pub fn esm_loss(
    model: &dyn TangentScore,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    let (xt, w) = noised(process, x0, t, eps)?;
    let (n, d) = x0.dims2()?;
    let e = basis_tangents(n, d, x0.dtype(), x0.device())?;
    let (s, jv) = model.score_jvp(process, t, &xt, classes, &e)?;
    Ok((esm_objective(&s, &e, &jv)? * w)?.mean_all()?)
}

/// DSM on the score of any [`TangentScore`]: `mean |s(t) s_theta(t, x_t) + eps|^2 / d`
/// (NCSN's `lambda = sigma^2` weighting; equal to [`dsm_loss`] in the score and eps
/// parametrisations).
pub fn dsm_score_loss(
    model: &dyn TangentScore,
    process: &Process,
    x0: &Tensor,
    t: &[f64],
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    let (xt, _) = noised(process, x0, t, eps)?;
    let (_, s) = coefficients(process, t, x0)?;
    let sc = model.score_rows(process, t, &xt, classes)?;
    Ok((sc.broadcast_mul(&s)? + eps)?.sqr()?.mean_all()?)
}

/// A geometric noise ladder `sigma_1 > ... > sigma_L` (NCSN, Song & Ermon 2019:
/// `sigma_i / sigma_{i+1} = const > 1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigmaLadder {
    sigmas: Vec<f64>,
}

impl SigmaLadder {
    /// `levels >= 2` sigmas from `sigma_max` down to `sigma_min`, geometric.
    pub fn geometric(sigma_max: f64, sigma_min: f64, levels: usize) -> Result<Self> {
        if !(sigma_min.is_finite() && sigma_max.is_finite() && 0.0 < sigma_min && sigma_min < sigma_max) || levels < 2 {
            return Err(Error::invalid(format!(
                "sigma ladder: need 0 < sigma_min < sigma_max and >= 2 levels, got {sigma_min}, {sigma_max}, {levels}"
            )));
        }
        let r = (sigma_min / sigma_max).ln() / (levels - 1) as f64;
        Ok(SigmaLadder {
            sigmas: (0..levels).map(|i| sigma_max * (r * i as f64).exp()).collect(),
        })
    }

    /// The ladder of a process's noise-to-signal ratio `sigma(t)` from `sigma(T)` down to
    /// `sigma(t_min)` (for VE, `s(t)` at `levels` times uniform on `[t_min, 1]`).
    pub fn for_process(process: &Process, t_min: f64, levels: usize) -> Result<Self> {
        SigmaLadder::geometric(process.sigma(process.t_max()), process.sigma(t_min), levels)
    }

    /// The sigmas, largest first.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Level indices for uniforms `u` in `(0, 1]`: `i = floor(u L)` (uniform on `0..L`).
    pub fn levels_of(&self, u: &[f64]) -> Vec<usize> {
        let l = self.sigmas.len();
        u.iter().map(|u| ((u * l as f64) as usize).min(l - 1)).collect()
    }

    /// The process times of the levels `idx`: `t_i = t(sigma_i)`.
    pub fn times(&self, process: &Process, idx: &[usize]) -> Vec<f64> {
        idx.iter().map(|&i| process.t_of_sigma(self.sigmas[i])).collect()
    }
}

/// NCSN's loss: DSM at the ladder levels `idx` (one per row), `mean |s(t_i) s_theta(t_i,
/// x_{t_i}) + eps|^2 / d` with `x_{t_i} = m(t_i) x0 + s(t_i) eps` (for VE: `x0 + sigma_i z`,
/// Song & Ermon 2019's `|sigma_i s_theta(x + sigma_i z, sigma_i) + z|^2`).
pub fn ncsn_loss(
    model: &dyn TangentScore,
    process: &Process,
    ladder: &SigmaLadder,
    x0: &Tensor,
    idx: &[usize],
    eps: &Tensor,
    classes: Option<&Tensor>,
) -> Result<Tensor> {
    if let Some(bad) = idx.iter().find(|&&i| i >= ladder.sigmas.len()) {
        return Err(Error::invalid(format!(
            "level {bad} out of range for a ladder of {}",
            ladder.sigmas.len()
        )));
    }
    dsm_score_loss(model, process, x0, &ladder.times(process, idx), eps, classes)
}

/// The loss of [`super::train()`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Denoising score matching in the network's parametrisation ([`dsm_loss`]).
    #[default]
    Dsm,
    /// Noise-conditional SSM-VR with one Rademacher projection per point ([`ssm_loss`]).
    Ssm,
    /// Noise-conditional exact score matching ([`esm_loss`]; `d` JVPs a step).
    Esm,
    /// NCSN: DSM over [`NCSN_LEVELS`] geometric levels of the process ([`ncsn_loss`],
    /// [`SigmaLadder::for_process`] between `t_min` and `T`).
    Ncsn,
}

/// Number of noise levels of the trainer's [`Loss::Ncsn`] (NCSN's CIFAR-10 setting).
pub const NCSN_LEVELS: usize = 10;

impl std::str::FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dsm" => Ok(Loss::Dsm),
            "ssm" => Ok(Loss::Ssm),
            "esm" => Ok(Loss::Esm),
            "ncsn" => Ok(Loss::Ncsn),
            _ => Err(Error::invalid(format!(
                "unknown loss '{s}' (expected dsm, ssm, esm, ncsn)"
            ))),
        }
    }
}

/// One mini-batch for [`Loss::eval`].
pub struct LossBatch<'a> {
    /// Clean data `[n, d]`.
    pub x0: &'a Tensor,
    /// Times (ignored by [`Loss::Ncsn`], which draws ladder levels).
    pub t: &'a [f64],
    /// Noise `[n, d]`.
    pub eps: &'a Tensor,
    /// Classes, if any.
    pub classes: Option<&'a Tensor>,
    /// `[n, d]` 1/0 weights of the observed cells of a table with missing values (DSM only,
    /// [`masked_dsm_loss`]); `None`: every cell counts.
    pub observed: Option<&'a Tensor>,
    /// The trainer's `t_min` (the low end of the NCSN ladder).
    pub t_min: f64,
    /// The source of the loss's own draws (SSM projections, NCSN levels) ...
    pub noise: &'a Noise,
    /// ... from the stream `(Purpose::Train, 2^43 + index)`.
    pub index: u64,
}

impl Loss {
    /// The loss of `net` on `batch`.
    /// Sliced, exact and NCSN score matching need the explicit JVPs of the MLP; the U-Net
    /// trains by DSM only.
    pub fn eval(self, network: &Network, process: &Process, b: &LossBatch) -> Result<Tensor> {
        let (n, d) = b.x0.dims2()?;
        let id = stream(Purpose::Train, (1 << 43) + b.index);
        if self == Loss::Dsm {
            return match b.observed {
                Some(m) => masked_dsm_loss(network, process, b.x0, b.t, b.eps, b.classes, m),
                None => dsm_loss(network, process, b.x0, b.t, b.eps, b.classes),
            };
        }
        if b.observed.is_some() {
            return Err(Error::invalid("only the dsm loss can be restricted to observed cells"));
        }
        let net: &Mlp = network
            .as_mlp()
            .ok_or_else(|| Error::invalid("losses ssm, esm and ncsn need the MLP network (the U-Net trains by dsm)"))?;
        match self {
            Loss::Dsm => unreachable!("handled above"),
            Loss::Ssm => {
                let v = Projection::Rademacher.draw(b.noise, id, 1, n, d, b.x0.dtype(), b.x0.device())?;
                ssm_loss(
                    net,
                    process,
                    b.x0,
                    b.t,
                    b.eps,
                    &v,
                    SsmEstimator::VarianceReduced,
                    b.classes,
                )
            }
            Loss::Esm => esm_loss(net, process, b.x0, b.t, b.eps, b.classes),
            Loss::Ncsn => {
                let ladder = SigmaLadder::for_process(process, b.t_min, NCSN_LEVELS)?;
                let idx = ladder.levels_of(&b.noise.uniforms(id, n));
                ncsn_loss(net, process, &ladder, b.x0, &idx, b.eps, b.classes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::energy::EnergyConfig;
    use crate::nn::MlpConfig;
    use crate::score::Parametrisation;
    use candle_core::Var;

    fn normals(i: u64, n: usize, d: usize) -> Tensor {
        Noise::new(17)
            .normal_tensor(stream(Purpose::User, i), n, d, DType::F64, &Device::Cpu)
            .unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f64>().unwrap()
    }

    /// candle's backward of `loss` against central differences in a few entries of every
    /// parameter tensor.
    fn check_param_grad(vars: &[Var], loss: &dyn Fn() -> Tensor, what: &str) {
        let l = loss();
        let grads = l.backward().unwrap();
        let h = 1e-5;
        for (vi, var) in vars.iter().enumerate() {
            // No gradient: the loss does not depend on it (the energy's output bias).
            let g: Vec<f64> = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
                None => vec![0.0; var.as_tensor().elem_count()],
            };
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().shape().clone();
            let gmax = g.iter().fold(0f64, |a, b| a.max(b.abs()));
            for &j in [0, base.len() / 2, base.len() - 1].iter() {
                let set = |delta: f64| {
                    let mut p = base.clone();
                    p[j] += delta;
                    var.set(&Tensor::from_vec(p, shape.clone(), &Device::Cpu).unwrap())
                        .unwrap();
                };
                set(h);
                let lp = scalar(&loss());
                set(-h);
                let lm = scalar(&loss());
                set(0.0);
                let fd = (lp - lm) / (2.0 * h);
                let err = (g[j] - fd).abs() / (fd.abs().max(gmax).max(1e-8));
                assert!(
                    err < 1e-6,
                    "{what}: parameter {vi} entry {j}: backward {} vs FD {fd} ({err:e})",
                    g[j]
                );
            }
        }
    }

    #[test]
    fn loss_parameter_gradients_match_finite_differences() {
        let process = Process::ou(2.0, 5.0);
        let (n, d) = (5, 3);
        let x0 = normals(0, n, d);
        let eps = normals(1, n, d);
        let t = [0.02, 0.3, 0.9, 2.0, 4.0];
        let noise = Noise::new(3);
        let vg = Projection::Gaussian
            .draw(&noise, 1, 2, n, d, DType::F64, &Device::Cpu)
            .unwrap();
        let vr = Projection::Rademacher
            .draw(&noise, 2, 1, n, d, DType::F64, &Device::Cpu)
            .unwrap();
        let ladder = SigmaLadder::for_process(&process, 1e-3, 4).unwrap();
        let idx = [0, 1, 2, 3, 1];
        for param in [Parametrisation::Eps, Parametrisation::Score, Parametrisation::X0] {
            let cfg = MlpConfig {
                dim: d,
                hidden: 8,
                depth: 2,
                fourier: 4,
                n_classes: 0,
                param,
            };
            let net = Mlp::new(cfg, 4, DType::F64, &Device::Cpu).unwrap();
            let vars = net.vars().to_vec();
            check_param_grad(
                &vars,
                &|| ssm_loss(&net, &process, &x0, &t, &eps, &vg, SsmEstimator::Plain, None).unwrap(),
                &format!("ssm {param:?}"),
            );
            check_param_grad(
                &vars,
                &|| ssm_loss(&net, &process, &x0, &t, &eps, &vr, SsmEstimator::VarianceReduced, None).unwrap(),
                &format!("ssm-vr {param:?}"),
            );
            check_param_grad(
                &vars,
                &|| esm_loss(&net, &process, &x0, &t, &eps, None).unwrap(),
                &format!("esm {param:?}"),
            );
            check_param_grad(
                &vars,
                &|| ncsn_loss(&net, &process, &ladder, &x0, &idx, &eps, None).unwrap(),
                &format!("ncsn {param:?}"),
            );
        }
        // The energy network: DSM on grad_x f, SSM and ESM on its Hessian-vector products.
        let ecfg = EnergyConfig {
            dim: d,
            hidden: 8,
            depth: 2,
            fourier: 4,
        };
        let net = EnergyNet::new(ecfg, 6, DType::F64, &Device::Cpu).unwrap();
        let vars = net.vars().to_vec();
        check_param_grad(
            &vars,
            &|| dsm_score_loss(&net, &process, &x0, &t, &eps, None).unwrap(),
            "energy dsm",
        );
        check_param_grad(
            &vars,
            &|| ssm_loss(&net, &process, &x0, &t, &eps, &vg, SsmEstimator::Plain, None).unwrap(),
            "energy ssm",
        );
        check_param_grad(
            &vars,
            &|| esm_loss(&net, &process, &x0, &t, &eps, None).unwrap(),
            "energy esm",
        );
    }

    /// On the exact score of a Gaussian, `E[SSM] = E[ESM] = DSM - const`: check the
    /// identities `E_v[SSM] = ESM` (Hutchinson) exactly in expectation, via all `2^d`
    /// Rademacher sign vectors for the variance-reduced form.
    #[test]
    fn sliced_objective_averages_to_the_exact_one() {
        let d = 3;
        let cfg = MlpConfig {
            dim: d,
            hidden: 8,
            depth: 2,
            fourier: 4,
            n_classes: 0,
            param: Parametrisation::Eps,
        };
        let net = Mlp::new(cfg, 4, DType::F64, &Device::Cpu).unwrap();
        let process = Process::ou(2.0, 5.0);
        let (n, x0, eps, t) = (4, normals(0, 4, d), normals(1, 4, d), [0.1, 0.5, 1.0, 2.0]);
        let mut signs = vec![];
        for k in 0..(1 << d) {
            for _ in 0..n {
                for j in 0..d {
                    signs.push(if (k >> j) & 1 == 1 { 1.0 } else { -1.0 });
                }
            }
        }
        let v = Tensor::from_vec(signs, (1 << d, n, d), &Device::Cpu).unwrap();
        let ssm = scalar(&ssm_loss(&net, &process, &x0, &t, &eps, &v, SsmEstimator::VarianceReduced, None).unwrap());
        let esm = scalar(&esm_loss(&net, &process, &x0, &t, &eps, None).unwrap());
        assert!((ssm - esm).abs() < 1e-12 * esm.abs().max(1.0), "{ssm} vs {esm}");
    }

    /// The MLP's score and JVPs as a [`TangentScore`] against central differences of the score
    /// and against the sampler's [`crate::nn::LearnedScore`], for every parametrisation, on VE
    /// (where EDM's input scale is not 1) and OU.
    #[test]
    fn tangent_score_matches_differences_and_the_learned_score() {
        use crate::score::Score;
        let d = 3;
        let x = normals(0, 4, d);
        let v = normals(1, 4, d);
        for p in [Process::ve(0.01, 20.0), Process::ou(2.0, 5.0)] {
            let t: Vec<f64> = [0.01, 0.2, 0.5, 0.9].iter().map(|u| u * p.t_max()).collect();
            for param in [
                Parametrisation::Eps,
                Parametrisation::Score,
                Parametrisation::X0,
                Parametrisation::Edm,
            ] {
                let cfg = MlpConfig {
                    dim: d,
                    hidden: 8,
                    depth: 2,
                    fourier: 4,
                    n_classes: 0,
                    param,
                };
                let net = Mlp::new(cfg.clone(), 4, DType::F64, &Device::Cpu).unwrap();
                let (sc, jv) = net.score_jvp(&p, &t, &x, None, &v).unwrap();
                let h = 1e-5;
                let at = |e: f64| {
                    net.score_rows(&p, &t, &(&x + (&v * e).unwrap()).unwrap(), None)
                        .unwrap()
                };
                let fd = ((at(h) - at(-h)).unwrap() / (2.0 * h)).unwrap();
                let err = |a: &Tensor, b: &Tensor| -> f64 {
                    let scale = scalar(&b.abs().unwrap().max_all().unwrap()).max(1.0);
                    scalar(&(a - b).unwrap().abs().unwrap().max_all().unwrap()) / scale
                };
                assert!(err(&jv, &fd) < 1e-6, "{param:?} {p:?}: jvp {}", err(&jv, &fd));
                // Row by row, the sampler's score at the same time.
                // The same weights (same seed).
                let twin = Mlp::new(cfg, 4, DType::F64, &Device::Cpu).unwrap();
                let learned = crate::nn::LearnedScore::new(twin, p.clone()).without_engine();
                for (i, &ti) in t.iter().enumerate() {
                    let xi = x.narrow(0, i, 1).unwrap();
                    let want = learned.score(ti, &xi).unwrap();
                    let e = err(&sc.narrow(0, i, 1).unwrap(), &want);
                    assert!(e < 1e-12, "{param:?} {p:?} t={ti}: score {e}");
                }
            }
        }
    }

    #[test]
    fn ladder_and_loss_names() {
        let l = SigmaLadder::geometric(10.0, 0.01, 4).unwrap();
        let s = l.sigmas();
        assert!((s[0] - 10.0).abs() < 1e-12 && (s[3] - 0.01).abs() < 1e-12);
        assert!((s[0] / s[1] - s[1] / s[2]).abs() < 1e-9);
        assert_eq!(l.levels_of(&[1e-9, 0.26, 0.5, 1.0]), vec![0, 1, 2, 3]);
        let ve = Process::ve(0.01, 10.0);
        let tt = l.times(&ve, &[0, 3]);
        assert!((tt[0] - 1.0).abs() < 1e-12 && tt[1].abs() < 1e-12);
        assert!(SigmaLadder::geometric(0.1, 1.0, 4).is_err());
        assert!(SigmaLadder::geometric(1.0, 0.1, 1).is_err());
        assert_eq!("ncsn".parse::<Loss>().unwrap(), Loss::Ncsn);
        assert!("nope".parse::<Loss>().unwrap_err().to_string().contains("expected dsm"));
        assert_eq!(serde_json::to_string(&Loss::Ssm).unwrap(), "\"ssm\"");
    }
}
