//! `scoregen bench gmm` (deck 003's table by DESIGN.md §4's recipe) and
//! `scoregen bench impute-gauss` (deck 000's Gaussian imputation example).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Args;
use scoregen::inverse::{
    sample_posterior, ExactPosterior, Method, Observation, Operator, PosteriorOptions, METHOD_NAMES,
};
use scoregen::metrics::{mixture_weight_error, sliced_wasserstein, SlicedOptions};
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::sample::default_process;
use scoregen::score::{Covariance, GaussianMixture, MixtureScore};

use crate::plot::{line_plot, pair_plot, Series};
use crate::{CliError, CliResult};

fn tensor(x: Vec<f64>, d: usize) -> CliResult<Tensor> {
    let n = x.len() / d;
    Ok(Tensor::from_vec(x, (n, d), &Device::Cpu).map_err(scoregen::Error::from)?)
}

fn write_text(path: &std::path::Path, text: &str) -> CliResult<()> {
    scoregen::io::write_atomic(path, |w| Ok(w.write_all(text.as_bytes())?))?;
    Ok(())
}

/// `scoregen bench gmm`.
#[derive(Args, Debug)]
pub struct BenchGmmArgs {
    /// Dimension of x.
    #[arg(long, default_value_t = 10)]
    dx: usize,
    /// Dimension of y.
    #[arg(long, default_value_t = 1)]
    dy: usize,
    /// Number of random problems.
    #[arg(long, default_value_t = 20)]
    problems: usize,
    /// Methods, comma separated, or "all" (the methods that take any operator).
    #[arg(long, default_value = "all")]
    methods: String,
    /// Particles per SMC run; a comma-separated list gives the convergence curve.
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    particles: Vec<usize>,
    /// Reverse steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Samples per method and problem (and exact samples for the reference).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Seed of the problems.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for gmm_dxD_dyK.csv and the figures.
    #[arg(long, default_value = "out")]
    out_dir: PathBuf,
}

/// Deck 003's published medians / means of the sliced Wasserstein (Table 1).
fn published(method: &str, dx: usize) -> &'static str {
    match (method, dx) {
        ("mcgdiff", 10) => "2.25 / 2.69",
        ("mcgdiff", 100) => "2.72 / 3.13",
        ("dps", 10) => "3.12 / 5.64",
        ("dps", 100) => "4.29 / 4.93",
        ("ddrm", 10) => "2.66 / 3.06",
        ("ddrm", 100) => "5.97 / 6.26",
        ("dcps", 10) => "1.26 / 2.59",
        ("dcps", 100) => "2.81 / 3.22",
        _ => "-",
    }
}

/// One random problem of the recipe: prior, operator, sigma_y, y.
pub fn gmm_problem(dx: usize, dy: usize, noise: &Noise, index: u64) -> CliResult<(GaussianMixture, Observation)> {
    let prior = GaussianMixture::grid25(dx, &Noise::new(noise.seed() ^ (index.wrapping_mul(0x9E37_79B9))))?;
    let a = noise.normals(stream(Purpose::User, 4 * index), dy, dx);
    let f = Operator::Dense { rows: dy, cols: dx, a }.svd()?;
    let mut s = noise.uniforms(stream(Purpose::User, 4 * index + 1), f.rank());
    s.sort_by(|a, b| b.total_cmp(a));
    let u2 = noise.uniforms(stream(Purpose::User, 4 * index + 2), 1)[0];
    let sigma_y = u2 * s[0];
    let op = Operator::Svd {
        rows: dy,
        cols: dx,
        u: f.u,
        s,
        v: f.v,
    };
    let x_star = prior.sample(1, noise, 1000 + index);
    let z = noise.normals(stream(Purpose::User, 4 * index + 3), 1, dy);
    let y: Vec<f64> = op
        .apply_rows(&x_star)
        .iter()
        .zip(&z)
        .map(|(a, z)| a + sigma_y * z)
        .collect();
    Ok((prior, Observation { op, y, sigma_y }))
}

/// (method, particles, per-problem (sliced W1, weight error, seconds)).
type Row = (String, usize, Vec<(f64, f64, f64)>);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// `scoregen bench gmm`.
pub fn bench_gmm(b: BenchGmmArgs, quiet: bool) -> CliResult<()> {
    if b.dx < 2 || b.dy == 0 || b.dy > b.dx || b.problems == 0 || b.n == 0 || b.particles.contains(&0) {
        return Err(CliError::user(
            "need dx >= 2, 1 <= dy <= dx, problems, n and particles >= 1",
        ));
    }
    {
        use crate::limits;
        let np = b.particles.iter().copied().max().unwrap_or(1).max(b.n);
        limits::count("--steps", b.steps, 1, limits::MAX_STEPS)?;
        let e = limits::rows(scoregen::budget::Estimate::new(), "--particles", np, b.dx, 16);
        limits::check_memory(&e.add(
            "--dx",
            format!("--dx {} x --dy {} operator and SVD (x 4 buffers of f64)", b.dx, b.dy),
            b.dx as f64 * (b.dx + b.dy) as f64 * 4.0,
            8.0,
        ))?;
    }
    if !b.out_dir.is_dir() {
        std::fs::create_dir_all(&b.out_dir).map_err(|e| CliError::user(format!("{}: {e}", b.out_dir.display())))?;
    }
    let names: Vec<String> = if b.methods == "all" {
        ["mcgdiff", "tds", "dcps", "dps", "pigdm", "tmpd", "ddrm"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        b.methods.split(',').map(|s| s.trim().to_string()).collect()
    };
    let mut methods = Vec::new();
    for n in &names {
        let m: Method = n.parse()?;
        if matches!(m, Method::Exact | Method::Replacement { .. } | Method::SmcImpute) {
            return Err(CliError::user(format!(
                "bench gmm: '{n}' does not apply (the operators are dense); choose among {}",
                METHOD_NAMES.join(", ")
            )));
        }
        methods.push(m);
    }
    let noise = Noise::new(b.seed);
    let sw_opts = SlicedOptions::default();
    // (method label, particles) -> per-problem (sw, weight error, seconds)
    let mut rows: Vec<Row> = Vec::new();
    let mut floor = Vec::new();
    let mut csv = String::from("problem,method,particles,sw,weight_error,seconds\n");
    for pi in 0..b.problems {
        let (prior, obs) = gmm_problem(b.dx, b.dy, &noise, pi as u64)?;
        let post = ExactPosterior::new(&prior, &obs.op, &obs.y, obs.sigma_y)?;
        let post_law = post.mixture()?;
        let reference = tensor(post.sample(b.n, &noise, 2 * pi as u64), b.dx)?;
        let second = tensor(post.sample(b.n, &noise, 2 * pi as u64 + 1), b.dx)?;
        let fl = sliced_wasserstein(&reference, &second, &sw_opts)?;
        floor.push(fl);
        writeln!(csv, "{pi},exact,0,{fl},{},0", mixture_weight_error(&second, &post_law)?).ok();
        let score = MixtureScore::new(Arc::new(prior.clone()), default_process(prior.radius()));
        let mut fig_series: Vec<(String, Vec<f64>)> = Vec::new();
        for m in &methods {
            let counts: Vec<usize> = if m.is_smc() { b.particles.clone() } else { vec![b.n] };
            for &np in &counts {
                let opts = PosteriorOptions {
                    n: b.n,
                    particles: np,
                    steps: b.steps,
                    seed: b.seed.wrapping_add(pi as u64),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let rep = sample_posterior(&score, &obs, m, &opts, &mut |_, _| {})?;
                let secs = t0.elapsed().as_secs_f64();
                let xs = tensor(rep.samples.clone(), b.dx)?;
                let sw = sliced_wasserstein(&xs, &reference, &sw_opts)?;
                let we = mixture_weight_error(&xs, &post_law)?;
                writeln!(csv, "{pi},{},{np},{sw},{we},{secs}", m.name()).ok();
                let label = m.name().to_string();
                match rows.iter_mut().find(|r| r.0 == label && r.1 == np) {
                    Some(r) => r.2.push((sw, we, secs)),
                    None => rows.push((label, np, vec![(sw, we, secs)])),
                }
                if pi == 0 && np == *counts.last().unwrap() {
                    fig_series.push((m.name().to_string(), rep.samples));
                }
                if !quiet {
                    eprintln!(
                        "problem {pi}: {:<8} N={np:<6} SW {sw:.3} (floor {fl:.3}) dw {we:.3} {secs:.1}s{}",
                        m.name(),
                        if m.is_smc() {
                            format!(" ESS/N min {:.3} resamplings {:.1}", rep.ess_min, rep.resamplings)
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        if pi == 0 {
            // Figure: project on the top right singular vector and on the first coordinate.
            let f = obs.op.svd()?;
            let r = f.rank();
            let proj = |x: &[f64]| -> Vec<f64> {
                x.chunks(b.dx)
                    .flat_map(|row| {
                        let p1: f64 = (0..b.dx).map(|c| row[c] * f.v[c * r]).sum();
                        [p1, row[0]]
                    })
                    .collect()
            };
            let exact_p = proj(&post.sample(b.n, &noise, 9999));
            let projected: Vec<(String, Vec<f64>)> = fig_series.iter().map(|(n, x)| (n.clone(), proj(x))).collect();
            let mut series = vec![Series {
                label: "exact posterior",
                data: &exact_p,
                d: 2,
            }];
            for (n, p) in &projected {
                series.push(Series {
                    label: n,
                    data: p,
                    d: 2,
                });
            }
            let path = b.out_dir.join(format!("gmm_dx{}_dy{}.png", b.dx, b.dy));
            pair_plot(
                &path,
                &series,
                &format!(
                    "posterior samples, problem 0 (dx={}, dy={}): v1 projection vs x_1",
                    b.dx, b.dy
                ),
                2,
            )
            .map_err(CliError::user)?;
        }
    }
    let csv_path = b.out_dir.join(format!("gmm_dx{}_dy{}.csv", b.dx, b.dy));
    write_text(&csv_path, &csv)?;
    let mut fl = floor.clone();
    println!(
        "bench gmm: dx = {}, dy = {}, {} problems, {} samples, {} steps, {} threads",
        b.dx,
        b.dy,
        b.problems,
        b.n,
        b.steps,
        rayon::current_num_threads()
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>16}",
        "method", "particles", "SW median", "SW mean", "dw mean", "s/problem", "deck 003 (med/mean)"
    );
    println!(
        "{:<10} {:>9} {:>10.3} {:>10.3} {:>9} {:>9} {:>16}",
        "floor",
        "-",
        median(&mut fl),
        floor.iter().sum::<f64>() / floor.len() as f64,
        "-",
        "-",
        "-"
    );
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (label, np, v) in &rows {
        let mut sws: Vec<f64> = v.iter().map(|a| a.0).collect();
        let mean_sw = sws.iter().sum::<f64>() / sws.len() as f64;
        let med = median(&mut sws);
        let dw = v.iter().map(|a| a.1).sum::<f64>() / v.len() as f64;
        let secs = v.iter().map(|a| a.2).sum::<f64>() / v.len() as f64;
        let smc = label.parse::<Method>().map(|m| m.is_smc()).unwrap_or(false);
        println!(
            "{:<10} {:>9} {:>10.3} {:>10.3} {:>9.3} {:>9.2} {:>16}",
            label,
            if smc { np.to_string() } else { "-".into() },
            med,
            mean_sw,
            dw,
            secs,
            published(label, b.dx)
        );
        if smc {
            match curves.iter_mut().find(|c| &c.0 == label) {
                Some(c) => c.1.push((*np as f64, med)),
                None => curves.push((label.clone(), vec![(*np as f64, med)])),
            }
        }
    }
    println!("wrote {}", csv_path.display());
    if b.particles.len() > 1 && !curves.is_empty() {
        let floor_line: Vec<(f64, f64)> = b
            .particles
            .iter()
            .map(|&p| (p as f64, median(&mut fl.clone())))
            .collect();
        let mut lines: Vec<(&str, &[(f64, f64)])> = curves.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
        lines.push(("noise floor", &floor_line));
        let path = b.out_dir.join(format!("gmm_particles_dx{}_dy{}.png", b.dx, b.dy));
        line_plot(
            &path,
            "SMC methods: median sliced Wasserstein vs particles",
            "particles",
            "median SW",
            &lines,
            true,
            true,
        )
        .map_err(CliError::user)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `scoregen bench impute-gauss`.
#[derive(Args, Debug)]
pub struct BenchImputeGaussArgs {
    /// Observed values y of the first coordinate.
    #[arg(long, value_delimiter = ',', default_value = "-2,-1,0.5,2")]
    y: Vec<f64>,
    /// Particle counts of the convergence table.
    #[arg(long, value_delimiter = ',', default_value = "100,400,1600,6400")]
    particles: Vec<usize>,
    /// Independent runs per setting (error bars from their spread).
    #[arg(long, default_value_t = 12)]
    runs: u64,
    /// Reverse steps.
    #[arg(long, default_value_t = 500)]
    steps: usize,
}

/// `scoregen bench impute-gauss`: (Y, X) ~ N(0, [[1, 1.5], [1.5, 5]]), observe Y = y,
/// impute X (exact: N(1.5 y, 2.75)).
pub fn bench_impute_gauss(b: BenchImputeGaussArgs) -> CliResult<()> {
    if b.runs < 2 || b.particles.contains(&0) || b.steps == 0 {
        return Err(CliError::user("need --runs >= 2, positive particles and steps"));
    }
    crate::limits::count(
        "--runs",
        usize::try_from(b.runs).unwrap_or(usize::MAX),
        2,
        crate::limits::MAX_ROUNDS,
    )?;
    crate::limits::count("--steps", b.steps, 1, crate::limits::MAX_STEPS)?;
    let np = b.particles.iter().copied().max().unwrap_or(1);
    crate::limits::check_memory(&crate::limits::rows(
        scoregen::budget::Estimate::new(),
        "--particles",
        np,
        2,
        16,
    ))?;
    let law = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Full(vec![1.0, 1.5, 1.5, 5.0]))?;
    let score = MixtureScore::new(Arc::new(law), default_process(5.5f64.sqrt() * 3.0));
    let stats = |v: &[f64]| -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt(),
        )
    };
    let run = |method: &Method, y: f64, np: usize, seed: u64| -> CliResult<(f64, f64)> {
        let obs = Observation {
            op: Operator::Mask {
                dim: 2,
                observed: vec![0],
            },
            y: vec![y],
            sigma_y: 0.0,
        };
        let opts = PosteriorOptions {
            n: np,
            particles: np,
            steps: b.steps,
            seed,
            ..Default::default()
        };
        let rep = sample_posterior(&score, &obs, method, &opts, &mut |_, _| {})?;
        let x: Vec<f64> = rep.samples.chunks(2).map(|r| r[1]).collect();
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        Ok((m, x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)))
    };
    println!(
        "bench impute-gauss: (Y, X) ~ N(0, [[1, 1.5], [1.5, 5]]), observe Y = y exactly, impute X ~ N(1.5 y, 2.75); {} steps, {} runs each (± = standard error over runs)",
        b.steps, b.runs
    );
    println!(
        "{:<12} {:>6} {:>9} {:>18} {:>18}",
        "method", "y", "particles", "mean (exact)", "variance (2.75)"
    );
    let np_main = *b.particles.iter().max().unwrap_or(&1600).min(&1600);
    for &y in &b.y {
        for name in ["replacement", "smc-impute", "mcgdiff", "tds"] {
            let m: Method = name.parse()?;
            let np = if m.is_smc() { np_main } else { 2000 };
            let r: Vec<(f64, f64)> = (0..b.runs).map(|s| run(&m, y, np, s)).collect::<CliResult<_>>()?;
            let (mm, ms) = stats(&r.iter().map(|a| a.0).collect::<Vec<_>>());
            let (vm, vs) = stats(&r.iter().map(|a| a.1).collect::<Vec<_>>());
            println!(
                "{:<12} {:>6} {:>9} {:>9.3} ±{:.3} ({:>5.2}) {:>9.3} ±{:.3}",
                name,
                y,
                np,
                mm,
                ms,
                1.5 * y,
                vm,
                vs
            );
        }
    }
    println!();
    println!("root-mean-square error of the posterior mean of X at y = 0.5, over runs:");
    print!("{:<12}", "particles");
    for np in &b.particles {
        print!(" {np:>9}");
    }
    println!();
    for name in ["smc-impute", "mcgdiff", "tds"] {
        let m: Method = name.parse()?;
        print!("{name:<12}");
        for &np in &b.particles {
            let r: Vec<(f64, f64)> = (0..b.runs)
                .map(|s| run(&m, 0.5, np, 100 + s))
                .collect::<CliResult<_>>()?;
            let rmse = (r.iter().map(|a| (a.0 - 0.75).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
            print!(" {rmse:>9.4}");
        }
        println!();
    }
    print!("{:<12}", "iid 1/sqrtN");
    for np in &b.particles {
        print!(" {:>9.4}", (2.75 / *np as f64).sqrt());
    }
    println!();
    Ok(())
}

/// `scoregen bench digits`.
#[derive(Args, Debug)]
pub struct BenchDigitsArgs {
    /// A trained image model (e.g. `scoregen train --data builtin:digits --model unet`).
    #[arg(long)]
    model: PathBuf,
    /// Test digits (rows of the figures).
    #[arg(long, default_value_t = 4)]
    examples: usize,
    /// Particles of the SMC methods.
    #[arg(long, default_value_t = 16)]
    particles: usize,
    /// Reverse steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Methods, comma separated (masks also run replacement and smc-impute).
    #[arg(long, default_value = "mcgdiff,tds,dps,pigdm,ddrm")]
    methods: String,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for digits_inpaint.png, digits_outpaint.png and digits_superres.png.
    #[arg(long, default_value = "out")]
    out_dir: PathBuf,
}

/// `scoregen bench digits`: inpainting (a 4x4 hole), outpainting (right half) and 2x
/// super-resolution of real digits with a trained image prior; one PNG grid per task, rows
/// = digits, columns = truth, observation, then one posterior sample per method.
pub fn bench_digits(b: BenchDigitsArgs, quiet: bool) -> CliResult<()> {
    use scoregen::data::builtin;
    use scoregen::score::Score;
    let (score, meta) = scoregen::nn::load_model_on(&b.model, &crate::device::get())?;
    let (h, w) = meta
        .arch
        .image_shape()
        .ok_or_else(|| CliError::user("bench digits needs an image model (train --model unet)"))?;
    let d = h * w;
    if b.examples == 0 || b.particles == 0 || b.steps == 0 {
        return Err(CliError::user("--examples, --particles and --steps must be positive"));
    }
    crate::limits::count("--steps", b.steps, 1, crate::limits::MAX_STEPS)?;
    crate::limits::check_memory(&crate::limits::rows(
        scoregen::budget::Estimate::new(),
        "--particles",
        b.particles,
        d,
        16,
    ))?;
    std::fs::create_dir_all(&b.out_dir).map_err(|e| CliError::user(format!("{}: {e}", b.out_dir.display())))?;
    let ds = builtin::load("digits", None, 0)?;
    let all: Vec<f64> =
        ds.x.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(scoregen::Error::from)?;
    let n_all = all.len() / d;
    // Spread the examples over the set (the last rows first: least likely seen early).
    let idx: Vec<usize> = (0..b.examples).map(|i| n_all - 1 - i * 97 % n_all).collect();
    let tasks: Vec<(&str, Operator, f64)> = vec![
        ("inpaint", Operator::inpaint_box(h, w, h / 4, w / 4, h / 2, w / 2)?, 0.0),
        ("outpaint", Operator::outpaint_half(h, w, "left")?, 0.0),
        ("superres", Operator::avg_pool(h, w, 2)?, 0.02),
    ];
    let norm = &meta.normalisation;
    for (task, op, sigma_y) in tasks {
        let mut names: Vec<String> = Vec::new();
        if matches!(op, Operator::Mask { .. }) {
            names.extend(["replacement".to_string(), "smc-impute".to_string()]);
        }
        names.extend(b.methods.split(',').map(|s| s.trim().to_string()));
        let methods: Vec<Method> = names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?;
        let cols = 2 + methods.len();
        let mut grid = Vec::with_capacity(b.examples * cols * d);
        let f = op.svd()?;
        for (e, &i) in idx.iter().enumerate() {
            let truth = &all[i * d..(i + 1) * d];
            let y = op.apply_rows(truth);
            // The observation as an image: observed pixels (0 elsewhere), or the
            // pseudo-inverse V S^{-1} U^T y.
            let shown: Vec<f64> = match &op {
                Operator::Mask { observed, .. } => {
                    let mut im = vec![0.0; d];
                    for (j, &p) in observed.iter().enumerate() {
                        im[p] = y[j];
                    }
                    im
                }
                _ => {
                    let c: Vec<f64> = f.ut(&y).iter().zip(&f.s).map(|(a, s)| a / s).collect();
                    let mut im = vec![0.0; d];
                    f.add_v_rows(&mut im, &c);
                    im
                }
            };
            grid.extend_from_slice(truth);
            grid.extend_from_slice(&shown);
            let obs = Observation {
                op: op.clone(),
                y,
                sigma_y,
            }
            .normalised(&norm.mean, &norm.std)?;
            for m in &methods {
                let opts = PosteriorOptions {
                    n: 1,
                    particles: b.particles,
                    steps: b.steps,
                    seed: b.seed + e as u64,
                    ..Default::default()
                };
                let t0 = Instant::now();
                let rep = sample_posterior(&score, &obs, m, &opts, &mut |_, _| {})?;
                let z = tensor(rep.samples, score.dim())?;
                let x: Vec<f64> = norm
                    .denormalise(&z)?
                    .to_dtype(candle_core::DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1())
                    .map_err(scoregen::Error::from)?;
                let mse = x.iter().zip(truth).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / d as f64;
                if !quiet {
                    eprintln!(
                        "{task} digit {e}: {:<12} rmse {:.3} (pixels in [0, 1]) {:.1}s",
                        m.name(),
                        mse.sqrt(),
                        t0.elapsed().as_secs_f64()
                    );
                }
                grid.extend(x);
            }
        }
        let path = b.out_dir.join(format!("digits_{task}.png"));
        let title = format!("{task}: truth | observation | {}", names.join(" | "));
        crate::plot::image_grid(&path, &grid, h, w, cols, &title).map_err(CliError::user)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
