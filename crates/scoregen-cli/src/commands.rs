//! `sample`, `exact`, `eval` and `plot`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use scoregen::data;
use scoregen::inverse::Problem;
use scoregen::metrics;
use scoregen::process::TimeGrid;
use scoregen::rng::Noise;
use scoregen::sample::{default_process, sample as run_sampler, SampleOptions, Sampler, SamplerParams};
use scoregen::score::MixtureScore;

use crate::limits;
use crate::output::Outputs;
use crate::plot::{check_figure_path, image_grid, pair_plot, Series};
use crate::progress::bar;
use crate::{CliError, CliResult};
use scoregen::budget::Estimate;

/// Options of the sampler family shared by the commands that sample.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// em (b_t family, Euler–Maruyama), ei (exponential integrator), heun (PF-ODE), ddpm,
    /// ddim, ald (annealed Langevin), pc (predictor–corrector).
    #[arg(long, default_value = "em")]
    pub sampler: String,
    /// Number of steps (ald: total Langevin steps).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// b of the reverse family (em, ei, pc): 1 reverse SDE, 0 probability-flow ODE.
    #[arg(long, default_value_t = 1.0)]
    pub b: f64,
    /// eta of ddim (0 deterministic, 1 = ddpm).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Target signal-to-noise ratio of the pc corrector.
    #[arg(long, default_value_t = 0.16)]
    pub snr: f64,
    /// Predictor of pc: em, ei, ddpm, ddim or heun.
    #[arg(long, default_value = "em")]
    pub predictor: String,
    /// Langevin corrector steps per time of pc.
    #[arg(long, default_value_t = 1)]
    pub corrector_steps: usize,
    /// Time grid: uniform, quadratic, edm, edm:RHO, logsnr (default: quadratic; logsnr for ald).
    #[arg(long)]
    pub grid: Option<String>,
    /// Early-stopping time t_min.
    #[arg(long, default_value_t = 1e-3)]
    pub t_min: f64,
    /// Skip the final Tweedie denoising step.
    #[arg(long)]
    pub no_denoise: bool,
}

impl SamplerArgs {
    /// The sampler and options these arguments name.
    pub fn build(&self, seed: u64) -> CliResult<(Sampler, SampleOptions)> {
        let params = SamplerParams {
            b: self.b,
            eta: self.eta,
            snr: self.snr,
            predictor: self.predictor.clone(),
            corrector_steps: self.corrector_steps,
            ..Default::default()
        };
        let sampler = Sampler::from_name(&self.sampler, &params)?;
        let grid = self.grid.as_deref().map(|g| g.parse::<TimeGrid>()).transpose()?;
        limits::count("--steps", self.steps, 1, limits::MAX_STEPS)?;
        // b scales the score term of every step: beyond ~10 the chain is unstable for any
        // step count a user would run.
        if !(self.b.is_finite() && (0.0..=100.0).contains(&self.b)) {
            return Err(CliError::user(format!(
                "--b must be a number in [0, 100], got {}",
                self.b
            )));
        }
        limits::count("--corrector-steps", self.corrector_steps, 0, limits::MAX_ROUNDS)?;
        let opts = SampleOptions {
            steps: self.steps,
            grid,
            t_min: self.t_min,
            denoise: !self.no_denoise,
            seed,
            ..Default::default()
        };
        Ok((sampler, opts))
    }
}

/// `scoregen sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Problem file (JSON, DESIGN.md §3) whose Gaussian / mixture prior is sampled with its
    /// exact score.
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub problem: Option<PathBuf>,
    /// A trained model: the checkpoint directory written by `scoregen train`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Class to generate (class-conditional models).
    #[arg(long)]
    pub class: Option<u32>,
    /// A class-conditional model without --class: sample its null-class (unconditional)
    /// score instead of drawing classes from the training frequencies.
    #[arg(long)]
    pub null_class: bool,
    /// Classifier-free guidance weight w: score = (1 + w) score(x | c) - w score(x).
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f64,
    /// Draw --n samples of every class of a class-conditional model (same seed, hence the
    /// same initial noise, for each class); the output's rows are ordered by class.
    #[arg(long, conflicts_with = "class")]
    pub each_class: bool,
    /// Also draw the samples of an image model as a grid of images (.png or .svg); with
    /// --each-class one row per class.
    #[arg(long)]
    pub image_grid: Option<PathBuf>,
    #[command(flatten)]
    pub draws: Draws,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// How many draws, the seed and the output file.
#[derive(Args, Debug)]
pub struct Draws {
    /// Number of samples.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.npy or .csv).
    #[arg(long)]
    pub out: PathBuf,
}

impl Draws {
    /// Checks, before any work, that `n > 0` and that the output can be written.
    fn check(&self) -> CliResult<()> {
        check_output(&self.out)?;
        limits::count("--n", self.n, 1, usize::MAX)?;
        Ok(())
    }
}

/// Fails early (before any work) if `out` cannot be written as points.
pub fn check_output(out: &Path) -> CliResult<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "npy" | "csv") {
        return Err(CliError::user(format!(
            "{}: output must end in .npy or .csv",
            out.display()
        )));
    }
    check_parent(out)
}

/// Fails early if the directory of `out` does not exist.
pub fn check_parent(out: &Path) -> CliResult<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(CliError::user(format!(
            "{}: directory {} does not exist",
            out.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Runs a sampler on the exact score of a mixture prior, with a progress bar.
pub fn sample_mixture(
    law: &scoregen::score::GaussianMixture,
    sampler: &Sampler,
    opts: &SampleOptions,
    n: usize,
    label: &str,
    quiet: bool,
) -> CliResult<Tensor> {
    let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
    let pb = bar(opts.steps as u64, label, quiet);
    let x = run_sampler(&score, sampler, opts, n, &mut |k, total| {
        pb.set_length(total as u64);
        pb.set_position(k as u64)
    });
    pb.finish_and_clear();
    Ok(x?)
}

/// Samples `n` points of a class-conditional model with classes drawn from `pi`
/// (stream `(User, 1 << 40)` of the seed); class `c` runs the sampler with seed
/// `seed + 1 + c`. Rows are in the order of the class draws.
fn sample_class_mixture(
    dir: &Path,
    pi: &[f64],
    sampler: &Sampler,
    opts: &SampleOptions,
    n: usize,
    label: &str,
    quiet: bool,
) -> CliResult<Tensor> {
    use scoregen::rng::{stream, Purpose};
    let u = Noise::new(opts.seed).uniforms(stream(Purpose::User, 1 << 40), n);
    let total: f64 = pi.iter().sum();
    let cls: Vec<usize> = u
        .iter()
        .map(|&v| {
            let mut acc = 0.0;
            for (c, w) in pi.iter().enumerate() {
                acc += w / total;
                if v < acc {
                    return c;
                }
            }
            pi.len() - 1
        })
        .collect();
    let d;
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); n];
    {
        let (score, _) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
        d = scoregen::score::Score::dim(&score);
    }
    for c in 0..pi.len() {
        let pos: Vec<usize> = (0..n).filter(|&i| cls[i] == c).collect();
        if pos.is_empty() {
            continue;
        }
        let (score, _) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
        let score = score.conditional(c as u32, 0.0)?;
        let o = SampleOptions {
            seed: opts.seed.wrapping_add(1 + c as u64),
            ..opts.clone()
        };
        let pb = bar(o.steps as u64, &format!("{label} class {c}"), quiet);
        let z = run_sampler(&score, sampler, &o, pos.len(), &mut |k, t| {
            pb.set_length(t as u64);
            pb.set_position(k as u64)
        });
        pb.finish_and_clear();
        let (v, _) = rows_f64(&z?)?;
        for (j, &i) in pos.iter().enumerate() {
            rows[i] = v[j * d..(j + 1) * d].to_vec();
        }
    }
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (n, d), &Device::Cpu).map_err(scoregen::Error::from)?)
}

/// `scoregen sample`.
pub fn sample(a: SampleArgs, quiet: bool) -> CliResult<()> {
    a.draws.check()?;
    let (n, out) = (a.draws.n, &a.draws.out);
    let (sampler, opts) = a.sampler.build(a.draws.seed)?;
    let mut outs = Outputs::new();
    if let Some(p) = &a.problem {
        outs.input("--problem", p);
    }
    if let Some(m) = &a.model {
        outs.input("--model", m);
    }
    let out_tmp = outs.file("--out", out)?;
    let grid_tmp = match &a.image_grid {
        Some(g) => {
            check_figure_path(g).map_err(CliError::user)?;
            Some(outs.file("--image-grid", g)?)
        }
        None => None,
    };
    let mut grid = None;
    let x = match (&a.problem, &a.model) {
        (Some(problem), _) => {
            if a.class.is_some() || a.each_class {
                return Err(CliError::user("--class and --each-class need a --model"));
            }
            if a.image_grid.is_some() {
                return Err(CliError::user("--image-grid needs a --model of images"));
            }
            let law = Problem::from_file(problem)?.mixture()?.clone();
            let k = law.n_components();
            let e = limits::rows(Estimate::new(), "--n", n, law.dim(), 12);
            limits::check_memory(&e.add(
                "--n",
                format!("--n {n} x {k} components x 4 buffers of f64"),
                n as f64 * k as f64,
                32.0,
            ))?;
            sample_mixture(&law, &sampler, &opts, n, &a.sampler.sampler, quiet)?
        }
        (None, Some(dir)) => {
            let (_, meta) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
            let image = meta.arch.image_shape();
            let rows_out = if a.each_class {
                n.saturating_mul(meta.arch.n_classes().max(1))
            } else {
                n
            };
            let e = limits::rows(Estimate::new(), "--n", rows_out, meta.arch.dim(), 12);
            limits::check_memory(&limits::network(e, "--n", n, &meta.arch, "the model (--model)"))?;
            if a.image_grid.is_some() && image.is_none() {
                return Err(CliError::user(format!(
                    "--image-grid needs a model of images; {} is a {} model of vectors",
                    dir.display(),
                    meta.arch.kind()
                )));
            }
            let classes: Vec<Option<u32>> = match (a.class, a.each_class) {
                (_, true) if meta.arch.n_classes() == 0 => {
                    return Err(CliError::user("--each-class: this model was trained without classes"))
                }
                (_, true) => (0..meta.arch.n_classes() as u32).map(Some).collect(),
                (Some(c), false) => vec![Some(c)],
                (None, false) if a.guidance != 0.0 => {
                    return Err(CliError::user("--guidance needs a --class or --each-class"))
                }
                (None, false) => vec![None],
            };
            // A class-conditional model without --class: draw each sample's class from the
            // training label frequencies, p(x) = sum_c pi_c p(x | c) (unless --null-class).
            if let (None, false, Some(pi), false) = (a.class, a.each_class, &meta.class_weights, a.null_class) {
                let x = sample_class_mixture(dir, pi, &sampler, &opts, n, &a.sampler.sampler, quiet)?;
                let x = meta.normalisation.denormalise(&x)?;
                data::write_points(&out_tmp, &x)?;
                if let (Some(g), Some((h, w))) = (&grid_tmp, image) {
                    let (v, _) = rows_f64(&x)?;
                    let cols = (n as f64).sqrt().ceil() as usize;
                    image_grid(g, &v, h, w, cols, &format!("{n} samples")).map_err(CliError::user)?;
                }
                outs.commit()?;
                if !quiet {
                    eprintln!(
                        "wrote {n} samples (classes drawn from the training frequencies) to {}",
                        out.display()
                    );
                }
                return Ok(());
            }
            let mut parts = vec![];
            for class in classes {
                let (score, _) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
                let score = match class {
                    Some(c) => score.conditional(c, a.guidance)?,
                    None => score,
                };
                let label = match class {
                    Some(c) => format!("{} class {c}", a.sampler.sampler),
                    None => a.sampler.sampler.clone(),
                };
                let pb = bar(opts.steps as u64, &label, quiet);
                let z = run_sampler(&score, &sampler, &opts, n, &mut |k, total| {
                    pb.set_length(total as u64);
                    pb.set_position(k as u64)
                });
                pb.finish_and_clear();
                parts.push(meta.normalisation.denormalise(&z?)?);
            }
            let x = Tensor::cat(&parts, 0).map_err(scoregen::Error::from)?;
            if let (Some(_), Some((h, w))) = (&a.image_grid, image) {
                let cols = if a.each_class {
                    n
                } else {
                    (n as f64).sqrt().ceil() as usize
                };
                let title = if a.each_class {
                    format!("{n} samples of each class (one row per class)")
                } else {
                    format!("{n} samples")
                };
                grid = grid_tmp.as_ref().map(|g| (g, h, w, cols, title));
            }
            x
        }
        (None, None) => return Err(CliError::user("give --problem or --model")),
    };
    data::write_points(&out_tmp, &x)?;
    if let Some((g, h, w, cols, title)) = grid {
        let (v, _) = rows_f64(&x)?;
        image_grid(g, &v, h, w, cols, &title).map_err(CliError::user)?;
    }
    outs.commit()?;
    if !quiet {
        eprintln!(
            "wrote {} samples of dimension {} to {}",
            x.dims()[0],
            x.dims()[1],
            out.display()
        );
    }
    Ok(())
}

/// `scoregen exact`.
#[derive(Args, Debug)]
pub struct ExactArgs {
    /// Problem file (JSON, DESIGN.md §3) with a Gaussian or Gaussian-mixture prior.
    #[arg(long)]
    pub problem: PathBuf,
    #[command(flatten)]
    pub draws: Draws,
}

/// `scoregen exact`.
pub fn exact(a: ExactArgs, quiet: bool) -> CliResult<()> {
    a.draws.check()?;
    let Draws { n, seed, out } = &a.draws;
    let mut outs = Outputs::new();
    outs.input("--problem", &a.problem);
    let out_tmp = outs.file("--out", out)?;
    let law = Problem::from_file(&a.problem)?.mixture()?.clone();
    limits::check_memory(&limits::rows(Estimate::new(), "--n", *n, law.dim(), 3))?;
    let x = law.sample(*n, &Noise::new(*seed), 0);
    let t = Tensor::from_vec(x, (*n, law.dim()), &Device::Cpu).map_err(scoregen::Error::from)?;
    data::write_points(&out_tmp, &t)?;
    outs.commit()?;
    if !quiet {
        eprintln!("wrote {n} exact samples to {}", out.display());
    }
    Ok(())
}

/// `scoregen eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Samples to evaluate (.npy or .csv).
    #[arg(long)]
    pub samples: PathBuf,
    /// Reference samples (.npy or .csv), e.g. from `scoregen exact`.
    #[arg(long)]
    pub reference: PathBuf,
    /// Problem file whose mixture prior gives the mixture-weight error.
    #[arg(long)]
    pub problem: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Random directions of the sliced Wasserstein distances.
    #[arg(long, default_value_t = 100)]
    pub directions: usize,
    /// Seed of the random directions.
    #[arg(long, default_value_t = 0)]
    pub sw_seed: u64,
}

/// `scoregen eval`.
pub fn eval(a: EvalArgs) -> CliResult<()> {
    limits::count("--directions", a.directions, 1, 100_000)?;
    let x = data::read_points(&a.samples)?
        .to_dtype(DType::F64)
        .map_err(scoregen::Error::from)?;
    let r = data::read_points(&a.reference)?
        .to_dtype(DType::F64)
        .map_err(scoregen::Error::from)?;
    let problem = a.problem.as_ref().map(Problem::from_file).transpose()?;
    let law = problem.as_ref().map(|p| p.mixture()).transpose()?;
    {
        let (n, d) = x.dims2().map_err(scoregen::Error::from)?;
        let m = r.dims2().map_err(scoregen::Error::from)?.0;
        let e = limits::rows(Estimate::new(), "--samples", n, d, 3);
        let e = limits::rows(e, "--reference", m, d, 3).add(
            "--samples",
            format!("covariances and their square roots in dimension {d} (d x d x 8 buffers of f64)"),
            d as f64 * d as f64 * 8.0,
            8.0,
        );
        let e = e.add(
            "--directions",
            format!("--directions {} x (samples + reference + dimension)", a.directions),
            a.directions as f64 * (n + m + d) as f64,
            8.0,
        );
        limits::check_memory(&e)?;
    }
    let sliced = metrics::SlicedOptions {
        directions: a.directions,
        seed: a.sw_seed,
        ..Default::default()
    };
    let c = metrics::compare_with(&x, &r, law, &sliced)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&c).map_err(|e| CliError::user(e.to_string()))?
        );
    } else {
        println!(
            "samples {} x {}, reference {} x {}",
            c.n_samples, c.dim, c.n_reference, c.dim
        );
        for (name, v) in c.rows() {
            println!("{name:<20} {v:>12.5}");
        }
    }
    Ok(())
}

/// `scoregen plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Samples (.npy or .csv), or builtin:NAME for a built-in data set.
    #[arg(long)]
    pub samples: PathBuf,
    /// Draw the rows as greyscale images of this shape (HxW, e.g. 8x8) in a grid instead of
    /// a pair plot; a built-in image set (builtin:digits) implies its shape.
    #[arg(long)]
    pub image_shape: Option<String>,
    /// Images per row of the grid [default: about sqrt(n)]; for a labelled built-in set the
    /// first this many images of each class, one row per class [default: 8].
    #[arg(long)]
    pub cols: Option<usize>,
    /// At most this many images in the grid.
    #[arg(long, default_value_t = 100)]
    pub max_images: usize,
    /// Optional reference samples drawn beside them.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Output figure (.png or .svg).
    #[arg(long)]
    pub out: PathBuf,
    /// Title.
    #[arg(long, default_value = "")]
    pub title: String,
    /// At most this many coordinates in a pair plot.
    #[arg(long, default_value_t = 5)]
    pub max_dims: usize,
}

fn rows_f64(t: &Tensor) -> CliResult<(Vec<f64>, usize)> {
    let (_, d) = t.dims2().map_err(scoregen::Error::from)?;
    let v = t
        .to_dtype(DType::F64)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1::<f64>())
        .map_err(scoregen::Error::from)?;
    Ok((v, d))
}

/// `scoregen plot --image-shape`: a grid of images (one row per class for labelled
/// built-in sets).
fn plot_images(a: &PlotArgs) -> CliResult<()> {
    check_figure_path(&a.out).map_err(CliError::user)?;
    if a.reference.is_some() {
        return Err(CliError::user("--reference is not drawn with --image-shape"));
    }
    if a.cols == Some(0) || a.max_images == 0 {
        return Err(CliError::user("--cols and --max-images must be positive"));
    }
    let arg = a.samples.to_string_lossy().to_string();
    let (x, labels, shape) = match scoregen::data::builtin::parse_data_arg(&arg) {
        Some(name) => {
            let ds = scoregen::data::builtin::load(name, None, 0)?;
            (ds.x, ds.labels.map(|l| (l, ds.n_classes)), ds.image_shape)
        }
        None => (data::read_points(&a.samples)?, None, None),
    };
    let (h, w) = match (a.image_shape.as_deref(), shape) {
        (Some(s), _) => crate::train::parse_image_shape(s)?,
        (None, Some(s)) => s,
        (None, None) => return Err(CliError::user("give --image-shape HxW")),
    };
    let (v, d) = rows_f64(&x)?;
    if d != h * w {
        return Err(CliError::user(format!(
            "image shape {h}x{w} has {} pixels, the rows {d}",
            h * w
        )));
    }
    let (images, cols, title) = match labels {
        Some((labels, k)) => {
            let cols = a.cols.unwrap_or(8);
            let mut images = vec![];
            for c in 0..k as u32 {
                let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).take(cols).collect();
                if rows.len() < cols {
                    return Err(CliError::user(format!("class {c} has fewer than {cols} rows")));
                }
                for i in rows {
                    images.extend_from_slice(&v[i * d..(i + 1) * d]);
                }
            }
            (
                images,
                cols,
                format!("{arg}: the first {cols} of each class (one row per class)"),
            )
        }
        None => {
            let n = (v.len() / d).min(a.max_images);
            let cols = a.cols.unwrap_or((n as f64).sqrt().ceil() as usize);
            (v[..n * d].to_vec(), cols, a.title.clone())
        }
    };
    let title = if a.title.is_empty() { title } else { a.title.clone() };
    image_grid(&a.out, &images, h, w, cols, &title).map_err(CliError::user)
}

/// `scoregen plot`.
pub fn plot(a: PlotArgs) -> CliResult<()> {
    check_parent(&a.out)?;
    let is_builtin = scoregen::data::builtin::parse_data_arg(&a.samples.to_string_lossy()).is_some();
    let mut outs = Outputs::new();
    if !is_builtin {
        outs.input("--samples", &a.samples);
    }
    if let Some(r) = &a.reference {
        outs.input("--reference", r);
    }
    // The figure writers are atomic already; this only refuses an --out that is an input.
    outs.file("--out", &a.out)?;
    drop(outs);
    if a.image_shape.is_some() || is_builtin {
        return plot_images(&a);
    }
    let (xs, d) = rows_f64(&data::read_points(&a.samples)?)?;
    let mut series = vec![];
    let refdata = match &a.reference {
        Some(r) => {
            let (v, dr) = rows_f64(&data::read_points(r)?)?;
            if dr != d {
                return Err(CliError::user(format!(
                    "samples have dimension {d}, the reference {dr}"
                )));
            }
            Some(v)
        }
        None => None,
    };
    if let Some(r) = &refdata {
        series.push(Series {
            label: "reference",
            data: r,
            d,
        });
    }
    series.push(Series {
        label: "samples",
        data: &xs,
        d,
    });
    pair_plot(&a.out, &series, &a.title, a.max_dims).map_err(CliError::user)?;
    Ok(())
}
