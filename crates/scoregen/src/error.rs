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

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            message: msg.into(),
        }
    }

    /// Whether the error is the user's input (bad file, shape, value) rather than a failure
    /// of the computation. The CLI exits with code 2 for these.
    pub fn is_user_error(&self) -> bool {
        matches!(self, Error::InvalidInput(_) | Error::File { .. } | Error::Io(_))
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
