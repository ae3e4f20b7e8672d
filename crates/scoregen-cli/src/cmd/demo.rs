//! `scoregen demo`: every sampler on a built-in 2-D 25-component mixture against exact
//! samples, with a metrics table and figures.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::benchmarks::demo::{convergence, evaluate_sampler, noise_floor, samplers};
use scoregen::rng::Noise;
use scoregen::score::GaussianMixture;

use crate::plot::{line_plot, pair_plot, Series};
use crate::progress::Steps;
use crate::{CliError, CliResult};

/// `scoregen demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for figures and the metrics CSV (created if missing).
    #[arg(long, default_value = "out")]
    pub out_dir: PathBuf,
    /// Samples per sampler.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed (prior weights, exact samples and samplers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs per sampler in the table (each against a fresh exact reference).
const REPS: u64 = 4;

fn err(e: candle_core::Error) -> CliError {
    scoregen::Error::from(e).into()
}

/// `scoregen demo`.
pub fn run(a: DemoArgs, quiet: bool) -> CliResult<()> {
    crate::limits::count("--n", a.n, 2, usize::MAX)?;
    // Each sampler's state, the exact references and the metrics' copies, 2-D.
    crate::limits::check_memory(&crate::limits::rows(
        scoregen::budget::Estimate::new(),
        "--n",
        a.n,
        2,
        40,
    ))?;
    std::fs::create_dir_all(&a.out_dir)
        .map_err(|e| CliError::user(format!("{}: cannot create: {e}", a.out_dir.display())))?;
    let law = GaussianMixture::grid25(2, &Noise::new(a.seed))?;
    let n = a.n;
    let reference = law.sample(n, &Noise::new(a.seed + 1), 0);
    let rt = Tensor::from_vec(reference.clone(), (n, 2), &Device::Cpu).map_err(err)?;
    let (floor, floor_sd) = noise_floor(&law, n, a.seed, 10)?;
    println!(
        "Prior: 2-D mixture of 25 unit Gaussians on the grid 8*{{-2..2}}^2, weights ∝ g^2 (Cardoso et al. 2024's recipe; docs/methods.md)."
    );
    println!("Exact score at every t; OU process beta = 2; {n} samples per sampler; reference: {n} exact samples.");
    println!("Noise floor (SW1 of two independent exact sets, 10 pairs): {floor:.4} ± {floor_sd:.4} (sd)");
    println!(
        "Each row: mean of {REPS} runs, each against a fresh exact set (sd of such a mean at the floor: {:.4})\n",
        floor_sd / (REPS as f64).sqrt()
    );
    println!(
        "{:<22} {:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "sampler", "steps", "NFE", "SW1", "SW1/floor", "MMD^2", "weight err", "time s"
    );
    let mut csv = String::from("sampler,steps,nfe,sw1,sw1_over_floor,mmd2,weight_err,time_s\n");
    for (i, s) in samplers()?.iter().enumerate() {
        let bar = Steps::new(s.steps, s.label, quiet);
        let seed0 = a.seed + 10 + REPS * i as u64;
        let r = evaluate_sampler(&law, s, n, seed0, REPS, &rt, &mut |k, t| bar.tick(k, t))?;
        drop(bar);
        let (label, steps, nfe) = (s.label, s.steps, s.steps * s.nfe_per_step);
        println!(
            "{:<22} {:>6} {:>6} {:>8.4} {:>10.2} {:>10.5} {:>10.4} {:>8.2}",
            label,
            steps,
            nfe,
            r.sw,
            r.sw / floor,
            r.mmd2,
            r.weight_error,
            r.seconds
        );
        csv.push_str(&format!(
            "{label},{steps},{nfe},{},{},{},{},{}\n",
            r.sw,
            r.sw / floor,
            r.mmd2,
            r.weight_error,
            r.seconds
        ));
        pair_plot(
            &a.out_dir.join(format!("demo_{}.png", s.slug)),
            &[
                Series {
                    label: "exact",
                    data: &reference,
                    d: 2,
                },
                Series {
                    label,
                    data: &r.first,
                    d: 2,
                },
            ],
            &format!("{label} vs exact samples"),
            2,
        )
        .map_err(CliError::user)?;
    }
    println!("(the weight error is the L1 gap between mode shares and weights, ~0.07 for {n} exact samples)");
    // Discretisation: SW1 against the number of steps, reverse SDE and PF-ODE (Euler).
    let mut curves: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for (label, b) in [("em b=1 (reverse SDE)", 1.0), ("em b=0 (PF-ODE)", 0.0)] {
        let bar = Steps::new(10, "convergence", quiet);
        let c = convergence(&law, b, &[10, 30, 100, 300, 1000], n, a.seed, &rt, &mut |k, t| {
            bar.tick(k, t)
        })?;
        curves.push((label, c));
    }
    let floor_line = vec![(10.0, floor), (1000.0, floor)];
    let mut lines: Vec<(&str, &[(f64, f64)])> = curves.iter().map(|(l, v)| (*l, v.as_slice())).collect();
    lines.push(("noise floor", &floor_line));
    line_plot(
        &a.out_dir.join("demo_convergence.png"),
        "SW1 to exact samples vs steps (mean of 4 runs)",
        "steps",
        "sliced W1",
        &lines,
        true,
        true,
    )
    .map_err(CliError::user)?;
    println!("\nSW1 vs steps (Euler–Maruyama, mean of 4 runs):");
    for (label, v) in &curves {
        let row: Vec<String> = v.iter().map(|(s, w)| format!("{s:.0}: {w:.3}")).collect();
        println!("  {label:<22} {}", row.join("  "));
    }

    learned_moons(&a, quiet)?;
    inverse_problem(&a, &law)?;

    let csv_path = a.out_dir.join("demo_metrics.csv");
    scoregen::data::write_atomic(&csv_path, |w| Ok(w.write_all(csv.as_bytes())?))?;
    println!(
        "\nFigures and {} written to {}/",
        csv_path.file_name().unwrap_or_default().to_string_lossy(),
        a.out_dir.display()
    );
    Ok(())
}

/// Trains a small score network on the two moons and samples it beside fresh data
/// ([`scoregen::benchmarks::demo::learned_moons`]).
fn learned_moons(a: &DemoArgs, quiet: bool) -> CliResult<()> {
    let dir = a.out_dir.join("demo_moons_model");
    if dir.join("checkpoint.json").exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| CliError::user(format!("{}: {e}", dir.display())))?;
    }
    println!(
        "\nLearned score: MLP 3 x 128 trained by denoising score matching (EDM preconditioning, log-normal noise levels) on {} points of builtin:moons",
        scoregen::benchmarks::demo::LEARNED_MOONS_TRAIN
    );
    let pb = crate::progress::bar(scoregen::benchmarks::demo::LEARNED_MOONS_STEPS as u64, "train", quiet);
    let t0 = Instant::now();
    let r = scoregen::benchmarks::demo::learned_moons(a.n, a.seed, &dir, &crate::device::get(), &mut |k| {
        pb.set_position(k as u64)
    });
    pb.finish_and_clear();
    let r = r?;
    println!(
        "  {} steps ({:.0} steps/s), validation loss {:.4}; 500-step reverse SDE: SW1 to fresh data {:.4} (two fresh data sets: {:.4}; ratio {:.2}; means over {} comparisons with fresh sets); {:.1} s",
        r.train.step,
        r.train.steps_per_sec,
        r.train.val_loss.unwrap_or(f64::NAN),
        r.sw,
        r.floor,
        r.sw / r.floor,
        scoregen::benchmarks::demo::LEARNED_MOONS_PAIRS * scoregen::benchmarks::demo::LEARNED_MOONS_REFS,
        t0.elapsed().as_secs_f64()
    );
    pair_plot(
        &a.out_dir.join("demo_learned_moons.png"),
        &[
            Series {
                label: "data",
                data: &r.fresh,
                d: 2,
            },
            Series {
                label: "learned model",
                data: &r.samples,
                d: 2,
            },
        ],
        "two moons: learned score model vs data",
        2,
    )
    .map_err(CliError::user)?;
    Ok(())
}

/// One linear inverse problem on the same prior ([`scoregen::benchmarks::demo::inverse_problem`]),
/// solved by an SMC method (MCGdiff) and a guidance method (DPS) beside the exact posterior.
fn inverse_problem(a: &DemoArgs, law: &GaussianMixture) -> CliResult<()> {
    let inv = scoregen::benchmarks::demo::inverse_problem(law, a.n, a.seed)?;
    println!(
        "\nInverse problem on the same prior: y = A x + sigma_y z, A = (0.8, 0.6), sigma_y = {}, y = {:.3}; {} posterior modes above 1% weight",
        inv.sigma_y, inv.y, inv.modes
    );
    println!("  {:<10} {:>8} {:>9} {:>7}", "method", "SW1", "weight err", "time");
    let mut series = vec![Series {
        label: "exact posterior",
        data: &inv.exact,
        d: 2,
    }];
    for (name, sw, we, secs, x) in &inv.rows {
        if *name == "exact" {
            println!("  {:<10} {:>8.4} {:>9.3} {:>7}", name, sw, we, "-");
        } else {
            println!("  {:<10} {:>8.4} {:>9.3} {:>6.1}s", name, sw, we, secs);
            series.push(Series {
                label: name,
                data: x,
                d: 2,
            });
        }
    }
    pair_plot(
        &a.out_dir.join("demo_posterior.png"),
        &series,
        "posterior: MCGdiff and DPS vs exact",
        2,
    )
    .map_err(CliError::user)?;
    Ok(())
}
