//! `scoregen impute`: fill the missing cells of a CSV table by posterior sampling with a
//! score model trained on the incomplete table itself (or given with `--model`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use scoregen::impute::datasets::load_table;
use scoregen::impute::{
    fit, impute_table, Encoding, FitOptions, FitProgress, ImputeOptions, MixedTable, StoredEncoding,
};
use scoregen::inverse::Method;
use scoregen::nn::load_model_on;
use scoregen::nn::model::Normalisation;
use scoregen::process::TimeGrid;
use scoregen::score::Score;
use scoregen::smc::Resampling;

use super::check_parent;
use crate::limits;
use crate::output::Outputs;
use crate::progress::bar;
use crate::{CliError, CliResult};
use scoregen::budget::Estimate;
use scoregen::nn::Arch;

/// Posterior-sampling settings shared by `impute` and `bench impute`.
#[derive(Args, Debug, Clone)]
pub struct ImputeSettings {
    /// Posterior method: smc-impute (SMCDiff, Trippe et al. 2023), mcgdiff, tds, replacement
    /// (or any other of `scoregen posterior`'s methods except exact).
    #[arg(long, default_value = "smc-impute")]
    pub method: String,
    /// Posterior samples (particles) per row.
    #[arg(long, default_value_t = 64)]
    pub particles: usize,
    /// Independent particle systems per row, pooled (steadier means when many cells are
    /// observed and the weights degenerate).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Reverse steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Time grid: uniform, quadratic, edm, edm:RHO, logsnr.
    #[arg(long, default_value = "quadratic")]
    pub grid: String,
    /// SMC resampling scheme: multinomial, stratified, systematic, residual.
    #[arg(long, default_value = "systematic")]
    pub resampling: String,
    /// Training steps of the first (masked denoising score matching) round.
    #[arg(long, default_value_t = 3000)]
    pub train_steps: usize,
    /// EM rounds after it (impute, then retrain on the completed table; DiffPuter).
    #[arg(long, default_value_t = 4)]
    pub em_rounds: usize,
    /// Training steps per EM round.
    #[arg(long, default_value_t = 1500)]
    pub em_steps: usize,
    /// Hidden width of the MLP (default: 8 x the encoded dimension, within 64..256).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// The network's output, edm (Karras et al. 2022's preconditioning) or eps, both trained
    /// on mixed times (half uniform in t, half uniform in log-SNR). edm imputes the 64-pixel
    /// digits table far better and iris, wine and breast cancer as well (BENCHMARKS.md).
    #[arg(long, default_value = "edm")]
    pub param: String,
    /// Training-time law: mixed (half uniform in t, half uniform in log-SNR), uniform, logsnr
    /// or lognormal (EDM's noise levels: worse on iris, wine and breast cancer, better on
    /// digits with longer training; BENCHMARKS.md).
    #[arg(long, default_value = "mixed")]
    pub time_sampling: String,
}

impl ImputeSettings {
    /// The posterior settings.
    pub fn impute_options(&self, seed: u64, draws: usize) -> CliResult<ImputeOptions> {
        limits::count("--particles", self.particles, 1, usize::MAX)?;
        limits::count("--runs", self.runs, 1, limits::MAX_ROUNDS)?;
        limits::count("--steps", self.steps, 1, limits::MAX_STEPS)?;
        limits::count("--imputations", draws, 0, limits::MAX_ROUNDS)?;
        let method: Method = self.method.parse()?;
        if matches!(method, Method::Exact) {
            return Err(CliError::user(
                "--method exact needs a Gaussian-mixture prior; a table model is a network",
            ));
        }
        let mut o = ImputeOptions {
            method,
            draws,
            runs: self.runs,
            ..Default::default()
        };
        o.posterior.particles = self.particles;
        o.posterior.steps = self.steps;
        o.posterior.grid = self.grid.parse::<TimeGrid>()?;
        o.posterior.resampling = self.resampling.parse::<Resampling>()?;
        o.posterior.seed = seed;
        Ok(o)
    }

    /// Checks the memory of imputing `rows x cols` cells (encoded dimension `dim`) with
    /// `draws` multiple imputations, through a network of architecture `arch`.
    pub fn check_memory(&self, rows: usize, cols: usize, dim: usize, draws: usize, arch: &Arch) -> CliResult<()> {
        let e = limits::rows(Estimate::new(), "--imputations", rows, cols, draws.saturating_add(8));
        // The batched sampler holds up to 2^15 (row, particle) pairs, times the runs; the
        // row-by-row methods one row's particles.
        let pairs = self
            .particles
            .saturating_mul(self.runs)
            .max((1 << 15).min(rows.saturating_mul(self.particles)));
        let e = limits::rows(e, "--particles", pairs, dim, 12);
        limits::check_memory(&limits::network(e, "--particles", pairs, arch, "--hidden"))
    }

    /// The training settings.
    pub fn fit_options(&self, seed: u64) -> CliResult<FitOptions> {
        limits::count("--train-steps", self.train_steps, 1, limits::MAX_TRAIN_STEPS)?;
        limits::count("--em-rounds", self.em_rounds, 0, 1000)?;
        limits::count("--em-steps", self.em_steps, 0, limits::MAX_TRAIN_STEPS)?;
        if let Some(h) = self.hidden {
            limits::count("--hidden", h, 1, usize::MAX)?;
        }
        let mut f = FitOptions {
            em_rounds: self.em_rounds,
            em_steps: self.em_steps.max(1),
            ..Default::default()
        };
        f.param = self.param.parse()?;
        f.train.time_sampling = self.time_sampling.parse()?;
        f.train.steps = self.train_steps;
        f.train.seed = seed;
        f.hidden = self.hidden;
        f.impute.posterior.seed = seed;
        f.device = crate::device::get();
        Ok(f)
    }
}

/// `scoregen impute`.
#[derive(Args, Debug)]
pub struct ImputeArgs {
    /// The table: a CSV file with a header (empty, NA, NaN, N/A, null = missing), or
    /// builtin:penguins (or another built-in table).
    #[arg(long)]
    pub data: String,
    /// A model trained by an earlier `scoregen impute` (its --save-model directory); without
    /// it, a model is trained on this table.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the trained model goes (default: OUT's name with `-model`).
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Columns to read as labels (names or 1-based numbers, comma separated); columns that
    /// are mostly text are labels anyway.
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Also write M multiple imputations (OUT.imp1.csv ... OUT.impM.csv) and the per-cell
    /// uncertainty (OUT.sd.csv: posterior sd of a number, 1 - p(mode) of a label).
    #[arg(long, default_value_t = 0)]
    pub imputations: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The completed table (CSV): posterior means of numbers, posterior modes of labels.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub settings: ImputeSettings,
}

/// `OUT` with `.csv` replaced by `suffix`.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}{suffix}"))
}

/// Reads `--data`.
pub fn read_table(data: &str, categorical: &[String]) -> CliResult<MixedTable> {
    match data.strip_prefix("builtin:") {
        Some(name) => Ok(load_table(name)?),
        None => Ok(MixedTable::read(data, categorical)?),
    }
}

/// Trains a table model with progress bars.
pub fn train_table_model(
    table: &MixedTable,
    enc: &Encoding,
    fo: &FitOptions,
    dir: &Path,
    quiet: bool,
) -> CliResult<(scoregen::nn::LearnedScore, Normalisation)> {
    let total = fo.train.steps + fo.em_rounds * fo.em_steps;
    let pb = bar(total as u64, "train", quiet);
    let r = fit(table, enc, fo, dir, &mut |p| match p {
        FitProgress::Train { round, progress } => {
            pb.set_message(if round == 0 {
                "train".to_string()
            } else {
                format!("EM round {round}")
            });
            pb.set_position(progress.step as u64);
        }
        FitProgress::Impute { .. } => {}
    });
    pb.finish_and_clear();
    Ok(r?)
}

/// Imputes with a progress bar.
pub fn run_impute(
    score: &dyn Score,
    norm: Option<&Normalisation>,
    table: &MixedTable,
    enc: &Encoding,
    io: &ImputeOptions,
    quiet: bool,
) -> CliResult<scoregen::impute::Imputation> {
    let rows = table.incomplete_rows().len();
    let pb = bar(rows as u64, "impute", quiet);
    let r = impute_table(score, norm, table, enc, io, &|k, _| pb.set_position(k as u64));
    pb.finish_and_clear();
    Ok(r?)
}

/// `scoregen impute`.
pub fn run(a: ImputeArgs, quiet: bool) -> CliResult<()> {
    if a.out.extension().and_then(|e| e.to_str()) != Some("csv") {
        return Err(CliError::user(format!("{}: output must end in .csv", a.out.display())));
    }
    check_parent(&a.out)?;
    let io = a.settings.impute_options(a.seed, a.imputations)?;
    // Every output is staged and checked against the inputs before any work.
    let mut outs = Outputs::new();
    if !a.data.starts_with("builtin:") {
        outs.input("--data", &a.data);
    }
    if let Some(m) = &a.model {
        outs.input("--model", m);
    }
    let out_tmp = outs.file("--out", &a.out)?;
    let mut draw_tmps = vec![];
    for k in 1..=a.imputations {
        draw_tmps.push(outs.file("--imputations", sibling(&a.out, &format!(".imp{k}.csv")))?);
    }
    let sd_tmp = match a.imputations {
        0 => None,
        _ => Some(outs.file("--imputations", sibling(&a.out, ".sd.csv"))?),
    };
    let model_target = a.save_model.clone().unwrap_or_else(|| sibling(&a.out, "-model"));
    let model_tmp = match a.model {
        Some(_) => None,
        None => Some(outs.dir("--save-model", &model_target)?),
    };
    let table = read_table(&a.data, &a.categorical)?;
    let started = Instant::now();
    let (table, enc, score, norm) = match (&a.model, &model_tmp) {
        (Some(dir), _) => {
            let stored = StoredEncoding::load(dir)?;
            let (table, enc) = stored.apply(&table)?;
            let meta = scoregen::nn::train::read_meta(dir)?;
            a.settings
                .check_memory(table.rows, table.cols, enc.dim(), a.imputations, &meta.arch)?;
            let (score, meta) = load_model_on(dir, &crate::device::get())?;
            (table, enc, score, meta.normalisation)
        }
        (None, dir) => {
            let dir = dir.as_ref().expect("staged above");
            if let Some(c) = table.empty_column() {
                return Err(CliError::user(format!(
                    "column {c} has no observed value: nothing to learn it from (drop the column, or \
                     pass --model with a model trained on a table that has it)"
                )));
            }
            let enc = Encoding::fit(&table);
            let fo = a.settings.fit_options(a.seed)?;
            let arch = Arch::Mlp(scoregen::nn::MlpConfig {
                hidden: fo.hidden.unwrap_or(256),
                ..scoregen::nn::MlpConfig::reference(enc.dim())
            });
            a.settings
                .check_memory(table.rows, table.cols, enc.dim(), a.imputations, &arch)?;
            let (score, norm) = train_table_model(&table, &enc, &fo, dir, quiet)?;
            (table, enc, score, norm)
        }
    };
    let imp = run_impute(&score, Some(&norm), &table, &enc, &io, quiet)?;
    let write =
        |path: &Path, cells: &[f64]| table.write_filled(path, &|i, j| table.format_value(j, cells[i * table.cols + j]));
    write(&out_tmp, &imp.completed)?;
    for (draw, path) in imp.draws.iter().zip(&draw_tmps) {
        write(path, draw)?;
    }
    if let Some(sd) = &sd_tmp {
        let unc = |i: usize, j: usize| {
            let v = imp.uncertainty[i * table.cols + j];
            match &table.kinds[j] {
                scoregen::impute::ColumnKind::Categorical { .. } => format!("{v:.3}"),
                _ => table.format_value(j, v),
            }
        };
        // Observed cells of the uncertainty table are empty.
        let blank = MixedTable {
            raw: vec![vec![String::new(); table.cols]; table.rows],
            ..table.clone()
        };
        blank.write_filled(sd, &unc)?;
    }
    outs.commit()?;
    if model_tmp.is_some() && !quiet {
        eprintln!("model saved to {}", model_target.display());
    }
    let missing = table.n_missing();
    let low = imp.ess_min.iter().filter(|&&e| e < 0.05).count();
    if !quiet {
        eprintln!(
            "imputed {missing} cells in {} rows ({} with nothing observed: prior draws) with {} in {:.1} s",
            table.incomplete_rows().len(),
            imp.prior_rows,
            io.method.name(),
            started.elapsed().as_secs_f64()
        );
    }
    if low > 0 {
        eprintln!(
            "warning: {low} row(s) had an effective sample size below 5% of the particles at some step \
             (weight degeneracy); raise --particles for steadier imputations"
        );
    }
    Ok(())
}
