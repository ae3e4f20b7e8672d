//! The trainer: denoising score matching (or sliced / exact / NCSN score matching, [`TrainConfig::loss`]) with AdamW, linear warm-up then cosine decay of the
//! learning rate, global-norm gradient clipping, an exponential moving average (EMA) of the
//! weights (used for sampling), a held-out validation loss, periodic atomic checkpoints and
//! exact resume.
//!
//! **Engines.** The MLP trained by DSM (plain, masked for tables with missing cells, with
//! classes and label dropout) runs on the fused engine of [`super::fused`] (explicit
//! forward / backward, flat `f32` parameters, one AdamW + clipping + EMA pass; the next
//! step's random draws are made while the current step computes). The U-Net and the SSM /
//! ESM / NCSN losses go through candle's autograd: their losses contain the network's
//! Jacobian-vector products (or convolutions), which have no hand-written backward yet. On
//! the CPU that path runs each step on a worker of the rayon pool (so that the parallel
//! sections of the convolutions and of GroupNorm start in place rather than waking a
//! worker and parking the calling thread each time) and keeps its optimiser state in flat
//! `f32` buffers updated by the same fused AdamW + clipping + EMA pass. The checkpoint
//! format is the same for both.
//!
//! Every random draw of step `k` (batch rows, times, noise, label dropout) comes from the
//! streams `(Purpose::Train, 4k + j)` of the seed, so a run resumed from a checkpoint at
//! step `k` replays exactly what the uninterrupted run would have done: same weights, bit
//! for bit, on the CPU.
//!
//! **Checkpoint** (a directory): `weights-STEP.safetensors` (parameters, EMA, Adam moments)
//! and `checkpoint.json` (architecture, process, normalisation, training configuration,
//! step, and the name of the weights file). The weights file is written under a temporary
//! name and renamed, then the JSON (the commit point) likewise; older weights files are
//! removed after. A crash at any moment leaves the previous complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::fused::{
    adamw_ema, dsm_loss as fused_dsm_loss, norm2 as flat_norm2, AdamWStep, DsmBatch, DsmEngine, FusedMlp, Layout,
};
use super::model::{LearnedScore, Normalisation};
use super::network::{Arch, Network, ScoreNet};
use super::optim;
use super::score_matching::{Loss, LossBatch};
use crate::error::{excerpt, number, one_line};
use crate::io::write_atomic;
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::score::tweedie;
use crate::{Error, Result};

/// How training times are drawn on `[t_min, T]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSampling {
    /// Uniform in `t` (Ho et al. 2020).
    Uniform,
    /// Uniform in the log signal-to-noise ratio: importance sampling toward low noise.
    LogSnr,
    /// Half of each batch uniform in `t`, half uniform in log-SNR.
    Mixed,
    /// EDM's log-normal noise levels (Karras et al. 2022): `ln sigma ~ N(-1.2, 1.2^2)`,
    /// `t = sigma^{-1}(sigma)` clamped to `[t_min, T]` (VE-equivalent `sigma = s / m`).
    LogNormal,
}

impl TimeSampling {
    /// The training-time law that goes with a parametrisation: EDM's log-normal noise levels
    /// for [`crate::score::Parametrisation::Edm`] (Karras et al. 2022, whose loss weighting
    /// it completes), else [`TimeSampling::Mixed`] (half the batch uniform in `t`, half
    /// uniform in log-SNR).
    pub fn default_for(param: crate::score::Parametrisation) -> Self {
        match param {
            crate::score::Parametrisation::Edm => TimeSampling::LogNormal,
            _ => TimeSampling::Mixed,
        }
    }
}

impl std::str::FromStr for TimeSampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(TimeSampling::Uniform),
            "logsnr" => Ok(TimeSampling::LogSnr),
            "mixed" => Ok(TimeSampling::Mixed),
            "lognormal" => Ok(TimeSampling::LogNormal),
            _ => Err(Error::invalid(format!(
                "unknown time sampling '{s}' (expected uniform, logsnr, mixed, lognormal)"
            ))),
        }
    }
}

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// How training times are drawn (default: EDM's log-normal noise levels, the law that
    /// goes with the default [`crate::score::Parametrisation::Edm`]; see
    /// [`TimeSampling::default_for`]).
    pub time_sampling: TimeSampling,
    /// Total optimiser steps.
    pub steps: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr_ratio: f64,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub clip: f64,
    /// EMA decay (the effective decay ramps up as `min(decay, (1 + k) / (10 + k))`).
    pub ema_decay: f64,
    /// Training times are uniform on `[t_min, T]`.
    pub t_min: f64,
    /// Probability of replacing a label by the null class (classifier-free guidance).
    pub label_dropout: f64,
    /// Share of the rows held out for the validation loss.
    pub val_fraction: f64,
    /// Validation every this many steps (and at the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (and at the end), when a directory is given.
    pub checkpoint_every: usize,
    /// Seed of initialisation, split and every training draw.
    pub seed: u64,
    /// The loss: DSM (default), SSM, ESM or NCSN ([`super::score_matching`]).
    #[serde(default)]
    pub loss: Loss,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            time_sampling: TimeSampling::LogNormal,
            steps: 4000,
            batch: 512,
            lr: 1e-3,
            warmup: 100,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            clip: 1.0,
            ema_decay: 0.999,
            t_min: 1e-3,
            label_dropout: 0.1,
            val_fraction: 0.1,
            eval_every: 500,
            checkpoint_every: 1000,
            seed: 0,
            loss: Loss::Dsm,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let ok = |c: bool, m: &str| if c { Ok(()) } else { Err(Error::invalid(m)) };
        ok(
            self.steps >= 1 && self.batch >= 1,
            "train: need steps >= 1 and batch >= 1",
        )?;
        ok(
            self.lr > 0.0 && self.lr.is_finite(),
            "train: learning rate must be positive",
        )?;
        ok(
            (0.0..1.0).contains(&self.ema_decay),
            "train: ema decay must be in [0, 1)",
        )?;
        ok(
            (0.0..1.0).contains(&self.label_dropout),
            "train: label dropout must be in [0, 1)",
        )?;
        ok(
            (0.0..0.9).contains(&self.val_fraction),
            "train: validation fraction must be in [0, 0.9)",
        )?;
        ok(self.t_min > 0.0, "train: t_min must be positive")?;
        ok(
            self.eval_every >= 1 && self.checkpoint_every >= 1,
            "train: eval/checkpoint intervals must be >= 1",
        )
    }

    /// The learning rate at step `k` (0-based).
    pub fn lr_at(&self, k: usize) -> f64 {
        if k < self.warmup {
            return self.lr * (k + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps.saturating_sub(self.warmup)).max(1) as f64;
        let p = ((k - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + 0.5 * (self.lr - floor) * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// What [`train`] reports at each step.
#[derive(Clone, Debug)]
pub struct TrainProgress {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub total: usize,
    /// This step's training loss.
    pub loss: f64,
    /// The latest validation loss (EMA weights), if computed yet.
    pub val_loss: Option<f64>,
}

/// The outcome of [`train`].
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Steps done in total.
    pub step: usize,
    /// Mean training loss over the last 100 steps of this run.
    pub train_loss: f64,
    /// Final validation loss with the EMA weights (`None` without a validation split).
    pub val_loss: Option<f64>,
    /// Optimiser steps per second of this run.
    pub steps_per_sec: f64,
}

/// Everything a checkpoint's JSON holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format tag.
    pub format: String,
    /// Architecture (`{"kind": "mlp" | "unet", ...}`; format 1 stored a bare MLP config).
    pub arch: Arch,
    /// The forward process the network was trained for.
    pub process: Process,
    /// Data normalisation.
    pub normalisation: Normalisation,
    /// Training settings.
    pub train: TrainConfig,
    /// Steps done.
    pub step: usize,
    /// The weights file in the same directory.
    pub weights: String,
    /// Latest validation loss.
    pub val_loss: Option<f64>,
    /// Class frequencies of the training labels (class-conditional models): the class prior
    /// `pi_c` of `p(x) = sum_c pi_c p(x | c)` that `sample` draws classes from when no
    /// class is asked for.
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
}

/// Format 2: `arch` is tagged with its `kind`. Format 1 (MLP only, `arch` a bare
/// [`super::MlpConfig`]) is still read.
const FORMAT: &str = "scoregen-checkpoint-2";
const FORMAT_1: &str = "scoregen-checkpoint-1";
const META: &str = "checkpoint.json";

struct State {
    net: Network,
    ema: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
    val_loss: Option<f64>,
}

fn t_of(process: &Process, cfg: &TrainConfig, u: &[f64]) -> Vec<f64> {
    let t_max = process.t_max();
    let (l0, l1) = (process.log_snr(t_max), process.log_snr(cfg.t_min));
    let uniform = |u: f64| cfg.t_min + (t_max - cfg.t_min) * u;
    let logsnr = |u: f64| {
        process
            .t_of_sigma((-0.5 * (l0 + u * (l1 - l0))).exp())
            .clamp(cfg.t_min, t_max)
    };
    // EDM's P_mean and P_std.
    let lognormal = |u: f64| {
        process
            .t_of_sigma((-1.2 + 1.2 * crate::rng::normal_quantile(u)).exp())
            .clamp(cfg.t_min, t_max)
    };
    u.iter()
        .enumerate()
        .map(|(i, &u)| match cfg.time_sampling {
            TimeSampling::Uniform => uniform(u),
            TimeSampling::LogSnr => logsnr(u),
            TimeSampling::Mixed if i % 2 == 0 => uniform(u),
            TimeSampling::Mixed => logsnr(u),
            TimeSampling::LogNormal => lognormal(u),
        })
        .collect()
}

/// Rows `idx` of `x` as a tensor.
fn rows(x: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let i = Tensor::from_vec(idx.to_vec(), idx.len(), x.device())?;
    Ok(x.index_select(&i, 0)?)
}

/// The fused engine's state for an MLP trained by DSM ([`super::fused`]): flat `f32`
/// parameters, EMA and Adam moments, the data as flat rows, and per-step buffers reused
/// from step to step (no allocation in the network's passes).
struct Fast {
    config: super::MlpConfig,
    layout: Layout,
    engine: DsmEngine<f32>,
    p: Vec<f32>,
    ema: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    /// Normalised data `[n, d]` and observed-cell weights `[n, d]`.
    x: Vec<f32>,
    mask: Option<Vec<f32>>,
    // Per-step buffers.
    x0: Vec<f32>,
    eps: Vec<f32>,
    mt: Vec<f32>,
    st: Vec<f32>,
    tau: Vec<f32>,
    ob: Vec<f32>,
}

impl Fast {
    fn new(config: &super::MlpConfig, st: &State, x: &Tensor, mask: Option<&Tensor>) -> Result<Self> {
        let layout = Layout::new(config);
        let params: Vec<Tensor> = st.net.vars().iter().map(|v| v.as_tensor().clone()).collect();
        Ok(Fast {
            config: config.clone(),
            engine: DsmEngine::new(config),
            p: layout.flatten(&params)?,
            ema: layout.flatten(&st.ema)?,
            m: layout.flatten(&st.m)?,
            v: layout.flatten(&st.v)?,
            g: vec![0.0; layout.len],
            layout,
            x: x.flatten_all()?.to_vec1()?,
            mask: mask.map(|m| m.flatten_all()?.to_vec1()).transpose()?,
            x0: vec![],
            eps: vec![],
            mt: vec![],
            st: vec![],
            tau: vec![],
            ob: vec![],
        })
    }

    /// Copies the flat state into `st` (for a checkpoint).
    fn sync(&self, st: &mut State) -> Result<()> {
        let t = |v: &[f32]| self.layout.tensors(v, DType::F32);
        super::set_parameters("mlp", st.net.vars(), st.net.names(), &t(&self.p)?)?;
        st.ema = t(&self.ema)?;
        st.m = t(&self.m)?;
        st.v = t(&self.v)?;
        Ok(())
    }

    /// Fills the per-step buffers: rows `idx` of the data, noise, and per-row `m`, `s`, `tau`.
    fn load(&mut self, process: &Process, idx: &[u32], t: &[f64], eps: &[f64]) {
        let d = self.config.dim;
        self.x0.clear();
        self.ob.clear();
        for &i in idx {
            let r = i as usize * d..(i as usize + 1) * d;
            self.x0.extend_from_slice(&self.x[r.clone()]);
            if let Some(m) = &self.mask {
                self.ob.extend_from_slice(&m[r]);
            }
        }
        self.eps.clear();
        self.eps.extend(eps.iter().map(|&e| e as f32));
        self.mt.clear();
        self.mt.extend(t.iter().map(|&t| process.m(t) as f32));
        self.st.clear();
        self.st.extend(t.iter().map(|&t| process.s(t) as f32));
        self.tau.clear();
        let param = self.config.param;
        self.tau
            .extend(t.iter().map(|&t| tweedie::net_time(param, process, t) as f32));
    }
}

/// The optimiser state of the autograd path (the U-Net, the SSM / ESM / NCSN losses) on the
/// CPU as flat `f32` buffers in the order of the network's variables: one fused AdamW +
/// clipping + EMA pass ([`adamw_ema`]) per step instead of some twenty candle ops per
/// parameter tensor, each over a fresh buffer. The flat parameters are authoritative; the
/// variables are written from them after each step, the tensors of [`State`] only for a
/// checkpoint or a validation pass ([`FlatAdam::sync`]).
struct FlatAdam {
    /// `(offset, length)` of each variable in the flat buffers.
    spans: Vec<(usize, usize)>,
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    ema: Vec<f32>,
}

/// The values of `t` as `f32`, appended to `out`.
fn extend_f32(out: &mut Vec<f32>, t: &Tensor) -> Result<()> {
    let t = t.to_dtype(DType::F32)?;
    let (s, l) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) = (&*s, l.contiguous_offsets()) {
        out.extend_from_slice(&v[a..b]);
        return Ok(());
    }
    drop(s);
    out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

impl FlatAdam {
    fn new(st: &State) -> Result<Self> {
        let flat = |ts: &mut dyn Iterator<Item = &Tensor>| -> Result<Vec<f32>> {
            let mut out = vec![];
            for t in ts {
                extend_f32(&mut out, t)?;
            }
            Ok(out)
        };
        let vars = st.net.vars();
        let mut spans = Vec::with_capacity(vars.len());
        let mut off = 0;
        for v in vars {
            let len = v.as_tensor().elem_count();
            spans.push((off, len));
            off += len;
        }
        Ok(FlatAdam {
            spans,
            p: flat(&mut vars.iter().map(|v| v.as_tensor()))?,
            g: vec![0.0; off],
            m: flat(&mut st.m.iter())?,
            v: flat(&mut st.v.iter())?,
            ema: flat(&mut st.ema.iter())?,
        })
    }

    /// Copies the gradients of the variables from `grads` into the flat buffer (zeros for a
    /// variable the loss does not depend on), then one AdamW + EMA step, then writes the new
    /// parameters into the variables. A non-finite gradient is an error before any update.
    fn step(
        &mut self,
        vars: &[candle_core::Var],
        grads: &candle_core::backprop::GradStore,
        h: &AdamWStep,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (var, &(off, len)) in vars.iter().zip(&self.spans) {
            let dst = &mut self.g[off..off + len];
            match grads.get(var.as_tensor()) {
                Some(g) => {
                    buf.clear();
                    extend_f32(&mut buf, g)?;
                    dst.copy_from_slice(&buf);
                }
                None => dst.fill(0.0),
            }
        }
        let n2 = flat_norm2(&self.g);
        if !n2.is_finite() {
            return Err(Error::Numerical("training: gradient is not finite".into()));
        }
        adamw_ema(
            &mut self.p,
            &self.g,
            &mut self.m,
            &mut self.v,
            &mut self.ema,
            h,
            Some(n2),
        );
        for (var, &(off, len)) in vars.iter().zip(&self.spans) {
            let t = var.as_tensor();
            var.set(&Tensor::from_slice(&self.p[off..off + len], t.shape(), t.device())?.to_dtype(t.dtype())?)?;
        }
        Ok(())
    }

    /// Copies the moments and the EMA into `st` (the parameters are always in the variables).
    fn sync(&self, st: &mut State) -> Result<()> {
        let vars = st.net.vars();
        let t = |flat: &[f32], i: usize| -> Result<Tensor> {
            let (off, len) = self.spans[i];
            let v = vars[i].as_tensor();
            Ok(Tensor::from_slice(&flat[off..off + len], v.shape(), v.device())?.to_dtype(v.dtype())?)
        };
        let n = vars.len();
        let ema = (0..n).map(|i| t(&self.ema, i)).collect::<Result<Vec<_>>>()?;
        let m = (0..n).map(|i| t(&self.m, i)).collect::<Result<Vec<_>>>()?;
        let v = (0..n).map(|i| t(&self.v, i)).collect::<Result<Vec<_>>>()?;
        (st.ema, st.m, st.v) = (ema, m, v);
        Ok(())
    }
}

/// The random draws of one training step.
struct Draws {
    idx: Vec<u32>,
    t: Vec<f64>,
    eps: Vec<f64>,
    classes: Option<Vec<u32>>,
}

/// What to train and where to keep it.
#[derive(Clone, Debug)]
pub struct TrainSetup<'a> {
    /// The network's architecture.
    pub arch: Arch,
    /// The forward process.
    pub process: Process,
    /// The settings.
    pub config: TrainConfig,
    /// Where checkpoints go (none: no checkpoints).
    pub checkpoint_dir: Option<&'a Path>,
    /// Continue from the checkpoint in `checkpoint_dir`.
    pub resume: bool,
    /// Where the network trains ([`crate::device::parse`]). On the CPU the MLP with the DSM
    /// loss runs on the fused engine ([`super::fused`]) and everything else on candle's CPU
    /// backend; on a CUDA device every network and loss runs on candle's CUDA backend.
    /// Checkpoints do not record the device: a run may resume on another one.
    pub device: Device,
}

/// Trains a score network (MLP or U-Net) by denoising score matching on `data` (`[n, d]`,
/// raw coordinates; normalised inside, per coordinate for vector data, with pooled statistics
/// for images) with optional integer `labels` in `0..arch.n_classes()`.
/// With a checkpoint directory, checkpoints are written there; with `resume`, training
/// continues from the checkpoint found there (which must have the same architecture,
/// process and settings, except for a larger `steps`).
pub fn train(
    data: &Tensor,
    labels: Option<&[u32]>,
    setup: &TrainSetup,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainReport> {
    train_masked(data, None, labels, setup, progress)
}

/// [`train`] on a table with missing cells: `observed` (row-major `[n, d]`, `true` where a
/// cell was observed) restricts the denoising loss to observed coordinates (MissDiff,
/// Ouyang et al. 2023): `sum(mask * residual^2) / sum(mask)` over the batch. `data` must be
/// finite everywhere; what the caller put in the missing cells (a fill) only enters as
/// network input. With `observed = None` this is [`train`]. Only [`Loss::Dsm`] supports a
/// mask.
pub fn train_masked(
    data: &Tensor,
    observed: Option<&[bool]>,
    labels: Option<&[u32]>,
    setup: &TrainSetup,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainReport> {
    let (arch, process, cfg) = (setup.arch.clone(), setup.process.clone(), &setup.config);
    let (checkpoint_dir, resume) = (setup.checkpoint_dir, setup.resume);
    cfg.validate()?;
    process.validate()?;
    let (n, d) = data.dims2()?;
    if d != arch.dim() {
        return Err(Error::invalid(format!(
            "data have dimension {d}, the network {}",
            arch.dim()
        )));
    }
    let raw: Vec<f64> = data.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "data contain NaN or infinity (row {}, column {})",
            i / d + 1,
            i % d + 1
        )));
    }
    match (labels, arch.n_classes()) {
        (Some(_), 0) => return Err(Error::invalid("labels given but the network has no classes")),
        (Some(l), k) => {
            if l.len() != n {
                return Err(Error::invalid(format!("{} labels for {n} rows", l.len())));
            }
            if let Some(bad) = l.iter().find(|&&c| c as usize >= k) {
                return Err(Error::invalid(format!("label {bad} out of range for {k} classes")));
            }
        }
        (None, 0) => {}
        (None, _) => return Err(Error::invalid("the network has classes but no labels were given")),
    }
    let class_weights: Option<Vec<f64>> = labels.map(|l| {
        let mut c = vec![0.0; arch.n_classes()];
        for &k in l {
            c[k as usize] += 1.0;
        }
        c.iter().map(|v| v / n as f64).collect()
    });
    let device = setup.device.clone();
    let noise = Noise::new(cfg.seed);
    // Deterministic split: a permutation by sorted uniforms.
    let u = noise.uniforms(stream(Purpose::Train, 1 << 41), n);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    perm.sort_by(|&a, &b| u[a as usize].total_cmp(&u[b as usize]));
    let n_val = ((n as f64) * cfg.val_fraction).floor() as usize;
    let (val_idx, train_idx) = perm.split_at(n_val);
    if train_idx.len() < 2 {
        return Err(Error::invalid(format!("too few rows to train on ({n})")));
    }

    let (norm, mut st) = match (resume, checkpoint_dir) {
        (true, Some(dir)) => {
            let (meta, st) = load_state(dir, &device)?;
            if meta.arch != arch || meta.process != process {
                return Err(Error::file(
                    dir,
                    "the checkpoint's architecture or process differs from this run's",
                ));
            }
            let mut same = meta.train.clone();
            same.steps = cfg.steps;
            if &same != cfg {
                return Err(Error::file(
                    dir,
                    "the checkpoint's training settings differ from this run's (only --steps may change)",
                ));
            }
            (meta.normalisation, st)
        }
        (true, None) => return Err(Error::invalid("resume needs a checkpoint directory")),
        (false, _) => {
            let train_rows = rows(&Tensor::from_vec(raw.clone(), (n, d), &device)?, train_idx)?;
            let norm = match arch.image_shape() {
                Some(_) => Normalisation::fit_pooled(&train_rows)?,
                None => Normalisation::fit(&train_rows)?,
            };
            let net = Network::new(&arch, cfg.seed, DType::F32, &device)?;
            let ema = net
                .vars()
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            let zeros = net
                .vars()
                .iter()
                .map(|v| v.as_tensor().zeros_like())
                .collect::<candle_core::Result<Vec<_>>>()?;
            (
                norm,
                State {
                    net,
                    ema,
                    m: zeros.clone(),
                    v: zeros,
                    step: 0,
                    val_loss: None,
                },
            )
        }
    };
    let x = norm
        .normalise(&Tensor::from_vec(raw, (n, d), &device)?)?
        .to_dtype(DType::F32)?;
    let lab = labels.map(|l| Tensor::from_vec(l.to_vec(), n, &device)).transpose()?;
    let mask = match observed {
        Some(o) => {
            if o.len() != n * d {
                return Err(Error::invalid(format!(
                    "the observed mask has {} cells, the data {}",
                    o.len(),
                    n * d
                )));
            }
            if cfg.loss != Loss::Dsm {
                return Err(Error::invalid("training with missing cells needs the dsm loss"));
            }
            let v: Vec<f32> = o.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            Some(Tensor::from_vec(v, (n, d), &device)?)
        }
        None => None,
    };
    let null = arch.n_classes() as u32;
    // Fixed validation draws.
    let val = if n_val > 0 {
        let xv = rows(&x, val_idx)?;
        let tv = t_of(
            &process,
            cfg,
            &noise.uniforms(stream(Purpose::Train, (1 << 42) + 1), n_val),
        );
        let ev = noise.normal_tensor(stream(Purpose::Train, (1 << 42) + 2), n_val, d, DType::F32, &device)?;
        let cv = lab.as_ref().map(|l| rows(l, val_idx)).transpose()?;
        let mv = mask.as_ref().map(|m| rows(m, val_idx)).transpose()?;
        Some((xv, tv, ev, cv, mv))
    } else {
        None
    };
    // The fused engine for the MLP with the DSM loss (masked or not, with or without
    // classes); the U-Net and the SSM / ESM / NCSN losses go through candle's autograd.
    let mut fast = match (&arch, cfg.loss) {
        (Arch::Mlp(c), Loss::Dsm) if device.is_cpu() => Some(Fast::new(c, &st, &x, mask.as_ref())?),
        _ => None,
    };
    // The autograd path's optimiser on flat buffers (the CPU; the state's tensors
    // otherwise).
    let mut flat = match &fast {
        None if device.is_cpu() && st.net.vars().iter().all(|v| v.dtype() == DType::F32) => Some(FlatAdam::new(&st)?),
        _ => None,
    };
    let started = Instant::now();
    let first = st.step;
    let mut recent = std::collections::VecDeque::new();
    let (b1, b2, adam_eps) = (0.9f64, 0.999f64, 1e-8f64);
    // Step k's draws depend only on (seed, k): the fused path draws step k + 1's while it
    // computes step k (one more task for the thread pool, the same values).
    let draws = |k: u64| -> Draws {
        let ui = noise.uniforms(stream(Purpose::Train, 4 * k), cfg.batch);
        let idx: Vec<u32> = ui
            .iter()
            .map(|u| train_idx[((u * train_idx.len() as f64) as usize).min(train_idx.len() - 1)])
            .collect();
        let t = t_of(
            &process,
            cfg,
            &noise.uniforms(stream(Purpose::Train, 4 * k + 1), cfg.batch),
        );
        let eps = noise.normals(stream(Purpose::Train, 4 * k + 2), cfg.batch, d);
        let classes: Option<Vec<u32>> = labels.map(|l| {
            let drop = noise.uniforms(stream(Purpose::Train, 4 * k + 3), cfg.batch);
            idx.iter()
                .zip(&drop)
                .map(|(&i, &u)| if u <= cfg.label_dropout { null } else { l[i as usize] })
                .collect()
        });
        Draws { idx, t, eps, classes }
    };
    let mut next: Option<Draws> = None;
    while st.step < cfg.steps {
        let k = st.step as u64;
        let Draws { idx, t, eps, classes } = next.take().unwrap_or_else(|| draws(k));
        let lr = cfg.lr_at(st.step);
        let decay = cfg.ema_decay.min((1.0 + st.step as f64) / (10.0 + st.step as f64));
        let loss_v = match fast.as_mut() {
            Some(f) => {
                f.load(&process, &idx, &t, &eps);
                let Fast {
                    engine,
                    p,
                    g,
                    ema,
                    m,
                    v,
                    x0,
                    eps,
                    mt,
                    st: s_t,
                    tau,
                    ob,
                    mask,
                    ..
                } = f;
                let batch = DsmBatch {
                    x0,
                    eps,
                    m: mt,
                    s: s_t,
                    tau,
                    classes: classes.as_deref(),
                    observed: mask.as_ref().map(|_| &ob[..]),
                };
                let more = st.step + 1 < cfg.steps;
                let (loss_v, pre) = rayon::join(|| engine.loss_grad(p, &batch, g), || more.then(|| draws(k + 1)));
                next = pre;
                let loss_v = loss_v?;
                if !loss_v.is_finite() {
                    return Err(Error::Numerical(format!(
                        "training loss is {loss_v} at step {}",
                        st.step + 1
                    )));
                }
                let h = AdamWStep {
                    lr,
                    beta1: b1,
                    beta2: b2,
                    eps: adam_eps,
                    weight_decay: cfg.weight_decay,
                    step: (st.step + 1) as i32,
                    clip: cfg.clip,
                    ema_decay: decay,
                };
                adamw_ema(p, g, m, v, ema, &h, Some(engine.grad_norm2()));
                loss_v
            }
            None => {
                let x0 = rows(&x, &idx)?;
                let eps = Tensor::from_vec(eps, (cfg.batch, d), &device)?.to_dtype(DType::F32)?;
                let classes = classes.map(|c| Tensor::from_vec(c, cfg.batch, &device)).transpose()?;
                let mb = mask.as_ref().map(|m| rows(m, &idx)).transpose()?;
                let batch = LossBatch {
                    x0: &x0,
                    t: &t,
                    eps: &eps,
                    classes: classes.as_ref(),
                    observed: mb.as_ref(),
                    t_min: cfg.t_min,
                    noise: &noise,
                    index: k,
                };
                {
                    // On a worker of the thread pool: the convolutions' and GroupNorm's
                    // parallel sections then start there instead of waking a worker and
                    // putting this thread to sleep each time.
                    let (st, flat) = (&mut st, flat.as_mut());
                    rayon::scope(|_| candle_step(st, flat, cfg, &batch, &process, lr, decay))?
                }
            }
        };
        st.step += 1;
        recent.push_back(loss_v);
        if recent.len() > 100 {
            recent.pop_front();
        }
        if let Some((xv, tv, ev, cv, mv)) = &val {
            if st.step % cfg.eval_every == 0 || st.step == cfg.steps {
                if let Some(f) = &fast {
                    st.val_loss = Some(fast_val_loss(f, &process, xv, tv, ev, cv.as_ref(), mv.as_ref())?);
                } else {
                    if let Some(f) = &flat {
                        f.sync(&mut st)?;
                    }
                    let ema_net = Network::with_values(&arch, &st.ema, &device)?;
                    let batch = LossBatch {
                        x0: xv,
                        t: tv,
                        eps: ev,
                        classes: cv.as_ref(),
                        observed: mv.as_ref(),
                        t_min: cfg.t_min,
                        noise: &noise,
                        index: 1 << 44,
                    };
                    let l = rayon::scope(|_| cfg.loss.eval(&ema_net, &process, &batch))?;
                    st.val_loss = Some(l.to_dtype(DType::F64)?.to_scalar::<f64>()?);
                }
            }
        }
        if let Some(dir) = checkpoint_dir {
            if st.step % cfg.checkpoint_every == 0 || st.step == cfg.steps {
                if let Some(f) = &fast {
                    f.sync(&mut st)?;
                }
                if let Some(f) = &flat {
                    f.sync(&mut st)?;
                }
                save_state(dir, &st, &arch, &process, &norm, cfg, class_weights.as_deref())?;
            }
        }
        progress(&TrainProgress {
            step: st.step,
            total: cfg.steps,
            loss: loss_v,
            val_loss: st.val_loss,
        });
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        step: st.step,
        train_loss: if recent.is_empty() {
            f64::NAN
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        },
        val_loss: st.val_loss,
        steps_per_sec: (st.step - first) as f64 / secs.max(1e-9),
    })
}

/// One optimiser step through candle's autograd (the U-Net, and the SSM / ESM / NCSN
/// losses); returns the loss.
fn candle_step(
    st: &mut State,
    flat: Option<&mut FlatAdam>,
    cfg: &TrainConfig,
    batch: &LossBatch,
    process: &Process,
    lr: f64,
    decay: f64,
) -> Result<f64> {
    let loss = cfg.loss.eval(&st.net, process, batch)?;
    let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !loss_v.is_finite() {
        return Err(Error::Numerical(format!(
            "training loss is {loss_v} at step {}",
            st.step + 1
        )));
    }
    let vars = st.net.vars();
    let grads = loss.backward()?;
    let h = AdamWStep {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: cfg.weight_decay,
        step: (st.step + 1) as i32,
        clip: cfg.clip,
        ema_decay: decay,
    };
    match flat {
        Some(f) => f.step(vars, &grads, &h)?,
        None => {
            let gs = optim::gradients(vars, &grads)?;
            optim::adamw_tensors(vars, &gs, &mut st.m, &mut st.v, Some(&mut st.ema), &h, "training")?;
        }
    }
    Ok(loss_v)
}

/// The validation loss with the EMA weights through the fused engine.
fn fast_val_loss(
    f: &Fast,
    process: &Process,
    xv: &Tensor,
    tv: &[f64],
    ev: &Tensor,
    cv: Option<&Tensor>,
    mv: Option<&Tensor>,
) -> Result<f64> {
    let net = FusedMlp::new(&f.config, f.ema.clone())?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
    let (x0, eps) = (flat(xv)?, flat(ev)?);
    let m: Vec<f32> = tv.iter().map(|&t| process.m(t) as f32).collect();
    let s: Vec<f32> = tv.iter().map(|&t| process.s(t) as f32).collect();
    let tau: Vec<f32> = tv
        .iter()
        .map(|&t| tweedie::net_time(f.config.param, process, t) as f32)
        .collect();
    let classes: Option<Vec<u32>> = cv.map(|c| c.to_vec1()).transpose()?;
    let observed = mv.map(flat).transpose()?;
    fused_dsm_loss(
        &net,
        &DsmBatch {
            x0: &x0,
            eps: &eps,
            m: &m,
            s: &s,
            tau: &tau,
            classes: classes.as_deref(),
            observed: observed.as_deref(),
        },
    )
}

fn save_state(
    dir: &Path,
    st: &State,
    arch: &Arch,
    process: &Process,
    norm: &Normalisation,
    cfg: &TrainConfig,
    class_weights: Option<&[f64]>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create checkpoint directory: {e}")))?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    // Checkpoints are written from host memory whatever the training device.
    let host = |t: &Tensor| t.to_device(&Device::Cpu);
    for (i, name) in st.net.names().iter().enumerate() {
        map.insert(format!("param.{name}"), host(st.net.vars()[i].as_tensor())?);
        map.insert(format!("ema.{name}"), host(&st.ema[i])?);
        map.insert(format!("adam_m.{name}"), host(&st.m[i])?);
        map.insert(format!("adam_v.{name}"), host(&st.v[i])?);
    }
    let weights = format!("weights-{:08}.safetensors", st.step);
    let tmp = dir.join(format!(".{weights}.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&map, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(&tmp, format!("cannot write weights: {e}"))
    })?;
    std::fs::rename(&tmp, dir.join(&weights)).map_err(|e| Error::file(dir, format!("cannot rename weights: {e}")))?;
    let meta = CheckpointMeta {
        format: FORMAT.into(),
        arch: arch.clone(),
        process: process.clone(),
        normalisation: norm.clone(),
        train: cfg.clone(),
        step: st.step,
        weights: weights.clone(),
        val_loss: st.val_loss,
        class_weights: class_weights.map(|w| w.to_vec()),
    };
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(dir.join(META), |w| Ok(w.write_all(text.as_bytes())?))?;
    // The JSON now names the new weights: older ones can go.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("weights-") && name.ends_with(".safetensors") && name != weights {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The most parameters a checkpoint's architecture may have (`2^28`, 1 GiB of `f32` per
/// copy; the reference MLP has about 150,000): a larger one is refused before anything is
/// allocated from it.
pub const MAX_CHECKPOINT_PARAMS: usize = 1 << 28;

pub use crate::data::MAX_CLASSES;

/// The largest data dimension `d` of a checkpoint (`height * width` for images).
pub const MAX_CHECKPOINT_DIM: usize = 1 << 25;

/// The number of parameters of a network of architecture `arch`, computed from the sizes
/// alone (saturating, so that absurd sizes give a huge count rather than an overflow):
/// the exact count of [`Network::new`] for a valid architecture.
pub fn param_count(arch: &Arch) -> u128 {
    let (add, mul) = (u128::saturating_add, u128::saturating_mul);
    let u = |x: usize| x as u128;
    let linear = |fan_in: u128, out: u128| add(mul(fan_in, out), out);
    match arch {
        Arch::Mlp(c) => {
            let (d, h, f) = (u(c.dim), u(c.hidden), u(c.fourier));
            let mut n = linear(add(d, f), h);
            n = add(n, mul(u(c.depth).saturating_sub(1), linear(h, h)));
            n = add(n, linear(h, d));
            if c.n_classes > 0 {
                n = add(n, mul(add(u(c.n_classes), 1), h));
            }
            n
        }
        Arch::Unet(c) => {
            let e = u(c.time_dim);
            let conv = |ci: u128, co: u128, k: u128| add(mul(mul(co, ci), k * k), co);
            let res = |ci: u128, co: u128| {
                let mut n = add(mul(2, ci), conv(ci, co, 3));
                n = add(n, linear(e, co));
                n = add(n, add(mul(2, co), conv(co, co, 3)));
                if ci != co {
                    n = add(n, conv(ci, co, 1));
                }
                n
            };
            let ch: Vec<u128> = c.channels.iter().map(|&x| u(x)).collect();
            let Some(&c0) = ch.first() else { return 0 };
            let blocks = u(c.blocks);
            let mut n = add(linear(u(c.fourier), e), linear(e, e));
            if c.n_classes > 0 {
                n = add(n, mul(add(u(c.n_classes), 1), e));
            }
            n = add(n, conv(1, c0, 3));
            let mut cur = c0;
            for (l, &cl) in ch.iter().enumerate() {
                if blocks > 0 {
                    n = add(n, add(res(cur, cl), mul(blocks - 1, res(cl, cl))));
                    cur = cl;
                }
                if l + 1 < ch.len() {
                    n = add(n, conv(cur, cur, 3));
                }
            }
            n = add(n, res(cur, cur));
            for l in (0..ch.len()).rev() {
                let cl = ch[l];
                if blocks > 0 {
                    n = add(n, add(res(add(cur, cl), cl), mul(blocks - 1, res(cl, cl))));
                    cur = cl;
                }
                if l > 0 {
                    n = add(n, conv(cur, ch[l - 1], 3));
                    cur = ch[l - 1];
                }
            }
            add(n, add(mul(2, cur), conv(cur, 1, 3)))
        }
    }
}

/// Checks everything in a checkpoint's JSON that is later used as a size or a value,
/// before anything is allocated from it: the architecture (dimension, classes and
/// parameter count within [`MAX_CHECKPOINT_DIM`], [`MAX_CLASSES`] and
/// [`MAX_CHECKPOINT_PARAMS`]), the process, the normalisation (one finite mean and one
/// finite positive standard deviation per coordinate), the class weights (one finite,
/// non-negative frequency per class, not all zero), the training settings and the weights
/// file's name (a plain file name of at most 255 bytes in the checkpoint directory).
/// Messages are plain; the caller names the file. The networks' own checks (zero sizes,
/// odd Fourier counts, indivisible image sides) run when [`layout`] builds the network,
/// which is cheap once the sizes are bounded.
fn check_meta(meta: &CheckpointMeta) -> Result<()> {
    let bad = |m: String| Err(Error::invalid(m));
    let arch = &meta.arch;
    let dim = match arch {
        Arch::Mlp(c) => Some(c.dim),
        Arch::Unet(c) => c.height.checked_mul(c.width),
    };
    let dim = match dim {
        Some(d) if d <= MAX_CHECKPOINT_DIM => d,
        _ => {
            return bad(format!(
                "arch: the data dimension is too large (at most {MAX_CHECKPOINT_DIM})"
            ))
        }
    };
    if arch.n_classes() > MAX_CLASSES {
        return bad(format!(
            "arch: {} classes is too many (at most {MAX_CLASSES})",
            arch.n_classes()
        ));
    }
    if let Arch::Unet(c) = arch {
        if c.channels.len() > 16 {
            return bad(format!("arch: {} levels of channels (at most 16)", c.channels.len()));
        }
    }
    let count = param_count(arch);
    if count > MAX_CHECKPOINT_PARAMS as u128 {
        return bad(format!(
            "arch: the {} network would have {count} parameters (at most {MAX_CHECKPOINT_PARAMS})",
            arch.kind()
        ));
    }
    if count == 0 {
        return bad("arch: the network has no parameters".into());
    }
    meta.process.validate()?;
    meta.train.validate()?;
    let norm = &meta.normalisation;
    if norm.mean.len() != dim || norm.std.len() != dim {
        return bad(format!(
            "normalisation: {} means and {} standard deviations for dimension {dim}",
            norm.mean.len(),
            norm.std.len()
        ));
    }
    if let Some(j) = norm.mean.iter().position(|m| !m.is_finite()) {
        return bad(format!("normalisation: mean {} is not finite", j + 1));
    }
    if let Some(j) = norm.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return bad(format!(
            "normalisation: standard deviation {} is {}, not a finite positive number",
            j + 1,
            number(norm.std[j])
        ));
    }
    if let Some(w) = &meta.class_weights {
        let k = arch.n_classes();
        if w.len() != k {
            return bad(format!("class_weights: {} weights for {k} classes", w.len()));
        }
        if let Some(j) = w.iter().position(|x| !(x.is_finite() && (0.0..=1.0).contains(x))) {
            return bad(format!(
                "class_weights: weight {} is {}, not a class frequency in [0, 1]",
                j + 1,
                number(w[j])
            ));
        }
        if w.iter().sum::<f64>() <= 0.0 {
            return bad("class_weights: every class has weight zero".into());
        }
    }
    let name = meta.weights.as_str();
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains(char::is_control)
        && Path::new(name).file_name().is_some_and(|f| f == name);
    if !plain {
        return bad(format!(
            "weights: '{}' is not a file name in the checkpoint directory",
            excerpt(name)
        ));
    }
    Ok(())
}

/// Reads a checkpoint's JSON and checks every size and value in it before anything is
/// allocated from them (the architecture's parameter count, [`param_count`], within
/// [`MAX_CHECKPOINT_PARAMS`]; its dimension and classes within [`MAX_CHECKPOINT_DIM`] and
/// [`MAX_CLASSES`]; the process, training settings, normalisation, class weights and
/// weights file name valid); every problem is an [`Error::File`] naming `checkpoint.json`.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join(META);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::file(dir, format!("not a checkpoint ({META}: {})", one_line(e))))?;
    let corrupted = |e: serde_json::Error| Error::file(&path, format!("corrupted checkpoint: {}", one_line(e)));
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(corrupted)?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(FORMAT_1) => {
            // Format 1 knew only the MLP: tag its architecture.
            if let Some(arch) = value.get_mut("arch").and_then(|a| a.as_object_mut()) {
                arch.insert("kind".into(), "mlp".into());
            }
        }
        Some(f) => {
            return Err(Error::file(
                &path,
                format!("unknown checkpoint format '{}'", excerpt(f)),
            ))
        }
        None => return Err(Error::file(&path, "corrupted checkpoint: no format tag")),
    }
    let meta: CheckpointMeta = serde_json::from_value(value).map_err(corrupted)?;
    check_meta(&meta).map_err(|e| Error::file(&path, format!("invalid checkpoint: {e}")))?;
    Ok(meta)
}

/// The names and shapes of the parameters of `arch` (its sizes checked by [`read_meta`]
/// first, and the weights file's size by [`load_tensors`]); the networks' own checks of
/// the architecture are errors naming `checkpoint.json` in `dir`.
fn layout(dir: &Path, arch: &Arch) -> Result<Vec<(String, Vec<usize>)>> {
    let net = Network::new(arch, 0, DType::F32, &Device::Cpu)
        .map_err(|e| Error::file(dir.join(META), format!("invalid checkpoint: {e}")))?;
    Ok(net
        .names()
        .iter()
        .cloned()
        .zip(net.vars().iter().map(|v| v.dims().to_vec()))
        .collect())
}

/// Reads the weights file named by `meta`, after checking that its size fits the
/// architecture: at least 2 bytes for each parameter (a half-precision copy) and at most
/// four `f64` copies of them (parameters, EMA, two Adam moments) plus 16 MiB of header.
fn load_tensors(dir: &Path, meta: &CheckpointMeta, device: &Device) -> Result<HashMap<String, Tensor>> {
    let wpath: PathBuf = dir.join(&meta.weights);
    let fail = |m: String| Error::file(&wpath, m);
    let info = std::fs::metadata(&wpath).map_err(|e| fail(format!("missing weights: {}", one_line(e))))?;
    if !info.is_file() {
        return Err(fail("the weights are not a regular file".into()));
    }
    let count = param_count(&meta.arch);
    let (len, need, most) = (info.len() as u128, 2 * count, 32 * count + (16 << 20));
    if len < need || len > most {
        return Err(fail(format!(
            "corrupted weights: {len} bytes for a network of {count} parameters (expected {need} to {most})"
        )));
    }
    let bytes = std::fs::read(&wpath).map_err(|e| fail(format!("cannot read weights: {}", one_line(e))))?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| fail(format!("corrupted weights: {}", one_line(e))))
}

/// The tensors `prefix.NAME` for every parameter of `layout`, each checked: present, a
/// float dtype, the shape the architecture needs, finite values. Errors name the weights
/// file and the tensor.
fn pick(
    map: &HashMap<String, Tensor>,
    prefix: &str,
    layout: &[(String, Vec<usize>)],
    wpath: &Path,
) -> Result<Vec<Tensor>> {
    layout
        .iter()
        .map(|(n, shape)| {
            let key = format!("{prefix}.{n}");
            let fail = |m: String| Error::file(wpath, format!("tensor '{key}': {m}"));
            let t = map.get(&key).ok_or_else(|| fail("missing".into()))?;
            if !matches!(t.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                return Err(fail(format!("dtype {:?}, expected a float dtype", t.dtype())));
            }
            if t.dims() != shape.as_slice() {
                return Err(fail(format!(
                    "shape {:?}, expected {shape:?} for the architecture in {META}",
                    t.dims()
                )));
            }
            let t = if matches!(t.dtype(), DType::F16 | DType::BF16) {
                t.to_dtype(DType::F32)?
            } else {
                t.clone()
            };
            let finite = t
                .to_dtype(DType::F64)
                .and_then(|x| x.flatten_all())
                .and_then(|x| x.to_vec1::<f64>())
                .map(|v| v.iter().all(|x| x.is_finite()))?;
            if !finite {
                return Err(fail("has NaN or infinite values".into()));
            }
            Ok(t)
        })
        .collect()
}

fn load_state(dir: &Path, device: &Device) -> Result<(CheckpointMeta, State)> {
    let meta = read_meta(dir)?;
    let map = load_tensors(dir, &meta, device)?;
    let wpath = dir.join(&meta.weights);
    let layout = layout(dir, &meta.arch)?;
    let net = Network::with_values(&meta.arch, &pick(&map, "param", &layout, &wpath)?, device)
        .map_err(|e| Error::file(&wpath, e.to_string()))?;
    let st = State {
        net,
        ema: pick(&map, "ema", &layout, &wpath)?,
        m: pick(&map, "adam_m", &layout, &wpath)?,
        v: pick(&map, "adam_v", &layout, &wpath)?,
        step: meta.step,
        val_loss: meta.val_loss,
    };
    Ok((meta, st))
}

/// Loads a checkpoint for sampling: the network with its **EMA** weights as a
/// [`LearnedScore`], with the checkpoint's metadata (normalisation included).
pub fn load_model(dir: &Path) -> Result<(LearnedScore, CheckpointMeta)> {
    load_model_on(dir, &Device::Cpu)
}

/// [`load_model`] with the network on `device` ([`crate::device::parse`]): scores and their
/// gradients are computed there, on tensors the caller keeps wherever it likes.
pub fn load_model_on(dir: &Path, device: &Device) -> Result<(LearnedScore, CheckpointMeta)> {
    let meta = read_meta(dir)?;
    let map = load_tensors(dir, &meta, device)?;
    let wpath = dir.join(&meta.weights);
    let ema = pick(&map, "ema", &layout(dir, &meta.arch)?, &wpath)?;
    let net = Network::with_values(&meta.arch, &ema, device).map_err(|e| Error::file(&wpath, e.to_string()))?;
    Ok((LearnedScore::new(net, meta.process.clone()), meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::UnetConfig;

    /// A U-Net state with random moments and EMA, and a loss `sum_i c_i . p_i` over all
    /// parameters but the last (which gets no gradient).
    fn state() -> (State, Tensor) {
        let arch = Arch::Unet(UnetConfig {
            channels: vec![8, 16],
            groups: 4,
            time_dim: 16,
            ..UnetConfig::for_image(8, 8)
        });
        let dev = Device::Cpu;
        let net = Network::new(&arch, 3, DType::F32, &dev).unwrap();
        let noise = Noise::new(5);
        let draw = |j: u64, v: &candle_core::Var, positive: bool| {
            let n = v.elem_count();
            let x: Vec<f32> = if positive {
                noise
                    .uniforms(stream(Purpose::User, j), n)
                    .iter()
                    .map(|&u| u as f32)
                    .collect()
            } else {
                noise
                    .normals(stream(Purpose::User, j), n, 1)
                    .iter()
                    .map(|&z| z as f32)
                    .collect()
            };
            Tensor::from_vec(x, v.shape(), &dev).unwrap()
        };
        let vars = net.vars();
        let k = vars.len() as u64;
        let ema = vars.iter().enumerate().map(|(i, v)| draw(i as u64, v, false)).collect();
        let m = vars
            .iter()
            .enumerate()
            .map(|(i, v)| draw(k + i as u64, v, false))
            .collect();
        let v = vars
            .iter()
            .enumerate()
            .map(|(i, v)| draw(2 * k + i as u64, v, true))
            .collect();
        let mut loss = Tensor::zeros((), DType::F32, &dev).unwrap();
        for (i, var) in vars[..vars.len() - 1].iter().enumerate() {
            let c = draw(3 * k + i as u64, var, false);
            loss = (loss + (var.as_tensor() * c).unwrap().sum_all().unwrap()).unwrap();
        }
        let st = State {
            net,
            ema,
            m,
            v,
            step: 3,
            val_loss: None,
        };
        (st, loss)
    }

    fn values(ts: &[Tensor]) -> Vec<Vec<f32>> {
        ts.iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect()
    }

    fn params(st: &State) -> Vec<Vec<f32>> {
        values(&st.net.vars().iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>())
    }

    #[test]
    fn flat_optimiser_matches_the_tensor_one() {
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 4,
            clip: 0.5,
            ema_decay: 0.9,
        };
        let (mut a, loss) = state();
        let (mut b, loss_b) = state();
        let mut flat = FlatAdam::new(&b).unwrap();
        // The round trip through the flat buffers is exact.
        let before = (values(&b.ema), values(&b.m), values(&b.v));
        flat.sync(&mut b).unwrap();
        assert_eq!(before, (values(&b.ema), values(&b.m), values(&b.v)));
        // One step each way, from the same gradients (the last parameter has none).
        let grads = loss.backward().unwrap();
        let gs = optim::gradients(a.net.vars(), &grads).unwrap();
        optim::adamw_tensors(a.net.vars(), &gs, &mut a.m, &mut a.v, Some(&mut a.ema), &h, "test").unwrap();
        flat.step(b.net.vars(), &loss_b.backward().unwrap(), &h).unwrap();
        flat.sync(&mut b).unwrap();
        for (x, y) in [
            (params(&a), params(&b)),
            (values(&a.ema), values(&b.ema)),
            (values(&a.m), values(&b.m)),
            (values(&a.v), values(&b.v)),
        ] {
            for (x, y) in x.iter().flatten().zip(y.iter().flatten()) {
                assert!((x - y).abs() <= 2e-6 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn flat_optimiser_rejects_a_non_finite_gradient_and_changes_nothing() {
        let (st, _) = state();
        let mut flat = FlatAdam::new(&st).unwrap();
        let vars = st.net.vars();
        let grads = (vars[0].as_tensor() * f64::NAN)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (p0, m0) = (flat.p.clone(), flat.m.clone());
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            clip: 0.0,
            ema_decay: 0.9,
        };
        assert!(matches!(flat.step(vars, &grads, &h), Err(Error::Numerical(_))));
        assert_eq!((p0, m0), (flat.p.clone(), flat.m.clone()));
        assert_eq!(params(&st)[0], flat.p[..vars[0].elem_count()].to_vec());
    }
}
