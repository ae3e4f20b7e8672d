//! Energy-based models end to end (the recipes behind `scoregen ebm`): data preparation,
//! training and sampling of an energy network ([`crate::nn::ebm`], [`crate::mcmc`]), and
//! Gibbs samples of a Bernoulli RBM ([`crate::nn::rbm`]).
//!
//! * Energy network `E_theta(x)` on normalised data `z = (x - mean) / sd`
//!   ([`EnergyData`]), trained by contrastive divergence (SGLD negatives from a replay
//!   buffer; Du & Mordatch 2019), sliced score matching (Song et al. 2019), or
//!   noise-conditional denoising score matching over a geometric VE ladder `sigma_min =
//!   0.03 .. sigma_max = max(3, max |z|)`, 10 levels (NCSN, Song & Ermon 2019)
//!   ([`train_energy`]).
//! * Sampling ([`sample_energy`]): ULA or MALA (Roberts & Tweedie 1996) at `tau = 0` from
//!   chains uniform on the box `[-1.2 max |z|, 1.2 max |z|]^d`; or annealed Langevin over the
//!   ladder from `N(0, sigma_max^2 I)`, `steps / levels` steps per level with NCSN's step
//!   `alpha_L = 0.2 sigma_min^2` at the last level. Samples are mapped back to data units.
//! * RBM Gibbs samples ([`rbm_samples`]): `steps` sweeps from uniform random binary states,
//!   returning `p(v | h)` of the last sweep.
//!
//! Seeds: the network's initialisation, training and sampler all use `seed`; the initial
//! states are stream `(Init, 0)` of `Noise::new(seed)`.

use candle_core::{DType, Device, Tensor};

use crate::mcmc::{annealed_langevin, mala, ula, EnergyTarget, LangevinOptions};
use crate::nn::ebm::{train_cd, train_energy_sm, CdConfig, EbmReport, SmConfig, SmMethod};
use crate::nn::model::Normalisation;
use crate::nn::rbm::Rbm;
use crate::nn::score_matching::SigmaLadder;
use crate::nn::{EnergyConfig, EnergyNet, EnergyScore};
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// Smallest noise of the NCSN ladder.
pub const SIGMA_MIN: f64 = 0.03;
/// Levels of the NCSN ladder.
pub const LEVELS: usize = 10;

/// Data prepared for an energy network: the normalisation, the normalised data in `f32`
/// and `max |z|`.
#[derive(Clone, Debug)]
pub struct EnergyData {
    /// The per-coordinate normalisation `z = (x - mean) / sd`.
    pub norm: Normalisation,
    /// The normalised data, `f32`, `[n, d]`.
    pub z: Tensor,
    /// `max |z|` over all entries.
    pub zmax: f64,
}

impl EnergyData {
    /// Normalises `x` (`[n, d]`); an error if it holds `NaN` or infinities.
    pub fn new(x: &Tensor) -> Result<Self> {
        let norm = Normalisation::fit(x)?;
        let z = norm.normalise(&x.to_dtype(DType::F64)?)?;
        let values: Vec<f64> = z.flatten_all()?.to_vec1()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("data contain NaN or infinity"));
        }
        let zmax = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        Ok(EnergyData {
            norm,
            z: z.to_dtype(DType::F32)?,
            zmax,
        })
    }

    /// The largest noise of the NCSN ladder, `max(3, max |z|)`.
    pub fn sigma_max(&self) -> f64 {
        3.0f64.max(self.zmax)
    }

    /// The half-width of the uniform box of fresh chains, `1.2 max |z|`.
    pub fn box_radius(&self) -> f64 {
        1.2 * self.zmax
    }
}

/// How an energy network is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergyTraining {
    /// Contrastive divergence.
    Cd,
    /// Sliced score matching.
    Ssm,
    /// Noise-conditional DSM over the VE ladder.
    Dsm,
}

/// Training settings of [`train_energy`] (the rest of [`CdConfig`] at its defaults).
#[derive(Clone, Debug)]
pub struct EnergyTrainOptions {
    /// The training method.
    pub training: EnergyTraining,
    /// Hidden width.
    pub hidden: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// CD: SGLD steps per optimiser step.
    pub sgld_steps: usize,
    /// CD: SGLD step size (normalised data).
    pub sgld_step: f64,
    /// Seed of the initialisation and of training.
    pub seed: u64,
}

/// Builds an energy network (16 Fourier features, `f32`) for `data` and trains it.
/// Returns the network, the VE process of a noise-conditional energy (`Dsm`; `None`
/// otherwise) and the trainer's report. `progress(step, loss)` as the trainers report.
pub fn train_energy(
    data: &EnergyData,
    opts: &EnergyTrainOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(EnergyNet, Option<Process>, EbmReport)> {
    let arch = EnergyConfig {
        dim: data.z.dims2()?.1,
        hidden: opts.hidden,
        depth: opts.depth,
        fourier: 16,
    };
    let net = EnergyNet::new(arch, opts.seed, DType::F32, &Device::Cpu)?;
    let (process, rep) = match opts.training {
        EnergyTraining::Cd => {
            let cfg = CdConfig {
                steps: opts.steps,
                batch: opts.batch,
                lr: opts.lr,
                sgld_steps: opts.sgld_steps,
                sgld_step: opts.sgld_step,
                init_range: data.box_radius(),
                seed: opts.seed,
                ..Default::default()
            };
            (None, train_cd(&net, &data.z, &cfg, progress)?)
        }
        EnergyTraining::Ssm | EnergyTraining::Dsm => {
            let method = if opts.training == EnergyTraining::Ssm {
                SmMethod::Ssm
            } else {
                SmMethod::Ncsn {
                    sigma_min: SIGMA_MIN,
                    sigma_max: data.sigma_max(),
                    levels: LEVELS,
                }
            };
            let cfg = SmConfig {
                method: method.clone(),
                steps: opts.steps,
                batch: opts.batch,
                lr: opts.lr,
                clip: 10.0,
                seed: opts.seed,
            };
            (method.process(), train_energy_sm(&net, &data.z, &cfg, progress)?)
        }
    };
    Ok((net, process, rep))
}

/// The sampler of [`sample_energy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergySampler {
    /// Unadjusted Langevin.
    Ula,
    /// Metropolis-adjusted Langevin.
    Mala,
    /// Annealed Langevin over the NCSN ladder (needs a noise-conditional energy).
    Ald,
}

/// What the sampler did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerRun {
    /// ULA.
    Ula,
    /// MALA with its acceptance rate.
    Mala {
        /// Accepted / proposed over all chains and steps.
        acceptance_rate: f64,
    },
    /// Annealed Langevin, `levels` levels of `per_level` steps.
    Ald {
        /// Levels.
        levels: usize,
        /// Steps per level.
        per_level: usize,
    },
}

/// `n` samples of a trained energy network in data units by `sampler` (`steps` Langevin
/// steps in all, `step` the ULA / MALA step on normalised data). Returns the network
/// (moved through the sampler's score), the samples (`f64`, `[n, d]`) and what the sampler
/// did. Errors: `Ald` without a process, and the samplers' own.
#[allow(clippy::too_many_arguments)]
pub fn sample_energy(
    net: EnergyNet,
    process: Option<&Process>,
    data: &EnergyData,
    sampler: EnergySampler,
    n: usize,
    steps: usize,
    step: f64,
    seed: u64,
) -> Result<(EnergyNet, Tensor, SamplerRun)> {
    let d = data.z.dims2()?.1;
    let noise = Noise::new(seed);
    let (zs, run, net) = if sampler == EnergySampler::Ald {
        let process = process
            .cloned()
            .ok_or_else(|| Error::invalid("annealed Langevin needs a noise-conditional energy (dsm training)"))?;
        let sigma_max = data.sigma_max();
        let ladder = SigmaLadder::geometric(sigma_max, SIGMA_MIN, LEVELS)?;
        let x0 = noise
            .normal_tensor(stream(Purpose::Init, 0), n, d, DType::F32, &Device::Cpu)?
            .affine(sigma_max, 0.0)?;
        let score = EnergyScore::new(net, process, false);
        let per_level = (steps / LEVELS).max(1);
        let xs = annealed_langevin(&score, &ladder, per_level, 0.2 * SIGMA_MIN * SIGMA_MIN, &x0, seed)?;
        let run = SamplerRun::Ald {
            levels: LEVELS,
            per_level,
        };
        (xs, run, score.into_net())
    } else {
        let r = data.box_radius();
        let u: Vec<f64> = noise
            .uniforms(stream(Purpose::Init, 0), n * d)
            .iter()
            .map(|u| r * (2.0 * u - 1.0))
            .collect();
        let x0 = Tensor::from_vec(u, (n, d), &Device::Cpu)?.to_dtype(DType::F32)?;
        let target = EnergyTarget { net: &net, tau: 0.0 };
        let opts = LangevinOptions { step, steps, seed };
        let (xs, run) = if sampler == EnergySampler::Mala {
            let r = mala(&target, &x0, &opts)?;
            let acceptance_rate = r.acceptance_rate;
            (r.x, SamplerRun::Mala { acceptance_rate })
        } else {
            (ula(&target, &x0, &opts)?, SamplerRun::Ula)
        };
        (xs, run, net)
    };
    let xs = data.norm.denormalise(&zs.to_dtype(DType::F64)?)?;
    Ok((net, xs, run))
}

/// `n` Gibbs samples of an RBM: `steps` sweeps from uniform random binary states (stream
/// `(Init, 0)` of `Noise::new(seed)`, `v_j = 1` when `u <= 1/2`), returning `p(v | h)` of
/// the last sweep (row-major `[n, visible]`).
pub fn rbm_samples(rbm: &Rbm, n: usize, visible: usize, steps: usize, seed: u64) -> Result<Vec<f64>> {
    let u = Noise::new(seed).uniforms(stream(Purpose::Init, 0), n * visible);
    let v0: Vec<f64> = u.iter().map(|&u| if u <= 0.5 { 1.0 } else { 0.0 }).collect();
    Ok(rbm.gibbs(&v0, steps, seed)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> EnergyData {
        let x = Noise::new(2)
            .normal_tensor(stream(Purpose::User, 0), 200, 2, DType::F64, &Device::Cpu)
            .unwrap();
        EnergyData::new(&(x.affine(3.0, 1.0).unwrap())).unwrap()
    }

    #[test]
    fn data_are_normalised_and_checked() {
        let d = data();
        assert!((d.norm.mean[0] - 1.0).abs() < 4.0 * 3.0 / 200f64.sqrt());
        assert!(d.zmax > 1.0 && d.sigma_max() >= 3.0 && d.box_radius() == 1.2 * d.zmax);
        assert_eq!(d.z.dtype(), DType::F32);
        let bad = Tensor::from_vec(vec![0.0, f64::NAN, 1.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        assert!(EnergyData::new(&bad).is_err());
    }

    #[test]
    fn train_and_sample_each_way() {
        let d = data();
        for (training, sampler) in [
            (EnergyTraining::Cd, EnergySampler::Mala),
            (EnergyTraining::Ssm, EnergySampler::Ula),
            (EnergyTraining::Dsm, EnergySampler::Ald),
        ] {
            let opts = EnergyTrainOptions {
                training,
                hidden: 16,
                depth: 2,
                steps: 5,
                batch: 32,
                lr: 1e-3,
                sgld_steps: 2,
                sgld_step: 1e-3,
                seed: 1,
            };
            let mut ticks = 0;
            let (net, process, rep) = train_energy(&d, &opts, &mut |_, _| ticks += 1).unwrap();
            assert_eq!((rep.losses.len(), ticks > 0), (5, true));
            assert_eq!(process.is_some(), training == EnergyTraining::Dsm);
            let (_, xs, run) = sample_energy(net, process.as_ref(), &d, sampler, 7, 20, 1e-3, 1).unwrap();
            assert_eq!(xs.dims(), &[7, 2]);
            match run {
                SamplerRun::Mala { acceptance_rate } => assert!((0.0..=1.0).contains(&acceptance_rate)),
                SamplerRun::Ald { levels, per_level } => assert_eq!((levels, per_level), (10, 2)),
                SamplerRun::Ula => assert_eq!(sampler, EnergySampler::Ula),
            }
        }
    }
}
