//! The CLI's resource limits, checked before any large allocation: the memory budget
//! (`--max-memory`, else the memory the machine has available; see
//! [`scoregen::budget`]) and fixed upper bounds on iteration counts.

use std::sync::OnceLock;

use scoregen::budget::{check_count, Estimate, MemoryBudget};

use crate::CliResult;

static BUDGET: OnceLock<MemoryBudget> = OnceLock::new();

/// Most steps of a sampler, a posterior method or a Langevin chain.
pub const MAX_STEPS: usize = 1_000_000;
/// Most training steps (or epochs).
pub const MAX_TRAIN_STEPS: usize = 100_000_000;
/// Most EM rounds, benchmark repeats, imputations, runs, blocks and jumps.
pub const MAX_ROUNDS: usize = 10_000;

/// Sets the budget from `--max-memory` (or the machine) once, at start-up.
pub fn set_budget(max_memory: Option<&str>) -> CliResult<()> {
    let b = match max_memory {
        Some(s) => MemoryBudget::explicit(
            scoregen::budget::parse_bytes(s).map_err(|e| crate::CliError::user(format!("--max-memory: {e}")))?,
        ),
        None => MemoryBudget::from_system(),
    };
    let _ = BUDGET.set(b);
    Ok(())
}

/// Fails if `estimate` does not fit the memory budget.
pub fn check_memory(estimate: &Estimate) -> CliResult<()> {
    let b = BUDGET.get().copied().unwrap_or_else(MemoryBudget::from_system);
    Ok(b.check(estimate)?)
}

/// Fails unless `min <= value <= max` for the count given by `option`.
pub fn count(option: &str, value: usize, min: usize, max: usize) -> CliResult<()> {
    Ok(check_count(option, value, min, max)?)
}

/// The memory of `n` rows of dimension `d` held in `buffers` f64 copies (a sampler's state,
/// its noise, its score and the output), as a term named by `option`.
pub fn rows(e: Estimate, option: &str, n: usize, d: usize, buffers: usize) -> Estimate {
    e.add(
        option,
        format!("{option} {n} x dimension {d} x {buffers} buffers of f64"),
        n as f64 * d as f64 * buffers as f64,
        8.0,
    )
}

/// Adds a network's evaluation on `n` rows at once (activations, f32, twice for the
/// input-gradient paths) and its parameters with their gradients, Adam moments and EMA;
/// `sized_by` names what sets the network's size (`--hidden`, or the model file).
pub fn network(e: Estimate, option: &str, n: usize, arch: &scoregen::nn::Arch, sized_by: &str) -> Estimate {
    let (params, acts) = scoregen::budget::network_sizes(arch);
    e.add(
        option,
        format!("{option} {n} rows through a {} network", arch.kind()),
        n as f64 * acts * 2.0,
        4.0,
    )
    .add(
        sized_by,
        format!("{params:.3e} network parameters x 5 buffers"),
        params * 5.0,
        4.0,
    )
}

/// Checks `--n` points of a synthetic built-in set (dimension at most 16) before they are
/// drawn.
pub fn builtin_points(n: usize) -> CliResult<()> {
    check_memory(&rows(Estimate::new(), "--n", n, 16, 4))
}

/// Fails unless the learning rate given by `--lr` is finite and in `(0, 10]` (larger steps
/// only make a network diverge).
pub fn learning_rate(lr: f64) -> CliResult<()> {
    if lr.is_finite() && lr > 0.0 && lr <= 10.0 {
        Ok(())
    } else {
        Err(crate::CliError::user(format!(
            "--lr must be a number in (0, 10], got {lr}"
        )))
    }
}
