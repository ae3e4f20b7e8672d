//! A trained network as a [`Score`]: the output is converted to the score by Tweedie
//! ([`crate::score::tweedie`]), and classifier-free guidance combines the conditional and
//! null-class scores, `score = (1 + w) score(x | c) - w score(x)` (equivalently in eps).
//!
//! The network works on *normalised* data `z = (x - mean) / std`; the [`Normalisation`] is
//! stored with the model and [`Normalisation::denormalise`] maps samples back.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::fused::{FusedMlp, Real};
use super::network::{Network, ScoreNet};
use crate::data::column_mean_sd;
use crate::process::Process;
use crate::score::{tweedie, Score};
use crate::{Error, Result};

/// Per-coordinate affine normalisation `z = (x - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Per-coordinate means.
    pub mean: Vec<f64>,
    /// Per-coordinate standard deviations (> 0).
    pub std: Vec<f64>,
}

impl Normalisation {
    /// The mean and (unbiased) standard deviation of each column of `x` (`[n, d]`), by
    /// [`column_mean_sd`]; a constant column gets `std = 1`.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let (n, d) = x.dims2()?;
        if n < 2 || d == 0 {
            return Err(Error::invalid("need at least 2 rows and 1 column of data"));
        }
        let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let (mean, std) = column_mean_sd(&v, d, 1);
        Ok(Normalisation { mean, std })
    }

    /// One mean and one standard deviation over all entries of `x` (`[n, d]`), repeated for
    /// every coordinate: `z = (x - mean) / std` with pooled statistics. Used for images,
    /// where per-pixel statistics would blow up near-constant border pixels and distort
    /// the spatial structure a convolutional network relies on.
    pub fn fit_pooled(x: &Tensor) -> Result<Self> {
        let (n, d) = x.dims2()?;
        if n < 2 {
            return Err(Error::invalid("need at least 2 rows of data"));
        }
        let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let (mean, std) = column_mean_sd(&v, 1, 1);
        Ok(Normalisation {
            mean: vec![mean[0]; d],
            std: vec![std[0]; d],
        })
    }

    fn tensors(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = self.mean.len();
        let m = Tensor::from_vec(self.mean.clone(), (1, d), like.device())?.to_dtype(like.dtype())?;
        let s = Tensor::from_vec(self.std.clone(), (1, d), like.device())?.to_dtype(like.dtype())?;
        Ok((m, s))
    }

    /// `(x - mean) / std`.
    pub fn normalise(&self, x: &Tensor) -> Result<Tensor> {
        let (m, s) = self.tensors(x)?;
        Ok(x.broadcast_sub(&m)?.broadcast_div(&s)?)
    }

    /// `z std + mean`.
    pub fn denormalise(&self, z: &Tensor) -> Result<Tensor> {
        let (m, s) = self.tensors(z)?;
        Ok(z.broadcast_mul(&s)?.broadcast_add(&m)?)
    }
}

/// A trained network with its process, as a [`Score`] in normalised coordinates.
///
/// An MLP is evaluated by the fused engine ([`super::fused`]), in the network's dtype (`f64`
/// for an `f64` network, else `f32`), batched over rows in parallel chunks; its input
/// gradients ([`Score::denoise_vjp`]) by the engine's explicit backward pass. A U-Net goes
/// through candle (and its autograd for the input gradients); so does an MLP after
/// [`LearnedScore::without_engine`] (the reference path). The engine copies the MLP's
/// parameters when the score is built: setting the network's `Var`s afterwards is not seen.
pub struct LearnedScore {
    net: Network,
    process: Process,
    class: Option<u32>,
    guidance: f64,
    engine: Option<Engine>,
}

/// The fused copy of an MLP's parameters, in the network's precision.
enum Engine {
    F32(FusedMlp<f32>),
    F64(FusedMlp<f64>),
}

impl Engine {
    fn of(net: &Network) -> Option<Self> {
        let mlp = net.as_mlp()?;
        // The fused engine runs on the host; a network on a GPU stays on candle's backend.
        if !mlp.vars().first()?.device().is_cpu() {
            return None;
        }
        match mlp.vars().first()?.dtype() {
            DType::F64 => FusedMlp::from_mlp(mlp).ok().map(Engine::F64),
            _ => FusedMlp::from_mlp(mlp).ok().map(Engine::F32),
        }
    }
}

impl LearnedScore {
    /// The unconditional score of `net` (the null class if the network has classes).
    pub fn new(net: impl Into<Network>, process: Process) -> Self {
        let net = net.into();
        LearnedScore {
            engine: Engine::of(&net),
            net,
            process,
            class: None,
            guidance: 0.0,
        }
    }

    /// The same score evaluated through candle's ops and autograd instead of the fused
    /// engine: the reference implementation, for tests and comparisons.
    pub fn without_engine(mut self) -> Self {
        self.engine = None;
        self
    }

    /// The network calls that make up the score: `(class, weight)` with weights summing to
    /// 1 (`(1 + w) s(x | c) - w s(x)` under guidance; `None` is the null class).
    fn terms(&self) -> Vec<(Option<u32>, f64)> {
        match self.class {
            None => vec![(None, 1.0)],
            Some(c) if self.guidance == 0.0 => vec![(Some(c), 1.0)],
            Some(c) => vec![(Some(c), 1.0 + self.guidance), (None, -self.guidance)],
        }
    }

    /// The score through the engine (`v = None`), or the denoiser and its VJP
    /// `(x0_hat, (d x0_hat / d x)^T v)`: with `score = sum_c g_c (a f_c + b x)`,
    /// `x0_hat = (x + s^2 score) / m` and
    /// `(d x0_hat / d x)^T v = (1 + s^2 b) v / m + sum_c J_{f_c}^T (g_c s^2 a v / m)`.
    fn engine_eval<T: Real>(
        &self,
        f: &FusedMlp<T>,
        t: f64,
        x: &Tensor,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let xv = T::tensor_values(x)?;
        let vv = v.map(T::tensor_values).transpose()?;
        let param = self.net.param();
        let tau = vec![T::from_f64(tweedie::net_time(param, &self.process, t)); n];
        let (m, s) = (self.process.m(t), self.process.s(t));
        let (a, b) = tweedie::score_coefficients(param, m, s);
        // The network sees `c x` (EDM's `c_in`; 1 otherwise), so its input VJP carries `c`.
        let c = tweedie::net_input_scale(param, m, s);
        // No copy unless the input is scaled (EDM off a VP process).
        let xin: std::borrow::Cow<[T]> = if c == 1.0 {
            std::borrow::Cow::Borrowed(&xv)
        } else {
            let ct = T::from_f64(c);
            std::borrow::Cow::Owned(xv.iter().map(|&x| ct * x).collect())
        };
        let mut score = vec![T::ZERO; n * d];
        let mut vjp = vv.as_ref().map(|_| vec![T::ZERO; n * d]);
        let (mut out, mut dx, mut u) = (vec![T::ZERO; n * d], vec![T::ZERO; n * d], vec![]);
        for (class, g) in self.terms() {
            let classes = class.map(|c| vec![c; n]);
            match (&vv, vjp.as_mut()) {
                (Some(vv), Some(acc)) => {
                    let k = T::from_f64(g * s * s * a * c / m);
                    u.clear();
                    u.extend(vv.iter().map(|&v| k * v));
                    f.vjp_input(&xin, &tau, classes.as_deref(), &u, &mut out, &mut dx)?;
                    for (acc, &dx) in acc.iter_mut().zip(&dx) {
                        *acc += dx;
                    }
                }
                _ => f.forward(&xin, &tau, classes.as_deref(), &mut out)?,
            }
            let (ga, gb) = (T::from_f64(g * a), T::from_f64(g * b));
            for ((sc, &o), &x) in score.iter_mut().zip(&out).zip(&xv) {
                *sc += ga * o + gb * x;
            }
        }
        let tensor =
            |v: Vec<T>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, d), x.device())?.to_dtype(x.dtype())?) };
        match (vv, vjp) {
            (Some(vv), Some(mut acc)) => {
                let (ss, im) = (T::from_f64(s * s), T::from_f64(1.0 / m));
                let kv = T::from_f64((1.0 + s * s * b) / m);
                for (acc, &v) in acc.iter_mut().zip(&vv) {
                    *acc += kv * v;
                }
                for (sc, &x) in score.iter_mut().zip(&xv) {
                    *sc = (x + ss * *sc) * im;
                }
                Ok((tensor(score)?, Some(tensor(acc)?)))
            }
            _ => Ok((tensor(score)?, None)),
        }
    }

    /// The score given class `class` with classifier-free guidance weight `w >= 0`.
    pub fn conditional(mut self, class: u32, w: f64) -> Result<Self> {
        let k = self.net.n_classes();
        if k == 0 {
            return Err(Error::invalid("this model was trained without classes"));
        }
        if class as usize >= k {
            return Err(Error::invalid(format!(
                "class {class} out of range (the model has {k} classes)"
            )));
        }
        if !(w.is_finite() && w >= 0.0) {
            return Err(Error::invalid(format!("guidance weight must be >= 0, got {w}")));
        }
        self.class = Some(class);
        self.guidance = w;
        Ok(self)
    }

    /// The network.
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// The device the network's weights live on.
    fn device(&self) -> &Device {
        self.net.vars()[0].device()
    }

    fn raw_score(&self, t: f64, x: &Tensor, class: Option<u32>) -> Result<Tensor> {
        let n = x.dims()[0];
        let dtype = self.net.vars()[0].dtype();
        let xin = x.to_dtype(dtype)?;
        let param = self.net.param();
        let c = tweedie::net_input_scale(param, self.process.m(t), self.process.s(t));
        let tau = Tensor::full(tweedie::net_time(param, &self.process, t), (n, 1), x.device())?.to_dtype(dtype)?;
        let classes = match class {
            Some(c) => Some(Tensor::full(c, n, x.device())?),
            None => None,
        };
        let scaled = if c == 1.0 { xin.clone() } else { xin.affine(c, 0.0)? };
        let out = self.net.forward(&scaled, &tau, classes.as_ref())?;
        tweedie::to_score(param, &self.process, t, &xin, &out)
    }
}

impl Score for LearnedScore {
    fn dim(&self) -> usize {
        self.net.dim()
    }

    fn process(&self) -> &Process {
        &self.process
    }

    /// Detached: the parameters are `Var`s, so an attached output would carry the autograd
    /// graph, and a sampler feeding it back step after step would keep every step's graph
    /// alive (memory growing without bound).
    fn score(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        match &self.engine {
            Some(Engine::F32(f)) => Ok(self.engine_eval(f, t, x, None)?.0),
            Some(Engine::F64(f)) => Ok(self.engine_eval(f, t, x, None)?.0),
            // On the network's device, back to the caller's.
            None => Ok(self
                .attached_score(t, &x.to_device(self.device())?)?
                .detach()
                .to_device(x.device())?),
        }
    }

    /// Through the engine's backward pass, else through the attached score, so that candle's
    /// backward reaches `x`.
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if v.dims() != x.dims() {
            return Err(Error::invalid(format!(
                "denoise_vjp: v of shape {:?} for x of shape {:?}",
                v.dims(),
                x.dims()
            )));
        }
        let done = match &self.engine {
            Some(Engine::F32(f)) => Some(self.engine_eval(f, t, x, Some(v))?),
            Some(Engine::F64(f)) => Some(self.engine_eval(f, t, x, Some(v))?),
            None => None,
        };
        if let Some((x0, Some(g))) = done {
            return Ok((x0, g));
        }
        // Autograd on the network's device; the results go back to the caller's.
        let xv = candle_core::Var::from_tensor(&x.detach().to_device(self.device())?)?;
        let sc = self.attached_score(t, xv.as_tensor())?;
        let x0 = crate::score::tweedie::x0_from_score(&self.process, t, xv.as_tensor(), &sc)?;
        let vd = v.detach().to_device(self.device())?;
        let grads = (x0.clone() * vd)?.sum_all()?.backward()?;
        let g = match grads.get(xv.as_tensor()) {
            Some(g) => g.clone(),
            None => xv.as_tensor().zeros_like()?,
        };
        Ok((x0.detach().to_device(x.device())?, g.detach().to_device(x.device())?))
    }
}

impl LearnedScore {
    /// The score with its autograd graph (for input gradients).
    fn attached_score(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let s = match self.class {
            None => self.raw_score(t, x, None)?,
            Some(c) if self.guidance == 0.0 => self.raw_score(t, x, Some(c))?,
            Some(c) => {
                let sc = self.raw_score(t, x, Some(c))?;
                let su = self.raw_score(t, x, None)?;
                (sc.affine(1.0 + self.guidance, 0.0)? - su.affine(self.guidance, 0.0)?)?
            }
        };
        Ok(s.to_dtype(x.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::max_rel;
    use crate::nn::{Mlp, MlpConfig};
    use crate::rng::{stream, Noise, Purpose};
    use crate::score::Parametrisation;
    use candle_core::Device;

    /// Standard normal points `x` and directions `v` (`[n, d]`, f64) from `Noise::new(seed)`.
    fn point_and_direction(seed: u64, n: usize, d: usize) -> (Tensor, Tensor) {
        let noise = Noise::new(seed);
        let draw = |k| {
            noise
                .normal_tensor(stream(Purpose::User, k), n, d, DType::F64, &Device::Cpu)
                .unwrap()
        };
        (draw(0), draw(1))
    }

    /// The fused engine's score and denoiser VJP against candle's forward and autograd (f64),
    /// for every parametrisation, unconditional, conditional and guided.
    #[test]
    fn engine_matches_candle_score_and_vjp() {
        let dev = Device::Cpu;
        let (n, d) = (300, 3);
        let (x, v) = point_and_direction(8, n, d);
        // EDM's input scale is 1 on a VP process (OU) and not on VE.
        for (param, classes, p) in [
            (Parametrisation::Eps, 0, Process::ou(2.0, 5.0)),
            (Parametrisation::X0, 2, Process::ou(2.0, 5.0)),
            (Parametrisation::Score, 3, Process::ou(2.0, 5.0)),
            (Parametrisation::Edm, 2, Process::ou(2.0, 5.0)),
            (Parametrisation::Edm, 0, Process::ve(0.01, 20.0)),
            (Parametrisation::Eps, 2, Process::ve(0.01, 20.0)),
        ] {
            let cfg = MlpConfig {
                hidden: 32,
                n_classes: classes,
                param,
                ..MlpConfig::reference(d)
            };
            let mk = || LearnedScore::new(Mlp::new(cfg.clone(), 6, DType::F64, &dev).unwrap(), p.clone());
            let mut pairs = vec![(mk(), mk().without_engine())];
            if classes > 0 {
                pairs.push((
                    mk().conditional(1, 0.0).unwrap(),
                    mk().without_engine().conditional(1, 0.0).unwrap(),
                ));
                pairs.push((
                    mk().conditional(1, 2.5).unwrap(),
                    mk().without_engine().conditional(1, 2.5).unwrap(),
                ));
            }
            for (fast, reference) in &pairs {
                assert!(fast.engine.is_some() && reference.engine.is_none());
                for t in [0.002, 0.14, 0.8].map(|u| u * p.t_max()) {
                    let e = max_rel(&fast.score(t, &x).unwrap(), &reference.score(t, &x).unwrap());
                    assert!(e < 1e-12, "{param:?} t={t}: score {e}");
                    let (a0, ag) = fast.denoise_vjp(t, &x, &v).unwrap();
                    let (b0, bg) = reference.denoise_vjp(t, &x, &v).unwrap();
                    // x0_hat = (x + s^2 score) / m amplifies rounding by 1 / m(4) = e^4.
                    let e0 = max_rel(&a0, &b0);
                    assert!(e0 < 1e-10, "{param:?} t={t}: denoiser {e0}");
                    let e = max_rel(&ag, &bg);
                    assert!(e < 1e-10, "{param:?} t={t}: vjp {e}");
                }
            }
        }
        // f32 input to an f64 network comes back as f32.
        let s = LearnedScore::new(
            Mlp::new(MlpConfig::reference(d), 1, DType::F64, &dev).unwrap(),
            Process::ou(2.0, 5.0),
        );
        let x32 = x.to_dtype(DType::F32).unwrap();
        assert_eq!(s.score(0.5, &x32).unwrap().dtype(), DType::F32);
    }
    /// The U-Net's denoiser VJP (candle autograd through the GEMM convolutions and the
    /// parametrisation's conversion, what the likelihood's divergence uses) against central
    /// finite differences of `x0_hat`, in f64, for every parametrisation, on OU and VE.
    #[test]
    fn unet_denoiser_vjp_matches_finite_differences() {
        use crate::nn::{Unet, UnetConfig};
        let dev = Device::Cpu;
        let (n, d) = (3, 16);
        let (x, v) = point_and_direction(9, n, d);
        for param in [
            Parametrisation::Edm,
            Parametrisation::Eps,
            Parametrisation::X0,
            Parametrisation::Score,
        ] {
            for p in [Process::ou(2.0, 5.0), Process::ve(0.01, 20.0)] {
                let cfg = UnetConfig {
                    channels: vec![8, 8],
                    groups: 4,
                    time_dim: 16,
                    param,
                    ..UnetConfig::for_image(4, 4)
                };
                let s = LearnedScore::new(Unet::new(cfg, 3, DType::F64, &dev).unwrap(), p.clone());
                for t in [0.05, 0.5].map(|u| u * p.t_max()) {
                    let (_, g) = s.denoise_vjp(t, &x, &v).unwrap();
                    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
                    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
                    let vv: Vec<f64> = v.flatten_all().unwrap().to_vec1().unwrap();
                    // d/dx_j of sum_i v_i x0_hat_i (rows are independent).
                    let f = |z: &[f64]| -> f64 {
                        let zt = Tensor::from_vec(z.to_vec(), (n, d), &dev).unwrap();
                        let x0 = s
                            .denoise(t, &zt)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap();
                        x0.iter().zip(&vv).map(|(a, b)| a * b).sum()
                    };
                    let h = 1e-5;
                    let mut worst = 0.0f64;
                    let scale = g.iter().map(|v| v.abs()).fold(0.0, f64::max);
                    for j in (0..n * d).step_by(5) {
                        let (mut a, mut b) = (xv.clone(), xv.clone());
                        a[j] += h;
                        b[j] -= h;
                        let fd = (f(&a) - f(&b)) / (2.0 * h);
                        worst = worst.max((fd - g[j]).abs() / scale);
                    }
                    assert!(worst < 1e-6, "{param:?} {p:?} t={t}: {worst}");
                }
            }
        }
    }
}
