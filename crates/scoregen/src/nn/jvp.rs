//! Explicit forward-mode tangent propagation through the score MLP, for sliced (Song et al.
//! 2019) and exact (Hyvärinen 2005) score matching.
//!
//! candle's second backward pass is wrong, so a loss that contains `∂s/∂x` must not be built
//! from `backward` twice. Here the Jacobian-vector product `(∂f/∂x) v` of the MLP
//! `f = [x, phi(t)] -> H -> ... -> d` is written with ordinary tensor ops: each layer carries
//! the pair `(h, dh)`,
//!
//! * linear `z = h W + b`: `dz = dh W` (the time features and the class embedding do not
//!   depend on `x`: their tangent is zero, so the first layer uses the first `d` rows of `W`);
//! * SiLU `a = z sigma(z)`: `da = silu'(z) dz`, `silu'(z) = sigma(z) (1 + z (1 - sigma(z)))`,
//!
//! so the first-order backward of candle through `(f, J v)` gives the exact parameter
//! gradient of any loss built on them. The sigmoid is `sigma(z) = (1 + tanh(z / 2)) / 2`,
//! whose derivative stays finite for any `z` (the form `1 / (1 + exp(-z))` gives `0 * inf`
//! in the backward pass for very negative `z`).
//!
//! The score follows from the output by Tweedie ([`crate::score::tweedie`]), linearly in the
//! output, so its JVP is (with `m = m(t)`, `s = s(t)` per row):
//! `eps`: `J_score v = -J_f v / s`; `x0`: `J_score v = (m J_f v - v) / s^2`; `score`: `J_f v`.

use candle_core::Tensor;

use super::mlp::Mlp;
use crate::{Error, Result};

/// `sigma(z) = (1 + tanh(z / 2)) / 2`, elementwise.
pub fn sigmoid(z: &Tensor) -> Result<Tensor> {
    Ok(z.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)?)
}

/// `silu'(z) = sigma(z) (1 + z (1 - sigma(z)))`, elementwise.
pub fn silu_prime(z: &Tensor) -> Result<Tensor> {
    let sg = sigmoid(z)?;
    let one_minus = sg.affine(-1.0, 1.0)?;
    Ok((&sg * (z * one_minus)?.affine(1.0, 1.0)?)?)
}

/// `silu''(z) = sigma'(z) (2 + z (1 - 2 sigma(z)))` with `sigma' = sigma (1 - sigma)`,
/// elementwise.
pub fn silu_second(z: &Tensor) -> Result<Tensor> {
    let sg = sigmoid(z)?;
    let dsg = (&sg * sg.affine(-1.0, 1.0)?)?;
    Ok((dsg * (z * sg.affine(-2.0, 1.0)?)?.affine(1.0, 2.0)?)?)
}

/// Tangents as `[k, n, d]` (a `[n, d]` tangent is `k = 1`), with whether they were rank 2.
pub(crate) fn tangents_3d(v: &Tensor, n: usize, d: usize) -> Result<(Tensor, bool)> {
    match v.dims() {
        [a, b] if *a == n && *b == d => Ok((v.unsqueeze(0)?, true)),
        [_, a, b] if *a == n && *b == d => Ok((v.clone(), false)),
        other => Err(Error::invalid(format!(
            "tangents of shape {other:?} for points of shape [{n}, {d}] (expected [{n}, {d}] or [k, {n}, {d}])"
        ))),
    }
}

/// `[k, n, c]` tangent times the `[c, h]` matrix `w`, as `[k, n, h]`.
pub(crate) fn tangent_matmul(dh: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (k, n, c) = dh.dims3()?;
    let h = w.dims2()?.1;
    Ok(dh.reshape((k * n, c))?.matmul(w)?.reshape((k, n, h))?)
}

/// The MLP's output `f(x)` (`[n, d]`) and the Jacobian-vector products `(∂f/∂x) v` for the
/// tangents `v` (`[n, d]`, or `[k, n, d]` for `k` tangents per point; the result has the
/// same shape as `v`), at normalised times `tau` (`[n, 1]`) and classes as in
/// [`Mlp::forward`]. Differentiable by candle's first-order backward in the parameters.
pub fn mlp_jvp(net: &Mlp, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d) = x.dims2()?;
    let (dx, flat) = tangents_3d(v, n, d)?;
    let cfg = &net.config;
    let arg = tau.broadcast_mul(net.freqs())?;
    let feats = Tensor::cat(&[x, &arg.sin()?, &arg.cos()?], 1)?;
    let w_in = net.var("in.w");
    let mut z = feats.matmul(w_in)?.broadcast_add(net.var("in.b"))?;
    if cfg.n_classes > 0 {
        let c = match classes {
            Some(c) => c.clone(),
            None => Tensor::full(cfg.n_classes as u32, n, x.device())?,
        };
        z = (z + net.var("class.emb").index_select(&c, 0)?)?;
    }
    let mut dz = tangent_matmul(&dx, &w_in.narrow(0, 0, d)?)?;
    let mut h = z.silu()?;
    let mut dh = dz.broadcast_mul(&silu_prime(&z)?)?;
    for i in 1..cfg.depth {
        let w = net.var(&format!("h{i}.w"));
        z = h.matmul(w)?.broadcast_add(net.var(&format!("h{i}.b")))?;
        dz = tangent_matmul(&dh, w)?;
        h = z.silu()?;
        dh = dz.broadcast_mul(&silu_prime(&z)?)?;
    }
    let w_out = net.var("out.w");
    let out = h.matmul(w_out)?.broadcast_add(net.var("out.b"))?;
    let dout = tangent_matmul(&dh, w_out)?;
    let dout = if flat { dout.squeeze(0)? } else { dout };
    Ok((out, dout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::score_matching::TangentScore;
    use crate::nn::MlpConfig;
    use crate::process::Process;
    use crate::rng::{stream, Noise, Purpose};
    use crate::score::Parametrisation;
    use candle_core::{DType, Device};

    fn tiny(param: Parametrisation, n_classes: usize) -> Mlp {
        let cfg = MlpConfig {
            dim: 3,
            hidden: 8,
            depth: 2,
            fourier: 4,
            n_classes,
            param,
        };
        Mlp::new(cfg, 3, DType::F64, &Device::Cpu).unwrap()
    }

    fn normals(i: u64, n: usize, d: usize) -> Tensor {
        Noise::new(11)
            .normal_tensor(stream(Purpose::User, i), n, d, DType::F64, &Device::Cpu)
            .unwrap()
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn silu_derivatives_match_finite_differences() {
        let z = Tensor::new(&[-30.0f64, -3.0, -0.4, 0.0, 0.7, 2.5, 30.0], &Device::Cpu).unwrap();
        let h = 1e-5;
        let fd = ((z.affine(1.0, h).unwrap().silu().unwrap() - z.affine(1.0, -h).unwrap().silu().unwrap()).unwrap())
            .affine(0.5 / h, 0.0)
            .unwrap();
        assert!(max_abs(&(silu_prime(&z).unwrap() - fd).unwrap()) < 1e-9);
        let fd2 = ((silu_prime(&z.affine(1.0, h).unwrap()).unwrap()
            - silu_prime(&z.affine(1.0, -h).unwrap()).unwrap())
        .unwrap())
        .affine(0.5 / h, 0.0)
        .unwrap();
        assert!(max_abs(&(silu_second(&z).unwrap() - fd2).unwrap()) < 1e-9);
    }

    /// `(∂s/∂x) v` against central differences `(s(x + h v) - s(x - h v)) / 2h`, for every
    /// parametrisation, with classes, and for a batch of `k = 2` tangents.
    #[test]
    fn score_jvp_matches_finite_differences() {
        let process = Process::ou(2.0, 5.0);
        let t = [0.05, 0.4, 1.3, 3.0];
        let x = normals(0, 4, 3);
        let v = normals(1, 4, 3);
        let classes = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu).unwrap();
        for param in [Parametrisation::Eps, Parametrisation::Score, Parametrisation::X0] {
            for n_classes in [0, 2] {
                let net = tiny(param, n_classes);
                let c = (n_classes > 0).then_some(&classes);
                let (s, jv) = net.score_jvp(&process, &t, &x, c, &v).unwrap();
                let h = 1e-5;
                let sp = net
                    .score_jvp(&process, &t, &(&x + v.affine(h, 0.0).unwrap()).unwrap(), c, &v)
                    .unwrap()
                    .0;
                let sm = net
                    .score_jvp(&process, &t, &(&x - v.affine(h, 0.0).unwrap()).unwrap(), c, &v)
                    .unwrap()
                    .0;
                let fd = (sp - sm).unwrap().affine(0.5 / h, 0.0).unwrap();
                let rel = max_abs(&(&jv - &fd).unwrap()) / max_abs(&fd);
                assert!(rel < 1e-6, "{param:?} classes {n_classes}: relative error {rel:e}");
                // The score itself agrees with the forward pass and Tweedie.
                let out = net
                    .forward(
                        &x,
                        &Tensor::from_vec(t.iter().map(|t| t / 5.0).collect::<Vec<_>>(), (4, 1), &Device::Cpu).unwrap(),
                        c,
                    )
                    .unwrap();
                let s0 = crate::score::tweedie::to_score(param, &process, 0.4, &x, &out)
                    .unwrap()
                    .narrow(0, 1, 1)
                    .unwrap();
                assert!(max_abs(&(s.narrow(0, 1, 1).unwrap() - s0).unwrap()) < 1e-12);
                // k tangents at once equal k single calls.
                let v2 = normals(2, 4, 3);
                let both = Tensor::stack(&[&v, &v2], 0).unwrap();
                let (_, jj) = net.score_jvp(&process, &t, &x, c, &both).unwrap();
                let (_, j2) = net.score_jvp(&process, &t, &x, c, &v2).unwrap();
                assert!(max_abs(&(jj.get(0).unwrap() - &jv).unwrap()) < 1e-14);
                assert!(max_abs(&(jj.get(1).unwrap() - j2).unwrap()) < 1e-14);
            }
        }
    }

    #[test]
    fn bad_tangent_shape_is_an_error() {
        let net = tiny(Parametrisation::Eps, 0);
        let x = normals(0, 4, 3);
        let e = net
            .score_jvp(&Process::ou(2.0, 5.0), &[0.1; 4], &x, None, &normals(1, 4, 2))
            .unwrap_err();
        assert!(e.to_string().contains("tangents of shape"), "{e}");
    }
}
