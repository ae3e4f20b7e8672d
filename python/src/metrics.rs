//! Distances between sample sets (`scoregen::metrics`), on NumPy arrays.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use scoregen::metrics::{self, SlicedOptions};

use crate::common::*;
use crate::mixture::PyMixture;

/// Two point sets of the same dimension as f64 tensors.
fn pair(x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<(candle_core::Tensor, candle_core::Tensor)> {
    let (a, n, d) = finite_points(x, "x", None)?;
    let (b, m, _) = finite_points(y, "y", Some(d))?;
    Ok((tensor(a, n, d)?, tensor(b, m, d)?))
}

/// Sliced Wasserstein distance `SW_p` between the empirical laws of `x` (`[n, d]`) and
/// `y` (`[m, d]`): the mean over `directions` random unit directions (seeded by `seed`)
/// of the 1-D `W_p` of the projections (Rabin et al. 2011; 100 directions and `p = 1` is
/// the convention of Cardoso et al. 2024).
#[pyfunction]
#[pyo3(signature = (x, y, directions = 100, p = 1, seed = 0))]
pub fn sliced_wasserstein(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    directions: usize,
    p: u32,
    seed: u64,
) -> PyResult<f64> {
    let (a, b) = pair(x, y)?;
    let o = SlicedOptions { directions, p, seed };
    py.detach(|| metrics::sliced_wasserstein(&a, &b, &o)).py()
}

/// Energy distance `2 E|X - Y| - E|X - X'| - E|Y - Y'|` (Székely & Rizzo 2013), the
/// U-statistic.
#[pyfunction]
pub fn energy_distance(py: Python<'_>, x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (a, b) = pair(x, y)?;
    py.detach(|| metrics::energy_distance(&a, &b)).py()
}

/// Unbiased `MMD^2` with the RBF kernel `exp(-|x - y|^2 / (2 h^2))` (Gretton et al. 2012);
/// `bandwidth` `h` defaults to the median heuristic. Returns `(mmd2, h)`.
#[pyfunction]
#[pyo3(signature = (x, y, bandwidth = None))]
pub fn mmd(py: Python<'_>, x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>, bandwidth: Option<f64>) -> PyResult<(f64, f64)> {
    let (a, b) = pair(x, y)?;
    let r = py.detach(|| metrics::mmd_rbf(&a, &b, bandwidth)).py()?;
    Ok((r.mmd2_unbiased, r.bandwidth))
}

/// The 2-Wasserstein distance between `N(mean1, cov1)` and `N(mean2, cov2)` in closed
/// form, `|m1 - m2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`, square-rooted.
#[pyfunction]
pub fn gaussian_w2(
    mean1: &Bound<'_, PyAny>,
    cov1: &Bound<'_, PyAny>,
    mean2: &Bound<'_, PyAny>,
    cov2: &Bound<'_, PyAny>,
) -> PyResult<f64> {
    let m1 = vector(mean1, "mean1")?;
    let m2 = vector(mean2, "mean2")?;
    let d = m1.len();
    let (c1, _, _) = finite_points(cov1, "cov1", Some(d))?;
    let (c2, _, _) = finite_points(cov2, "cov2", Some(d))?;
    metrics::gaussian_w2(&m1, &c1, &m2, &c2, d).py()
}

/// Every metric of `samples` against `reference`, as `scoregen eval --json` prints them:
/// `sw1`, `sw2`, `energy_distance`, `mmd2_unbiased`, `mmd_bandwidth`, `mean_err`,
/// `cov_err`, `cov_rel`, `gaussian_w2`, and `mixture_weight_err` given the mixture `law`.
#[pyfunction]
#[pyo3(signature = (samples, reference, law = None, directions = 100, seed = 0))]
pub fn compare<'py>(
    py: Python<'py>,
    samples: &Bound<'py, PyAny>,
    reference: &Bound<'py, PyAny>,
    law: Option<PyRef<'py, PyMixture>>,
    directions: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let (a, b) = pair(samples, reference)?;
    let o = SlicedOptions {
        directions,
        seed,
        ..Default::default()
    };
    let law = law.map(|l| l.law.clone());
    let c = py.detach(|| metrics::compare_with(&a, &b, law.as_deref(), &o)).py()?;
    let d = PyDict::new(py);
    d.set_item("n_samples", c.n_samples)?;
    d.set_item("n_reference", c.n_reference)?;
    d.set_item("dim", c.dim)?;
    for (name, v) in c.rows() {
        d.set_item(name, v)?;
    }
    Ok(d)
}
