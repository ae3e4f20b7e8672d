//! Sampling the prior or the posterior of a problem file (docs/formats.md), whatever its
//! prior: a Gaussian mixture (exact scores) or a trained model.
//!
//! * The exact score of a mixture prior runs on the OU process of
//!   [`default_process`]`(radius)` ([`prior_score`]), the process every sampler and
//!   posterior method of the library uses for mixtures.
//! * [`Method::Exact`] draws the closed-form posterior of a mixture prior
//!   ([`ExactPosterior`]: each component's Gaussian posterior, reweighted by its evidence).
//! * A model prior works in the coordinates `z = (x - mean) / sd` of its checkpoint's
//!   normalisation: the observation `y = A x + sigma_y eps` becomes
//!   `y - A mean = A diag(sd) z + sigma_y eps` ([`Observation::normalised`]), the method
//!   samples `z`, and the samples are mapped back, `x = mean + sd z`
//!   ([`sample_model_posterior`]).
//!
//! The methods are those of [`crate::inverse`] (docs/methods.md): replacement (Lugmayr et
//! al. 2022, RePaint), smc-impute, MCGdiff (Cardoso et al. 2024), TDS (Wu et al. 2023),
//! DPS (Chung et al. 2023), Pi-GDM (Song et al. 2023), TMPD (Boys et al. 2023), DDRM (Kawar
//! et al. 2022) and DCPS (Janati et al. 2024).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::inverse::{
    sample_posterior, ExactPosterior, Method, Observation, PosteriorOptions, PosteriorReport, Prior, Problem,
};
use crate::nn::model::Normalisation;
use crate::nn::LearnedScore;
use crate::rng::Noise;
use crate::sample::{default_process, sample, SampleOptions, Sampler};
use crate::score::{GaussianMixture, MixtureScore, Score};
use crate::{Error, Result};

/// The exact score of the mixture `law` on the OU process [`default_process`] of the law's
/// radius (the process of every mixture run of the library and the CLI).
pub fn prior_score(law: &GaussianMixture) -> MixtureScore {
    MixtureScore::new(Arc::new(law.clone()), default_process(law.radius()))
}

/// `n` draws of the mixture `law` by a reverse-time sampler on its exact score
/// ([`prior_score`]); `progress(k, total)` as in [`sample`].
pub fn sample_prior(
    law: &GaussianMixture,
    sampler: &Sampler,
    opts: &SampleOptions,
    n: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    sample(&prior_score(law), sampler, opts, n, progress)
}

/// The refusal of [`Method::Exact`] for a model prior.
const EXACT_NEEDS_MIXTURE: &str = "method 'exact' needs a Gaussian or Gaussian-mixture prior, not a trained model";

/// Posterior samples of a problem.
#[derive(Clone, Debug)]
pub struct ProblemPosterior {
    /// Samples in data units, row-major `[n, dim]`.
    pub samples: Vec<f64>,
    /// The dimension of `x`.
    pub dim: usize,
    /// The method's report (`None` for [`Method::Exact`]).
    pub report: Option<PosteriorReport>,
}

/// Posterior samples of a model prior in data units: the observation is mapped to the
/// model's coordinates by `norm` ([`Observation::normalised`]), `method` samples them, and
/// the samples are mapped back, `x = mean + sd z`. Returns the samples (row-major, data
/// units) and the method's report (its `samples` in model coordinates).
pub fn sample_model_posterior(
    score: &LearnedScore,
    norm: &Normalisation,
    obs: &Observation,
    method: &Method,
    opts: &PosteriorOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<f64>, PosteriorReport)> {
    if matches!(method, Method::Exact) {
        return Err(Error::invalid(EXACT_NEEDS_MIXTURE));
    }
    let local = obs.normalised(&norm.mean, &norm.std)?;
    let rep = sample_posterior(score, &local, method, opts, progress)?;
    let d = score.dim();
    let z = crate::data::from_rows(rep.samples.clone(), d, DType::F64, &Device::Cpu)?;
    let (x, _, _) = crate::data::to_rows(&norm.denormalise(&z)?)?;
    Ok((x, rep))
}

/// `opts.n` posterior samples of `problem` (which needs an operator and `y`) by `method`:
/// [`Method::Exact`] for a mixture prior draws [`ExactPosterior`] with `Noise::new(seed)`,
/// stream index 0; any other method runs [`sample_posterior`] on the prior's exact score
/// ([`prior_score`]) or on the trained model (read once from its checkpoint,
/// [`sample_model_posterior`]). Errors: a problem without observation, shapes that do not
/// match, `exact` with a model prior, a model that cannot be read, and whatever the method
/// reports. A model prior's network runs on `device` ([`crate::device`]).
pub fn sample_problem(
    problem: &Problem,
    method: &Method,
    opts: &PosteriorOptions,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ProblemPosterior> {
    let obs = problem.observation()?;
    match (&problem.prior, method) {
        (Prior::Mixture(law), Method::Exact) => {
            let post = ExactPosterior::new(law, &obs.op, &obs.y, obs.sigma_y)?;
            Ok(ProblemPosterior {
                samples: post.sample(opts.n, &Noise::new(opts.seed), 0),
                dim: law.dim(),
                report: None,
            })
        }
        (Prior::Mixture(law), _) => {
            obs.validate(law.dim())?;
            let rep = sample_posterior(&prior_score(law), &obs, method, opts, progress)?;
            Ok(ProblemPosterior {
                samples: rep.samples.clone(),
                dim: law.dim(),
                report: Some(rep),
            })
        }
        (Prior::Model(_), Method::Exact) => Err(Error::invalid(EXACT_NEEDS_MIXTURE)),
        (Prior::Model(dir), _) => {
            let (score, meta) = crate::nn::load_model_on(dir, device)?;
            let (samples, rep) = sample_model_posterior(&score, &meta.normalisation, &obs, method, opts, progress)?;
            Ok(ProblemPosterior {
                samples,
                dim: score.dim(),
                report: Some(rep),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Mlp, MlpConfig};
    use crate::process::Process;

    const PROBLEM: &str = r#"{"prior": {"kind": "gaussian_mixture", "weights": [0.3, 0.7],
        "means": [[-2, 0], [2, 1]], "variance": 0.5},
        "operator": {"kind": "dense", "matrix": [[1.0, 0.5]]}, "y": [1.0], "sigma_y": 0.5}"#;

    fn opts(n: usize) -> PosteriorOptions {
        PosteriorOptions {
            n,
            particles: n,
            steps: 50,
            seed: 4,
            ..Default::default()
        }
    }

    #[test]
    fn exact_method_draws_the_closed_form_posterior() {
        let p = Problem::from_json(PROBLEM, None).unwrap();
        let got = sample_problem(&p, &Method::Exact, &opts(5), &Device::Cpu, &mut |_, _| {}).unwrap();
        let law = p.mixture().unwrap();
        let post = ExactPosterior::new(law, &p.observation().unwrap().op, &[1.0], 0.5).unwrap();
        assert_eq!(got.samples, post.sample(5, &Noise::new(4), 0));
        assert_eq!((got.dim, got.report.is_none()), (2, true));
        // Its mean is the posterior mean within 4 standard errors per coordinate.
        let n = 20_000;
        let big = sample_problem(&p, &Method::Exact, &opts(n), &Device::Cpu, &mut |_, _| {}).unwrap();
        let mix = post.mixture().unwrap();
        for j in 0..2 {
            let m: f64 = (0..mix.n_components())
                .map(|k| mix.weights()[k] * mix.means()[k][j])
                .sum();
            let xs: Vec<f64> = big.samples.iter().skip(j).step_by(2).copied().collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            assert!(
                (mean - m).abs() < 4.0 * sd / (n as f64).sqrt(),
                "coordinate {j}: {mean} vs {m}"
            );
        }
    }

    #[test]
    fn mixture_methods_run_on_the_prior_score() {
        let p = Problem::from_json(PROBLEM, None).unwrap();
        let obs = p.observation().unwrap();
        let m: Method = "mcgdiff".parse().unwrap();
        let got = sample_problem(&p, &m, &opts(30), &Device::Cpu, &mut |_, _| {}).unwrap();
        let law = p.mixture().unwrap();
        let want = sample_posterior(&prior_score(law), &obs, &m, &opts(30), &mut |_, _| {}).unwrap();
        assert_eq!(got.samples, want.samples);
        assert_eq!(got.report.unwrap().runs, 1);
    }

    #[test]
    fn model_prior_works_in_the_normalised_coordinates() {
        // An identity normalisation leaves the observation and samples as they are; a
        // shifted and scaled one maps the observation in and the samples out.
        let score = LearnedScore::new(
            Mlp::new(
                MlpConfig {
                    hidden: 16,
                    ..MlpConfig::reference(2)
                },
                1,
                DType::F64,
                &Device::Cpu,
            )
            .unwrap(),
            Process::ou(2.0, 5.0),
        );
        let obs = Observation {
            op: crate::inverse::Operator::Mask {
                dim: 2,
                observed: vec![0],
            },
            y: vec![3.0],
            sigma_y: 0.0,
        };
        let norm = Normalisation {
            mean: vec![1.0, -1.0],
            std: vec![2.0, 0.5],
        };
        let m: Method = "replacement".parse().unwrap();
        let (x, rep) = sample_model_posterior(&score, &norm, &obs, &m, &opts(8), &mut |_, _| {}).unwrap();
        let local = obs.normalised(&norm.mean, &norm.std).unwrap();
        assert_eq!(local.y, vec![1.0]);
        let want = sample_posterior(&score, &local, &m, &opts(8), &mut |_, _| {}).unwrap();
        assert_eq!(rep.samples, want.samples);
        for (i, row) in x.chunks(2).enumerate() {
            for j in 0..2 {
                let z = want.samples[2 * i + j];
                assert!((row[j] - (norm.mean[j] + norm.std[j] * z)).abs() < 1e-12);
            }
        }
        assert!(sample_model_posterior(&score, &norm, &obs, &Method::Exact, &opts(8), &mut |_, _| {}).is_err());
    }
}
