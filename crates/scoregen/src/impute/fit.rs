//! Training a score model on a table with missing cells.
//!
//! 1. **Masked DSM** (MissDiff, Ouyang et al. 2023): missing cells are filled by a hot deck
//!    (a random observed value of the same column, fixed for the run) and the denoising loss
//!    counts observed coordinates only ([`crate::nn::train_masked`]).
//! 2. **EM rounds** (DiffPuter, Zhang et al. 2024): E-step, one posterior draw of every
//!    missing cell under the current model ([`impute_table`], one draw per row); M-step,
//!    continue training on the completed table with the full loss. Each round warm-starts
//!    from the last checkpoint (stochastic EM).
//!
//! Training works on the standardised one-hot encoding of [`Encoding`]; the checkpoint
//! directory holds the final model and the encoding (`encoding.json`) so that a later run can
//! impute with `--model`.

use std::path::Path;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::sampler::{impute_table, ImputeOptions};
use super::table::{ColumnKind, Encoding, MixedTable};
use crate::data::from_rows;
use crate::io::write_atomic;
use crate::nn::model::Normalisation;
use crate::nn::{
    load_model_on, train_masked, Arch, LearnedScore, MlpConfig, TimeSampling, TrainConfig, TrainProgress, TrainSetup,
};
use crate::process::Process;
use crate::rng::{stream, Noise, Purpose};
use crate::sample::standardised_process;
use crate::score::Parametrisation;
use crate::{Error, Result};

/// Settings of [`fit`].
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Hidden width of the MLP (`None`: [`default_hidden`] of the encoded dimension).
    pub hidden: Option<usize>,
    /// Hidden layers of the MLP.
    pub depth: usize,
    /// What the network outputs ([`IMPUTER_PARAM`] by default); `train.time_sampling` is
    /// [`TimeSampling::Mixed`] by default, for every parametrisation (see [`IMPUTER_PARAM`]).
    pub param: Parametrisation,
    /// The forward process (`None`: [`standardised_process`] of the encoded dimension,
    /// radius `3 sqrt(d)`).
    pub process: Option<Process>,
    /// Training settings of the first (masked) round; `steps` of it.
    pub train: TrainConfig,
    /// Number of EM rounds after the masked round.
    pub em_rounds: usize,
    /// Training steps of each EM round.
    pub em_steps: usize,
    /// The E-step's posterior settings (its `draws` is forced to 1).
    pub impute: ImputeOptions,
    /// Where the network trains and runs ([`crate::device::parse`]; default the CPU).
    pub device: Device,
}

impl Default for FitOptions {
    fn default() -> Self {
        let mut impute = ImputeOptions::default();
        // One draw per row: a small particle system and a coarse grid are enough.
        impute.posterior.particles = 16;
        impute.posterior.steps = 50;
        FitOptions {
            hidden: None,
            depth: 3,
            param: IMPUTER_PARAM,
            process: None,
            train: TrainConfig {
                steps: 3000,
                batch: 256,
                val_fraction: 0.0,
                eval_every: 1000,
                checkpoint_every: 1000,
                time_sampling: TimeSampling::Mixed,
                ..TrainConfig::default()
            },
            em_rounds: 4,
            em_steps: 1500,
            impute,
            device: Device::Cpu,
        }
    }
}

/// What the imputer's network outputs by default: EDM's preconditioned denoiser (Karras et
/// al. 2022), trained on [`TimeSampling::Mixed`] times (half uniform in `t`, half uniform in
/// log-SNR) rather than EDM's log-normal noise levels. Measured (MCAR 30%, `BENCHMARKS.md`):
/// on the 64-pixel digits table eps imputed worse than column means (RMSE 1.028) where EDM
/// gives 0.69-0.71; on iris, wine and breast cancer (3 paired repeats) EDM with mixed times
/// is level with eps (0.493 / 0.783 / 0.423 against 0.504 / 0.771 / 0.416), while EDM with
/// log-normal levels was worse on all three (0.561 / 0.885 / 0.442).
pub const IMPUTER_PARAM: Parametrisation = Parametrisation::Edm;

/// The default hidden width for an encoded table of dimension `d`: `8 d` within
/// `[64, 256]`. Measured on the built-in tables (BENCHMARKS.md): small tables (iris, wine)
/// impute better with a narrow network, breast cancer (d = 30) with a wide one.
pub fn default_hidden(d: usize) -> usize {
    (8 * d).clamp(64, 256)
}

/// What [`fit`] is doing, for progress displays.
#[derive(Debug)]
pub enum FitProgress<'a> {
    /// Training in round `round` (0: the masked round).
    Train {
        /// The round.
        round: usize,
        /// The trainer's report.
        progress: &'a TrainProgress,
    },
    /// The E-step of round `round` has imputed `done` of `total` rows.
    Impute {
        /// The round.
        round: usize,
        /// Rows done.
        done: usize,
        /// Rows to do.
        total: usize,
    },
}

/// The encoding stored beside a checkpoint, so that `--model` can impute another table with
/// the same columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEncoding {
    /// Column names.
    pub header: Vec<String>,
    /// Per column: `None` for a number, the levels for a label.
    pub levels: Vec<Option<Vec<String>>>,
    /// Per-coordinate means.
    pub mean: Vec<f64>,
    /// Per-coordinate standard deviations.
    pub sd: Vec<f64>,
}

/// The file name of the stored encoding in a model directory.
pub const ENCODING_FILE: &str = "encoding.json";

impl StoredEncoding {
    /// Records `enc` of `table`.
    pub fn new(table: &MixedTable, enc: &Encoding) -> Self {
        StoredEncoding {
            header: table.header.clone(),
            levels: table
                .kinds
                .iter()
                .map(|k| match k {
                    ColumnKind::Numeric { .. } => None,
                    ColumnKind::Categorical { levels } => Some(levels.clone()),
                })
                .collect(),
            mean: enc.mean.clone(),
            sd: enc.sd.clone(),
        }
    }

    /// Writes `dir/encoding.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::invalid(e.to_string()))?;
        write_atomic(dir.join(ENCODING_FILE), |w| {
            Ok(std::io::Write::write_all(w, text.as_bytes())?)
        })
    }

    /// Reads `dir/encoding.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join(ENCODING_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a scoregen table encoding: {e}")))
    }

    /// Applies the stored encoding to `table`: the columns must have the same names in the
    /// same order; a label column keeps the stored levels (a label not seen in training is
    /// an error) and a number column must be numeric. Returns the table re-indexed to the
    /// stored levels and the encoding.
    pub fn apply(&self, table: &MixedTable) -> Result<(MixedTable, Encoding)> {
        if table
            .header
            .iter()
            .map(|h| h.trim())
            .ne(self.header.iter().map(|h| h.trim()))
        {
            return Err(Error::invalid(format!(
                "the table's columns ({}) differ from the model's ({})",
                table.header.join(","),
                self.header.join(",")
            )));
        }
        let mut t = table.clone();
        let mut offset = Vec::new();
        let mut width = Vec::new();
        let mut dim = 0;
        for (j, stored) in self.levels.iter().enumerate() {
            offset.push(dim);
            match (stored, &table.kinds[j]) {
                (None, ColumnKind::Numeric { .. }) => width.push(1),
                (Some(levels), kind) => {
                    let own: Vec<String> = match kind {
                        ColumnKind::Categorical { levels } => levels.clone(),
                        ColumnKind::Numeric { .. } => Vec::new(),
                    };
                    for i in 0..t.rows {
                        let c = i * t.cols + j;
                        if t.cells[c].is_nan() {
                            continue;
                        }
                        let text = match kind {
                            ColumnKind::Categorical { .. } => own[t.cells[c] as usize].clone(),
                            ColumnKind::Numeric { .. } => t.raw[i][j].trim().to_string(),
                        };
                        t.cells[c] = levels.iter().position(|l| *l == text).ok_or_else(|| {
                            Error::invalid(format!(
                                "row {}, column '{}': label '{text}' was not seen when the model was trained",
                                t.lines[i], self.header[j]
                            ))
                        })? as f64;
                    }
                    t.kinds[j] = ColumnKind::Categorical { levels: levels.clone() };
                    width.push(levels.len().max(1));
                }
                (None, ColumnKind::Categorical { .. }) => {
                    return Err(Error::invalid(format!(
                        "column '{}' holds text, but the model was trained on numbers there",
                        self.header[j]
                    )))
                }
            }
            dim += width[j];
        }
        if dim != self.mean.len() || dim != self.sd.len() {
            return Err(Error::invalid("the stored encoding is inconsistent"));
        }
        let enc = Encoding {
            offset,
            width,
            mean: self.mean.clone(),
            sd: self.sd.clone(),
        };
        Ok((t, enc))
    }
}

/// Hot-deck fill: each missing coordinate of `z` (`[n, d]`, NaN missing) gets the value of
/// a uniformly chosen observed row of the same coordinate block (whole one-hot blocks are
/// copied together). Columns with no observed cell are an error.
fn hot_deck(table: &MixedTable, enc: &Encoding, z: &[f64], seed: u64) -> Result<Vec<f64>> {
    if let Some(c) = table.empty_column() {
        return Err(Error::invalid(format!(
            "column {c} has no observed value: nothing to learn it from (drop it, or impute with a model trained elsewhere)"
        )));
    }
    let (n, d) = (table.rows, enc.dim());
    let mut out = z.to_vec();
    let noise = Noise::new(seed);
    for j in 0..table.cols {
        let donors: Vec<usize> = (0..n).filter(|&i| !table.is_missing(i, j)).collect();
        let u = noise.uniforms(stream(Purpose::Train, (1 << 45) + j as u64), n);
        for i in (0..n).filter(|&i| table.is_missing(i, j)) {
            let r = donors[((u[i] * donors.len() as f64) as usize).min(donors.len() - 1)];
            for k in 0..enc.width[j] {
                let c = enc.offset[j] + k;
                out[i * d + c] = z[r * d + c];
            }
        }
    }
    Ok(out)
}

/// Trains a score model on the incomplete `table` (encoded by `enc`) into the checkpoint
/// directory `dir` (masked DSM, then `em_rounds` EM rounds), and returns it with its
/// normalisation. Also writes `dir/encoding.json`.
pub fn fit(
    table: &MixedTable,
    enc: &Encoding,
    opts: &FitOptions,
    dir: &Path,
    progress: &mut dyn FnMut(FitProgress),
) -> Result<(LearnedScore, Normalisation)> {
    let (n, d) = (table.rows, enc.dim());
    let z = enc.encode(table);
    let filled = hot_deck(table, enc, &z, opts.train.seed)?;
    let observed: Vec<bool> = z.iter().map(|v| !v.is_nan()).collect();
    let arch = Arch::Mlp(MlpConfig {
        dim: d,
        hidden: opts.hidden.unwrap_or_else(|| default_hidden(d)),
        depth: opts.depth,
        param: opts.param,
        ..MlpConfig::reference(d)
    });
    let mut setup = TrainSetup {
        arch,
        process: opts.process.clone().unwrap_or_else(|| standardised_process(d)),
        config: opts.train.clone(),
        checkpoint_dir: Some(dir),
        resume: false,
        device: opts.device.clone(),
    };
    let data = from_rows(filled, d, DType::F64, &Device::Cpu)?;
    train_masked(&data, Some(&observed), None, &setup, &mut |p| {
        progress(FitProgress::Train { round: 0, progress: p })
    })?;
    StoredEncoding::new(table, enc).save(dir)?;
    let mut e_opts = opts.impute.clone();
    e_opts.draws = 1;
    for round in 1..=opts.em_rounds {
        let (score, meta) = load_model_on(dir, &opts.device)?;
        e_opts.posterior.seed = opts.train.seed.wrapping_add(1000 + round as u64);
        let imp = impute_table(
            &score,
            Some(&meta.normalisation),
            table,
            enc,
            &e_opts,
            &|done, total| {
                let _ = (done, total);
            },
        )?;
        progress(FitProgress::Impute {
            round,
            done: n,
            total: n,
        });
        let mut completed = table.clone();
        completed.cells = imp.draws[0].clone();
        let zc = enc.encode(&completed);
        setup.resume = true;
        setup.config.steps = opts.train.steps + round * opts.em_steps;
        let data = from_rows(zc, d, DType::F64, &Device::Cpu)?;
        train_masked(&data, None, None, &setup, &mut |p| {
            progress(FitProgress::Train { round, progress: p })
        })?;
    }
    let (score, meta) = load_model_on(dir, &opts.device)?;
    Ok((score, meta.normalisation))
}
