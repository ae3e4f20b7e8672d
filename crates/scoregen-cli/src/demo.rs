//! `scoregen demo`: every sampler on a built-in 2-D 25-component mixture against exact
//! samples, with a metrics table and figures.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use scoregen::metrics::{mixture_weight_error, mmd_rbf, sliced_wasserstein, SlicedOptions};
use scoregen::rng::Noise;
use scoregen::sample::{SampleOptions, Sampler, SamplerParams};
use scoregen::score::GaussianMixture;

use crate::commands::sample_mixture;
use crate::plot::{line_plot, pair_plot, Series};
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
    let to_t = |v: Vec<f64>| Tensor::from_vec(v, (n, 2), &Device::Cpu).map_err(err);
    let reference = law.sample(n, &Noise::new(a.seed + 1), 0);
    let rt = to_t(reference.clone())?;
    let sw = SlicedOptions::default();
    // The two-sample noise floor: SW1 between independent exact sets, over 10 pairs.
    let floors = (0..10)
        .map(|r| {
            let x = to_t(law.sample(n, &Noise::new(a.seed + 1000 + 2 * r), 0))?;
            let y = to_t(law.sample(n, &Noise::new(a.seed + 1001 + 2 * r), 0))?;
            Ok(sliced_wasserstein(&x, &y, &sw)?)
        })
        .collect::<CliResult<Vec<f64>>>()?;
    let floor = floors.iter().sum::<f64>() / floors.len() as f64;
    let floor_sd = (floors.iter().map(|f| (f - floor).powi(2)).sum::<f64>() / (floors.len() - 1) as f64).sqrt();
    println!("Prior: 2-D mixture of 25 unit Gaussians on the grid 8*{{-2..2}}^2, weights ∝ g^2 (DESIGN.md §4).");
    println!("Exact score at every t; OU process beta = 2; {n} samples per sampler; reference: {n} exact samples.");
    println!("Noise floor (SW1 of two independent exact sets, 10 pairs): {floor:.4} ± {floor_sd:.4} (sd)");
    println!(
        "Each row: mean of {REPS} runs, each against a fresh exact set (sd of such a mean at the floor: {:.4})\n",
        floor_sd / (REPS as f64).sqrt()
    );
    let params = |b: f64, eta: f64| SamplerParams {
        b,
        eta,
        ..Default::default()
    };
    let runs: Vec<(&str, &str, Sampler, usize, usize)> = vec![
        (
            "em b=1 (reverse SDE)",
            "em_b1",
            Sampler::from_name("em", &params(1.0, 0.0))?,
            1000,
            1,
        ),
        (
            "em b=0 (PF-ODE)",
            "em_b0",
            Sampler::from_name("em", &params(0.0, 0.0))?,
            1000,
            1,
        ),
        ("ei b=1", "ei_b1", Sampler::from_name("ei", &params(1.0, 0.0))?, 1000, 1),
        ("heun (PF-ODE)", "heun", Sampler::Heun, 500, 2),
        ("ddpm", "ddpm", Sampler::Ddpm, 1000, 1),
        (
            "ddim eta=0",
            "ddim",
            Sampler::from_name("ddim", &params(1.0, 0.0))?,
            1000,
            1,
        ),
        (
            "ald",
            "ald",
            Sampler::from_name("ald", &SamplerParams::default())?,
            1000,
            1,
        ),
        (
            "pc (em + langevin)",
            "pc",
            Sampler::from_name("pc", &SamplerParams::default())?,
            1000,
            2,
        ),
    ];
    println!(
        "{:<22} {:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "sampler", "steps", "NFE", "SW1", "SW1/floor", "MMD^2", "weight err", "time s"
    );
    let mut csv = String::from("sampler,steps,nfe,sw1,sw1_over_floor,mmd2,weight_err,time_s\n");
    for (i, (label, slug, sampler, steps, nfe_per)) in runs.iter().enumerate() {
        // Mean over REPS runs, each against its own fresh exact reference set.
        let (mut s, mut mmd, mut we, mut secs) = (0.0, 0.0, 0.0, 0.0);
        let mut first = None;
        for r in 0..REPS {
            let seed = a.seed + 10 + (REPS * i as u64) + r;
            let opts = SampleOptions {
                steps: *steps,
                seed,
                ..Default::default()
            };
            let t0 = Instant::now();
            let x = sample_mixture(&law, sampler, &opts, n, label, quiet)?;
            secs += t0.elapsed().as_secs_f64() / REPS as f64;
            let x = x.to_dtype(DType::F64).map_err(err)?;
            let reference_r = if r == 0 {
                rt.clone()
            } else {
                to_t(law.sample(n, &Noise::new(seed + 500), 0))?
            };
            s += sliced_wasserstein(&x, &reference_r, &sw)? / REPS as f64;
            mmd += mmd_rbf(&x, &reference_r, None)?.mmd2_unbiased / REPS as f64;
            we += mixture_weight_error(&x, &law)? / REPS as f64;
            if r == 0 {
                first = Some(x);
            }
        }
        let x = first.expect("REPS >= 1");
        println!(
            "{:<22} {:>6} {:>6} {:>8.4} {:>10.2} {:>10.5} {:>10.4} {:>8.2}",
            label,
            steps,
            steps * nfe_per,
            s,
            s / floor,
            mmd,
            we,
            secs
        );
        csv.push_str(&format!(
            "{label},{steps},{},{s},{},{mmd},{we},{secs}\n",
            steps * nfe_per,
            s / floor
        ));
        let xs: Vec<f64> = x.flatten_all().and_then(|v| v.to_vec1()).map_err(err)?;
        let file = a.out_dir.join(format!("demo_{slug}.png"));
        pair_plot(
            &file,
            &[
                Series {
                    label: "exact",
                    data: &reference,
                    d: 2,
                },
                Series { label, data: &xs, d: 2 },
            ],
            &format!("{label} vs exact samples"),
            2,
        )
        .map_err(CliError::user)?;
    }
    println!("(the weight error is the L1 gap between mode shares and weights, ~0.07 for {n} exact samples)");
    // Discretisation: SW1 against the number of steps, reverse SDE and PF-ODE (Euler).
    let mut curves: Vec<(&str, Vec<(f64, f64)>)> = vec![("em b=1 (reverse SDE)", vec![]), ("em b=0 (PF-ODE)", vec![])];
    for (c, b) in [1.0, 0.0].iter().enumerate() {
        let sampler = Sampler::from_name("em", &params(*b, 0.0))?;
        for steps in [10, 30, 100, 300, 1000] {
            // Mean over 4 seeds: one run's SW1 is as noisy as the floor.
            let mut m = 0.0;
            for r in 0..4u64 {
                let seed = a.seed + 100 + 10 * steps as u64 + r;
                let opts = SampleOptions {
                    steps,
                    seed,
                    ..Default::default()
                };
                let x = sample_mixture(&law, &sampler, &opts, n, "convergence", quiet)?;
                m += sliced_wasserstein(&x.to_dtype(DType::F64).map_err(err)?, &rt, &sw)? / 4.0;
            }
            curves[c].1.push((steps as f64, m));
        }
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

/// Trains a small score network on the two moons and samples it beside fresh data.
fn learned_moons(a: &DemoArgs, quiet: bool) -> CliResult<()> {
    use scoregen::data::builtin;
    use scoregen::nn::{train, MlpConfig, TrainConfig, TrainSetup};
    use scoregen::sample::default_process;
    let ds = builtin::load("moons", Some(4000), a.seed)?;
    let arch = MlpConfig {
        hidden: 128,
        ..MlpConfig::reference(2)
    };
    let dir = a.out_dir.join("demo_moons_model");
    if dir.join("checkpoint.json").exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| CliError::user(format!("{}: {e}", dir.display())))?;
    }
    let config = TrainConfig {
        steps: 1500,
        batch: 256,
        seed: a.seed,
        ..Default::default()
    };
    let setup = TrainSetup {
        arch: arch.into(),
        process: default_process(3.0 * 2f64.sqrt()),
        config,
        checkpoint_dir: Some(&dir),
        resume: false,
        device: crate::device::get(),
    };
    println!("\nLearned score: MLP 3 x 128 trained by denoising score matching on 4000 points of builtin:moons");
    let pb = crate::progress::bar(1500, "train", quiet);
    let t0 = Instant::now();
    let r = train(&ds.x, None, &setup, &mut |p| pb.set_position(p.step as u64));
    pb.finish_and_clear();
    let r = r?;
    let (score, meta) = scoregen::nn::load_model_on(&dir, &crate::device::get())?;
    let n = a.n;
    let opts = SampleOptions {
        steps: 500,
        seed: a.seed + 7,
        ..Default::default()
    };
    let sampler = Sampler::from_name("em", &SamplerParams::default())?;
    let z = scoregen::sample::sample(&score, &sampler, &opts, n, &mut |_, _| {})?;
    let x = meta.normalisation.denormalise(&z)?.to_dtype(DType::F64).map_err(err)?;
    let secs = t0.elapsed().as_secs_f64();
    let fresh = builtin::load("moons", Some(n), a.seed + 1)?.x;
    let other = builtin::load("moons", Some(n), a.seed + 2)?.x;
    let sw = SlicedOptions::default();
    let ours = sliced_wasserstein(&x, &fresh, &sw)?;
    let floor = sliced_wasserstein(&other, &fresh, &sw)?;
    println!(
        "  {} steps ({:.0} steps/s), validation loss {:.4}; 500-step reverse SDE: SW1 to fresh data {:.4} (two fresh data sets: {:.4}); {:.1} s",
        r.step,
        r.steps_per_sec,
        r.val_loss.unwrap_or(f64::NAN),
        ours,
        floor,
        secs
    );
    let xs: Vec<f64> = x.flatten_all().and_then(|v| v.to_vec1()).map_err(err)?;
    let fs: Vec<f64> = fresh.flatten_all().and_then(|v| v.to_vec1()).map_err(err)?;
    pair_plot(
        &a.out_dir.join("demo_learned_moons.png"),
        &[
            Series {
                label: "data",
                data: &fs,
                d: 2,
            },
            Series {
                label: "learned model",
                data: &xs,
                d: 2,
            },
        ],
        "two moons: learned score model vs data",
        2,
    )
    .map_err(CliError::user)?;
    Ok(())
}

/// One linear inverse problem on the same prior, `y = A x + sigma_y z` with `A` a random
/// direction, solved by an SMC method (MCGdiff) and a guidance method (DPS) beside the
/// exact posterior.
fn inverse_problem(a: &DemoArgs, law: &GaussianMixture) -> CliResult<()> {
    use scoregen::inverse::{sample_posterior, ExactPosterior, Method, Observation, Operator, PosteriorOptions};
    use scoregen::sample::default_process;
    use scoregen::score::MixtureScore;
    use std::sync::Arc;
    let n = a.n;
    let op = Operator::Dense {
        rows: 1,
        cols: 2,
        a: vec![0.8, 0.6],
    };
    let sigma_y = 2.0;
    let x_star = law.sample(1, &Noise::new(a.seed + 50), 0);
    let y = vec![0.8 * x_star[0] + 0.6 * x_star[1] + sigma_y * 0.3];
    let post = ExactPosterior::new(law, &op, &y, sigma_y)?;
    let to_t = |v: Vec<f64>| Tensor::from_vec(v, (n, 2), &Device::Cpu).map_err(err);
    let exact = post.sample(n, &Noise::new(a.seed + 51), 0);
    let exact2 = to_t(post.sample(n, &Noise::new(a.seed + 52), 0))?;
    let et = to_t(exact.clone())?;
    let sw = SlicedOptions::default();
    println!(
        "\nInverse problem on the same prior: y = A x + sigma_y z, A = (0.8, 0.6), sigma_y = {sigma_y}, y = {:.3}; {} posterior modes above 1% weight",
        y[0],
        post.weights.iter().filter(|w| **w > 0.01).count()
    );
    println!("  {:<10} {:>8} {:>9} {:>7}", "method", "SW1", "weight err", "time");
    println!(
        "  {:<10} {:>8.4} {:>9.3} {:>7}",
        "exact",
        sliced_wasserstein(&exact2, &et, &sw)?,
        mixture_weight_error(&exact2, &post.mixture()?)?,
        "-"
    );
    let score = MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()));
    let obs = Observation { op, y, sigma_y };
    let mut figs: Vec<(&str, Vec<f64>)> = Vec::new();
    for name in ["mcgdiff", "dps"] {
        let method: Method = name.parse()?;
        let opts = PosteriorOptions {
            n,
            particles: n,
            steps: 500,
            seed: a.seed + 53,
            ..Default::default()
        };
        let t0 = Instant::now();
        let rep = sample_posterior(&score, &obs, &method, &opts, &mut |_, _| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let xt = to_t(rep.samples.clone())?;
        println!(
            "  {:<10} {:>8.4} {:>9.3} {:>6.1}s",
            name,
            sliced_wasserstein(&xt, &et, &sw)?,
            mixture_weight_error(&xt, &post.mixture()?)?,
            secs
        );
        figs.push((name, rep.samples));
    }
    let mut series = vec![Series {
        label: "exact posterior",
        data: &exact,
        d: 2,
    }];
    for (name, x) in &figs {
        series.push(Series {
            label: name,
            data: x,
            d: 2,
        });
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
