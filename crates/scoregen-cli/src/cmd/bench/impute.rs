//! `scoregen bench impute`: mask complete tables (MCAR / MAR / MNAR), impute them with a
//! score model trained on the masked table, and score against mean and kNN imputation.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::data::{write_atomic, write_npy};
use scoregen::impute::evaluate::{column_uncertainty, score_repeat, summarise, MethodScore, Standardised};
use scoregen::impute::mechanism::Mechanism;
use scoregen::impute::{ColumnKind, Encoding, MixedTable};

use crate::cmd::impute::{read_table, run_impute, train_table_model, ImputeSettings};
use crate::{CliError, CliResult};

/// `scoregen bench impute`.
#[derive(Args, Debug)]
pub struct BenchImputeArgs {
    /// Tables, comma separated: builtin:breast-cancer, builtin:wine, builtin:iris,
    /// builtin:digits, builtin:penguins, or CSV files with a header. A complete table is
    /// masked and scored; a table with missing values (penguins) is imputed and summarised.
    #[arg(long, value_delimiter = ',', default_value = "builtin:iris")]
    pub data: Vec<String>,
    /// Missingness mechanism: mcar, mar (logistic on always-observed columns), mnar
    /// (logistic on columns that are themselves masked).
    #[arg(long, default_value = "mcar")]
    pub mechanism: String,
    /// Missing rate (of the maskable columns for mar / mnar).
    #[arg(long, default_value_t = 0.3)]
    pub rate: f64,
    /// Independent masks per table.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed (repeat r uses seed + r for its mask, training and sampling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write each table's standardised complete values and masks here (.npy) for
    /// bench/impute_sklearn.py.
    #[arg(long)]
    pub save_masks: Option<PathBuf>,
    /// Write one CSV row per (table, repeat, method) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where trained models go (one sub-directory per table and repeat; default: a
    /// temporary directory, removed afterwards).
    #[arg(long)]
    pub models: Option<PathBuf>,
    #[command(flatten)]
    pub settings: ImputeSettings,
}

/// One (table, repeat, method) score.
struct Row {
    table: String,
    repeat: usize,
    method: String,
    score: MethodScore,
    missing: usize,
}

fn tensor(v: Vec<f64>, n: usize, d: usize) -> CliResult<Tensor> {
    Tensor::from_vec(v, (n, d), &Device::Cpu).map_err(|e| CliError::from(scoregen::Error::from(e)))
}

/// Runs the benchmark.
pub fn run(a: BenchImputeArgs, quiet: bool) -> CliResult<()> {
    let mech: Mechanism = a.mechanism.parse()?;
    if !(a.rate > 0.0 && a.rate < 1.0) {
        return Err(CliError::user(format!("--rate must be in (0, 1), got {}", a.rate)));
    }
    crate::limits::count("--repeats", a.repeats, 1, 1000)?;
    let tables: Vec<(String, MixedTable)> = a
        .data
        .iter()
        .map(|d| {
            let name = match d.strip_prefix("builtin:") {
                Some(n) => n.to_string(),
                None => std::path::Path::new(d)
                    .file_stem()
                    .map_or_else(|| "table".to_string(), |s| s.to_string_lossy().to_string()),
            };
            Ok((name, read_table(d, &[])?))
        })
        .collect::<CliResult<_>>()?;
    let tmp = std::env::temp_dir().join(format!("scoregen-bench-impute-{}", std::process::id()));
    let models = a.models.clone().unwrap_or_else(|| tmp.clone());
    let method = a.settings.method.clone();
    // Check the training settings before the header is printed (no partial output).
    a.settings.fit_options(a.seed)?;
    println!(
        "bench impute: {} masks, rate {}, {} repeats; {} ({} particles, {} steps) on an MLP ({}, {} output, {} times) trained \
         {} + {} x {} steps; {} threads",
        mech.name(),
        a.rate,
        a.repeats,
        method,
        a.settings.particles,
        a.settings.steps,
        a.settings
            .hidden
            .map_or_else(|| "width 8 d in 64..256".to_string(), |h| format!("width {h}")),
        a.settings.param,
        a.settings.time_sampling,
        a.settings.train_steps,
        a.settings.em_rounds,
        a.settings.em_steps,
        rayon::current_num_threads()
    );
    let mut rows: Vec<Row> = Vec::new();
    for (name, full) in &tables {
        let (n, d) = (full.rows, full.cols);
        if full.n_missing() > 0 {
            // Real missing values: impute, report the uncertainty, no score.
            let enc = Encoding::fit(full);
            let fo = a.settings.fit_options(a.seed)?;
            let started = Instant::now();
            let dir = models.join(format!("{name}-real"));
            let (score, norm) = train_table_model(full, &enc, &fo, &dir, quiet)?;
            let io = a.settings.impute_options(a.seed, 0)?;
            let imp = run_impute(&score, Some(&norm), full, &enc, &io, quiet)?;
            println!(
                "{name}: {} real missing cells in {} rows imputed in {:.1} s (no truth, no score); mean \
                 posterior sd by column:",
                full.n_missing(),
                full.incomplete_rows().len(),
                started.elapsed().as_secs_f64()
            );
            for (j, cells, mean) in column_uncertainty(full, &imp.uncertainty) {
                let what = match full.kinds[j] {
                    ColumnKind::Categorical { .. } => "1 - p(mode)",
                    ColumnKind::Numeric { .. } => "sd",
                };
                println!("  {:<20} {cells:>3} cells, mean {what} {mean:.4}", full.header[j]);
            }
            continue;
        }
        // Standardised units of the complete table.
        let st = Standardised::fit(full).map_err(|e| CliError::user(format!("{name}: {e}")))?;
        if let Some(dir) = &a.save_masks {
            let sub = dir.join(name);
            std::fs::create_dir_all(&sub)
                .map_err(|e| CliError::user(format!("{}: cannot create: {e}", sub.display())))?;
            write_npy(sub.join("complete.npy"), &tensor(st.z.clone(), n, d)?)?;
        }
        for r in 0..a.repeats {
            let seed = a.seed + r as u64;
            let rep = score_repeat(full, &st, mech, a.rate, seed, &mut |masked| -> CliResult<_> {
                let enc = Encoding::fit(masked);
                let fo = a.settings.fit_options(seed)?;
                let dir = models.join(format!("{name}-{}-{r}", mech.name()));
                let (score, norm) = train_table_model(masked, &enc, &fo, &dir, quiet)?;
                let io = a.settings.impute_options(seed, 0)?;
                run_impute(&score, Some(&norm), masked, &enc, &io, quiet)
            })?;
            if let Some(dir) = &a.save_masks {
                let m: Vec<f64> = rep.mask.iter().map(|&b| f64::from(u8::from(b))).collect();
                let file = format!("mask_{}_r{}_{r}.npy", mech.name(), a.rate);
                write_npy(dir.join(name).join(file), &tensor(m, n, d)?)?;
            }
            for sc in &rep.scores {
                let label = match sc.method {
                    "model" => format!("scoregen/{method}"),
                    m => m.to_string(),
                };
                println!(
                    "{name:<14} repeat {r}  {label:<12} RMSE {:.4}  MAE {:.4}  {:>8.2} s",
                    sc.rmse, sc.mae, sc.seconds
                );
                rows.push(Row {
                    table: name.clone(),
                    repeat: r,
                    method: label,
                    score: sc.clone(),
                    missing: rep.missing,
                });
            }
            println!(
                "{name:<14} repeat {r}  weight degeneracy: {} of {} rows had ESS < 5% of the particles at some step",
                rep.low_ess_rows(0.05),
                rep.sampled_rows
            );
        }
    }
    if a.models.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if rows.is_empty() {
        return Ok(());
    }
    println!(
        "\n{:<14} {:<22} {:>17} {:>17} {:>10}",
        "table", "method", "RMSE (mean ± sd)", "MAE (mean ± sd)", "time (s)"
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &rows {
        let k = (r.table.clone(), r.method.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (t, m) in &keys {
        let g: Vec<&MethodScore> = rows
            .iter()
            .filter(|r| &r.table == t && &r.method == m)
            .map(|r| &r.score)
            .collect();
        let [(rm, rs), (am, as_), (tm, _)] = summarise(&g);
        println!(
            "{t:<14} {m:<22} {:>17} {:>17} {tm:>10.2}",
            format!("{rm:.4} ± {rs:.4}"),
            format!("{am:.4} ± {as_:.4}")
        );
    }
    if let Some(out) = &a.out {
        write_atomic(out, |w| {
            writeln!(w, "table,mechanism,rate,repeat,method,missing_cells,rmse,mae,seconds")?;
            for r in &rows {
                writeln!(
                    w,
                    "{},{},{},{},{},{},{},{},{}",
                    r.table,
                    mech.name(),
                    a.rate,
                    r.repeat,
                    r.method,
                    r.missing,
                    r.score.rmse,
                    r.score.mae,
                    r.score.seconds
                )?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
