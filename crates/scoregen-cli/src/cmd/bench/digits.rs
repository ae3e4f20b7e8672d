//! `scoregen bench digits`: inpainting, outpainting and super-resolution figures of real
//! digits with a trained image prior ([`scoregen::benchmarks::digits`]).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use scoregen::benchmarks::digits::{examples, observation_image, restore, task_methods, tasks};
use scoregen::data::builtin;
use scoregen::inverse::Method;

use super::super::rows_f64;
use crate::limits;
use crate::plot::image_grid;
use crate::{CliError, CliResult};

#[derive(Args, Debug)]
pub struct BenchDigitsArgs {
    /// A trained image model (e.g. `scoregen train --data builtin:digits --model unet`).
    #[arg(long)]
    pub model: PathBuf,
    /// Test digits (rows of the figures).
    #[arg(long, default_value_t = 4)]
    pub examples: usize,
    /// Particles of the SMC methods.
    #[arg(long, default_value_t = 16)]
    pub particles: usize,
    /// Reverse steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Methods, comma separated (masks also run replacement and smc-impute).
    #[arg(long, default_value = "mcgdiff,tds,dps,pigdm,ddrm")]
    pub methods: String,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for digits_inpaint.png, digits_outpaint.png and digits_superres.png.
    #[arg(long, default_value = "out")]
    pub out_dir: PathBuf,
}

/// `scoregen bench digits`: one PNG grid per task, rows = digits, columns = truth,
/// observation, then one posterior sample per method.
pub fn run(b: BenchDigitsArgs, quiet: bool) -> CliResult<()> {
    let (score, meta) = scoregen::nn::load_model_on(&b.model, &crate::device::get())?;
    let (h, w) = meta
        .arch
        .image_shape()
        .ok_or_else(|| CliError::user("bench digits needs an image model (train --model unet)"))?;
    let d = h * w;
    if b.examples == 0 || b.particles == 0 || b.steps == 0 {
        return Err(CliError::user("--examples, --particles and --steps must be positive"));
    }
    limits::count("--steps", b.steps, 1, limits::MAX_STEPS)?;
    limits::check_memory(&limits::rows(
        scoregen::budget::Estimate::new(),
        "--particles",
        b.particles,
        d,
        16,
    ))?;
    std::fs::create_dir_all(&b.out_dir).map_err(|e| CliError::user(format!("{}: {e}", b.out_dir.display())))?;
    let (all, _) = rows_f64(&builtin::load("digits", None, 0)?.x)?;
    let idx = examples(all.len() / d, b.examples);
    for (task, op, sigma_y) in tasks(h, w)? {
        let names = task_methods(&op, &b.methods);
        let methods: Vec<Method> = names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?;
        let cols = 2 + methods.len();
        let mut grid = Vec::with_capacity(b.examples * cols * d);
        for (e, &i) in idx.iter().enumerate() {
            let truth = &all[i * d..(i + 1) * d];
            grid.extend_from_slice(truth);
            grid.extend(observation_image(&op, &op.apply_rows(truth))?);
            for m in &methods {
                let t0 = Instant::now();
                let seed = b.seed + e as u64;
                let (_, x, rmse) = restore(
                    &score,
                    &meta.normalisation,
                    &op,
                    sigma_y,
                    truth,
                    m,
                    b.particles,
                    b.steps,
                    seed,
                )?;
                if !quiet {
                    eprintln!(
                        "{task} digit {e}: {:<12} rmse {rmse:.3} (pixels in [0, 1]) {:.1}s",
                        m.name(),
                        t0.elapsed().as_secs_f64()
                    );
                }
                grid.extend(x);
            }
        }
        let path = b.out_dir.join(format!("digits_{task}.png"));
        let title = format!("{task}: truth | observation | {}", names.join(" | "));
        image_grid(&path, &grid, h, w, cols, &title).map_err(CliError::user)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
