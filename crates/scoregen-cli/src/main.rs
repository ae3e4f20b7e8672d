//! `scoregen`: the command-line interface of the scoregen library.
//!
//! A thin layer: argument parsing, progress bars, files and plots. Every number comes from
//! the library. Errors print one line on stderr; bad input exits with code 2, other
//! failures with 1, and no output file is left behind.

mod cmd;
mod device;
mod limits;
mod output;
mod plot;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{bench, demo, ebm, eval, exact, impute, likelihood, plot as plot_cmd, posterior, sample, train};

/// Score-based generative models and posterior sampling with them.
#[derive(Parser, Debug)]
#[command(name = "scoregen", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes (`global = true`: accepted before or after the
/// command's name).
#[derive(clap::Args, Debug)]
struct GlobalArgs {
    /// No progress bars or informational output on stderr.
    #[arg(long, global = true)]
    quiet: bool,
    /// Refuse runs whose estimated memory exceeds this (e.g. 2G, 512M) [default: the
    /// memory the machine has available].
    #[arg(long, global = true, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Where networks train and run: cpu, cuda or cuda:N (a build with `--features cuda`)
    /// [default: cpu]. Used by train, sample, posterior, impute, demo and bench; samplers
    /// and SMC keep their particles on the host.
    #[arg(long, global = true, value_name = "DEVICE")]
    device: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a score network by denoising score matching (checkpoints, --resume).
    Train(train::TrainArgs),
    /// Sample a trained model or the prior of a problem file with a reverse-time sampler.
    Sample(sample::SampleArgs),
    /// Draw exact samples from a Gaussian or Gaussian-mixture prior of a problem file.
    Exact(exact::ExactArgs),
    /// log p(x) of each row of a file under a model or a problem's prior (probability-flow ODE).
    Likelihood(likelihood::LikelihoodArgs),
    /// Sample the posterior of a problem file (y = A x + sigma_y z) by any method.
    Posterior(posterior::PosteriorArgs),
    /// Compare samples with a reference: sliced Wasserstein, energy distance, MMD, moments.
    Eval(eval::EvalArgs),
    /// Scatter / pair plot of samples (and a reference) with marginal histograms.
    Plot(plot_cmd::PlotArgs),
    /// Sample a built-in 2-D mixture with every sampler, print metrics, write figures.
    Demo(demo::DemoArgs),
    /// Benchmarks that print numbers (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Impute the missing cells of a CSV table (numbers and labels) by posterior sampling.
    Impute(impute::ImputeArgs),
    /// Energy-based models: an RBM by CD-k, or an energy network by CD / score matching + Langevin.
    Ebm(ebm::EbmArgs),
}

/// A CLI error: a one-line message and whether it is the user's input (exit 2).
#[derive(Debug)]
pub struct CliError {
    msg: String,
    user: bool,
}

impl CliError {
    /// An error caused by the user's input (exit code 2).
    pub fn user(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            user: true,
        }
    }
}

impl From<scoregen::Error> for CliError {
    fn from(e: scoregen::Error) -> Self {
        CliError {
            user: e.is_user_error(),
            msg: e.to_string(),
        }
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;

/// `s` cut to at most `max` characters (on a character boundary), with `...` where cut, so
/// that an error quoting a huge cell stays one readable line.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Keeps freed memory in glibc's heap (`M_TOP_PAD` of 256 MiB) instead of returning it to
/// the kernel after each large free: the networks' per-op buffers (an im2col matrix of a
/// U-Net layer at batch 512 is tens of MB) were otherwise mapped, zeroed by the kernel and
/// unmapped on every call. Measured on the digits U-Net at batch 512 on 2 cores: 1,340 to
/// 2,690 network evaluations/s, system time per call down from half the run to 7%
/// (BENCHMARKS.md). Other platforms and allocators are left as they are.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
        }
        const M_TOP_PAD: std::os::raw::c_int = -2;
        // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it is called
        // before any other thread exists.
        unsafe {
            mallopt(M_TOP_PAD, 256 << 20);
        }
    }
}

/// candle's CPU element-wise ops (tensors of 64k entries or more, e.g. U-Net activations)
/// run on its own thread pool, whose idle workers spin for 25,000 rounds before sleeping;
/// next to rayon's workers (the convolutions, GroupNorm, the fused engine) they took the
/// cores from the threads with work: digits U-Net training on 2 busy cores went from 3.8 to
/// 12.3 steps/s with `CANDLE_BARRIER_POOL_SPIN_LIMIT=0` (BENCHMARKS.md). Workers now sleep
/// at once unless the variable is set.
fn tune_thread_pools() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        // Called first thing in `main`, before any other thread exists.
        std::env::set_var(VAR, "0");
    }
}

fn main() -> ExitCode {
    tune_allocator();
    tune_thread_pools();
    // Negative numbers are values, so that `--n -1` is refused by the option's own
    // validation ("invalid value '-1' for '--n'") rather than read as a stray flag.
    fn negatives(c: clap::Command) -> clap::Command {
        c.allow_negative_numbers(true).mut_subcommands(negatives)
    }
    let parsed = negatives(<Cli as clap::CommandFactory>::command())
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, as for every other bad input.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let joined = para.join(" ");
            eprintln!("error: {} (see --help)", joined.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let quiet = cli.global.quiet;
    if let Err(e) = limits::set_budget(cli.global.max_memory.as_deref()) {
        eprintln!("error: {}", e.msg);
        return ExitCode::from(2);
    }
    if let Err(e) = device::set(cli.global.device.as_deref()) {
        eprintln!("error: {}", e.msg);
        return ExitCode::from(2);
    }
    let r = match cli.command {
        Command::Train(a) => train::run(a, quiet),
        Command::Sample(a) => sample::run(a, quiet),
        Command::Exact(a) => exact::run(a, quiet),
        Command::Likelihood(a) => likelihood::run(a, quiet),
        Command::Posterior(a) => posterior::run(a, quiet),
        Command::Eval(a) => eval::run(a),
        Command::Plot(a) => plot_cmd::run(a),
        Command::Demo(a) => demo::run(a, quiet),
        Command::Bench(a) => bench::run(a, quiet),
        Command::Ebm(a) => ebm::run(a, quiet),
        Command::Impute(a) => impute::run(a, quiet),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the message's first line (a backend error may append a backtrace).
            let first = e
                .msg
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown error");
            eprintln!("error: {}", shorten(first, 500));
            ExitCode::from(if e.user { 2 } else { 1 })
        }
    }
}
