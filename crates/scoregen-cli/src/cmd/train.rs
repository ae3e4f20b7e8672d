//! `scoregen train`: denoising score matching on a data file or a built-in set.
//!
//! The network is an MLP for vector data and a convolutional U-Net for images (`--model`;
//! by default `unet` when the data have an image shape — `builtin:digits`, or a file with
//! `--image-shape HxW` — and `mlp` otherwise). Step count, batch size and learning rate
//! default per network.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use scoregen::data::{self, builtin};
use scoregen::nn::{train, Arch, Loss, MlpConfig, TimeSampling, TrainConfig, TrainSetup, UnetConfig};
use scoregen::process::ProcessKind;
use scoregen::sample::standardised_process_of;
use scoregen::score::Parametrisation;

use crate::limits;
use crate::output::Outputs;
use crate::progress::bar;
use crate::{CliError, CliResult};
use scoregen::budget::Estimate;

/// `scoregen train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training data: FILE.npy, FILE.csv, or builtin:NAME (two-spheres, gmm25, moons,
    /// swiss-roll, checkerboard, funnel, digits).
    #[arg(long)]
    pub data: String,
    /// Labels: a file with one integer per row (.npy or .csv), for class-conditional training.
    #[arg(long, conflicts_with = "label_column")]
    pub labels: Option<PathBuf>,
    /// Take labels from this column (0-based) of the data file and train on the others.
    #[arg(long)]
    pub label_column: Option<usize>,
    /// Train an unconditional model even when the built-in set has labels.
    #[arg(long)]
    pub unconditional: bool,
    /// Points drawn from a synthetic built-in set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Network output: edm (Karras et al. 2022: preconditioned input, log-sigma time, skip
    /// connection to the denoiser), eps, score or x0 [default: edm for the MLP, eps for the
    /// U-Net].
    #[arg(long)]
    pub param: Option<String>,
    /// Network: mlp or unet [default: unet for images (builtin:digits, --image-shape), else mlp].
    #[arg(long)]
    pub model: Option<String>,
    /// Image shape HxW of the rows of a data file (e.g. 8x8; row-major pixels); built-in image
    /// sets know theirs.
    #[arg(long)]
    pub image_shape: Option<String>,
    /// Hidden width of the MLP [default: 256].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Hidden layers of the MLP [default: 3].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Channels of the U-Net's levels, full resolution first [default: 32, then 64 per
    /// further level; 8x8 images: 32,64].
    #[arg(long)]
    pub channels: Option<String>,
    /// Residual blocks per level and side of the U-Net [default: 1].
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Optimiser steps [default: 4000 (mlp), 1500 (unet)].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Batch size [default: 512 (mlp), 64 (unet)].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (AdamW; warm-up then cosine decay) [default: 1e-3 (mlp), 2e-3 (unet)].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Loss: dsm (denoising), ssm (sliced), esm (exact; d JVPs a step) or ncsn (DSM over a
    /// geometric ladder of 10 noise levels); ssm, esm and ncsn need the MLP.
    #[arg(long, default_value = "dsm")]
    pub loss: String,
    /// Training-time sampling: uniform, logsnr, mixed or lognormal (EDM: ln sigma ~
    /// N(-1.2, 1.2^2)) [default: lognormal with --param edm, else mixed].
    #[arg(long)]
    pub time_sampling: Option<String>,
    /// The forward process: ou (constant rate, horizon from the data's dimension), vp (DDPM's
    /// linear schedule), sub-vp (Song et al. 2021) or ve (NCSN, sigma_max twice the data
    /// radius). Samplers and posterior methods read it from the checkpoint.
    #[arg(long, default_value = "ou")]
    pub process: String,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    pub resume: bool,
    /// Checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
}

fn labels_from(t: &Tensor, what: &str) -> CliResult<Vec<u32>> {
    let v: Vec<f64> = t
        .to_dtype(DType::F64)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1())
        .map_err(scoregen::Error::from)?;
    // Checked against the largest class count before anything per class is allocated.
    Ok(scoregen::data::labels_from(&v, what)?.0)
}

/// `scoregen train`.
pub fn run(a: TrainArgs, quiet: bool) -> CliResult<()> {
    let param: Option<Parametrisation> = a.param.as_deref().map(str::parse).transpose()?;
    let _: Loss = a.loss.parse()?;
    let time_sampling: Option<TimeSampling> = a.time_sampling.as_deref().map(str::parse).transpose()?;
    // Checked before the data are read; used in `train_on`.
    a.process.parse::<ProcessKind>()?;
    let mut image = a.image_shape.as_deref().map(parse_image_shape).transpose()?;
    let (x, mut labels, n_classes) = match builtin::parse_data_arg(&a.data) {
        Some(name) => {
            limits::builtin_points(a.n)?;
            let ds = builtin::load(name, Some(a.n), a.seed)?;
            if image.is_none() {
                image = ds.image_shape;
            }
            (ds.x, ds.labels, ds.n_classes)
        }
        None => {
            let x = data::read_points(&a.data)?;
            match a.label_column {
                Some(j) => {
                    let (_, d) = x.dims2().map_err(scoregen::Error::from)?;
                    if j >= d {
                        return Err(CliError::user(format!(
                            "--label-column {j} out of range for {d} columns"
                        )));
                    }
                    let keep: Vec<u32> = (0..d as u32).filter(|&c| c as usize != j).collect();
                    let idx = Tensor::from_vec(keep, d - 1, &Device::Cpu).map_err(scoregen::Error::from)?;
                    let l = labels_from(&x.narrow(1, j, 1).map_err(scoregen::Error::from)?, &a.data)?;
                    let k = l.iter().max().map_or(0, |m| *m as usize + 1);
                    (x.index_select(&idx, 1).map_err(scoregen::Error::from)?, Some(l), k)
                }
                None => (x, None, 0),
            }
        }
    };
    if let Some(path) = &a.labels {
        let l = labels_from(&data::read_points(path)?, &path.display().to_string())?;
        let k = l.iter().max().map_or(0, |m| *m as usize + 1);
        labels = Some(l);
        let net = NetChoice::new(&a, image, param)?;
        let time_sampling = time_sampling.unwrap_or_else(|| TimeSampling::default_for(net.param()));
        return train_on(a, x, labels, k, net, time_sampling, quiet);
    }
    if a.unconditional {
        labels = None;
    }
    let k = if labels.is_some() { n_classes } else { 0 };
    let net = NetChoice::new(&a, image, param)?;
    let time_sampling = time_sampling.unwrap_or_else(|| TimeSampling::default_for(net.param()));
    train_on(a, x, labels, k, net, time_sampling, quiet)
}

/// `HxW` (e.g. `8x8`) as `(height, width)`.
pub fn parse_image_shape(s: &str) -> CliResult<(usize, usize)> {
    let bad = || {
        CliError::user(format!(
            "image shape '{s}': expected HxW with positive integers, e.g. 8x8"
        ))
    };
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (h, w): (usize, usize) = (
        h.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    );
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

/// The network asked for, before the data dimension and classes are known.
enum NetChoice {
    Mlp {
        hidden: usize,
        depth: usize,
        param: Parametrisation,
    },
    Unet(UnetConfig),
}

impl NetChoice {
    /// The network's output parametrisation.
    fn param(&self) -> Parametrisation {
        match self {
            NetChoice::Mlp { param, .. } => *param,
            NetChoice::Unet(cfg) => cfg.param,
        }
    }

    /// `param`: the `--param` given, else the network's default ([`MlpConfig::reference`],
    /// [`UnetConfig::for_image`]).
    fn new(a: &TrainArgs, image: Option<(usize, usize)>, param: Option<Parametrisation>) -> CliResult<Self> {
        let kind = match a.model.as_deref() {
            Some(m @ ("mlp" | "unet")) => m,
            Some(m) => return Err(CliError::user(format!("unknown --model '{m}' (expected mlp or unet)"))),
            None if image.is_some() => "unet",
            None => "mlp",
        };
        let only = |flag: &str, given: bool, net: &str| -> CliResult<()> {
            if given {
                return Err(CliError::user(format!("{flag} applies to --model {net} only")));
            }
            Ok(())
        };
        if kind == "mlp" {
            only("--channels", a.channels.is_some(), "unet")?;
            only("--blocks", a.blocks.is_some(), "unet")?;
            only("--image-shape", a.image_shape.is_some(), "unet")?;
            return Ok(NetChoice::Mlp {
                hidden: a.hidden.unwrap_or(256),
                depth: a.depth.unwrap_or(3),
                param: param.unwrap_or(MlpConfig::reference(1).param),
            });
        }
        only("--hidden", a.hidden.is_some(), "mlp")?;
        only("--depth", a.depth.is_some(), "mlp")?;
        let (h, w) = image
            .ok_or_else(|| CliError::user("--model unet needs images: a built-in image set or --image-shape HxW"))?;
        let default = UnetConfig::for_image(h, w);
        let mut cfg = UnetConfig {
            param: param.unwrap_or(default.param),
            ..default
        };
        if let Some(c) = &a.channels {
            cfg.channels = c
                .split(',')
                .map(|v| v.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| CliError::user(format!("--channels '{c}': expected integers separated by commas")))?;
        }
        if let Some(b) = a.blocks {
            cfg.blocks = b;
        }
        Ok(NetChoice::Unet(cfg))
    }

    fn arch(self, dim: usize, n_classes: usize) -> CliResult<Arch> {
        Ok(match self {
            NetChoice::Mlp { hidden, depth, param } => Arch::Mlp(MlpConfig {
                dim,
                hidden,
                depth,
                fourier: 16,
                n_classes,
                param,
            }),
            NetChoice::Unet(cfg) => {
                if cfg.dim() != dim {
                    return Err(CliError::user(format!(
                        "image shape {}x{} has {} pixels, the data {dim} columns",
                        cfg.height,
                        cfg.width,
                        cfg.dim()
                    )));
                }
                Arch::Unet(UnetConfig { n_classes, ..cfg })
            }
        })
    }

    /// Default (steps, batch, learning rate).
    fn defaults(&self) -> (usize, usize, f64) {
        match self {
            NetChoice::Mlp { .. } => (4000, 512, 1e-3),
            NetChoice::Unet(_) => (1500, 64, 2e-3),
        }
    }
}

fn train_on(
    a: TrainArgs,
    x: Tensor,
    labels: Option<Vec<u32>>,
    n_classes: usize,
    net: NetChoice,
    time_sampling: TimeSampling,
    quiet: bool,
) -> CliResult<()> {
    let (n, d) = x.dims2().map_err(scoregen::Error::from)?;
    let process_kind: ProcessKind = a.process.parse()?;
    if let Some(l) = &labels {
        if l.len() != n {
            return Err(CliError::user(format!("{} labels for {n} rows of data", l.len())));
        }
    }
    if a.out.exists() && !a.resume && a.out.join("checkpoint.json").exists() {
        return Err(CliError::user(format!(
            "{}: a checkpoint is already there (use --resume, or another --out)",
            a.out.display()
        )));
    }
    let (steps, batch, lr) = net.defaults();
    let (steps, batch, lr) = (a.steps.unwrap_or(steps), a.batch.unwrap_or(batch), a.lr.unwrap_or(lr));
    limits::learning_rate(lr)?;
    let arch = net.arch(d, n_classes)?;
    limits::count("--steps", steps, 1, limits::MAX_TRAIN_STEPS)?;
    limits::count("--batch", batch, 1, usize::MAX)?;
    limits::count("--checkpoint-every", a.checkpoint_every, 0, usize::MAX)?;
    let e = limits::rows(Estimate::new(), "--data", n, d, 3).add(
        "--data",
        format!("{n_classes} classes (labels up to {})", n_classes.saturating_sub(1)),
        n_classes as f64,
        8.0 * 4.0,
    );
    limits::check_memory(&limits::network(
        e,
        "--batch",
        batch,
        &arch,
        "--hidden, --depth or --channels",
    ))?;
    // The normalised data have unit variance per coordinate.
    let process = standardised_process_of(process_kind, d);
    let config = TrainConfig {
        time_sampling,
        steps,
        batch,
        lr,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        loss: a.loss.parse()?,
        ..Default::default()
    };
    // A new run into a new directory is staged beside it and appears only when training has
    // succeeded (a run that fails leaves nothing). A resumed run, or one into an existing
    // directory or under directories still to be created, checkpoints in place (each file is written atomically), so that it can be
    // resumed after an interruption.
    let mut outs = Outputs::new();
    if builtin::parse_data_arg(&a.data).is_none() {
        outs.input("--data", &a.data);
    }
    if let Some(l) = &a.labels {
        outs.input("--labels", l);
    }
    let parent_exists = match a.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.is_dir(),
        _ => true,
    };
    let dir = if a.resume || a.out.exists() || !parent_exists {
        if a.out.exists() && !a.out.is_dir() {
            return Err(CliError::user(format!(
                "--out {}: is a file, expected a directory",
                a.out.display()
            )));
        }
        a.out.clone()
    } else {
        outs.dir("--out", &a.out)?
    };
    let setup = TrainSetup {
        arch,
        process,
        config,
        checkpoint_dir: Some(&dir),
        resume: a.resume,
        device: crate::device::get(),
    };
    // Announced once training has started, i.e. after the library's own validation, so
    // that a refused run prints its error line alone.
    let mut header = (!quiet).then(|| {
        format!(
            "training {} on {n} x {d}{} ({} classes), {} steps, batch {}",
            setup.arch.kind(),
            if labels.is_some() { " with labels" } else { "" },
            n_classes,
            steps,
            batch
        )
    });
    let pb = bar(steps as u64, "train", quiet);
    let r = train(&x, labels.as_deref(), &setup, &mut |p| {
        if let Some(h) = header.take() {
            pb.suspend(|| eprintln!("{h}"));
        }
        pb.set_position(p.step as u64);
        if p.step % 20 == 0 {
            let val = p.val_loss.map(|v| format!(" val {v:.4}")).unwrap_or_default();
            pb.set_message(format!("loss {:.4}{val}", p.loss));
        }
    });
    pb.finish_and_clear();
    let r = r?;
    outs.commit()?;
    println!(
        "trained {} steps ({:.1} steps/s): train loss {:.4}, validation loss {}; checkpoint in {}",
        r.step,
        r.steps_per_sec,
        r.train_loss,
        r.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
        a.out.display()
    );
    Ok(())
}
