//! Tables with missing cells (`scoregen impute`): the native part of
//! `scoregen.ScoreImputer`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use scoregen::impute::datasets::load_table;
use scoregen::impute::fit::ENCODING_FILE;
use scoregen::impute::{
    fit, impute_table, ColumnKind, Encoding, FitOptions, FitProgress, ImputeOptions, MixedTable, StoredEncoding,
};
use scoregen::inverse::Method;
use scoregen::nn::model::Normalisation;
use scoregen::nn::{load_model, LearnedScore};
use scoregen::process::TimeGrid;
use scoregen::smc::Resampling;

use crate::common::*;

/// A table from Python columns: `header` names, `columns` each either a 1-D float array
/// (numbers, NaN missing) or a list of `str | None` (labels, `None` missing; levels in
/// order of first appearance).
fn table_of(header: Vec<String>, columns: &Bound<'_, PyList>) -> PyResult<MixedTable> {
    let cols = header.len();
    if columns.len() != cols {
        return Err(invalid(format!("{} column names for {} columns", cols, columns.len())));
    }
    if cols == 0 {
        return Err(invalid("the table has no columns"));
    }
    enum Col {
        Num(Vec<f64>),
        Cat(Vec<Option<String>>),
    }
    let mut parsed = Vec::with_capacity(cols);
    for c in columns.iter() {
        if c.is_instance_of::<PyList>() {
            parsed.push(Col::Cat(c.extract::<Vec<Option<String>>>()?));
        } else {
            parsed.push(Col::Num(vector(&c, "column")?));
        }
    }
    let rows = match &parsed[0] {
        Col::Num(v) => v.len(),
        Col::Cat(v) => v.len(),
    };
    let mut values = vec![f64::NAN; rows * cols];
    for (j, c) in parsed.iter().enumerate() {
        let len = match c {
            Col::Num(v) => v.len(),
            Col::Cat(v) => v.len(),
        };
        if len != rows {
            return Err(invalid(format!(
                "column '{}' has {len} rows, the first column {rows}",
                header[j]
            )));
        }
        if let Col::Num(v) = c {
            for i in 0..rows {
                values[i * cols + j] = v[i];
            }
        }
    }
    let mut t = MixedTable::numeric(header, values, rows).py()?;
    for (j, c) in parsed.into_iter().enumerate() {
        if let Col::Cat(v) = c {
            let mut levels: Vec<String> = Vec::new();
            for (i, cell) in v.into_iter().enumerate() {
                match cell {
                    Some(s) => {
                        let s = s.trim().to_string();
                        let k = match levels.iter().position(|l| *l == s) {
                            Some(k) => k,
                            None => {
                                levels.push(s.clone());
                                levels.len() - 1
                            }
                        };
                        t.cells[i * cols + j] = k as f64;
                        t.raw[i][j] = s;
                    }
                    None => {
                        t.cells[i * cols + j] = f64::NAN;
                        t.raw[i][j] = String::new();
                    }
                }
            }
            t.kinds[j] = ColumnKind::Categorical { levels };
        }
    }
    Ok(t)
}

/// The posterior settings of `scoregen impute` (`ImputeSettings::impute_options`).
#[allow(clippy::too_many_arguments)]
fn impute_options(
    method: &str,
    particles: usize,
    runs: usize,
    steps: usize,
    grid: &str,
    resampling: &str,
    draws: usize,
    seed: u64,
) -> PyResult<ImputeOptions> {
    count("particles", particles, 1, usize::MAX / 64)?;
    count("runs", runs, 1, MAX_ROUNDS)?;
    count("steps", steps, 1, MAX_STEPS)?;
    count("n_imputations", draws, 0, MAX_ROUNDS)?;
    let method: Method = method.parse::<Method>().py()?;
    if matches!(method, Method::Exact) {
        return Err(invalid(
            "method 'exact' needs a Gaussian-mixture prior; a table model is a network",
        ));
    }
    let mut o = ImputeOptions {
        method,
        draws,
        runs,
        ..Default::default()
    };
    o.posterior.particles = particles;
    o.posterior.steps = steps;
    o.posterior.grid = grid.parse::<TimeGrid>().py()?;
    o.posterior.resampling = resampling.parse::<Resampling>().py()?;
    o.posterior.seed = seed;
    Ok(o)
}

/// A score model of a table with its encoding (the `--save-model` directory of
/// `scoregen impute`, in memory): what `ScoreImputer.fit` learns.
#[pyclass(module = "scoregen._scoregen", name = "TableModel", frozen)]
pub struct TableModel {
    files: Files,
    stored: StoredEncoding,
    score: LearnedScore,
    norm: Normalisation,
}

impl TableModel {
    fn from_dir(dir: &std::path::Path) -> PyResult<Self> {
        let stored = StoredEncoding::load(dir).py()?;
        let (score, meta) = load_model(dir).py()?;
        let files = read_files(dir)?;
        Ok(TableModel {
            files,
            stored,
            score,
            norm: meta.normalisation,
        })
    }
}

#[pymethods]
impl TableModel {
    /// Trains a table model as `scoregen impute` does without `--model`: masked denoising
    /// score matching on the incomplete table (MissDiff), then `em_rounds` rounds of
    /// DiffPuter's EM.
    #[staticmethod]
    #[pyo3(signature = (header, columns, train_steps = 3000, em_rounds = 4, em_steps = 1500, hidden = None,
        seed = 0, progress = true))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        header: Vec<String>,
        columns: &Bound<'_, PyList>,
        train_steps: usize,
        em_rounds: usize,
        em_steps: usize,
        hidden: Option<usize>,
        seed: u64,
        progress: bool,
    ) -> PyResult<Self> {
        let table = table_of(header, columns)?;
        if let Some(c) = table.empty_column() {
            return Err(invalid(format!(
                "column {c} has no observed value: nothing to learn it from (drop the column)"
            )));
        }
        count("train_steps", train_steps, 1, MAX_TRAIN_STEPS)?;
        count("em_rounds", em_rounds, 0, 1000)?;
        count("em_steps", em_steps, 0, MAX_TRAIN_STEPS)?;
        if let Some(h) = hidden {
            count("hidden", h, 1, 1 << 16)?;
        }
        let enc = Encoding::fit(&table);
        let mut fo = FitOptions {
            em_rounds,
            em_steps: em_steps.max(1),
            ..Default::default()
        };
        fo.train.steps = train_steps;
        fo.train.seed = seed;
        fo.hidden = hidden;
        fo.impute.posterior.seed = seed;
        let total = (fo.train.steps + fo.em_rounds * fo.em_steps) as u64;
        let tmp = TempDir::new()?;
        let dir = tmp.0.clone();
        compute(py, progress, total, "fit", |tk| {
            fit(&table, &enc, &fo, &dir, &mut |p| {
                if let FitProgress::Train { progress, .. } = p {
                    tk.tick(progress.step as u64)
                }
            })
        })?;
        TableModel::from_dir(&tmp.0)
    }

    /// Imputes the missing cells of a table with the same columns (`scoregen impute
    /// --model`). Returns `(completed, draws, uncertainty, ess_min)`: `completed`
    /// `[rows, cols]` (observed cells as given, missing numbers the posterior mean, missing
    /// labels the posterior mode as a level index of `levels`), `draws` a list of
    /// `n_imputations` completed tables (posterior draws), `uncertainty` (posterior sd, or
    /// `1 - p(mode)` for labels; 0 where observed) and each row's smallest ESS / N.
    #[pyo3(signature = (header, columns, method = "smc-impute", particles = 64, runs = 1, steps = 100,
        grid = "quadratic", resampling = "systematic", n_imputations = 0, seed = 0, progress = true))]
    #[allow(clippy::too_many_arguments)]
    fn transform<'py>(
        &self,
        py: Python<'py>,
        header: Vec<String>,
        columns: &Bound<'py, PyList>,
        method: &str,
        particles: usize,
        runs: usize,
        steps: usize,
        grid: &str,
        resampling: &str,
        n_imputations: usize,
        seed: u64,
        progress: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let io = impute_options(method, particles, runs, steps, grid, resampling, n_imputations, seed)?;
        let raw = table_of(header, columns)?;
        let (table, enc) = self.stored.apply(&raw).py()?;
        let total = table.incomplete_rows().len() as u64;
        let (score, norm) = (&self.score, &self.norm);
        let imp = compute_sync(py, progress, total, "impute", |tk| {
            impute_table(score, Some(norm), &table, &enc, &io, &|k, _| tk.tick(k as u64))
        })?;
        let (r, c) = (table.rows, table.cols);
        let draws = PyList::empty(py);
        for dr in imp.draws {
            draws.append(to_numpy(py, dr, r, c)?)?;
        }
        PyTuple::new(
            py,
            [
                to_numpy(py, imp.completed, r, c)?,
                draws.into_any(),
                to_numpy(py, imp.uncertainty, r, c)?,
                to_numpy1(py, imp.ess_min),
            ],
        )
    }

    /// Column names.
    #[getter]
    fn header(&self) -> Vec<String> {
        self.stored.header.clone()
    }

    /// Per column: `None` for a number, the list of labels for a label column.
    #[getter]
    fn levels(&self) -> Vec<Option<Vec<String>>> {
        self.stored.levels.clone()
    }

    /// Writes the model directory (checkpoint + `encoding.json`), usable as
    /// `scoregen impute --model path`.
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        std::fs::create_dir_all(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        write_files(&path, &self.files)
    }

    /// Reads a model directory written by `scoregen impute` (`--save-model`) or `save`.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        if !path.join(ENCODING_FILE).exists() {
            return Err(invalid(format!(
                "{}: no {ENCODING_FILE}: not a table model",
                path.display()
            )));
        }
        Self::from_dir(&path)
    }

    /// The model directory's files `{name: bytes}` (the pickle state).
    fn to_files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        files_to_py(py, &self.files)
    }

    /// A model from `to_files()`'s dict.
    #[staticmethod]
    fn from_files_dict(files: &Bound<'_, PyDict>) -> PyResult<Self> {
        let files = files_from_py(files)?;
        let tmp = TempDir::new()?;
        write_files(&tmp.0, &files)?;
        Self::from_dir(&tmp.0)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let f = slf.get_type().getattr("from_files_dict")?;
        Ok((f, PyTuple::new(py, [slf.get().to_files(py)?])?))
    }
}

/// A built-in real table (`scoregen impute --data builtin:NAME`: breast-cancer, wine,
/// iris, digits, penguins) as `(header, columns)`: numeric columns as float arrays (NaN
/// missing), label columns as lists of `str | None`.
#[pyfunction]
pub fn builtin_table<'py>(py: Python<'py>, name: &str) -> PyResult<(Vec<String>, Bound<'py, PyList>)> {
    let t = load_table(name).py()?;
    let cols = PyList::empty(py);
    for j in 0..t.cols {
        match &t.kinds[j] {
            ColumnKind::Numeric { .. } => {
                let v: Vec<f64> = (0..t.rows).map(|i| t.cells[i * t.cols + j]).collect();
                cols.append(to_numpy1(py, v))?;
            }
            ColumnKind::Categorical { levels } => {
                let v: Vec<Option<String>> = (0..t.rows)
                    .map(|i| {
                        let c = t.cells[i * t.cols + j];
                        (!c.is_nan()).then(|| levels[c as usize].clone())
                    })
                    .collect();
                cols.append(v)?;
            }
        }
    }
    Ok((t.header.clone(), cols))
}
