//! Inverse problems `y = A x + sigma_y z` with a score prior (DESIGN.md §1, decks 000 and 003).
//!
//! This layer owns the problem file format ([`problem`]); operators, the exact posterior
//! of Gaussian-mixture priors and the posterior samplers build on it.

pub mod exact;
pub mod operator;
pub mod problem;

pub use exact::ExactPosterior;
pub use operator::SvdForm;
pub use problem::{Operator, Prior, Problem};
