//! Resource budgets: sizes from a user are checked before anything is allocated.
//!
//! A run's memory is estimated from its sizes as a sum of named terms (particles x
//! dimension x buffers, a covariance, a network's parameters, ...) and compared with a
//! [`MemoryBudget`], by default the memory this machine has available. A term is given with
//! the option that sets it, so the error names what to lower:
//!
//! ```text
//! this run needs about 74.5 GiB (--n 1000000000 x dimension 10 x 8 buffers of f64), more than
//! the 21.9 GiB of memory available; lower --n or raise --max-memory
//! ```
//!
//! Iteration counts get a fixed upper bound each ([`check_count`]), so that no typo of
//! `10^12` rounds can make a command run for ever.

use crate::{Error, Result};

/// One term of a memory estimate: `bytes`, set mostly by `option`, explained by `detail`.
#[derive(Clone, Debug)]
pub struct Term {
    /// The option (or input) that sets this term, e.g. `--particles`.
    pub option: String,
    /// What the term is, e.g. `--particles 4096 x dimension 100 x 6 buffers of f64`.
    pub detail: String,
    /// The bytes it needs (`f64` so that products of huge user numbers cannot overflow).
    pub bytes: f64,
}

/// A memory estimate: a sum of [`Term`]s.
#[derive(Clone, Debug, Default)]
pub struct Estimate {
    terms: Vec<Term>,
}

impl Estimate {
    /// An empty estimate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a term of `count` elements of `elem_bytes` bytes each.
    pub fn add(mut self, option: &str, detail: impl Into<String>, count: f64, elem_bytes: f64) -> Self {
        self.terms.push(Term {
            option: option.to_string(),
            detail: detail.into(),
            bytes: count * elem_bytes,
        });
        self
    }

    /// The total in bytes.
    pub fn total(&self) -> f64 {
        self.terms.iter().map(|t| t.bytes).sum()
    }

    /// The largest term.
    pub fn largest(&self) -> Option<&Term> {
        self.terms.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes))
    }
}

/// A human-readable size: `1.5 GiB`, `320.0 MiB`, `12 B`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if !b.is_finite() {
        return "an unbounded amount".into();
    }
    let mut v = b.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else if v >= 10_000.0 {
        format!("{v:.3e} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a size such as `512M`, `2G`, `1.5GiB`, `4096` (bytes); units are powers of 1024.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "memory size '{s}': expected a number with an optional unit K, M, G or T"
        ))
    })?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        other => {
            return Err(Error::invalid(format!(
                "memory size '{s}': unknown unit '{other}' (use K, M, G or T)"
            )))
        }
    };
    let bytes = v * scale;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(Error::invalid(format!("memory size '{s}' must be at least one byte")));
    }
    Ok(bytes as u64)
}

/// The memory a run may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryBudget {
    /// Bytes available to the run.
    pub bytes: u64,
    /// Whether the user set it (`--max-memory`) rather than the machine.
    pub explicit: bool,
}

impl MemoryBudget {
    /// A budget of `bytes`, set by the user.
    pub fn explicit(bytes: u64) -> Self {
        MemoryBudget { bytes, explicit: true }
    }

    /// The memory this machine has available now: `MemAvailable` of `/proc/meminfo`,
    /// capped by a cgroup limit (`memory.max`, v2) and by four fifths of the process's
    /// address-space limit (`ulimit -v`) where there are such limits; 8 GiB where none of
    /// these can be read.
    pub fn from_system() -> Self {
        let mut bytes: Option<u64> = None;
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            bytes = text
                .lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024);
        }
        if let Ok(text) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
            if let Ok(limit) = text.trim().parse::<u64>() {
                bytes = Some(bytes.map_or(limit, |b| b.min(limit)));
            }
        }
        // An address-space limit (`ulimit -v`) caps what can be allocated too; leave a fifth
        // of it for the program itself, its libraries and thread stacks.
        if let Ok(text) = std::fs::read_to_string("/proc/self/limits") {
            let soft = text
                .lines()
                .find(|l| l.starts_with("Max address space"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(limit) = soft {
                let usable = limit / 5 * 4;
                bytes = Some(bytes.map_or(usable, |b| b.min(usable)));
            }
        }
        MemoryBudget {
            bytes: bytes.unwrap_or(8 << 30),
            explicit: false,
        }
    }

    /// `Ok` if `estimate` fits, else an [`Error::InvalidInput`] naming the total, the
    /// largest term and its option.
    pub fn check(&self, estimate: &Estimate) -> Result<()> {
        let total = estimate.total();
        if total.is_finite() && total <= self.bytes as f64 {
            return Ok(());
        }
        let (detail, option) = match estimate.largest() {
            Some(t) => (format!(" ({})", t.detail), t.option.as_str()),
            None => (String::new(), "the sizes"),
        };
        let whose = if self.explicit {
            "the --max-memory limit of"
        } else {
            "the memory available,"
        };
        Err(Error::invalid(format!(
            "this run needs about {}{detail}, more than {whose} {}; lower {option}{}",
            human_bytes(total),
            human_bytes(self.bytes as f64),
            if self.explicit {
                " or raise --max-memory"
            } else {
                " (or set --max-memory if you know better)"
            }
        )))
    }
}

/// Checks an iteration count given by `option`: `min <= value <= max`.
pub fn check_count(option: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min {
        return Err(Error::invalid(format!("{option} must be at least {min}, got {value}")));
    }
    if value > max {
        return Err(Error::invalid(format!(
            "{option} {value} is more than the largest allowed, {max}"
        )));
    }
    Ok(())
}

/// Rough sizes of a score network, for memory estimates: `(parameters, f32 activations per
/// row of a batch kept for the backward pass)`.
pub fn network_sizes(arch: &crate::nn::Arch) -> (f64, f64) {
    use crate::nn::Arch;
    match arch {
        Arch::Mlp(c) => {
            let (d, h, f) = (c.dim as f64, c.hidden as f64, c.fourier as f64);
            let depth = c.depth as f64;
            let params = (d + f) * h + h + (depth - 1.0) * (h * h + h) + h * d + d + (c.n_classes as f64 + 1.0) * h;
            let acts = d + f + 3.0 * h * depth + 2.0 * d;
            (params, acts)
        }
        Arch::Unet(c) => {
            let (mut params, mut acts) = (0.0, 0.0);
            let mut pixels = (c.height * c.width) as f64;
            let blocks = c.blocks as f64;
            let e = c.time_dim as f64;
            for &ch in &c.channels {
                let ch = ch as f64;
                // Down and up residual blocks (two 3x3 convolutions each, the up side on a
                // concatenation with the skip), their embedding projections and norms.
                params += blocks * (2.0 * 9.0 * ch * ch + 3.0 * 9.0 * ch * ch + 2.0 * e * ch + 8.0 * ch);
                acts += pixels * ch * blocks * 16.0;
                pixels /= 4.0;
            }
            params += (c.fourier as f64) * e + 2.0 * e * e + (c.n_classes as f64 + 1.0) * e;
            (params, acts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        for bad in ["", "G", "-1G", "1X", "nan", "1e300T"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(human_bytes(12.0), "12 B");
        assert_eq!(human_bytes(1536.0 * 1024.0 * 1024.0), "1.5 GiB");
    }

    #[test]
    fn the_largest_term_is_named() {
        let b = MemoryBudget::explicit(1 << 30);
        let e = Estimate::new().add("--n", "--n 1000 x 2", 2000.0, 8.0).add(
            "--particles",
            "--particles 1e9 x dimension 100",
            1e11,
            8.0,
        );
        let msg = b.check(&e).unwrap_err().to_string();
        assert!(
            msg.contains("lower --particles") && msg.contains("--max-memory"),
            "{msg}"
        );
        assert!(b.check(&Estimate::new().add("--n", "", 10.0, 8.0)).is_ok());
        // Overflowing products are refused, not wrapped.
        let huge = Estimate::new().add("--n", "", f64::MAX, 8.0);
        assert!(b.check(&huge).is_err());
    }

    #[test]
    fn counts_have_bounds() {
        assert!(check_count("--runs", 0, 1, 10).is_err());
        assert!(check_count("--runs", 11, 1, 10)
            .unwrap_err()
            .to_string()
            .contains("--runs 11"));
        assert!(check_count("--runs", 10, 1, 10).is_ok());
    }
}
