//! `scoregen bench gmm`: the Gaussian-mixture posterior benchmark of Cardoso et al. 2024
//! (MCGdiff) and Janati et al. 2024 (DCPS) ([`scoregen::benchmarks::gmm`]): a table of
//! sliced Wasserstein and weight errors with bootstrap intervals, paired comparisons of the
//! settings, CSVs and figures. The statistics are computed by the library; this module
//! parses the options, keeps the CSV up to date after each problem, and prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use scoregen::benchmarks::gmm::{
    gmm_methods, pairs_csv, published, resume_records, run_gmm_bench, summary_csv, GmmBench, GmmBenchOptions, GmmPair,
    GmmRecord, GmmSummary, StatsOptions,
};

use crate::limits;
use crate::plot::{line_plot, pair_plot, Series};
use crate::{CliError, CliResult};

/// `scoregen bench gmm`.
#[derive(Args, Debug)]
pub struct BenchGmmArgs {
    /// Dimension of x.
    #[arg(long, default_value_t = 10)]
    pub dx: usize,
    /// Dimension of y.
    #[arg(long, default_value_t = 1)]
    pub dy: usize,
    /// Number of random problems (problems 0 .. N-1).
    #[arg(long, default_value_t = 100)]
    pub problems: usize,
    /// Run only problem I (< --problems), exactly as in a full run (same seed, same
    /// streams); its CSV is gmm_dxD_dyK_problemI.csv.
    #[arg(long, value_name = "I")]
    pub only_problem: Option<usize>,
    /// Keep the problems already complete in the CSV of the out dir (same seed, dx, dy, n,
    /// steps) and run only the others.
    #[arg(long)]
    pub resume: bool,
    /// Problems run at once (each problem's numbers do not depend on it; with more than
    /// one the seconds include the competition for the cores).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Methods, comma separated, or "all" (the methods that take any operator).
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// DCPS: number of blocks L for the `dcps` / `dcps50` rows (default: the method's, 4).
    /// Their rows are then named `dcps`; give the run its own --out-dir.
    #[arg(long, value_name = "L")]
    pub dcps_blocks: Option<usize>,
    /// Particles per SMC run; a comma-separated list gives the convergence curve.
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    pub particles: Vec<usize>,
    /// Reverse steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Samples per method and problem (and exact samples for the reference).
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed of the problems.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples of the intervals (percentile bootstrap over problems, seed 0).
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Directory for gmm_dxD_dyK.csv (per problem), gmm_dxD_dyK_summary.csv,
    /// gmm_dxD_dyK_pairs.csv and the figures.
    #[arg(long, default_value = "out")]
    pub out_dir: PathBuf,
}

fn write(path: &Path, text: &str) -> CliResult<()> {
    Ok(scoregen::io::write_atomic(path, |w| Ok(w.write_all(text.as_bytes())?))?)
}

/// `scoregen bench gmm`.
pub fn run(b: BenchGmmArgs, quiet: bool) -> CliResult<()> {
    let mut opts = GmmBenchOptions {
        dx: b.dx,
        dy: b.dy,
        problems: b.problems,
        only_problem: b.only_problem,
        skip: BTreeSet::new(),
        jobs: b.jobs,
        methods: Vec::new(),
        particles: b.particles.clone(),
        steps: b.steps,
        n: b.n,
        seed: b.seed,
    };
    opts.validate()?;
    if b.only_problem.is_some() && b.resume {
        return Err(CliError::user("--only-problem and --resume do not go together"));
    }
    limits::count("--problems", b.problems, 1, 100_000)?;
    limits::count("--resamples", b.resamples, 1, 1_000_000)?;
    limits::count("--jobs", b.jobs, 1, 64)?;
    let np = b.particles.iter().copied().max().unwrap_or(1).max(b.n);
    limits::count("--steps", b.steps, 1, limits::MAX_STEPS)?;
    let e = limits::rows(scoregen::budget::Estimate::new(), "--particles", np * b.jobs, b.dx, 16);
    limits::check_memory(&e.add(
        "--dx",
        format!("--dx {} x --dy {} operator and SVD (x 4 buffers of f64)", b.dx, b.dy),
        b.dx as f64 * (b.dx + b.dy) as f64 * 4.0,
        8.0,
    ))?;
    opts.methods = gmm_methods(&b.methods)?;
    if let Some(blocks) = b.dcps_blocks {
        for m in &mut opts.methods {
            if let scoregen::inverse::Method::Dcps(dc) = m {
                dc.blocks = blocks;
                dc.validate()?;
            }
        }
    }
    if !b.out_dir.is_dir() {
        std::fs::create_dir_all(&b.out_dir).map_err(|e| CliError::user(format!("{}: {e}", b.out_dir.display())))?;
    }
    let stem = match b.only_problem {
        Some(i) => format!("gmm_dx{}_dy{}_problem{i}", b.dx, b.dy),
        None => format!("gmm_dx{}_dy{}", b.dx, b.dy),
    };
    let csv_path = b.out_dir.join(format!("{stem}.csv"));
    let mut done: Vec<GmmRecord> = Vec::new();
    if b.resume && csv_path.exists() {
        let text =
            std::fs::read_to_string(&csv_path).map_err(|e| CliError::user(format!("{}: {e}", csv_path.display())))?;
        done = resume_records(&text, &opts).map_err(|e| CliError::user(format!("{}: {e}", csv_path.display())))?;
        opts.skip = done.iter().map(|r| r.problem).collect();
        if !quiet {
            eprintln!(
                "resuming {}: {} problems done, {} to run",
                csv_path.display(),
                opts.skip.len(),
                opts.indices().len()
            );
        }
    }
    // The CSV is rewritten (atomically) after each problem: a run that stops keeps the
    // problems it finished, and --resume continues from them.
    let mut kept = GmmBench {
        records: done.clone(),
        figure: Vec::new(),
    };
    write(&csv_path, &kept.csv(&opts))?;
    let mut bench = run_gmm_bench(
        &opts,
        &mut |r| {
            if !quiet {
                eprintln!(
                    "problem {}: {:<8} N={:<6} SW {:.3} (floor {:.3}) dw {:.3} {:.2}s{}",
                    r.problem,
                    r.method,
                    r.particles,
                    r.sw,
                    r.floor,
                    r.weight_error,
                    r.seconds,
                    match r.ess {
                        Some((ess, resamplings)) => format!(" ESS/N min {ess:.3} resamplings {resamplings:.1}"),
                        None => String::new(),
                    }
                );
            }
        },
        &mut |recs| {
            kept.records.extend_from_slice(recs);
            scoregen::io::write_atomic(&csv_path, |w| Ok(w.write_all(kept.csv(&opts).as_bytes())?))
        },
    )?;
    let mut records = done;
    records.append(&mut bench.records);
    bench.records = records;
    if !bench.figure.is_empty() {
        let series: Vec<Series> = bench
            .figure
            .iter()
            .map(|(label, data)| Series { label, data, d: 2 })
            .collect();
        pair_plot(
            &b.out_dir.join(format!("gmm_dx{}_dy{}.png", b.dx, b.dy)),
            &series,
            &format!(
                "posterior samples, problem 0 (dx={}, dy={}): v1 projection vs x_1",
                b.dx, b.dy
            ),
            2,
        )
        .map_err(CliError::user)?;
    }
    let so = StatsOptions {
        resamples: b.resamples,
        ..Default::default()
    };
    let summary = bench.summary(&so);
    let pairs = bench.pairs(&so);
    let summary_path = b.out_dir.join(format!("{stem}_summary.csv"));
    let pairs_path = b.out_dir.join(format!("{stem}_pairs.csv"));
    write(&summary_path, &summary_csv(&summary))?;
    write(&pairs_path, &pairs_csv(&pairs))?;
    let problems: BTreeSet<usize> = bench.records.iter().map(|r| r.problem).collect();
    println!(
        "bench gmm: dx = {}, dy = {}, {} problem{}{}, {} samples, {} steps, seed {}, {} threads, {} job{}",
        b.dx,
        b.dy,
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        match b.only_problem {
            Some(i) => format!(" (problem {i} only)"),
            None => String::new(),
        },
        b.n,
        b.steps,
        b.seed,
        rayon::current_num_threads(),
        b.jobs,
        if b.jobs == 1 { "" } else { "s" }
    );
    print_tables(&summary, &pairs, b.dx, so.resamples);
    println!(
        "wrote {}, {}, {}",
        csv_path.display(),
        summary_path.display(),
        pairs_path.display()
    );
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for s in summary.iter().filter(|s| s.smc) {
        let point = (s.particles as f64, s.sw_median.value);
        match curves.iter_mut().find(|c| c.0 == s.method) {
            Some(c) => c.1.push(point),
            None => curves.push((s.method.clone(), vec![point])),
        }
    }
    if b.particles.len() > 1 && !curves.is_empty() {
        let (floor_median, _) = bench.floor_median_mean();
        let floor_line: Vec<(f64, f64)> = b.particles.iter().map(|&p| (p as f64, floor_median)).collect();
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

/// `value [lo, hi]` with three decimals.
fn iv(i: &scoregen::benchmarks::stats::Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi)
}

/// The ranked table (by median SW), the matrix of paired win shares, and each setting
/// against the next in the ranking.
fn print_tables(summary: &[GmmSummary], pairs: &[GmmPair], dx: usize, resamples: usize) {
    let mut ranked: Vec<&GmmSummary> = summary.iter().collect();
    ranked.sort_by(|a, b| a.sw_median.value.total_cmp(&b.sw_median.value));
    println!("95% intervals: percentile bootstrap over problems ({resamples} resamples); exact = noise floor, prior = samples of the prior ignoring y");
    println!(
        "{:>2} {:<18} {:>24} {:>24} {:>24} {:>9} {:>16}",
        "#", "setting", "SW median [95% CI]", "SW mean [95% CI]", "dw mean [95% CI]", "s/problem", "paper (med/mean)"
    );
    for (k, s) in ranked.iter().enumerate() {
        println!(
            "{:>2} {:<18} {:>24} {:>24} {:>24} {:>9.2} {:>16}",
            k + 1,
            s.label(),
            iv(&s.sw_median),
            iv(&s.sw_mean),
            iv(&s.weight_error_mean),
            s.seconds_mean,
            published(&s.method, dx)
        );
    }
    let find = |a: &str, b: &str| pairs.iter().find(|p| p.a == a && p.b == b);
    println!(
        "paired: % of problems where the row's SW < the column's (ties half); * = 95% Wilson interval excludes 50%"
    );
    print!("{:>2} {:<18}", "", "");
    for k in 0..ranked.len() {
        print!(" {:>5}", k + 1);
    }
    println!();
    for (i, a) in ranked.iter().enumerate() {
        print!("{:>2} {:<18}", i + 1, a.label());
        for b in &ranked {
            match find(&a.label(), &b.label()) {
                Some(p) => {
                    let sig = if p.share.lo > 0.5 || p.share.hi < 0.5 { "*" } else { " " };
                    print!(" {:>4.0}{sig}", 100.0 * p.share.value);
                }
                None => print!(" {:>5}", "-"),
            }
        }
        println!();
    }
    println!("each setting against the next in the ranking (share of problems with a smaller SW; medians of the per-problem SW ratio and difference):");
    for w in ranked.windows(2) {
        if let Some(p) = find(&w[0].label(), &w[1].label()) {
            println!(
                "  {} vs {}: {}/{} = {}; ratio {}; difference {}",
                p.a,
                p.b,
                p.wins,
                p.problems,
                iv(&p.share),
                iv(&p.ratio_median),
                iv(&p.diff_median)
            );
        }
    }
}
