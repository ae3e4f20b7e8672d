//! `scoregen sample`: a trained model (any class choice, [`scoregen::classes`]) or the
//! mixture prior of a problem file ([`scoregen::solve::sample_prior`]).

use std::path::PathBuf;

use clap::Args;
use scoregen::budget::Estimate;
use scoregen::classes::{sample_model, ClassChoice};
use scoregen::data;
use scoregen::inverse::Problem;
use scoregen::solve::sample_prior;

use super::{rows_f64, Draws, SamplerArgs};
use crate::limits;
use crate::output::Outputs;
use crate::plot::{check_figure_path, image_grid};
use crate::progress::{ClassSteps, Steps};
use crate::{CliError, CliResult};

/// `scoregen sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Problem file (JSON, docs/formats.md) whose Gaussian / mixture prior is sampled with its
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

impl SampleArgs {
    /// The class choice these arguments name for a model of `n_classes` classes with
    /// training label frequencies `class_weights`.
    fn choice(&self, n_classes: usize, class_weights: Option<&[f64]>) -> CliResult<ClassChoice> {
        Ok(match (self.class, self.each_class) {
            (_, true) if n_classes == 0 => {
                return Err(CliError::user("--each-class: this model was trained without classes"))
            }
            (_, true) => ClassChoice::Each {
                guidance: self.guidance,
            },
            (Some(class), false) => ClassChoice::Fixed {
                class,
                guidance: self.guidance,
            },
            (None, false) if self.guidance != 0.0 => {
                return Err(CliError::user("--guidance needs a --class or --each-class"))
            }
            // Without --class: the class mixture p(x) = sum_c pi_c p(x | c) of the training
            // label frequencies, unless --null-class.
            (None, false) if self.null_class => ClassChoice::Null,
            (None, false) => ClassChoice::default_for(class_weights),
        })
    }
}

/// `scoregen sample`.
pub fn run(a: SampleArgs, quiet: bool) -> CliResult<()> {
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
    let (x, grid, note) = match (&a.problem, &a.model) {
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
            let bar = Steps::new(opts.steps, &a.sampler.sampler, quiet);
            let x = sample_prior(&law, &sampler, &opts, n, &mut |k, t| bar.tick(k, t))?;
            (x, None, None)
        }
        (None, Some(dir)) => {
            let (score, meta) = scoregen::nn::load_model_on(dir, &crate::device::get())?;
            let image = meta.arch.image_shape();
            let n_classes = meta.arch.n_classes();
            let choice = a.choice(n_classes, meta.class_weights.as_deref())?;
            let e = limits::rows(Estimate::new(), "--n", choice.rows(n, n_classes), meta.arch.dim(), 12);
            limits::check_memory(&limits::network(e, "--n", n, &meta.arch, "the model (--model)"))?;
            if a.image_grid.is_some() && image.is_none() {
                return Err(CliError::user(format!(
                    "--image-grid needs a model of images; {} is a {} model of vectors",
                    dir.display(),
                    meta.arch.kind()
                )));
            }
            let mut bars = ClassSteps::new(&a.sampler.sampler, quiet);
            let (x, _) = sample_model(
                score,
                &meta.normalisation,
                &choice,
                &sampler,
                &opts,
                n,
                &mut |c, k, t| bars.tick(c, k, t),
            )?;
            drop(bars);
            let each = matches!(choice, ClassChoice::Each { .. });
            let grid = image.map(|(h, w)| {
                let cols = if each { n } else { (n as f64).sqrt().ceil() as usize };
                let title = if each {
                    format!("{n} samples of each class (one row per class)")
                } else {
                    format!("{n} samples")
                };
                (h, w, cols, title)
            });
            let note = matches!(choice, ClassChoice::Mixture(_)).then(|| {
                format!(
                    "wrote {n} samples (classes drawn from the training frequencies) to {}",
                    out.display()
                )
            });
            (x, grid, note)
        }
        (None, None) => return Err(CliError::user("give --problem or --model")),
    };
    data::write_points(&out_tmp, &x)?;
    if let (Some(g), Some((h, w, cols, title))) = (&grid_tmp, grid) {
        let (v, _) = rows_f64(&x)?;
        image_grid(g, &v, h, w, cols, &title).map_err(CliError::user)?;
    }
    outs.commit()?;
    if !quiet {
        match note {
            Some(note) => eprintln!("{note}"),
            None => eprintln!(
                "wrote {} samples of dimension {} to {}",
                x.dims()[0],
                x.dims()[1],
                out.display()
            ),
        }
    }
    Ok(())
}
