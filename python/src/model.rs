//! `Model` (a trained score network, in memory as its checkpoint files), `train` and the
//! built-in data sets.

use std::path::PathBuf;
use std::sync::Mutex;

use candle_core::Tensor;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use scoregen::classes::{sample_model, ClassChoice};
use scoregen::data::builtin;
use scoregen::nn::train::read_meta;
use scoregen::nn::{
    load_model, train as lib_train, Arch, CheckpointMeta, LearnedScore, Loss, MlpConfig, TimeSampling, TrainConfig,
    TrainSetup, UnetConfig,
};
use scoregen::process::ProcessKind;
use scoregen::sample::standardised_process_of;
use scoregen::score::{Parametrisation, Score};

use crate::common::*;
use crate::mixture::PyProcess;
use crate::sampling::SamplerSpec;

/// A trained score network with its data normalisation: the checkpoint `scoregen train`
/// writes, held in memory (`save` writes it, `Model.load` reads one, both in the CLI's
/// format, docs/formats.md). Pickles as its weights and metadata, not as a path.
#[pyclass(module = "scoregen._scoregen", name = "Model")]
pub struct PyModel {
    pub files: Files,
    pub meta: CheckpointMeta,
    /// The loaded network; taken out while a sampler runs (`sample_model` owns it).
    pub score: Mutex<Option<LearnedScore>>,
}

impl PyModel {
    /// Loads the checkpoint in `dir` (as `scoregen sample --model` does) and keeps its files.
    pub fn from_dir(dir: &std::path::Path) -> PyResult<Self> {
        let (score, meta) = load_model(dir).py()?;
        let files = read_files(dir)?;
        Ok(PyModel {
            files,
            meta,
            score: Mutex::new(Some(score)),
        })
    }

    /// The model from its files (written to a temporary directory and loaded from there).
    pub fn from_files(files: Files) -> PyResult<Self> {
        let tmp = TempDir::new()?;
        write_files(&tmp.0, &files)?;
        let (score, meta) = load_model(&tmp.0).py()?;
        Ok(PyModel {
            files,
            meta,
            score: Mutex::new(Some(score)),
        })
    }

    /// A fresh copy of the network (for a class-conditional score, which consumes one).
    fn fresh(&self) -> PyResult<LearnedScore> {
        let tmp = TempDir::new()?;
        write_files(&tmp.0, &self.files)?;
        Ok(load_model(&tmp.0).py()?.0)
    }

    /// Runs `f` on the loaded network (taken out of its slot and put back).
    /// A network the call drops (a failed sampler) is loaded afresh next time.
    pub fn with_score<T>(&self, f: impl FnOnce(LearnedScore) -> (Option<LearnedScore>, PyResult<T>)) -> PyResult<T> {
        let taken = self
            .score
            .lock()
            .map_err(|_| invalid("model poisoned by an earlier panic"))?
            .take();
        let score = match taken {
            Some(s) => s,
            None => self.fresh()?,
        };
        let (back, r) = f(score);
        if let Ok(mut slot) = self.score.lock() {
            *slot = back;
        }
        r
    }
}

#[pymethods]
impl PyModel {
    /// Reads a checkpoint directory written by `scoregen train` (or `Model.save`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Self::from_dir(&path)
    }

    /// Writes the checkpoint into directory `path` (created if needed; each file
    /// atomically), readable by `scoregen sample --model path`. Refuses a directory that
    /// already holds a checkpoint unless `overwrite`.
    #[pyo3(signature = (path, overwrite = false))]
    fn save(&self, path: PathBuf, overwrite: bool) -> PyResult<()> {
        if path.join("checkpoint.json").exists() && !overwrite {
            return Err(invalid(format!(
                "{}: a checkpoint is already there (pass overwrite=True)",
                path.display()
            )));
        }
        if path.exists() && !path.is_dir() {
            return Err(invalid(format!("{}: is a file, expected a directory", path.display())));
        }
        std::fs::create_dir_all(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        write_files(&path, &self.files)?;
        // The written checkpoint must read back.
        read_meta(&path).py()?;
        Ok(())
    }

    /// The data dimension `d`.
    #[getter]
    fn dim(&self) -> usize {
        self.meta.arch.dim()
    }

    /// The number of classes (0 for an unconditional model).
    #[getter]
    fn n_classes(&self) -> usize {
        self.meta.arch.n_classes()
    }

    /// The network kind, `"mlp"` or `"unet"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.meta.arch.kind()
    }

    /// `(height, width)` of an image model, else `None`.
    #[getter]
    fn image_shape(&self) -> Option<(usize, usize)> {
        self.meta.arch.image_shape()
    }

    /// Optimiser steps the model was trained for.
    #[getter]
    fn step(&self) -> usize {
        self.meta.step
    }

    /// The latest validation loss (EMA weights), if any.
    #[getter]
    fn val_loss(&self) -> Option<f64> {
        self.meta.val_loss
    }

    /// The forward process the network was trained for.
    #[getter]
    fn process(&self) -> PyProcess {
        PyProcess {
            inner: self.meta.process.clone(),
        }
    }

    /// The training label frequencies of a class-conditional model.
    #[getter]
    fn class_weights(&self) -> Option<Vec<f64>> {
        self.meta.class_weights.clone()
    }

    /// The checkpoint's metadata (`checkpoint.json`) as a JSON string.
    #[getter]
    fn meta_json(&self) -> String {
        serde_json::to_string(&self.meta).unwrap_or_default()
    }

    /// The learned score `grad_x log p_t(x)` at time `t` at each row of `x` (`[n, d]`, in
    /// the data's units: the network's normalisation `z = (x - mean) / sd` is undone,
    /// `score_x = score_z / sd`). With `class_`, the class-conditional score with
    /// classifier-free guidance weight `guidance`, `(1 + w) s(x | c) - w s(x)`.
    #[pyo3(signature = (t, x, class_ = None, guidance = 0.0))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        t: f64,
        x: &Bound<'py, PyAny>,
        class_: Option<u32>,
        guidance: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = &self.meta.process;
        if !(t.is_finite() && t > 0.0 && t <= p.t_max()) {
            return Err(invalid(format!("t must be in (0, T] = (0, {}], got {t}", p.t_max())));
        }
        let d = self.dim();
        let (v, n, _) = finite_points(x, "x", Some(d))?;
        let norm = &self.meta.normalisation;
        let xt = tensor(v, n, d)?;
        let eval = |s: &LearnedScore| -> scoregen::Result<Tensor> {
            let z = norm.normalise(&xt)?;
            let sz = s.score(t, &z)?;
            let sd = Tensor::from_vec(norm.std.clone(), (1, d), &candle_core::Device::Cpu)?;
            Ok(sz.broadcast_div(&sd)?)
        };
        let out = match class_ {
            Some(c) => {
                let s = self.fresh()?.conditional(c, guidance).py()?;
                py.detach(|| eval(&s)).py()?
            }
            None => {
                if guidance != 0.0 {
                    return Err(invalid("guidance needs a class_"));
                }
                self.with_score(|s| {
                    let r = py.detach(|| eval(&s));
                    (Some(s), r.py())
                })?
            }
        };
        let (g, n, d) = rows(&out)?;
        to_numpy(py, g, n, d)
    }

    /// `n` samples by a reverse-time sampler, exactly as `scoregen sample --model` draws
    /// them (same options and seed: the same samples, bit for bit).
    ///
    /// * `sampler`: `em` (the `b_t` family by Euler–Maruyama; `b = 1` reverse SDE,
    ///   `b = 0` probability-flow ODE), `ei`, `heun`, `ddpm`, `ddim` (`eta`), `ald`,
    ///   `pc` (`predictor`, `corrector_steps`, `snr`), `rk45`;
    /// * `grid`: `uniform`, `quadratic` (default), `edm`, `edm:RHO`, `logsnr`;
    /// * `class_` / `guidance`: one class with classifier-free guidance
    ///   `(1 + w) s(x | c) - w s(x)`; `each_class` draws `n` of every class (rows by
    ///   class); otherwise a class-conditional model draws each row's class from its
    ///   training frequencies, or samples its null class with `null_class=True`.
    #[pyo3(signature = (n = 2000, sampler = "em", steps = 1000, class_ = None, guidance = 0.0, seed = 0,
        each_class = false, null_class = false, b = 1.0, eta = 0.0, snr = 0.16, predictor = "em",
        corrector_steps = 1, grid = None, t_min = 1e-3, denoise = true, progress = true))]
    #[allow(clippy::too_many_arguments)]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        sampler: &str,
        steps: usize,
        class_: Option<u32>,
        guidance: f64,
        seed: u64,
        each_class: bool,
        null_class: bool,
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
        count("n", n, 1, usize::MAX / self.dim().max(1) / 16)?;
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
        let k = self.n_classes();
        // As `SampleArgs::choice` of the CLI.
        let choice = match (class_, each_class) {
            (Some(_), true) => return Err(invalid("class_ and each_class exclude each other")),
            (_, true) if k == 0 => return Err(invalid("each_class: this model was trained without classes")),
            (_, true) => ClassChoice::Each { guidance },
            (Some(class), false) => ClassChoice::Fixed { class, guidance },
            (None, false) if guidance != 0.0 => return Err(invalid("guidance needs a class_ or each_class")),
            (None, false) if null_class => ClassChoice::Null,
            (None, false) => ClassChoice::default_for(self.meta.class_weights.as_deref()),
        };
        let total = opts.steps as u64
            * if matches!(choice, ClassChoice::Each { .. }) {
                k.max(1) as u64
            } else {
                1
            };
        let norm = &self.meta.normalisation;
        let x = self.with_score(|score| {
            let mut back: Option<LearnedScore> = None;
            let r = compute(py, progress, total, sampler, |tk| {
                let mut done_before = 0u64;
                let mut last_class: Option<Option<u32>> = None;
                let (x, score) = sample_model(score, norm, &choice, &s, &opts, n, &mut |c, k, _| {
                    if last_class.is_some_and(|l| l != c) {
                        done_before += opts.steps as u64;
                    }
                    last_class = Some(c);
                    tk.tick(done_before + k as u64)
                })?;
                back = Some(score);
                Ok(x)
            });
            (back, r)
        })?;
        let (v, n, d) = rows(&x)?;
        to_numpy(py, v, n, d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(kind={:?}, dim={}, n_classes={}, step={})",
            self.kind(),
            self.dim(),
            self.n_classes(),
            self.meta.step
        )
    }

    /// The checkpoint's files `{name: bytes}` (the pickle state).
    fn to_files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        files_to_py(py, &self.files)
    }

    /// A model from `to_files()`'s dict.
    #[staticmethod]
    fn from_files_dict(files: &Bound<'_, PyDict>) -> PyResult<Self> {
        Self::from_files(files_from_py(files)?)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let f = slf.get_type().getattr("from_files_dict")?;
        let state = slf.borrow().to_files(py)?;
        Ok((f, PyTuple::new(py, [state])?))
    }
}

/// Trains a score network by denoising score matching, exactly as `scoregen train` does
/// with the same options (its defaults included), and returns the model.
#[pyfunction]
#[pyo3(signature = (data, labels = None, model = None, steps = None, batch = None, lr = None, hidden = None,
    depth = None, channels = None, blocks = None, image_shape = None, param = None, process = "ou",
    time_sampling = None, loss = "dsm", seed = 0, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    labels: Option<&Bound<'_, PyAny>>,
    model: Option<&str>,
    steps: Option<usize>,
    batch: Option<usize>,
    lr: Option<f64>,
    hidden: Option<usize>,
    depth: Option<usize>,
    channels: Option<Vec<usize>>,
    blocks: Option<usize>,
    image_shape: Option<(usize, usize)>,
    param: Option<&str>,
    process: &str,
    time_sampling: Option<&str>,
    loss: &str,
    seed: u64,
    progress: bool,
) -> PyResult<PyModel> {
    let param: Option<Parametrisation> = param.map(str::parse::<Parametrisation>).transpose().py()?;
    let loss: Loss = loss.parse::<Loss>().py()?;
    let time_sampling: Option<TimeSampling> = time_sampling.map(str::parse::<TimeSampling>).transpose().py()?;
    let process_kind: ProcessKind = process.parse::<ProcessKind>().py()?;
    let (x, n, d) = finite_points(data, "data", None)?;
    let (labels, n_classes) = match labels {
        Some(l) => {
            let v = vector(l, "labels")?;
            let (l, _) = scoregen::data::labels_from(&v, "labels").py()?;
            if l.len() != n {
                return Err(invalid(format!("{} labels for {n} rows of data", l.len())));
            }
            let k = l.iter().max().map_or(0, |m| *m as usize + 1);
            (Some(l), k)
        }
        None => (None, 0),
    };
    // The network, as `NetChoice` of the CLI.
    let kind = match model {
        Some(m @ ("mlp" | "unet")) => m,
        Some(m) => return Err(invalid(format!("unknown model '{m}' (expected mlp or unet)"))),
        None if image_shape.is_some() => "unet",
        None => "mlp",
    };
    let only = |what: &str, given: bool, net: &str| -> PyResult<()> {
        if given {
            return Err(invalid(format!("{what} applies to model='{net}' only")));
        }
        Ok(())
    };
    let (arch, defaults) = if kind == "mlp" {
        only("channels", channels.is_some(), "unet")?;
        only("blocks", blocks.is_some(), "unet")?;
        only("image_shape", image_shape.is_some(), "unet")?;
        let a = Arch::Mlp(MlpConfig {
            dim: d,
            hidden: hidden.unwrap_or(256),
            depth: depth.unwrap_or(3),
            fourier: 16,
            n_classes,
            param: param.unwrap_or(MlpConfig::reference(1).param),
        });
        (a, (4000, 512, 1e-3))
    } else {
        only("hidden", hidden.is_some(), "mlp")?;
        only("depth", depth.is_some(), "mlp")?;
        let (h, w) = image_shape.ok_or_else(|| invalid("model='unet' needs image_shape=(h, w)"))?;
        if h == 0 || w == 0 {
            return Err(invalid("image_shape: expected positive integers"));
        }
        let mut cfg = UnetConfig {
            param: param.unwrap_or(UnetConfig::for_image(h, w).param),
            ..UnetConfig::for_image(h, w)
        };
        if let Some(c) = channels {
            cfg.channels = c;
        }
        if let Some(b) = blocks {
            cfg.blocks = b;
        }
        if cfg.dim() != d {
            return Err(invalid(format!(
                "image shape {h}x{w} has {} pixels, the data {d} columns",
                cfg.dim()
            )));
        }
        (Arch::Unet(UnetConfig { n_classes, ..cfg }), (1500, 64, 2e-3))
    };
    let (steps, batch, lr) = (
        steps.unwrap_or(defaults.0),
        batch.unwrap_or(defaults.1),
        lr.unwrap_or(defaults.2),
    );
    count("steps", steps, 1, MAX_TRAIN_STEPS)?;
    count("batch", batch, 1, usize::MAX)?;
    if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
        return Err(invalid(format!("lr must be in (0, 10], got {lr}")));
    }
    let param = match &arch {
        Arch::Mlp(c) => c.param,
        Arch::Unet(c) => c.param,
    };
    let config = TrainConfig {
        time_sampling: time_sampling.unwrap_or_else(|| TimeSampling::default_for(param)),
        steps,
        batch,
        lr,
        checkpoint_every: 1000,
        seed,
        loss,
        ..Default::default()
    };
    let tmp = TempDir::new()?;
    let setup = TrainSetup {
        arch,
        process: standardised_process_of(process_kind, d),
        config,
        checkpoint_dir: Some(&tmp.0),
        resume: false,
        device: candle_core::Device::Cpu,
    };
    let xt = tensor(x, n, d)?;
    compute(py, progress, steps as u64, "train", |tk| {
        lib_train(&xt, labels.as_deref(), &setup, &mut |p| tk.tick(p.step as u64))
    })?;
    PyModel::from_dir(&tmp.0)
}

/// `(x, labels, image_shape)` of [`builtin_data`].
type BuiltinData<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>, Option<(usize, usize)>);

/// A built-in data set, as `scoregen train --data builtin:NAME` loads it: `(x, labels,
/// image_shape)` with `x` `[n, d]`, `labels` an int array or `None`, `image_shape`
/// `(h, w)` or `None`. `n` points are drawn from a synthetic set with `seed` (ignored by
/// fixed sets such as digits).
#[pyfunction]
#[pyo3(signature = (name, n = 10000, seed = 0))]
pub fn builtin_data<'py>(py: Python<'py>, name: &str, n: usize, seed: u64) -> PyResult<BuiltinData<'py>> {
    count("n", n, 1, 10_000_000)?;
    let ds = builtin::load(name, Some(n), seed).py()?;
    let (v, n, d) = rows(&ds.x)?;
    let labels = ds
        .labels
        .map(|l| numpy::PyArray1::from_vec(py, l.into_iter().map(i64::from).collect::<Vec<i64>>()).into_any());
    Ok((to_numpy(py, v, n, d)?, labels, ds.image_shape))
}
