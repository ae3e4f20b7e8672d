//! `scoregen._scoregen`: the native module of the `scoregen` Python package (PyO3 and the
//! `numpy` crate over the scoregen library; the public API is `python/scoregen/`).
//!
//! Every binding calls the library function the CLI command calls (no reimplementation):
//! exact mixture scores and densities (`score::GaussianMixture`), training
//! (`nn::train`), sampling (`solve::sample_prior`, `classes::sample_model`), posterior
//! sampling (`solve::sample_problem`, `solve::sample_model_posterior`), metrics
//! (`metrics`) and table imputation (`impute::fit`, `impute::impute_table`). Each long
//! call runs with the GIL released, reports to a tqdm bar and checks for Ctrl-C between
//! steps; library errors become `ScoregenError` (a `ValueError`) with the library's message.

mod common;
mod metrics;
mod mixture;
mod model;
mod posterior;
mod sampling;
mod table;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _scoregen(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ScoregenError", py.get_type::<common::ScoregenError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<mixture::PyProcess>()?;
    m.add_class::<mixture::PyMixture>()?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<table::TableModel>()?;
    m.add_function(wrap_pyfunction!(model::train, m)?)?;
    m.add_function(wrap_pyfunction!(model::builtin_data, m)?)?;
    m.add_function(wrap_pyfunction!(posterior::_posterior, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::sliced_wasserstein, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::energy_distance, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::mmd, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::gaussian_w2, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::compare, m)?)?;
    m.add_function(wrap_pyfunction!(table::builtin_table, m)?)?;
    Ok(())
}
