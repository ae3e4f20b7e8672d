//! `posterior`: samples of `p(x | y) ∝ N(y; A x, sigma_y^2 I) p(x)` for a mixture prior
//! or a trained model, by the same library calls as `scoregen posterior`.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use scoregen::inverse::{Method, Observation, PosteriorOptions, Prior, Problem};
use scoregen::process::TimeGrid;
use scoregen::smc::Resampling;
use scoregen::solve::{sample_model_posterior, sample_problem};

use crate::common::*;
use crate::mixture::PyMixture;
use crate::model::PyModel;

/// The operator `A` from its JSON description (docs/formats.md, `operator`), parsed and
/// checked by the library's problem reader against dimension `dx`.
fn operator(json: &str, dx: usize, dy: usize) -> PyResult<scoregen::inverse::Operator> {
    let op: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(format!("operator: {e}")))?;
    // The library reads operators inside a problem file: a stand-in prior of the right
    // dimension carries the dimension (image operators and masks need it), a stand-in `y`
    // the length of the real one (checked with its values by `Observation::validate`).
    let problem = serde_json::json!({
        "prior": {"kind": "gaussian", "mean": vec![0.0; dx], "variance": 1.0},
        "operator": op,
        "y": vec![0.0; dy],
    });
    let p = Problem::from_json(&problem.to_string(), None).py()?;
    p.operator.ok_or_else(|| invalid("operator: missing"))
}

/// Posterior samples (native part of `scoregen.posterior`): see its docstring.
#[pyfunction]
#[pyo3(signature = (prior, y, operator_json, sigma_y = 0.0, method = "mcgdiff", n = 2000, particles = 2000,
    steps = 1000, grid = "quadratic", t_min = 1e-3, resampling = "systematic", ess_threshold = 0.5, seed = 0,
    zeta = None, pigdm_update = None, eta = None, eta_b = None, eta_c = None, jumps = None, blocks = None,
    langevin = None, langevin_step = None, grad_steps = None, lr = None, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn _posterior<'py>(
    py: Python<'py>,
    prior: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    operator_json: &str,
    sigma_y: f64,
    method: &str,
    n: usize,
    particles: usize,
    steps: usize,
    grid: &str,
    t_min: f64,
    resampling: &str,
    ess_threshold: f64,
    seed: u64,
    zeta: Option<f64>,
    pigdm_update: Option<&str>,
    eta: Option<f64>,
    eta_b: Option<f64>,
    eta_c: Option<f64>,
    jumps: Option<usize>,
    blocks: Option<usize>,
    langevin: Option<usize>,
    langevin_step: Option<f64>,
    grad_steps: Option<usize>,
    lr: Option<f64>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    // The method with its options, as `PosteriorArgs::method` of the CLI.
    let mut m: Method = method.parse::<Method>().py()?;
    match &mut m {
        Method::Dps { zeta: z } => *z = zeta.unwrap_or(*z),
        Method::Pigdm { update } => {
            if let Some(u) = pigdm_update {
                *update = u.parse::<scoregen::inverse::PigdmUpdate>().py()?;
            }
        }
        Method::Ddrm {
            eta: e,
            eta_b: eb,
            eta_c: ec,
        } => {
            *e = eta.unwrap_or(*e);
            *eb = eta_b.unwrap_or(*eb);
            *ec = eta_c.unwrap_or(*ec);
        }
        Method::Replacement { jumps: j } => {
            if let Some(v) = jumps {
                count("jumps", v, 1, MAX_ROUNDS)?;
                *j = v;
            }
        }
        Method::Dcps(dc) => {
            if let Some(b) = blocks {
                count("blocks", b, 1, MAX_ROUNDS)?;
            }
            if let Some(k) = langevin {
                count("langevin", k, 0, MAX_STEPS)?;
            }
            if let Some(j) = grad_steps {
                count("grad_steps", j, 0, MAX_ROUNDS)?;
            }
            dc.blocks = blocks.unwrap_or(dc.blocks);
            dc.langevin = langevin.unwrap_or(dc.langevin);
            dc.gamma = langevin_step.unwrap_or(dc.gamma);
            dc.grad_steps = grad_steps.unwrap_or(dc.grad_steps);
            dc.lr = lr.unwrap_or(dc.lr);
            dc.validate().py()?;
        }
        _ => {}
    }
    count("n", n, 1, usize::MAX / 64)?;
    count("particles", particles, 1, usize::MAX / 64)?;
    count("steps", steps, 1, MAX_STEPS)?;
    let opts = PosteriorOptions {
        n,
        particles,
        steps,
        grid: grid.parse::<TimeGrid>().py()?,
        t_min,
        denoise: true,
        resampling: resampling.parse::<Resampling>().py()?,
        ess_threshold,
        seed,
    };
    let y = vector(y, "y")?;
    let d = PyDict::new(py);
    d.set_item("method", m.name())?;
    let (samples, dim, report) = if let Ok(mix) = prior.cast::<PyMixture>() {
        let law = mix.get().law.clone();
        let dx = law.dim();
        let op = operator(operator_json, dx, y.len())?;
        let problem = Problem {
            prior: Prior::Mixture((*law).clone()),
            operator: Some(op),
            y: Some(y),
            sigma_y: Some(sigma_y),
        };
        problem.observation().py()?.validate(dx).py()?;
        let post = compute(
            py,
            progress && !matches!(m, Method::Exact),
            steps as u64,
            m.name(),
            |tk| {
                sample_problem(&problem, &m, &opts, &candle_core::Device::Cpu, &mut |k, _| {
                    tk.tick(k as u64)
                })
            },
        )?;
        (post.samples, post.dim, post.report)
    } else if let Ok(model) = prior.cast::<PyModel>() {
        let model = model.borrow();
        let dx = model.meta.arch.dim();
        let obs = Observation {
            op: operator(operator_json, dx, y.len())?,
            y,
            sigma_y,
        };
        obs.validate(dx).py()?;
        if matches!(m, Method::Exact) {
            return Err(invalid(
                "method 'exact' needs a Gaussian or Gaussian-mixture prior, not a trained model",
            ));
        }
        let norm = &model.meta.normalisation;
        let (x, rep) = model.with_score(|score| {
            let r = compute(py, progress, steps as u64, m.name(), |tk| {
                sample_model_posterior(&score, norm, &obs, &m, &opts, &mut |k, _| tk.tick(k as u64))
            });
            (Some(score), r)
        })?;
        (x, dx, Some(rep))
    } else {
        return Err(invalid("prior: expected a GaussianMixture or a Model"));
    };
    d.set_item("samples", to_numpy(py, samples, n, dim)?)?;
    match report {
        Some(r) => {
            d.set_item("runs", r.runs)?;
            d.set_item("ess_min", if m.is_smc() { Some(r.ess_min) } else { None })?;
            d.set_item("ess_mean", if m.is_smc() { Some(r.ess_mean) } else { None })?;
            d.set_item("resamplings", r.resamplings)?;
            d.set_item("log_evidence", r.mean_log_evidence())?;
            d.set_item("log_evidence_runs", r.log_evidence)?;
        }
        None => {
            d.set_item("runs", 0)?;
            d.set_item("ess_min", None::<f64>)?;
            d.set_item("ess_mean", None::<f64>)?;
            d.set_item("resamplings", 0.0)?;
            d.set_item("log_evidence", None::<f64>)?;
            d.set_item("log_evidence_runs", Vec::<f64>::new())?;
        }
    }
    Ok(d)
}
