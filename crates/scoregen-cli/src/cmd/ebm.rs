//! `scoregen ebm`: energy-based models — a Bernoulli RBM trained by CD-k on
//! binarised images, or an energy network trained by contrastive divergence or score
//! matching and sampled by Langevin dynamics ([`scoregen::ebm`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use scoregen::benchmarks::mode_counts;
use scoregen::data::{self, builtin};
use scoregen::ebm::{
    rbm_samples, sample_energy, train_energy, EnergyData, EnergySampler, EnergyTrainOptions, EnergyTraining, SamplerRun,
};
use scoregen::nn::energy::{save_energy, EnergyMeta};
use scoregen::nn::rbm::{binarise, train_rbm, RbmConfig};

use crate::limits;
use crate::output::Outputs;
use crate::plot::{image_grid, pair_plot, Series};
use crate::progress::bar;
use crate::{CliError, CliResult};
use scoregen::budget::Estimate;

/// `scoregen ebm`.
#[derive(Args, Debug)]
pub struct EbmArgs {
    /// The model: `rbm` (Bernoulli RBM, CD-k) or `energy` (energy network + Langevin).
    #[arg(long)]
    pub model: String,
    /// Training data: FILE.npy, FILE.csv, or builtin:NAME (e.g. builtin:digits for rbm,
    /// builtin:gmm25 for energy).
    #[arg(long)]
    pub data: String,
    /// Output directory (created; must not hold a previous run's model).
    #[arg(long)]
    pub out: PathBuf,
    /// Points drawn from a synthetic built-in set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hidden units (rbm, default 128) or hidden width (energy, default 128).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// rbm: Gibbs steps k of CD-k.
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// rbm: epochs.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// rbm: pixels >= threshold are 1 (data scaled to [0, 1]; digits: 8 of 16 = 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// rbm: Gibbs sweeps for the samples.
    #[arg(long, default_value_t = 1000)]
    pub gibbs_steps: usize,
    /// energy: training, `cd` (contrastive divergence, SGLD negatives from a replay buffer),
    /// `ssm` (sliced score matching) or `dsm` (noise-conditional DSM over a VE sigma ladder).
    #[arg(long, default_value = "cd")]
    pub train: String,
    /// energy: sampler, `ula`, `mala` or `ald` (annealed Langevin; needs --train dsm).
    #[arg(long, default_value = "mala")]
    pub sampler: String,
    /// energy: hidden layers.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// energy: optimiser steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// energy: batch size.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Learning rate (default: rbm 0.05, energy 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// energy, cd: SGLD steps K per optimiser step.
    #[arg(long, default_value_t = 20)]
    pub sgld_steps: usize,
    /// energy, cd: SGLD step size (noise sqrt(2 eps)); on normalised data.
    #[arg(long, default_value_t = 2e-3)]
    pub sgld_step: f64,
    /// energy: Langevin steps of the sampler (ald: in total over 10 levels).
    #[arg(long, default_value_t = 1000)]
    pub langevin_steps: usize,
    /// energy: Langevin step size for ula / mala, on normalised data (ald: 0.2 sigma_L^2).
    #[arg(long, default_value_t = 1e-3)]
    pub langevin_step: f64,
    /// Samples to draw (rbm: images in the grid).
    #[arg(long)]
    pub samples: Option<usize>,
}

fn err(e: candle_core::Error) -> CliError {
    scoregen::Error::from(e).into()
}

/// `scoregen ebm`.
pub fn run(a: EbmArgs, quiet: bool) -> CliResult<()> {
    match a.model.as_str() {
        "rbm" => run_rbm(a, quiet),
        "energy" => run_energy(a, quiet),
        other => Err(CliError::user(format!(
            "unknown --model '{other}' (expected rbm, energy)"
        ))),
    }
}

/// Bounds the counts and checks the memory of a run on `n x d` data, before any work.
fn check_sizes(a: &EbmArgs, n: usize, d: usize) -> CliResult<()> {
    limits::count("--k", a.k, 1, limits::MAX_ROUNDS)?;
    limits::count("--epochs", a.epochs, 1, limits::MAX_TRAIN_STEPS)?;
    limits::count("--gibbs-steps", a.gibbs_steps, 0, limits::MAX_STEPS)?;
    limits::count("--depth", a.depth, 1, 1000)?;
    limits::count("--steps", a.steps, 1, limits::MAX_TRAIN_STEPS)?;
    limits::count("--batch", a.batch, 1, usize::MAX)?;
    limits::count("--sgld-steps", a.sgld_steps, 0, limits::MAX_STEPS)?;
    limits::count("--langevin-steps", a.langevin_steps, 0, limits::MAX_STEPS)?;
    let hidden = a.hidden.unwrap_or(128);
    limits::count("--hidden", hidden, 1, usize::MAX)?;
    if let Some(lr) = a.lr {
        limits::learning_rate(lr)?;
    }
    let samples = a.samples.unwrap_or(64);
    let e = limits::rows(Estimate::new(), "--n", n, d, 4);
    let e = limits::rows(e, "--samples", samples, d, 12);
    let h = hidden as f64;
    let e = e
        .add(
            "--hidden",
            format!(
                "--hidden {hidden} x (dimension {d} + --hidden x --depth {}) x 6 buffers",
                a.depth
            ),
            h * (d as f64 + h * a.depth as f64) * 6.0,
            8.0,
        )
        .add(
            "--batch",
            format!(
                "--batch {} x --hidden {hidden} x --depth {} activations",
                a.batch, a.depth
            ),
            a.batch.max(samples) as f64 * h * (a.depth as f64 + 1.0) * 8.0,
            8.0,
        );
    limits::check_memory(&e)
}

fn load(a: &EbmArgs) -> CliResult<(Tensor, Option<(usize, usize)>)> {
    match builtin::parse_data_arg(&a.data) {
        Some(name) => {
            limits::builtin_points(a.n)?;
            let ds = builtin::load(name, Some(a.n), a.seed)?;
            Ok((ds.x, ds.image_shape))
        }
        None => Ok((data::read_points(&a.data)?, None)),
    }
}

/// The output directory must be new or hold no previous model.
fn check_out(out: &Path, model_file: &str) -> CliResult<()> {
    if out.join(model_file).exists() {
        return Err(CliError::user(format!(
            "{}: a model is already there (choose another --out)",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(CliError::user(format!("{}: not a directory", out.display())));
    }
    Ok(())
}

/// Stages the files `names` (a name ending in `/` is a directory) of the output directory
/// `out`: a new `out` is staged as a whole, in an existing one each entry is staged on its
/// own. Returns the staging path of each entry; nothing appears in `out` before commit.
fn stage_out(outs: &mut Outputs, a: &EbmArgs, names: &[&str]) -> CliResult<Vec<PathBuf>> {
    if builtin::parse_data_arg(&a.data).is_none() {
        outs.input("--data", &a.data);
    }
    if a.out.is_dir() {
        names
            .iter()
            .map(|n| match n.strip_suffix('/') {
                Some(d) => outs.dir("--out", a.out.join(d)),
                None => outs.file("--out", a.out.join(n)),
            })
            .collect()
    } else {
        let d = outs.dir("--out", &a.out)?;
        Ok(names.iter().map(|n| d.join(n.trim_end_matches('/'))).collect())
    }
}

/// Creates the parent of a staged output (the staged `--out` directory itself when `--out`
/// is new).
fn make_parent(p: &Path) -> CliResult<()> {
    let parent = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| CliError::user(format!("{}: cannot create directory: {e}", parent.display())))
}

fn run_rbm(a: EbmArgs, quiet: bool) -> CliResult<()> {
    check_out(&a.out, "rbm.json")?;
    let mut outs = Outputs::new();
    let staged = stage_out(&mut outs, &a, &["rbm.json", "samples.npy", "samples.png"])?;
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(CliError::user(format!(
            "--threshold must be in [0, 1], got {}",
            a.threshold
        )));
    }
    let n_samples = a.samples.unwrap_or(64);
    if n_samples == 0 {
        return Err(CliError::user("--samples must be positive"));
    }
    let (x, shape) = load(&a)?;
    let (n, d) = x.dims2().map_err(err)?;
    check_sizes(&a, n, d)?;
    let raw: Vec<f64> = x
        .to_dtype(DType::F64)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1())
        .map_err(err)?;
    if let Some(i) = raw.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(CliError::user(format!(
            "{}: value {} (row {}, column {}) outside [0, 1]; the RBM needs pixels scaled to [0, 1]",
            a.data,
            raw[i],
            i / d + 1,
            i % d + 1
        )));
    }
    let v = binarise(&raw, a.threshold);
    let cfg = RbmConfig {
        hidden: a.hidden.unwrap_or(128),
        k: a.k,
        epochs: a.epochs,
        lr: a.lr.unwrap_or(0.05),
        seed: a.seed,
        ..Default::default()
    };
    // Announced with the first epoch, after the library's validation.
    let mut header = (!quiet).then(|| {
        format!(
            "RBM: {n} x {d} binary (threshold {}), {} hidden, CD-{}, {} epochs",
            a.threshold, cfg.hidden, cfg.k, cfg.epochs
        )
    });
    let started = Instant::now();
    let (rbm, rep) = train_rbm(&v, d, &cfg, &mut |e, r| {
        if let Some(h) = header.take() {
            eprintln!("{h}");
        }
        println!("epoch {e}: reconstruction error {r:.5}")
    })?;
    let pv = rbm_samples(&rbm, n_samples, d, a.gibbs_steps, a.seed)?;
    make_parent(&staged[0])?;
    rbm.save(&staged[0])?;
    let samples = Tensor::from_vec(pv.clone(), (n_samples, d), &Device::Cpu).map_err(err)?;
    data::write_points(&staged[1], &samples)?;
    let (h, w) = shape.unwrap_or_else(|| {
        let s = (d as f64).sqrt().round() as usize;
        if s * s == d {
            (s, s)
        } else {
            (1, d)
        }
    });
    image_grid(
        &staged[2],
        &pv,
        h,
        w,
        8,
        &format!("RBM Gibbs samples, p(v | h) after {} sweeps", a.gibbs_steps),
    )
    .map_err(CliError::user)?;
    outs.commit()?;
    println!(
        "trained in {:.1}s: error at epoch 1 {:.5} (untrained {:.5}), at the end {:.5}; wrote rbm.json, samples.npy, \
         samples.png in {}",
        started.elapsed().as_secs_f64(),
        rep.recon_error[0],
        rep.initial_recon_error,
        rep.recon_error.last().copied().unwrap_or(f64::NAN),
        a.out.display()
    );
    Ok(())
}

fn run_energy(a: EbmArgs, quiet: bool) -> CliResult<()> {
    check_out(&a.out, "model")?;
    let mut outs = Outputs::new();
    let staged = stage_out(&mut outs, &a, &["model/", "samples.npy", "samples.png"])?;
    let train = a.train.as_str();
    if !matches!(train, "cd" | "ssm" | "dsm") {
        return Err(CliError::user(format!(
            "unknown --train '{train}' (expected cd, ssm, dsm)"
        )));
    }
    let sampler = a.sampler.as_str();
    if !matches!(sampler, "ula" | "mala" | "ald") {
        return Err(CliError::user(format!(
            "unknown --sampler '{sampler}' (expected ula, mala, ald)"
        )));
    }
    if sampler == "ald" && train != "dsm" {
        return Err(CliError::user(
            "--sampler ald needs a noise-conditional energy (--train dsm)",
        ));
    }
    if !(a.langevin_step.is_finite() && a.langevin_step > 0.0) || a.langevin_steps == 0 {
        return Err(CliError::user(
            "--langevin-step must be positive and --langevin-steps >= 1",
        ));
    }
    let n_samples = a.samples.unwrap_or(2000);
    if n_samples == 0 {
        return Err(CliError::user("--samples must be positive"));
    }
    let (x, _) = load(&a)?;
    let (n, d) = x.dims2().map_err(err)?;
    let data = EnergyData::new(&x).map_err(|e| CliError::user(format!("{}: {e}", a.data)))?;
    let opts = EnergyTrainOptions {
        training: match train {
            "cd" => EnergyTraining::Cd,
            "ssm" => EnergyTraining::Ssm,
            _ => EnergyTraining::Dsm,
        },
        hidden: a.hidden.unwrap_or(128),
        depth: a.depth,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr.unwrap_or(1e-3),
        sgld_steps: a.sgld_steps,
        sgld_step: a.sgld_step,
        seed: a.seed,
    };
    // Announced with the first step, after the library's validation.
    let mut header = (!quiet).then(|| {
        format!(
            "energy model: {n} x {d} (normalised), training by {train}, {} steps",
            a.steps
        )
    });
    let pb = bar(a.steps as u64, "train", quiet);
    let mut tick = |k: usize, l: f64| {
        if let Some(h) = header.take() {
            pb.suspend(|| eprintln!("{h}"));
        }
        pb.set_position(k as u64);
        if k.is_multiple_of(20) {
            pb.set_message(format!("loss {l:.4}"));
        }
    };
    let started = Instant::now();
    let trained = train_energy(&data, &opts, &mut tick);
    pb.finish_and_clear();
    let (net, process, rep) = trained?;
    let train_s = started.elapsed().as_secs_f64();
    let which = match sampler {
        "ald" => EnergySampler::Ald,
        "mala" => EnergySampler::Mala,
        _ => EnergySampler::Ula,
    };
    let (net, xs, run) = sample_energy(
        net,
        process.as_ref(),
        &data,
        which,
        n_samples,
        a.langevin_steps,
        a.langevin_step,
        a.seed,
    )?;
    let note = match run {
        SamplerRun::Ald { levels, per_level } => format!("annealed Langevin, {levels} levels x {per_level} steps"),
        SamplerRun::Mala { acceptance_rate } => format!("MALA, acceptance rate {acceptance_rate:.3}"),
        SamplerRun::Ula => "ULA".to_string(),
    };
    let norm = data.norm;
    make_parent(&staged[0])?;
    let meta = EnergyMeta {
        format: String::new(),
        arch: net.config.clone(),
        process,
        normalisation: norm,
        trained_by: train.to_string(),
        step: a.steps,
    };
    save_energy(&staged[0], &net, &meta)?;
    data::write_points(&staged[1], &xs)?;
    let xv: Vec<f64> = xs.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?;
    let dv: Vec<f64> = x
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(err)?;
    pair_plot(
        &staged[2],
        &[
            Series {
                label: "data",
                data: &dv,
                d,
            },
            Series {
                label: "EBM samples",
                data: &xv,
                d,
            },
        ],
        &format!("energy model ({train}), {note}"),
        4,
    )
    .map_err(CliError::user)?;
    outs.commit()?;
    println!(
        "trained by {train} in {train_s:.1}s (last loss {:.4}); sampled {n_samples} by {note}",
        rep.losses.last().copied().unwrap_or(f64::NAN)
    );
    if a.data == "builtin:gmm25" {
        let counts = mode_counts(&xv, &builtin::gmm25_law().means(), 3.0);
        let populated = counts.iter().filter(|&&c| c > 0).count();
        println!(
            "gmm25: {populated}/25 modes populated; samples within 3 of a mode: {:.1}%; per mode {counts:?}",
            100.0 * counts.iter().sum::<usize>() as f64 / n_samples as f64
        );
    }
    println!("wrote model/, samples.npy, samples.png in {}", a.out.display());
    Ok(())
}
