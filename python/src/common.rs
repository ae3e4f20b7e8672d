//! What every binding shares: errors, NumPy conversions, the progress bar with Ctrl-C,
//! running library calls with the GIL released, and in-memory checkpoints.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

pyo3::create_exception!(
    scoregen,
    ScoregenError,
    PyValueError,
    "An input the scoregen library refused, or a numerical failure it detected; the message is the library's."
);

/// A library error as a Python `ScoregenError` (a `ValueError`) with the library's message.
pub fn lib_err(e: scoregen::Error) -> PyErr {
    ScoregenError::new_err(e.to_string())
}

/// A refused argument of the bindings themselves, as a `ScoregenError`.
pub fn invalid(msg: impl Into<String>) -> PyErr {
    ScoregenError::new_err(msg.into())
}

/// `Ok` or the library error as a Python exception.
pub trait OrPy<T> {
    /// Converts the error.
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for scoregen::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(lib_err)
    }
}

impl<T> OrPy<T> for std::result::Result<T, candle_core::Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| lib_err(e.into()))
    }
}

/// `obj` as a C-contiguous, aligned float64 NumPy array: a float64 C-contiguous array is
/// used as it is (no copy); lists, integer arrays, DataFrames and misaligned buffers (a
/// pickle's out-of-band data) are converted (`numpy.array(obj, float64, order="C")`).
pub fn f64_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    let py = obj.py();
    if let Ok(a) = obj.cast::<PyArrayDyn<f64>>() {
        if a.is_c_contiguous() && a.readonly().as_slice().is_ok() {
            return Ok(a.clone());
        }
    }
    let np = py.import("numpy")?;
    let kw = PyDict::new(py);
    kw.set_item("dtype", np.getattr("float64")?)?;
    kw.set_item("order", "C")?;
    kw.set_item("copy", true)?;
    let a = np.call_method("array", (obj,), Some(&kw))?;
    Ok(a.cast_into::<PyArrayDyn<f64>>()?)
}

/// A `[n, d]` point set from any array-like: rows of `d` values, row-major. `what` names
/// the argument in errors. A 1-D input of length `n` is one column when `d = Some(1)` or
/// unknown, one point when `d` equals its length.
pub fn points(obj: &Bound<'_, PyAny>, what: &str, d: Option<usize>) -> PyResult<(Vec<f64>, usize, usize)> {
    let a = f64_array(obj)?;
    let shape = a.shape().to_vec();
    let (n, dd) = match (shape.as_slice(), d) {
        ([n, k], _) => (*n, *k),
        ([k], Some(d)) if *k == d && d > 1 => (1, d),
        ([n], _) => (*n, 1),
        (s, _) => return Err(invalid(format!("{what}: expected a 2-D array [n, d], got shape {s:?}"))),
    };
    if let Some(d) = d {
        if dd != d {
            return Err(invalid(format!(
                "{what}: points of dimension {d} expected, got shape [{n}, {dd}]"
            )));
        }
    }
    if n == 0 || dd == 0 {
        return Err(invalid(format!("{what}: empty array (shape [{n}, {dd}])")));
    }
    let ro = a.readonly();
    let v = ro.as_slice().map_err(|e| invalid(format!("{what}: {e}")))?.to_vec();
    Ok((v, n, dd))
}

/// Like [`points`], and every value finite.
pub fn finite_points(obj: &Bound<'_, PyAny>, what: &str, d: Option<usize>) -> PyResult<(Vec<f64>, usize, usize)> {
    let (v, n, d) = points(obj, what, d)?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(invalid(format!("{what}: contains NaN or infinite values")));
    }
    Ok((v, n, d))
}

/// A flat vector from any array-like.
pub fn vector(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    let a = f64_array(obj)?;
    if a.ndim() > 1 {
        return Err(invalid(format!(
            "{what}: expected a 1-D array, got shape {:?}",
            a.shape()
        )));
    }
    let ro = a.readonly();
    Ok(ro.as_slice().map_err(|e| invalid(format!("{what}: {e}")))?.to_vec())
}

/// A `[n, d]` NumPy array owning `v` (no copy).
pub fn to_numpy<'py>(py: Python<'py>, v: Vec<f64>, n: usize, d: usize) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, v).reshape([n, d])?.into_any())
}

/// A 1-D NumPy array owning `v`.
pub fn to_numpy1<'py>(py: Python<'py>, v: Vec<f64>) -> Bound<'py, PyAny> {
    PyArray1::from_vec(py, v).into_any()
}

/// An `[n, d]` f64 tensor on the CPU.
pub fn tensor(v: Vec<f64>, n: usize, d: usize) -> PyResult<Tensor> {
    Tensor::from_vec(v, (n, d), &Device::Cpu).py()
}

/// The rows of a `[n, d]` tensor as f64 with `(n, d)`.
pub fn rows(t: &Tensor) -> PyResult<(Vec<f64>, usize, usize)> {
    let t = t.to_dtype(DType::F64).py()?;
    scoregen::data::to_rows(&t).py()
}

/// Checks a count against `[lo, hi]`, naming the argument.
pub fn count(what: &str, v: usize, lo: usize, hi: usize) -> PyResult<()> {
    if v < lo || v > hi {
        return Err(invalid(format!("{what} must be in [{lo}, {hi}], got {v}")));
    }
    Ok(())
}

/// Step counts of samplers and posterior methods: at most 10^6 (the CLI's bound).
pub const MAX_STEPS: usize = 1_000_000;
/// Training steps: at most 10^8 (the CLI's bound).
pub const MAX_TRAIN_STEPS: usize = 100_000_000;
/// Rounds, runs, imputations: at most 10^4 (the CLI's bound).
pub const MAX_ROUNDS: usize = 10_000;

/// The payload of the unwind that stops a library call when Python has an exception to
/// raise (Ctrl-C, or an error in the progress bar).
struct Interrupt;

/// Progress reporting from inside a library call: a tqdm bar (if asked for and tqdm is
/// installed) and a check for signals (Ctrl-C), both at most every 0.1 s, with the GIL
/// taken only then.
pub struct Ticker {
    bar: Option<Py<PyAny>>,
    pos: u64,
    last: Instant,
    err: Option<PyErr>,
}

impl Ticker {
    /// Reports `done` units of work. On a pending Python exception (KeyboardInterrupt)
    /// it stops the computation by unwinding to [`compute`], which raises it.
    pub fn tick(&mut self, done: u64) {
        let now = Instant::now();
        if now.duration_since(self.last) < Duration::from_millis(100) {
            return;
        }
        self.last = now;
        let (bar, pos) = (&self.bar, &mut self.pos);
        let r = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(b) = bar {
                if done > *pos {
                    b.call_method1(py, "update", (done - *pos,))?;
                    *pos = done;
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            self.err = Some(e);
            std::panic::resume_unwind(Box::new(Interrupt));
        }
    }
}

/// A [`Ticker`] shared by worker threads (progress callbacks that must be `Sync`).
pub struct SyncTicker(pub Mutex<Ticker>);

impl SyncTicker {
    /// [`Ticker::tick`] from any thread; skipped while another thread reports.
    pub fn tick(&self, done: u64) {
        if let Ok(mut t) = self.0.try_lock() {
            t.tick(done)
        }
    }
}

fn make_bar(py: Python<'_>, total: u64, desc: &str) -> Option<Py<PyAny>> {
    let tqdm = py.import("tqdm.auto").ok()?.getattr("tqdm").ok()?;
    let kw = PyDict::new(py);
    kw.set_item("total", total).ok()?;
    kw.set_item("desc", desc).ok()?;
    kw.set_item("leave", false).ok()?;
    tqdm.call((), Some(&kw)).ok().map(|b| b.unbind())
}

/// Runs `f` with the GIL released, a progress bar of `total` steps named `desc` when
/// `progress`, and Ctrl-C checked between steps. Library errors become `ScoregenError`
/// (a `ValueError`); a `KeyboardInterrupt` during the call is raised once the library
/// has stopped; a panic (a bug) becomes a `RuntimeError`, never a crash.
pub fn compute<T: Send>(
    py: Python<'_>,
    progress: bool,
    total: u64,
    desc: &str,
    f: impl FnOnce(&mut Ticker) -> scoregen::Result<T> + Send,
) -> PyResult<T> {
    let bar = if progress { make_bar(py, total, desc) } else { None };
    let mut ticker = Ticker {
        bar,
        pos: 0,
        last: Instant::now(),
        err: None,
    };
    let t = &mut ticker;
    let r = py.detach(move || std::panic::catch_unwind(AssertUnwindSafe(move || f(t))));
    if let Some(b) = &ticker.bar {
        let _ = b.call_method0(py, "close");
    }
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(lib_err(e)),
        Err(payload) => match ticker.err.take() {
            Some(e) if payload.is::<Interrupt>() => Err(e),
            _ => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(PyRuntimeError::new_err(format!(
                    "internal error in scoregen (please report): {msg}"
                )))
            }
        },
    }
}

/// [`compute`] with a ticker usable from worker threads.
pub fn compute_sync<T: Send>(
    py: Python<'_>,
    progress: bool,
    total: u64,
    desc: &str,
    f: impl FnOnce(&SyncTicker) -> scoregen::Result<T> + Send,
) -> PyResult<T> {
    compute(py, progress, total, desc, move |t| {
        let taken = std::mem::replace(
            t,
            Ticker {
                bar: None,
                pos: 0,
                last: Instant::now(),
                err: None,
            },
        );
        let shared = SyncTicker(Mutex::new(taken));
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&shared)));
        *t = shared.0.into_inner().unwrap_or_else(|p| p.into_inner());
        match out {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh private directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new() -> PyResult<TempDir> {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let k = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let p = base.join(format!("scoregen-py-{}-{k}-{nanos}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(PyRuntimeError::new_err(format!(
            "cannot create a temporary directory in {}",
            base.display()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files of a checkpoint directory (name, bytes), sorted by name: what a model
/// carries in memory and in its pickle.
pub type Files = Vec<(String, Vec<u8>)>;

/// Reads every regular file of `dir` (a checkpoint written by the library).
pub fn read_files(dir: &Path) -> PyResult<Files> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    for entry in rd {
        let entry = entry.map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        let p = entry.path();
        if !p.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|e| invalid(format!("{}: {e}", p.display())))?;
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// Writes `files` into `dir` (each atomically).
pub fn write_files(dir: &Path, files: &Files) -> PyResult<()> {
    for (name, bytes) in files {
        let plain = Path::new(name).file_name().is_some_and(|f| f == name.as_str());
        if !plain {
            return Err(invalid(format!("'{name}' is not a plain file name")));
        }
        scoregen::io::write_atomic(dir.join(name), |w| Ok(w.write_all(bytes)?)).py()?;
    }
    Ok(())
}

/// `files` as a Python dict `{name: bytes}` (a pickle's state).
pub fn files_to_py<'py>(py: Python<'py>, files: &Files) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, bytes) in files {
        d.set_item(name, PyBytes::new(py, bytes))?;
    }
    Ok(d)
}

/// A `{name: bytes}` dict back as files.
pub fn files_from_py(d: &Bound<'_, PyDict>) -> PyResult<Files> {
    let mut out = Vec::new();
    for (k, v) in d.iter() {
        out.push((k.extract::<String>()?, v.extract::<Vec<u8>>()?));
    }
    out.sort();
    Ok(out)
}
