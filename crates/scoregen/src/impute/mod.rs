//! Imputation of tables with missing values (deck 000): the missing cells of each row are
//! drawn from the posterior of an unconditional score model given the row's observed cells.
//!
//! * [`mechanism`]: missingness mechanisms (MCAR, and DiffPuter's logistic MAR / MNAR) to
//!   mask a complete table for benchmarks;
//! * [`baseline`]: mean and k-nearest-neighbour imputation, the classical reference points.

pub mod baseline;
pub mod mechanism;
