//! `scoregen train`: denoising score matching on a data file or a built-in set.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use scoregen::data::{self, builtin};
use scoregen::nn::{train, Loss, MlpConfig, TimeSampling, TrainConfig, TrainSetup};
use scoregen::sample::default_process;
use scoregen::score::Parametrisation;

use crate::progress::bar;
use crate::{CliError, CliResult};

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
    /// Network output: eps, score or x0.
    #[arg(long, default_value = "eps")]
    pub param: String,
    /// Hidden width of the MLP.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Hidden layers of the MLP.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Batch size.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Peak learning rate (AdamW; warm-up then cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Loss: dsm (denoising), ssm (sliced), esm (exact; d JVPs a step) or ncsn (DSM over a
    /// geometric ladder of 10 noise levels).
    #[arg(long, default_value = "dsm")]
    pub loss: String,
    /// Training-time sampling: uniform, logsnr or mixed.
    #[arg(long, default_value = "mixed")]
    pub time_sampling: String,
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
    v.iter()
        .enumerate()
        .map(|(i, &c)| {
            if c >= 0.0 && c.fract() == 0.0 && c < u32::MAX as f64 {
                Ok(c as u32)
            } else {
                Err(CliError::user(format!(
                    "{what}: label {c} in row {} is not a non-negative integer",
                    i + 1
                )))
            }
        })
        .collect()
}

/// `scoregen train`.
pub fn run(a: TrainArgs, quiet: bool) -> CliResult<()> {
    let param: Parametrisation = a.param.parse()?;
    let _: Loss = a.loss.parse()?;
    let time_sampling: TimeSampling = a.time_sampling.parse()?;
    let (x, mut labels, n_classes) = match builtin::parse_data_arg(&a.data) {
        Some(name) => {
            let ds = builtin::load(name, Some(a.n), a.seed)?;
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
        return train_on(a, x, labels, k, param, time_sampling, quiet);
    }
    if a.unconditional {
        labels = None;
    }
    let k = if labels.is_some() { n_classes } else { 0 };
    train_on(a, x, labels, k, param, time_sampling, quiet)
}

fn train_on(
    a: TrainArgs,
    x: Tensor,
    labels: Option<Vec<u32>>,
    n_classes: usize,
    param: Parametrisation,
    time_sampling: TimeSampling,
    quiet: bool,
) -> CliResult<()> {
    let (n, d) = x.dims2().map_err(scoregen::Error::from)?;
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
    let arch = MlpConfig {
        dim: d,
        hidden: a.hidden,
        depth: a.depth,
        fourier: 16,
        n_classes,
        param,
    };
    // The horizon: the normalised data have unit variance per coordinate, radius ~ sqrt(d).
    let process = default_process(3.0 * (d as f64).sqrt());
    let config = TrainConfig {
        time_sampling,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        loss: a.loss.parse()?,
        ..Default::default()
    };
    let setup = TrainSetup {
        arch,
        process,
        config,
        checkpoint_dir: Some(&a.out),
        resume: a.resume,
    };
    if !quiet {
        eprintln!(
            "training on {n} x {d}{} ({} classes), {} steps, batch {}",
            if labels.is_some() { " with labels" } else { "" },
            n_classes,
            a.steps,
            a.batch
        );
    }
    let pb = bar(a.steps as u64, "train", quiet);
    let r = train(&x, labels.as_deref(), &setup, &mut |p| {
        pb.set_position(p.step as u64);
        if p.step % 20 == 0 {
            let val = p.val_loss.map(|v| format!(" val {v:.4}")).unwrap_or_default();
            pb.set_message(format!("loss {:.4}{val}", p.loss));
        }
    });
    pb.finish_and_clear();
    let r = r?;
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
