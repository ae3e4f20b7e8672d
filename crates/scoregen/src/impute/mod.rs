//! Imputation of tables with missing values (MissDiff, Ouyang et al. 2023; DiffPuter, Zhang
//! et al. 2025; SMCDiff's particle filter, Trippe et al. 2023): the missing cells of each row are
//! drawn from the posterior of an unconditional score model given the row's observed cells.
//!
//! * [`mechanism`]: missingness mechanisms (MCAR, and DiffPuter's logistic MAR / MNAR) to
//!   mask a complete table for benchmarks;
//! * [`table`]: CSV tables with numeric and categorical columns, and their one-hot,
//!   standardised encoding;
//! * [`datasets`]: the built-in real tables (breast cancer, wine, iris, digits, penguins);
//! * [`fit`](mod@fit): training on the incomplete table (masked DSM, then EM rounds);
//! * [`sampler`]: row-by-row posterior imputation, multiple imputations, uncertainty;
//! * [`baseline`]: mean and k-nearest-neighbour imputation, the classical reference points.

pub mod baseline;
pub mod datasets;
pub mod evaluate;
pub mod fit;
pub mod mechanism;
pub mod sampler;
pub mod table;

pub use fit::{default_hidden, fit, FitOptions, FitProgress, StoredEncoding};
pub use sampler::{impute_table, row_posterior, Imputation, ImputeOptions};
pub use table::{ColumnKind, Encoding, MixedTable};
