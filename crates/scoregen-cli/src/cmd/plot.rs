//! `scoregen plot`: pair plots of samples, or grids of images.

use std::path::PathBuf;

use clap::Args;
use scoregen::data;

use super::{check_parent, rows_f64};
use crate::output::Outputs;
use crate::plot::{check_figure_path, image_grid, pair_plot, Series};
use crate::{CliError, CliResult};

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
        (Some(s), _) => super::train::parse_image_shape(s)?,
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
pub fn run(a: PlotArgs) -> CliResult<()> {
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
