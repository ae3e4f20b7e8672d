//! A trained network as a [`Score`]: the output is converted to the score by Tweedie
//! ([`crate::score::tweedie`]), and classifier-free guidance combines the conditional and
//! null-class scores, `score = (1 + w) score(x | c) - w score(x)` (equivalently in eps).
//!
//! The network works on *normalised* data `z = (x - mean) / std`; the [`Normalisation`] is
//! stored with the model and [`Normalisation::denormalise`] maps samples back.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::network::{Network, ScoreNet};
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
    /// The mean and standard deviation of each column of `x` (`[n, d]`); a constant column
    /// gets `std = 1`.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let (n, d) = x.dims2()?;
        if n < 2 {
            return Err(Error::invalid("need at least 2 rows of data"));
        }
        let v: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mut mean = vec![0.0; d];
        for r in v.chunks(d) {
            for j in 0..d {
                mean[j] += r[j] / n as f64;
            }
        }
        let mut var = vec![0.0; d];
        for r in v.chunks(d) {
            for j in 0..d {
                var[j] += (r[j] - mean[j]).powi(2) / (n - 1) as f64;
            }
        }
        let std = var.iter().map(|v| if *v > 1e-24 { v.sqrt() } else { 1.0 }).collect();
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
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        let std = if var > 1e-24 { var.sqrt() } else { 1.0 };
        Ok(Normalisation {
            mean: vec![mean; d],
            std: vec![std; d],
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
pub struct LearnedScore {
    net: Network,
    process: Process,
    class: Option<u32>,
    guidance: f64,
}

impl LearnedScore {
    /// The unconditional score of `net` (the null class if the network has classes).
    pub fn new(net: impl Into<Network>, process: Process) -> Self {
        LearnedScore {
            net: net.into(),
            process,
            class: None,
            guidance: 0.0,
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

    fn raw_score(&self, t: f64, x: &Tensor, class: Option<u32>) -> Result<Tensor> {
        let n = x.dims()[0];
        let dtype = self.net.vars()[0].dtype();
        let xin = x.to_dtype(dtype)?;
        let tau = Tensor::full(t / self.process.t_max(), (n, 1), x.device())?.to_dtype(dtype)?;
        let classes = match class {
            Some(c) => Some(Tensor::full(c, n, x.device())?),
            None => None,
        };
        let out = self.net.forward(&xin, &tau, classes.as_ref())?;
        tweedie::to_score(self.net.param(), &self.process, t, &xin, &out)
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
        Ok(self.attached_score(t, x)?.detach())
    }

    /// Through the attached score, so candle's backward reaches `x`.
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let xv = candle_core::Var::from_tensor(&x.detach())?;
        let sc = self.attached_score(t, xv.as_tensor())?;
        let x0 = crate::score::tweedie::x0_from_score(&self.process, t, xv.as_tensor(), &sc)?;
        let grads = (x0.clone() * v.detach())?.sum_all()?.backward()?;
        let g = match grads.get(xv.as_tensor()) {
            Some(g) => g.clone(),
            None => xv.as_tensor().zeros_like()?,
        };
        Ok((x0.detach(), g.detach()))
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
