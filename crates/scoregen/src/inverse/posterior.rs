//! Posterior sampling with an unconditional score (docs/methods.md): the methods, their
//! options and the one entry point [`sample_posterior`].
//!
//! Every method walks the same decreasing time grid `T = t_0 > ... > t_N = t_min` of the
//! score's process and uses the same backward kernel, the DDPM ancestral step
//! `p(x_{t'} | x_t) = N(x_{t'}; (m'/m) x + kappa score(t, x), var)` with
//! `var = v s'^2 / s^2` (`v` the forward transition variance from `t'` to `t`) and
//! `kappa = m' s^2 / m - s sqrt(s'^2 - var)` (Ho et al. 2020;
//! [`crate::process::Process::reverse_kernel`], the samplers' DDPM step). The methods
//! differ in how they bring in `y = A x + sigma_y z`:
//!
//! | method | kind | how |
//! |---|---|---|
//! | `exact` | oracle | closed-form mixture posterior ([`super::exact`]) |
//! | `replacement` | heuristic | overwrite observed coordinates with `m' y + s' z` (Song et al. 2021; RePaint jumps optional) |
//! | `smc-impute` | SMC | Trippe et al. 2023: one stored forward path of `y`, weights = backward density of the observed coordinates |
//! | `mcgdiff` | SMC | Cardoso et al. 2024: pins in the SVD basis, Tweedie-based potentials `N(x~; alpha x0_hat + gamma xbar, alpha^2 V_t + beta)` with a closed-form proposal (`mcgdiff-paper`: the paper's `N(a x~; Vbar^T x_t, v)`, exact optimal proposal) |
//! | `tds` | SMC | twisted SMC (Wu et al. 2023), twist `N(y; A x0_hat, sigma_y^2 + r_t^2 A A^T)` |
//! | `dps` | guidance | Chung et al. 2023: `- (zeta / ||y - A x0_hat||) grad ||y - A x0_hat||^2` after each step |
//! | `pigdm` | guidance | Song et al. 2023: gradient of `log N(y; A x0_hat, r_t^2 A A^T + sigma_y^2 I)`, added as the paper's fixed-size correction |
//! | `tmpd` | guidance | Boys et al. 2023: score of `N(y; A x0_hat, A C_t A^T + sigma_y^2 I)`, `C_t = (s^2/m) d x0_hat/d x` |
//! | `ddrm` | SVD | Kawar et al. 2022, spectral updates with `eta`, `eta_b`, `eta_c` |
//! | `dcps` | blocks | Janati et al. 2024: tamed ULA + Gaussian variational steps per block |
//!
//! The SMC methods are [`crate::smc::FeynmanKac`] models run by the one driver
//! [`crate::smc::run_feynman_kac`]. They run `ceil(n / particles)` independent particle
//! systems and return the final population of each, resampled to equal weights: their error
//! goes to zero as the particle count grows. The guidance methods move `n` samples in one
//! batch.

pub use super::common::{Observation, PosteriorOptions, PosteriorReport};

use super::common::{Ctx, SmcJob};
use super::guidance::GaussGuide;
pub use super::guidance::PigdmUpdate;
pub use super::mcgdiff::McgdiffPotentials;
use super::problem::Operator;
use crate::score::Score;
use crate::{Error, Result};

/// A posterior sampling method (with the settings its paper recommends as defaults).
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// The closed-form posterior (Gaussian / mixture priors only).
    Exact,
    /// Replacement (Song et al. 2021, DiffPuter, RePaint): `jumps` repetitions of each
    /// step (RePaint's `r`, jump length 1; 1 = no resampling jumps).
    Replacement {
        /// RePaint resampling repetitions per step (>= 1).
        jumps: usize,
    },
    /// SMC imputation (SMCDiff, Trippe et al. 2023) — mask operators.
    SmcImpute,
    /// MCGdiff (Cardoso et al. 2024): pins at the release times, the intermediate
    /// potentials `potentials` (`mcgdiff`: Tweedie's, `mcgdiff-paper`: the paper's).
    Mcgdiff {
        /// The intermediate potentials (the target does not depend on them).
        potentials: McgdiffPotentials,
    },
    /// Twisted diffusion sampler (Wu et al. 2023).
    Tds,
    /// Diffusion posterior sampling (Chung et al. 2023): after each step
    /// `x <- x - zeta_t grad_x ||y - A x0_hat||^2` with the paper's step rule
    /// `zeta_t = zeta / ||y - A x0_hat||`.
    Dps {
        /// The paper's `zeta'` ([`DPS_ZETA`] by default).
        zeta: f64,
    },
    /// Pseudo-inverse guided diffusion (Song et al. 2023).
    Pigdm {
        /// How the guidance enters the step (default: the paper's).
        update: super::guidance::PigdmUpdate,
    },
    /// Tweedie moment projected diffusion (Boys et al. 2023), exact denoiser Jacobian.
    Tmpd,
    /// Divide-and-conquer posterior sampling (Janati et al. 2024): `dcps` and `dcps500` are
    /// the paper's DCPS500, `dcps50` its DCPS50 (50 Langevin steps per block).
    Dcps(super::dcps::DcpsOptions),
    /// Denoising diffusion restoration models (Kawar et al. 2022).
    Ddrm {
        /// Stochasticity of the observed directions less noisy than `y` (paper: 0.85).
        eta: f64,
        /// Weight of the observation in the observed directions noisier than `y` (paper: 1).
        eta_b: f64,
        /// Stochasticity of the unobserved directions ([`DDRM_ETA_C`] by default).
        eta_c: f64,
    },
}

/// The default DPS step `zeta'` (see [`Method::Dps`]): the value of the Gaussian-mixture
/// script in the DCPS authors' repository (github.com/Badr-MOUFAD/dcps,
/// `inverse_problem_with_diffusion_prior/gmm.py`: `zeta_coeff = 0.1` on the squared residual
/// over its norm). The TMPD authors' `configs/gmm.py` uses the equivalent of 0.025, which
/// measured worse on `bench gmm` (BENCHMARKS.md).
pub const DPS_ZETA: f64 = 0.1;

/// The default DDRM `eta_c` of the unobserved directions: 1, as in the DDRM runs of the
/// MCGdiff and DCPS authors' Gaussian-mixture script (`etaC = 1`; the DDRM paper ties it
/// to `eta = 0.85`).
pub const DDRM_ETA_C: f64 = 1.0;

/// The names `--method` accepts.
pub const METHOD_NAMES: &[&str] = &[
    "exact",
    "replacement",
    "smc-impute",
    "mcgdiff",
    "mcgdiff-paper",
    "tds",
    "dps",
    "pigdm",
    "pigdm-score",
    "tmpd",
    "ddrm",
    "dcps",
    "dcps50",
    "dcps500",
];

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "exact" => Method::Exact,
            "replacement" => Method::Replacement { jumps: 1 },
            "smc-impute" => Method::SmcImpute,
            "mcgdiff" => Method::Mcgdiff {
                potentials: McgdiffPotentials::Tweedie,
            },
            "mcgdiff-paper" => Method::Mcgdiff {
                potentials: McgdiffPotentials::Paper,
            },
            "tds" => Method::Tds,
            "dps" => Method::Dps { zeta: DPS_ZETA },
            "pigdm" => Method::Pigdm {
                update: super::guidance::PigdmUpdate::Paper,
            },
            "pigdm-score" => Method::Pigdm {
                update: super::guidance::PigdmUpdate::Score,
            },
            "tmpd" => Method::Tmpd,
            "ddrm" => Method::Ddrm {
                eta: 0.85,
                eta_b: 1.0,
                eta_c: DDRM_ETA_C,
            },
            "dcps" => Method::Dcps(super::dcps::DcpsOptions::default()),
            "dcps50" => Method::Dcps(super::dcps::DcpsOptions::dcps50()),
            "dcps500" => Method::Dcps(super::dcps::DcpsOptions::dcps500()),
            other => {
                return Err(Error::invalid(format!(
                    "unknown posterior method '{other}' (expected one of: {})",
                    METHOD_NAMES.join(", ")
                )))
            }
        })
    }
}

impl Method {
    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Replacement { .. } => "replacement",
            Method::SmcImpute => "smc-impute",
            Method::Mcgdiff {
                potentials: McgdiffPotentials::Paper,
            } => "mcgdiff-paper",
            Method::Mcgdiff { .. } => "mcgdiff",
            Method::Tds => "tds",
            Method::Dps { .. } => "dps",
            Method::Pigdm {
                update: super::guidance::PigdmUpdate::Score,
            } => "pigdm-score",
            Method::Pigdm { .. } => "pigdm",
            Method::Tmpd => "tmpd",
            Method::Ddrm { .. } => "ddrm",
            Method::Dcps(dc) if *dc == super::dcps::DcpsOptions::dcps50() => "dcps50",
            Method::Dcps(_) => "dcps",
        }
    }

    /// Whether the method is a particle filter (uses `particles`, reports ESS and `log Z`).
    pub fn is_smc(&self) -> bool {
        matches!(self, Method::SmcImpute | Method::Mcgdiff { .. } | Method::Tds)
    }
}

/// Samples the posterior of `score`'s prior given `obs` with `method`. `progress` receives
/// (done, total) steps. An operator with no rows (nothing observed) gives prior samples
/// from the DDPM chain, whatever the method.
pub fn sample_posterior(
    score: &dyn Score,
    obs: &Observation,
    method: &Method,
    opts: &PosteriorOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PosteriorReport> {
    let d = score.dim();
    obs.validate(d)?;
    if opts.n == 0 || opts.particles == 0 || opts.steps == 0 {
        return Err(Error::invalid("posterior: n, particles and steps must be >= 1"));
    }
    if !(0.0..=1.0).contains(&opts.ess_threshold) {
        return Err(Error::invalid("posterior: the ESS threshold must be in [0, 1]"));
    }
    let ctx = Ctx::new(score, opts.seed);
    if obs.op.shape().0 == 0 && !matches!(method, Method::Exact) {
        // Nothing observed: the posterior is the prior, drawn by the plain DDPM chain (the
        // replacement sampler with an empty mask); every method would reduce to it.
        let empty = Observation {
            op: Operator::Mask {
                dim: d,
                observed: Vec::new(),
            },
            y: Vec::new(),
            sigma_y: 0.0,
        };
        let samples = super::replacement::run(&ctx, &empty, opts, 1, progress)?;
        return Ok(PosteriorReport {
            samples,
            runs: usize::from(method.is_smc()),
            ess_min: 1.0,
            ess_mean: 1.0,
            ..Default::default()
        });
    }
    if method.is_smc() {
        let runs = opts.n.div_ceil(opts.particles);
        let total = runs * opts.steps;
        let mut report = PosteriorReport {
            runs,
            ess_min: 1.0,
            ..Default::default()
        };
        let mut ess_sum = 0.0;
        let mut ess_count = 0usize;
        let mut resamplings = 0usize;
        for run in 0..runs {
            let mut prog = |k: usize, _: usize| progress(run * opts.steps + k.min(opts.steps), total);
            let job = SmcJob {
                ctx: &ctx,
                obs,
                opts,
                run,
            };
            let out = match method {
                Method::SmcImpute => super::smc_impute::run(&job, &mut prog)?,
                Method::Mcgdiff { potentials } => super::mcgdiff::run(&job, *potentials, &mut prog)?,
                Method::Tds => super::tds::run(&job, &mut prog)?,
                _ => unreachable!("is_smc"),
            };
            let n_part = opts.particles as f64;
            for e in &out.ess {
                report.ess_min = report.ess_min.min(e / n_part);
                ess_sum += e / n_part;
                ess_count += 1;
            }
            resamplings += out.resamplings;
            if let Some(l) = out.log_evidence {
                report.log_evidence.push(l);
            }
            // The final resampling returns the particles in ancestor order, so a leading
            // block would be a biased subset: take `take` evenly spaced rows instead.
            let take = (opts.n - report.samples.len() / d).min(opts.particles);
            for i in 0..take {
                let j = i * opts.particles / take;
                report.samples.extend_from_slice(&out.samples[j * d..(j + 1) * d]);
            }
        }
        report.ess_mean = if ess_count > 0 { ess_sum / ess_count as f64 } else { 1.0 };
        report.resamplings = resamplings as f64 / runs as f64;
        Ok(report)
    } else {
        let samples = match method {
            Method::Exact => {
                return Err(Error::invalid(
                    "method 'exact' draws from the closed form of a Gaussian or Gaussian-mixture prior, which a score does not carry: use solve::sample_problem or ExactPosterior",
                ))
            }
            Method::Replacement { jumps } => super::replacement::run(&ctx, obs, opts, *jumps, progress)?,
            Method::Dps { zeta } => super::guidance::run_dps(&ctx, obs, opts, *zeta, progress)?,
            Method::Pigdm { update } => {
                super::guidance::run_gaussian(&ctx, obs, opts, GaussGuide::Pigdm(*update), progress)?
            }
            Method::Tmpd => super::guidance::run_gaussian(&ctx, obs, opts, GaussGuide::Tmpd, progress)?,
            Method::Ddrm { eta, eta_b, eta_c } => {
                super::ddrm::run(&ctx, obs, opts, [*eta, *eta_b, *eta_c], progress)?
            }
            Method::Dcps(dc) => super::dcps::run(&ctx, obs, opts, *dc, progress)?,
            _ => unreachable!("not smc"),
        };
        Ok(PosteriorReport {
            samples,
            ess_min: 1.0,
            ess_mean: 1.0,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_name_parses_and_names_itself() {
        for &n in METHOD_NAMES {
            let m: Method = n.parse().unwrap();
            // `dcps500` is `dcps`: the one alias.
            let want = if n == "dcps500" { "dcps" } else { n };
            assert_eq!(m.name(), want);
        }
        assert!(matches!(
            "pigdm".parse::<Method>().unwrap(),
            Method::Pigdm {
                update: super::super::guidance::PigdmUpdate::Paper
            }
        ));
        assert!("pigdm-paper".parse::<Method>().is_err());
    }
}
