//! Training energy-based models (LeCun et al. 2006; Du & Mordatch 2019) `p_theta(x) = exp(f_theta(x)) / Z` with an
//! [`EnergyNet`] (log-density `f`, energy `E = -f`).
//!
//! **Contrastive divergence** ([`train_cd`]), time-free (`tau = 0`). The log-likelihood
//! gradient is `E_data[grad_theta f] - E_{p_theta}[grad_theta f]`; the model expectation
//! uses negative samples from `K` steps of SGLD (Welling & Teh 2011)
//! `x <- x + eps grad_x f(x) + sigma z`, with `sigma = sqrt(2 eps)` (exact Langevin) unless
//! set, started from a **persistent replay buffer** (Du & Mordatch 2019): each step, a batch
//! of buffer chains continues, except a fraction `reinit` restarted uniform on the box
//! `[-init_range, init_range]^d`; the chains are written back. The loss minimised is
//! `mean f(x_neg) - mean f(x_data) + alpha (mean f(x_data)^2 + mean f(x_neg)^2)`, the L2
//! regulariser of the energies keeping `f` bounded (Du & Mordatch); negatives are detached.
//!
//! **Score matching** ([`train_energy_sm`]), no sampling in training:
//! * [`SmMethod::Ssm`]: SSM-VR on the clean data, `v^T (∇²f) v + 1/2 |∇f|^2`, time-free;
//! * [`SmMethod::Dsm`]: DSM at one small noise `sigma`, `|sigma ∇f(x + sigma z) + z|^2 / d`,
//!   time-free (learns the score of the data smoothed by `N(0, sigma^2)`);
//! * [`SmMethod::Ncsn`]: noise-conditional energy `f(t, x)` trained by NCSN's ladder loss
//!   for the VE process `(sigma_min, sigma_max)` ([`super::score_matching::ncsn_loss`]):
//!   `tau = 0` is `sigma_min`, so the model can be sampled by annealed Langevin
//!   ([`crate::mcmc::annealed_langevin`]) or at `tau = 0` by ULA / MALA.
//!
//! The data should be roughly unit-scale (normalise first). Optimiser: Adam with
//! `beta = (0.9, 0.999)` (SM) or `(0.0, 0.999)` (CD, as Du & Mordatch), global-norm clipping.
//! Draws of step `k`: stream `(Purpose::Train, 2^45 + 16 k + j)`; SGLD step `j` of training
//! step `k`: `(Purpose::Corrector, k K + j)`. Initialisation from the `seed`.

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::energy::EnergyNet;
use super::optim::{self, AdamWStep};
use super::score_matching::{ncsn_loss, ssm_objective, Projection, SigmaLadder, SsmEstimator};
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// Contrastive-divergence settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Positive and negative samples per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// SGLD steps `K` per optimiser step.
    pub sgld_steps: usize,
    /// SGLD step size `eps`.
    pub sgld_step: f64,
    /// SGLD noise scale `sigma` (`None`: `sqrt(2 eps)`, exact Langevin).
    pub sgld_noise: Option<f64>,
    /// Chains in the replay buffer (0: no buffer, every negative starts afresh).
    pub buffer: usize,
    /// Share of each batch restarted from the uniform box.
    pub reinit: f64,
    /// Half-width of the uniform box of fresh chains.
    pub init_range: f64,
    /// Weight `alpha` of the L2 regulariser of the energies.
    pub l2: f64,
    /// Clip the global gradient norm (0: off).
    pub clip: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for CdConfig {
    fn default() -> Self {
        CdConfig {
            steps: 2000,
            batch: 256,
            lr: 1e-3,
            sgld_steps: 20,
            sgld_step: 5e-3,
            sgld_noise: None,
            buffer: 8192,
            reinit: 0.05,
            init_range: 2.5,
            l2: 0.1,
            clip: 10.0,
            seed: 0,
        }
    }
}

/// Score-matching methods for an energy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SmMethod {
    /// SSM-VR on clean data (Rademacher projections), time-free.
    Ssm,
    /// DSM at one noise level, time-free.
    Dsm {
        /// The noise `sigma`.
        sigma: f64,
    },
    /// NCSN over a geometric ladder of the VE process, noise-conditional.
    Ncsn {
        /// Smallest noise (`tau = 0`).
        sigma_min: f64,
        /// Largest noise.
        sigma_max: f64,
        /// Number of levels.
        levels: usize,
    },
}

impl SmMethod {
    /// The VE process of [`SmMethod::Ncsn`] (`None` for the time-free methods).
    pub fn process(&self) -> Option<Process> {
        match *self {
            SmMethod::Ncsn {
                sigma_min, sigma_max, ..
            } => Some(Process::ve(sigma_min, sigma_max)),
            _ => None,
        }
    }
}

/// Score-matching settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmConfig {
    /// The method.
    pub method: SmMethod,
    /// Optimiser steps.
    pub steps: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Clip the global gradient norm (0: off).
    pub clip: f64,
    /// Seed.
    pub seed: u64,
}

/// What the trainers report.
#[derive(Clone, Debug, Default)]
pub struct EbmReport {
    /// Loss of each step.
    pub losses: Vec<f64>,
    /// CD only: mean `f` of the data batch at each step.
    pub f_data: Vec<f64>,
    /// CD only: mean `f` of the negatives at each step.
    pub f_neg: Vec<f64>,
    /// CD only: the final replay buffer (`[buffer, d]`), if any.
    pub buffer: Option<Tensor>,
}

/// Adam (no weight decay, no EMA) on the variables of an energy network: the moments and
/// the step count of [`super::optim::adamw_tensors`].
struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    h: AdamWStep,
}

impl Adam {
    fn new(vars: &[Var], lr: f64, b1: f64, clip: f64) -> Result<Self> {
        let m = optim::zeros_like(vars)?;
        Ok(Adam {
            v: m.clone(),
            m,
            h: AdamWStep {
                lr,
                beta1: b1,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                step: 0,
                clip,
                ema_decay: 0.0,
            },
        })
    }

    fn step(&mut self, vars: &[Var], loss: &Tensor) -> Result<()> {
        let gs = optim::gradients(vars, &loss.backward()?)?;
        self.h.step += 1;
        optim::adamw_tensors(vars, &gs, &mut self.m, &mut self.v, None, &self.h, "energy training")?;
        Ok(())
    }
}

fn check_data(net: &EnergyNet, data: &Tensor, batch: usize, steps: usize) -> Result<(usize, usize)> {
    let (n, d) = data.dims2()?;
    if d != net.config.dim {
        return Err(Error::invalid(format!(
            "data have dimension {d}, the energy network {}",
            net.config.dim
        )));
    }
    if n < 2 || batch == 0 || steps == 0 {
        return Err(Error::invalid(
            "energy training: need >= 2 rows, batch >= 1 and steps >= 1",
        ));
    }
    let m: f64 = data.to_dtype(DType::F64)?.abs()?.max_all()?.to_scalar()?;
    if !m.is_finite() {
        return Err(Error::invalid("data contain NaN or infinity"));
    }
    Ok((n, d))
}

fn pick_rows(x: &Tensor, u: &[f64]) -> Result<Tensor> {
    let n = x.dims()[0];
    let idx: Vec<u32> = u.iter().map(|u| ((u * n as f64) as usize).min(n - 1) as u32).collect();
    Ok(x.index_select(&Tensor::from_vec(idx, u.len(), x.device())?, 0)?)
}

fn uniform_box(noise: &Noise, id: u64, n: usize, d: usize, r: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    let u: Vec<f64> = noise.uniforms(id, n * d).iter().map(|u| r * (2.0 * u - 1.0)).collect();
    Ok(Tensor::from_vec(u, (n, d), dev)?.to_dtype(dtype)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `K` SGLD steps `x <- x + eps grad_x f(0, x) + sigma z` on detached chains (noise of step
/// `j` from `(Purpose::Corrector, first + j)`).
pub fn sgld(
    net: &EnergyNet,
    x: &Tensor,
    steps: usize,
    eps: f64,
    sigma: f64,
    noise: &Noise,
    first: u64,
) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let tau = Tensor::zeros((n, 1), x.dtype(), x.device())?;
    let mut x = x.detach();
    for j in 0..steps {
        let (_, g) = net.grad(&x, &tau)?;
        let z = noise.normal_tensor(
            stream(Purpose::Corrector, first + j as u64),
            n,
            d,
            x.dtype(),
            x.device(),
        )?;
        x = ((&x + g.detach().affine(eps, 0.0)?)? + z.affine(sigma, 0.0)?)?.detach();
    }
    Ok(x)
}

/// Trains the time-free `net` (in place) by contrastive divergence on `data` (`[n, d]`,
/// normalised); `progress(step, loss)` after each step.
pub fn train_cd(
    net: &EnergyNet,
    data: &Tensor,
    cfg: &CdConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<EbmReport> {
    let (_, d) = check_data(net, data, cfg.batch, cfg.steps)?;
    let ok = cfg.lr > 0.0
        && cfg.sgld_step > 0.0
        && cfg.sgld_noise.is_none_or(|s| s >= 0.0)
        && (0.0..=1.0).contains(&cfg.reinit)
        && cfg.init_range > 0.0
        && cfg.l2 >= 0.0;
    if !ok {
        return Err(Error::invalid(
            "cd: need lr, SGLD step and box > 0, noise >= 0, reinit in [0, 1], l2 >= 0",
        ));
    }
    let (dt, dev) = (net.dtype(), data.device().clone());
    let data = data.to_dtype(dt)?;
    let noise = Noise::new(cfg.seed);
    let sigma = cfg.sgld_noise.unwrap_or((2.0 * cfg.sgld_step).sqrt());
    let vars = net.vars().to_vec();
    let mut adam = Adam::new(&vars, cfg.lr, 0.0, cfg.clip)?;
    let mut buffer = if cfg.buffer > 0 {
        Some(uniform_box(
            &noise,
            stream(Purpose::Init, 1 << 40),
            cfg.buffer,
            d,
            cfg.init_range,
            dt,
            &dev,
        )?)
    } else {
        None
    };
    let tau = Tensor::zeros((cfg.batch, 1), dt, &dev)?;
    let mut rep = EbmReport::default();
    for k in 0..cfg.steps as u64 {
        let id = |j: u64| stream(Purpose::Train, (1 << 45) + 16 * k + j);
        let pos = pick_rows(&data, &noise.uniforms(id(0), cfg.batch))?;
        let fresh = uniform_box(&noise, id(1), cfg.batch, d, cfg.init_range, dt, &dev)?;
        let (start, slots) = match &buffer {
            Some(buf) => {
                let nb = buf.dims()[0];
                let slots: Vec<u32> = noise
                    .uniforms(id(2), cfg.batch)
                    .iter()
                    .map(|u| ((u * nb as f64) as usize).min(nb - 1) as u32)
                    .collect();
                let old = buf.index_select(&Tensor::from_vec(slots.clone(), cfg.batch, &dev)?, 0)?;
                let re: Vec<f64> = noise
                    .uniforms(id(3), cfg.batch)
                    .iter()
                    .map(|&u| if u <= cfg.reinit { 1.0 } else { 0.0 })
                    .collect();
                let re = Tensor::from_vec(re, (cfg.batch, 1), &dev)?.to_dtype(dt)?;
                let start = (fresh.broadcast_mul(&re)? + old.broadcast_mul(&re.affine(-1.0, 1.0)?)?)?;
                (start, Some(slots))
            }
            None => (fresh, None),
        };
        let k_steps = cfg.sgld_steps as u64;
        let neg = sgld(net, &start, cfg.sgld_steps, cfg.sgld_step, sigma, &noise, k * k_steps)?;
        if let (Some(buf), Some(slots)) = (&mut buffer, slots) {
            // Write the chains back (later duplicates win).
            let mut all: Vec<f64> = buf.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            let new: Vec<f64> = neg.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
            for (r, &s) in slots.iter().enumerate() {
                all[s as usize * d..(s as usize + 1) * d].copy_from_slice(&new[r * d..(r + 1) * d]);
            }
            *buf = Tensor::from_vec(all, buf.dims2()?, &dev)?.to_dtype(dt)?;
        }
        let fp = net.forward(&pos, &tau)?;
        let fnn = net.forward(&neg, &tau)?;
        let (mp, mn) = (fp.mean_all()?, fnn.mean_all()?);
        let reg = (fp.sqr()?.mean_all()? + fnn.sqr()?.mean_all()?)?.affine(cfg.l2, 0.0)?;
        let loss = ((&mn - &mp)? + reg)?;
        let lv = scalar(&loss)?;
        if !lv.is_finite() {
            return Err(Error::Numerical(format!("cd: loss is {lv} at step {}", k + 1)));
        }
        adam.step(&vars, &loss)?;
        rep.losses.push(lv);
        rep.f_data.push(scalar(&mp)?);
        rep.f_neg.push(scalar(&mn)?);
        progress(k as usize + 1, lv);
    }
    rep.buffer = buffer;
    Ok(rep)
}

/// Trains `net` (in place) by score matching on `data` (`[n, d]`, normalised);
/// `progress(step, loss)` after each step.
pub fn train_energy_sm(
    net: &EnergyNet,
    data: &Tensor,
    cfg: &SmConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<EbmReport> {
    let (_, d) = check_data(net, data, cfg.batch, cfg.steps)?;
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::invalid("energy training: learning rate must be positive"));
    }
    let ladder = match &cfg.method {
        SmMethod::Ssm => None,
        SmMethod::Dsm { sigma } => {
            if !(sigma.is_finite() && *sigma > 0.0) {
                return Err(Error::invalid(format!("dsm: sigma must be positive, got {sigma}")));
            }
            None
        }
        SmMethod::Ncsn {
            sigma_min,
            sigma_max,
            levels,
        } => Some(SigmaLadder::geometric(*sigma_max, *sigma_min, *levels)?),
    };
    let (dt, dev) = (net.dtype(), data.device().clone());
    let data = data.to_dtype(dt)?;
    let noise = Noise::new(cfg.seed);
    let vars = net.vars().to_vec();
    let mut adam = Adam::new(&vars, cfg.lr, 0.9, cfg.clip)?;
    let tau0 = Tensor::zeros((cfg.batch, 1), dt, &dev)?;
    let mut rep = EbmReport::default();
    for k in 0..cfg.steps as u64 {
        let id = |j: u64| stream(Purpose::Train, (1 << 45) + 16 * k + j);
        let x = pick_rows(&data, &noise.uniforms(id(0), cfg.batch))?;
        let z = noise.normal_tensor(id(1), cfg.batch, d, dt, &dev)?;
        let loss = match &cfg.method {
            SmMethod::Ssm => {
                let v = Projection::Rademacher.draw(&noise, id(2), 1, cfg.batch, d, dt, &dev)?;
                let (_, g, hv) = net.grad_hvp(&x, &tau0, &v)?;
                ssm_objective(&g, &v, &hv, SsmEstimator::VarianceReduced)?.mean_all()?
            }
            SmMethod::Dsm { sigma } => {
                let xt = (&x + z.affine(*sigma, 0.0)?)?;
                let (_, g) = net.grad(&xt, &tau0)?;
                (g.affine(*sigma, 0.0)? + &z)?.sqr()?.mean_all()?
            }
            SmMethod::Ncsn { .. } => {
                let ladder = ladder.as_ref().expect("ladder built above");
                let process = cfg.method.process().expect("ncsn has a process");
                let idx = ladder.levels_of(&noise.uniforms(id(2), cfg.batch));
                ncsn_loss(net, &process, ladder, &x, &idx, &z, None)?
            }
        };
        let lv = scalar(&loss)?;
        if !lv.is_finite() {
            return Err(Error::Numerical(format!(
                "energy training: loss is {lv} at step {}",
                k + 1
            )));
        }
        adam.step(&vars, &loss)?;
        rep.losses.push(lv);
        progress(k as usize + 1, lv);
    }
    Ok(rep)
}
