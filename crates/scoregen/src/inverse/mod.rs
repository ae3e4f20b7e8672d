//! Inverse problems `y = A x + sigma_y z` with a score prior (docs/methods.md).
//!
//! This layer owns the problem file format ([`problem`]); operators, the exact posterior
//! of Gaussian-mixture priors and the posterior samplers build on it.

mod common;
pub mod dcps;
mod ddrm;
pub mod exact;
mod guidance;
mod mcgdiff;
pub mod operator;
pub mod posterior;
pub mod problem;
mod replacement;
mod smc_impute;
mod tds;

pub use dcps::DcpsOptions;
pub use exact::ExactPosterior;
pub use operator::SvdForm;
pub use posterior::{
    sample_posterior, McgdiffPotentials, Method, Observation, PigdmUpdate, PosteriorOptions, PosteriorReport,
    DDRM_ETA_C, DPS_ZETA, METHOD_NAMES,
};
pub use problem::{Operator, Prior, Problem};
pub(crate) use smc_impute::run_batch as smc_impute_batch;
