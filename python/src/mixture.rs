//! `GaussianMixture` and `Process`: exact scores and densities, exact and reverse-time
//! samples of a mixture prior.

use std::sync::Arc;

use numpy::{PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use scoregen::process::{Process, ProcessKind};
use scoregen::rng::Noise;
use scoregen::sample::{default_process, standardised_process_of};
use scoregen::score::{Covariance, GaussianMixture, MixtureScore, Score};
use scoregen::solve::sample_prior;

use crate::common::*;
use crate::sampling::SamplerSpec;

/// A forward noising process `x_t = m(t) x_0 + s(t) eps` (docs/conventions.md): the
/// variance-preserving family (OU with a constant rate, DDPM's linear and cosine
/// schedules), sub-VP (Song et al. 2021) and variance exploding (Song & Ermon 2019).
/// Build one with the static methods `ou`, `vp`, `vp_cosine`, `sub_vp`, `ve`, or
/// `for_data`.
#[pyclass(module = "scoregen._scoregen", name = "Process", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyProcess {
    pub inner: Process,
}

#[pymethods]
impl PyProcess {
    /// The OU process `dX = -beta/2 X dt + sqrt(beta) dB` on `[0, t_max]`
    /// (`m = exp(-beta t / 2)`, `s^2 = 1 - m^2`).
    #[staticmethod]
    #[pyo3(signature = (beta = 2.0, t_max = 6.0))]
    fn ou(beta: f64, t_max: f64) -> PyResult<Self> {
        Self::checked(Process::ou(beta, t_max))
    }

    /// The VP process with DDPM's linear schedule, `beta` from 0.1 to 20 on `[0, 1]`
    /// (Ho et al. 2020; score_sde's `vpsde`).
    #[staticmethod]
    fn vp() -> Self {
        PyProcess {
            inner: Process::ddpm_linear(),
        }
    }

    /// The VP process with the cosine schedule of Nichol & Dhariwal 2021 (`s = 0.008`) on
    /// `[0, 0.99]`.
    #[staticmethod]
    fn vp_cosine() -> Self {
        PyProcess {
            inner: Process::ddpm_cosine(),
        }
    }

    /// The sub-VP process of Song et al. 2021 (`m = exp(-B/2)`, `s = 1 - m^2`): with DDPM's
    /// linear schedule by default, or a constant rate `beta` on `[0, t_max]` when both are
    /// given.
    #[staticmethod]
    #[pyo3(signature = (beta = None, t_max = None))]
    fn sub_vp(beta: Option<f64>, t_max: Option<f64>) -> PyResult<Self> {
        match (beta, t_max) {
            (None, None) => Ok(PyProcess {
                inner: Process::sub_vp_linear(),
            }),
            (Some(b), Some(t)) => Self::checked(Process::sub_vp(b, t)),
            _ => Err(invalid("sub_vp: give both beta and t_max, or neither")),
        }
    }

    /// The variance-exploding process of NCSN: `m = 1`,
    /// `s(t) = sigma_min (sigma_max / sigma_min)^t` on `[0, 1]`.
    #[staticmethod]
    #[pyo3(signature = (sigma_min = 0.01, sigma_max = 50.0))]
    fn ve(sigma_min: f64, sigma_max: f64) -> PyResult<Self> {
        Self::checked(Process::ve(sigma_min, sigma_max))
    }

    /// The process `scoregen train --process KIND` uses for standardised data of dimension
    /// `dim`: `kind` is `ou`, `vp`, `sub-vp` or `ve`.
    #[staticmethod]
    fn for_data(kind: &str, dim: usize) -> PyResult<Self> {
        let k: ProcessKind = kind.parse::<ProcessKind>().py()?;
        count("dim", dim, 1, usize::MAX)?;
        Ok(PyProcess {
            inner: standardised_process_of(k, dim),
        })
    }

    /// The horizon `T`.
    #[getter]
    fn t_max(&self) -> f64 {
        self.inner.t_max()
    }

    /// The signal scale `m(t)`.
    fn m(&self, t: f64) -> f64 {
        self.inner.m(t)
    }

    /// The noise scale `s(t)`.
    fn s(&self, t: f64) -> f64 {
        self.inner.s(t)
    }

    /// The noise-to-signal ratio `sigma(t) = s(t) / m(t)`.
    fn sigma(&self, t: f64) -> f64 {
        self.inner.sigma(t)
    }

    /// `log(m^2 / s^2)`.
    fn log_snr(&self, t: f64) -> f64 {
        self.inner.log_snr(t)
    }

    /// The process as the JSON a checkpoint stores.
    fn to_json(&self) -> String {
        serde_json::to_string(&self.inner).unwrap_or_default()
    }

    /// The process from its JSON (`to_json`).
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        let p: Process = serde_json::from_str(text).map_err(|e| invalid(format!("process: {e}")))?;
        Self::checked(p)
    }

    fn __repr__(&self) -> String {
        format!("Process({})", self.to_json())
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let f = slf.get_type().getattr("from_json")?;
        Ok((f, PyTuple::new(slf.py(), [slf.get().to_json()])?))
    }
}

impl PyProcess {
    fn checked(p: Process) -> PyResult<Self> {
        p.validate().py()?;
        Ok(PyProcess { inner: p })
    }
}

/// A Gaussian mixture `sum_k w_k N(mu_k, Sigma_k)` in `R^d`, with its exact score and
/// log density at every noise level.
///
/// `GaussianMixture(weights, means, covariances)`: `weights` (`K` non-negative numbers,
/// normalised here), `means` (`[K, d]`), and `covariances` either `[K, d, d]` (full,
/// symmetric positive definite), `[K, d]` (diagonals) or `[K]` (one variance per
/// component, `v I`). Errors are the library's (`ScoregenError`, a `ValueError`).
#[pyclass(module = "scoregen._scoregen", name = "GaussianMixture", frozen)]
pub struct PyMixture {
    pub law: Arc<GaussianMixture>,
    /// How it was built, so that a pickle rebuilds it bit for bit.
    origin: Origin,
}

/// The arguments a mixture was built from.
enum Origin {
    /// The weights as given (the law keeps them normalised).
    Parts(Vec<f64>),
    /// `grid25(dim, seed)`.
    Grid25(usize, u64),
}

#[pymethods]
impl PyMixture {
    #[new]
    fn new(weights: &Bound<'_, PyAny>, means: &Bound<'_, PyAny>, covariances: &Bound<'_, PyAny>) -> PyResult<Self> {
        let w = vector(weights, "weights")?;
        let k = w.len();
        let (mv, mk, d) = points(means, "means", None)?;
        if mk != k {
            return Err(invalid(format!("mixture: {k} weights but {mk} means")));
        }
        let means: Vec<Vec<f64>> = mv.chunks(d).map(|r| r.to_vec()).collect();
        let c = f64_array(covariances)?;
        let shape = c.shape().to_vec();
        let ro = c.readonly();
        let cv = ro.as_slice().map_err(|e| invalid(e.to_string()))?;
        let covs: Vec<Covariance> = match shape.as_slice() {
            [kk, a, b] if *kk == k && *a == d && *b == d => {
                cv.chunks(d * d).map(|c| Covariance::Full(c.to_vec())).collect()
            }
            [kk, a] if *kk == k && *a == d => cv.chunks(d).map(|c| Covariance::Diagonal(c.to_vec())).collect(),
            [kk] if *kk == k => cv.iter().map(|v| Covariance::Scalar(*v)).collect(),
            [] => vec![Covariance::Scalar(cv[0]); k],
            s => {
                return Err(invalid(format!(
                    "mixture: covariances of shape {s:?}; expected [{k}, {d}, {d}], [{k}, {d}] or [{k}]"
                )))
            }
        };
        Ok(PyMixture {
            law: Arc::new(GaussianMixture::new(w.clone(), means, covs).py()?),
            origin: Origin::Parts(w),
        })
    }

    /// A single Gaussian `N(mean, covariance)` (`covariance` `[d, d]`, `[d]` or a number).
    #[staticmethod]
    fn gaussian(mean: &Bound<'_, PyAny>, covariance: &Bound<'_, PyAny>) -> PyResult<Self> {
        let m = vector(mean, "mean")?;
        let d = m.len();
        let c = f64_array(covariance)?;
        let shape = c.shape().to_vec();
        let ro = c.readonly();
        let cv = ro.as_slice().map_err(|e| invalid(e.to_string()))?.to_vec();
        let cov = match shape.as_slice() {
            [a, b] if *a == d && *b == d => Covariance::Full(cv),
            [a] if *a == d => Covariance::Diagonal(cv),
            [] => Covariance::Scalar(cv[0]),
            s => {
                return Err(invalid(format!(
                    "gaussian: covariance of shape {s:?}; expected [{d}, {d}], [{d}] or a number"
                )))
            }
        };
        Ok(PyMixture {
            law: Arc::new(GaussianMixture::gaussian(m, cov).py()?),
            origin: Origin::Parts(vec![1.0]),
        })
    }

    /// The 25-component grid mixture of Cardoso et al. 2024 in dimension `dim` (the
    /// benchmark prior of `scoregen demo` and `bench gmm`), drawn with `seed`.
    #[staticmethod]
    #[pyo3(signature = (dim = 2, seed = 0))]
    fn grid25(dim: usize, seed: u64) -> PyResult<Self> {
        Ok(PyMixture {
            law: Arc::new(GaussianMixture::grid25(dim, &Noise::new(seed)).py()?),
            origin: Origin::Grid25(dim, seed),
        })
    }

    /// The dimension `d`.
    #[getter]
    fn dim(&self) -> usize {
        self.law.dim()
    }

    /// The number of components `K`.
    #[getter]
    fn n_components(&self) -> usize {
        self.law.n_components()
    }

    /// The normalised weights, `[K]`.
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        to_numpy1(py, self.law.weights())
    }

    /// The means, `[K, d]`.
    #[getter]
    fn means<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m: Vec<f64> = self.law.means().concat();
        to_numpy(py, m, self.law.n_components(), self.law.dim())
    }

    /// The covariances as full matrices, `[K, d, d]`.
    #[getter]
    fn covariances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (k, d) = (self.law.n_components(), self.law.dim());
        let c: Vec<f64> = (0..k).flat_map(|i| self.law.covariance_matrix(i)).collect();
        Ok(numpy::PyArray1::from_vec(py, c).reshape([k, d, d])?.into_any())
    }

    /// The radius `max_k |mu_k| + sqrt(lambda_max(Sigma_k))` that sets the default horizon.
    #[getter]
    fn radius(&self) -> f64 {
        self.law.radius()
    }

    /// The process of every mixture run of the library and the CLI: the OU process
    /// (`beta = 2`) with the horizon chosen from the mixture's radius.
    fn default_process(&self) -> PyProcess {
        PyProcess {
            inner: default_process(self.law.radius()),
        }
    }

    /// Log density of each row of `x` (`[n, d]`) under the mixture, `[n]`.
    fn log_prob<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (v, _, _) = points(x, "x", Some(self.law.dim()))?;
        let law = &self.law;
        let lp = py.detach(|| law.log_prob(&v)).py()?;
        Ok(to_numpy1(py, lp))
    }

    /// Log density at time `t` of the diffused law `p_t` (the law of `m(t) x_0 + s(t) eps`)
    /// at each row of `x`, `[n]`; `process` defaults to `default_process()`.
    #[pyo3(signature = (t, x, process = None))]
    fn log_density<'py>(
        &self,
        py: Python<'py>,
        t: f64,
        x: &Bound<'py, PyAny>,
        process: Option<PyProcess>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = self.process_or_default(process);
        check_time(&p, t)?;
        let (v, _, _) = points(x, "x", Some(self.law.dim()))?;
        let law = &self.law;
        let lp = py.detach(|| law.log_prob_diffused(p.m(t), p.s(t), &v)).py()?;
        Ok(to_numpy1(py, lp))
    }

    /// The exact score `grad_x log p_t(x)` at time `t` at each row of `x`, `[n, d]`;
    /// `process` defaults to `default_process()`.
    #[pyo3(signature = (t, x, process = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        t: f64,
        x: &Bound<'py, PyAny>,
        process: Option<PyProcess>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = self.process_or_default(process);
        check_time(&p, t)?;
        let (v, n, d) = points(x, "x", Some(self.law.dim()))?;
        let sc = MixtureScore::new(self.law.clone(), p);
        let xt = tensor(v, n, d)?;
        let s = py.detach(|| sc.score(t, &xt)).py()?;
        let (g, n, d) = rows(&s)?;
        to_numpy(py, g, n, d)
    }

    /// `n` exact draws of the mixture with `seed` (`scoregen exact --seed`), `[n, d]`.
    #[pyo3(signature = (n, seed = 0))]
    fn sample_exact<'py>(&self, py: Python<'py>, n: usize, seed: u64) -> PyResult<Bound<'py, PyAny>> {
        count("n", n, 1, usize::MAX / self.law.dim().max(1) / 8)?;
        let law = &self.law;
        let x = py.detach(|| law.sample(n, &Noise::new(seed), 0));
        to_numpy(py, x, n, self.law.dim())
    }

    /// `n` samples by a reverse-time sampler on the exact score, as
    /// `scoregen sample --problem` draws them (the same seed gives the same samples, bit
    /// for bit). Sampler options as in `Model.sample`.
    #[pyo3(signature = (n = 2000, sampler = "em", steps = 1000, seed = 0, b = 1.0, eta = 0.0, snr = 0.16,
        predictor = "em", corrector_steps = 1, grid = None, t_min = 1e-3, denoise = true, progress = true))]
    #[allow(clippy::too_many_arguments)]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        sampler: &str,
        steps: usize,
        seed: u64,
        b: f64,
        eta: f64,
        snr: f64,
        predictor: &str,
        corrector_steps: usize,
        grid: Option<&str>,
        t_min: f64,
        denoise: bool,
        progress: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        count("n", n, 1, usize::MAX / self.law.dim().max(1) / 8)?;
        let spec = SamplerSpec {
            sampler,
            steps,
            b,
            eta,
            snr,
            predictor,
            corrector_steps,
            grid,
            t_min,
            denoise,
            seed,
        };
        let (s, opts) = spec.build()?;
        let law = &self.law;
        let x = compute(py, progress, opts.steps as u64, sampler, |tk| {
            sample_prior(law, &s, &opts, n, &mut |k, _| tk.tick(k as u64))
        })?;
        let (v, n, d) = rows(&x)?;
        to_numpy(py, v, n, d)
    }

    fn __repr__(&self) -> String {
        format!(
            "GaussianMixture(dim={}, n_components={})",
            self.law.dim(),
            self.law.n_components()
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let law = &me.law;
        let (k, d) = (law.n_components(), law.dim());
        match &me.origin {
            Origin::Grid25(dim, seed) => {
                let f = slf.get_type().getattr("grid25")?;
                Ok((f, PyTuple::new(py, [*dim as u64, *seed])?))
            }
            Origin::Parts(w) => {
                // The covariances as given: all full, all diagonal or all scalar.
                let covs = law.covariances();
                let cov = if covs.iter().all(|c| matches!(c, Covariance::Scalar(_))) {
                    let v: Vec<f64> = covs
                        .iter()
                        .map(|c| if let Covariance::Scalar(v) = c { *v } else { 0.0 })
                        .collect();
                    to_numpy1(py, v)
                } else if covs.iter().all(|c| matches!(c, Covariance::Diagonal(_))) {
                    let v: Vec<f64> = covs
                        .iter()
                        .flat_map(|c| {
                            if let Covariance::Diagonal(v) = c {
                                v.clone()
                            } else {
                                vec![]
                            }
                        })
                        .collect();
                    to_numpy(py, v, k, d)?
                } else {
                    let v: Vec<f64> = covs
                        .iter()
                        .enumerate()
                        .flat_map(|(i, c)| match c {
                            Covariance::Full(v) => v.clone(),
                            _ => law.covariance_matrix(i),
                        })
                        .collect();
                    numpy::PyArray1::from_vec(py, v).reshape([k, d, d])?.into_any()
                };
                let args = PyTuple::new(py, [to_numpy1(py, w.clone()), me.means(py)?, cov])?;
                Ok((slf.get_type().into_any(), args))
            }
        }
    }
}

impl PyMixture {
    fn process_or_default(&self, p: Option<PyProcess>) -> Process {
        p.map_or_else(|| default_process(self.law.radius()), |p| p.inner)
    }
}

fn check_time(p: &Process, t: f64) -> PyResult<()> {
    if !(t.is_finite() && t >= 0.0 && t <= p.t_max()) {
        return Err(invalid(format!("t must be in [0, T] = [0, {}], got {t}", p.t_max())));
    }
    Ok(())
}
