//! The library's typed error.
//!
//! Every fallible public function returns [`Result`]. Errors that come from what a user
//! gave us (a file, a shape, a number) are [`Error::InvalidInput`] or [`Error::File`];
//! the CLI maps those to exit code 2 with a one-line message.

/// Errors of the scoregen library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that violates a documented precondition (shape, NaN, non-PD covariance, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// A file that cannot be read, parsed or written.
    #[error("{path}: {message}")]
    File {
        /// The file's path as given.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Numerical trouble detected at run time (divergence, weight degeneracy, NaN).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// An error from the tensor backend.
    #[error("tensor backend: {0}")]
    Tensor(#[from] candle_core::Error),
    /// An operating-system I/O error without a more specific context.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// Shorthand for [`Error::File`]; control characters in the path (a newline in a file
    /// name) are written as escapes, so that the message stays one line.
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        let path = path.as_ref().display().to_string();
        Error::File {
            path: if path.contains(char::is_control) {
                excerpt_n(&path, usize::MAX)
            } else {
                path
            },
            message: msg.into(),
        }
    }

    /// Whether the error is the user's input (bad file, shape, value) rather than a failure
    /// of the computation. The CLI exits with code 2 for these.
    pub fn is_user_error(&self) -> bool {
        matches!(self, Error::InvalidInput(_) | Error::File { .. } | Error::Io(_))
    }
}

/// The most characters of a user's string (a cell, a name, a JSON value) that
/// [`excerpt`] keeps in a message.
pub const EXCERPT_CHARS: usize = 40;

/// The most characters of a message from a third-party parser that [`one_line`] keeps.
pub const MESSAGE_CHARS: usize = 300;

/// A user's string made safe to echo in a one-line error message: at most `max` characters
/// (cut on a character boundary, never inside a multi-byte UTF-8 sequence, then `...`),
/// with control characters (newlines, tabs, escapes) written as Rust escapes (`\n`,
/// `\u{1b}`), so that the message stays one line whatever the input holds.
pub fn excerpt_n(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    for c in chars.by_ref().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

/// [`excerpt_n`] with [`EXCERPT_CHARS`]: the form in which every cell, name or value that
/// a user gave is echoed in a message.
pub fn excerpt(s: &str) -> String {
    excerpt_n(s, EXCERPT_CHARS)
}

/// A message from another library (a JSON, CSV or `.npy` parser, which may quote the
/// input) as one line of at most [`MESSAGE_CHARS`] characters.
pub fn one_line(msg: impl std::fmt::Display) -> String {
    excerpt_n(&msg.to_string(), MESSAGE_CHARS)
}

/// A number for a message: plain (`-2`, `0.5`) when that is short, in exponent form
/// (`1e300`, `5e-324`) otherwise, so that a huge input value stays a few characters.
pub fn number(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 || (1e-4..1e15).contains(&a) || !a.is_finite() {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The error of a run that diverged: `what` names the sampler, method or quantity.
pub(crate) fn diverged(what: &str) -> Error {
    Error::Numerical(format!(
        "{what}: NaN or infinite values (the run diverged; try more steps or a smaller step size)"
    ))
}

/// Fails with [`Error::Numerical`] when a value of `x` is NaN or infinite: the one check
/// by which every sampler, corrector, Langevin chain and posterior method stops on
/// divergence (never by skipping a step). Input validation (a NaN in a user's file) is
/// [`Error::InvalidInput`] instead and checked where the input is read.
pub fn check_finite(x: &[f64], what: &str) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(diverged(what))
    }
}

/// [`check_finite`] for a tensor of any float dtype (through its largest absolute value).
pub fn check_finite_tensor(x: &candle_core::Tensor, what: &str) -> Result<()> {
    let s: f64 = x.to_dtype(candle_core::DType::F64)?.abs()?.max_all()?.to_scalar()?;
    if s.is_finite() {
        Ok(())
    } else {
        Err(diverged(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_a_char_boundary_and_stays_one_line() {
        assert_eq!(excerpt("short"), "short");
        // 39 ASCII bytes then a 3-byte character straddling byte 40: the old byte slice
        // `&s[..40]` panicked here.
        let s = format!("{}€€€", "a".repeat(39));
        assert_eq!(excerpt(&s), format!("{}€...", "a".repeat(39)));
        assert_eq!(excerpt_n("ééé", 2), "éé...");
        assert_eq!(excerpt("a\nb\r\u{1b}"), "a\\nb\\r\\u{1b}");
        assert_eq!(excerpt(&"x".repeat(40)), "x".repeat(40));
        assert!(one_line("line one\nline two").lines().count() == 1);
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1e300), "1e300");
        assert_eq!(number(5e-324), "5e-324");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
