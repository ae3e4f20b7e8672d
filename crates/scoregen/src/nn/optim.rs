//! The one optimiser of the crate: AdamW (Loshchilov & Hutter 2019, Adam of Kingma & Ba
//! 2015 with decoupled weight decay), global-norm gradient clipping and an exponential
//! moving average (EMA) of the parameters. With gradient `g`, step `k >= 1`, clipping
//! threshold `c` and EMA decay `delta`:
//!
//! ```text
//! g'  = g min(1, c / (|g| + 1e-12))          (|g| the global norm over all tensors; c = 0: no clipping)
//! m   = beta_1 m + (1 - beta_1) g'
//! v   = beta_2 v + (1 - beta_2) g'^2
//! p  -= lr ( (m / (1 - beta_1^k)) / (sqrt(v / (1 - beta_2^k)) + eps) + lambda p )
//! ema = delta ema + (1 - delta) p
//! ```
//!
//! [`AdamWStep`] holds the hyper-parameters of one step. Two implementations of the same
//! formula: [`adamw_tensors`] on candle variables (the trainer's autograd path — the U-Net
//! and the SSM / ESM / NCSN losses — and the energy-model trainers of [`super::ebm`]), and
//! [`super::fused::adamw_ema`], one vectorised in-place pass over the fused MLP's flat
//! parameter buffer. The test `adamw_tensors_match_the_fused_pass` checks they agree.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

/// The hyper-parameters of one AdamW step ([`adamw_tensors`], [`super::fused::adamw_ema`]).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay `beta_1`.
    pub beta1: f64,
    /// Second-moment decay `beta_2`.
    pub beta2: f64,
    /// `epsilon` of the denominator.
    pub eps: f64,
    /// Decoupled weight decay `lambda`.
    pub weight_decay: f64,
    /// 1-based step number `k` (bias corrections `1 - beta^k`).
    pub step: i32,
    /// Global-norm clipping threshold (0: none).
    pub clip: f64,
    /// EMA decay `delta` of this step (unused without an EMA).
    pub ema_decay: f64,
}

/// Zero tensors shaped like `vars`: the initial Adam moments.
pub fn zeros_like(vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().zeros_like())
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// The gradients of `vars` in `grads` (from `loss.backward()`), detached; a variable the
/// loss does not depend on gets zeros.
pub fn gradients(vars: &[Var], grads: &GradStore) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .map(|g| g.detach())
                .map_or_else(|| v.as_tensor().zeros_like(), Ok)
        })
        .collect::<candle_core::Result<_>>()?)
}

/// One AdamW step (module docs) on `vars` with gradients `gs`, moments `m`, `v` and, when
/// given, the EMA copies `ema` (all updated in place); returns the squared global norm of
/// `gs` (summed in `f64`, tensor by tensor). A non-finite gradient norm is an
/// [`Error::Numerical`] naming `what`, before anything is updated. The moments and the EMA
/// are detached: gradients carry the autograd graph, and keeping it reachable from the
/// optimiser state would grow memory without bound.
pub fn adamw_tensors(
    vars: &[Var],
    gs: &[Tensor],
    m: &mut [Tensor],
    v: &mut [Tensor],
    mut ema: Option<&mut [Tensor]>,
    h: &AdamWStep,
    what: &str,
) -> Result<f64> {
    let n = vars.len();
    if gs.len() != n || m.len() != n || v.len() != n || ema.as_ref().is_some_and(|e| e.len() != n) {
        return Err(Error::invalid(format!(
            "{what}: optimiser state does not match the {n} parameters"
        )));
    }
    let mut norm2 = 0.0;
    for g in gs {
        norm2 += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    if !norm2.is_finite() {
        return Err(Error::Numerical(format!("{what}: gradient is not finite")));
    }
    let scale = if h.clip > 0.0 {
        (h.clip / (norm2.sqrt() + 1e-12)).min(1.0)
    } else {
        1.0
    };
    let (b1, b2) = (h.beta1, h.beta2);
    let (c1, c2) = (1.0 - b1.powi(h.step), 1.0 - b2.powi(h.step));
    for (i, var) in vars.iter().enumerate() {
        let g = gs[i].detach().affine(scale, 0.0)?;
        m[i] = (m[i].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?.detach();
        v[i] = (v[i].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?.detach();
        let mhat = m[i].affine(1.0 / c1, 0.0)?;
        let denom = v[i].affine(1.0 / c2, 0.0)?.sqrt()?.affine(1.0, h.eps)?;
        let p = var.as_tensor().detach();
        let mut step = mhat.div(&denom)?;
        if h.weight_decay != 0.0 {
            step = (step + p.affine(h.weight_decay, 0.0)?)?;
        }
        var.set(&(&p - step.affine(h.lr, 0.0)?)?)?;
        if let Some(e) = ema.as_deref_mut() {
            let d = h.ema_decay;
            e[i] = (e[i].affine(d, 0.0)? + var.as_tensor().detach().affine(1.0 - d, 0.0)?)?.detach();
        }
    }
    Ok(norm2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fused::adamw_ema;
    use crate::rng::{stream, Noise, Purpose};
    use candle_core::Device;

    #[test]
    fn adamw_tensors_match_the_fused_pass() {
        let noise = Noise::new(9);
        let n = 37;
        let draw = |j: u64| noise.normals(stream(Purpose::User, j), n, 1);
        let (p0, g, m0, e0) = (draw(0), draw(1), draw(2), draw(3));
        let v0: Vec<f64> = noise.uniforms(stream(Purpose::User, 4), n);
        let dev = Device::Cpu;
        let t = |x: &[f64]| Tensor::from_vec(x.to_vec(), n, &dev).unwrap();
        for (clip, wd, b1) in [(0.5, 0.01, 0.9), (0.0, 0.0, 0.0)] {
            let h = AdamWStep {
                lr: 1e-2,
                beta1: b1,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                step: 4,
                clip,
                ema_decay: 0.9,
            };
            let var = Var::from_tensor(&t(&p0)).unwrap();
            let (mut m, mut v, mut e) = (vec![t(&m0)], vec![t(&v0)], vec![t(&e0)]);
            let vars = [var.clone()];
            let n2 = adamw_tensors(&vars, &[t(&g)], &mut m, &mut v, Some(&mut e), &h, "test").unwrap();
            let (mut p, mut mf, mut vf, mut ef) = (p0.clone(), m0.clone(), v0.clone(), e0.clone());
            let norm = adamw_ema(&mut p, &g, &mut mf, &mut vf, &mut ef, &h, None);
            assert!((n2.sqrt() - norm).abs() < 1e-12 * norm);
            let got = |x: &Tensor| x.to_vec1::<f64>().unwrap();
            for (a, b) in [
                (got(var.as_tensor()), &p),
                (got(&m[0]), &mf),
                (got(&v[0]), &vf),
                (got(&e[0]), &ef),
            ] {
                for (x, y) in a.iter().zip(b.iter()) {
                    assert!((x - y).abs() <= 1e-13 * (1.0 + y.abs()), "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn a_non_finite_gradient_is_an_error_and_changes_nothing() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f64, 2.0], &dev).unwrap()).unwrap();
        let g = Tensor::new(&[f64::NAN, 0.0], &dev).unwrap();
        let vars = [var.clone()];
        let (mut m, mut v) = (zeros_like(&vars).unwrap(), zeros_like(&vars).unwrap());
        let h = AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            clip: 1.0,
            ema_decay: 0.0,
        };
        let err = adamw_tensors(&vars, &[g], &mut m, &mut v, None, &h, "unit").unwrap_err();
        assert!(err.to_string().contains("unit: gradient is not finite"), "{err}");
        assert_eq!(var.as_tensor().to_vec1::<f64>().unwrap(), vec![1.0, 2.0]);
    }
}
