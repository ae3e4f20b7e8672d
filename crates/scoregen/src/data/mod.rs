//! Reading and writing data files: `.npy` arrays and numeric CSV tables.
//!
//! Points are `[n, d]` tensors on the CPU. [`read_points`] / [`write_points`] dispatch on
//! the file extension; [`read_npy`], [`read_csv`] and friends give finer control. Every
//! writer goes through [`write_atomic`], so a failed write never leaves a half-written file
//! behind and never damages an existing one.
//!
//! Errors about a file (cannot be opened, parsed or written) are [`Error::File`] carrying
//! the path and a one-line message; row numbers in CSV messages are 1-based file line
//! numbers.

pub mod builtin;
pub(crate) mod csv;
mod npy;

use std::path::Path;

use candle_core::Tensor;

pub use self::csv::{read_csv, write_csv, CsvOptions, HeaderMode, Table};
pub use self::npy::{read_npy, read_npy_f64, write_npy};
pub use crate::io::write_atomic;

use crate::{Error, Result};

/// The lower-cased extension of `path`, if any.
fn extension(path: &Path) -> Option<String> {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// The largest magnitude accepted for any number a user gives (data values, problem-file
/// entries): every model here squares and sums such values (distances, variances,
/// normalisations), which must stay finite, so `|x| <= 1e100` leaves room for `d` and `K`
/// of any size. Rescale data with larger values.
pub const MAX_ABS_VALUE: f64 = 1e100;

/// The first entry of `v` (row-major `[n, d]`) that is not finite or exceeds
/// [`MAX_ABS_VALUE`], as a message naming its row and column.
pub fn check_values(v: &[f64], d: usize) -> Option<String> {
    let i = v.iter().position(|x| x.is_nan() || x.abs() > MAX_ABS_VALUE)?;
    let (r, c) = (i / d.max(1) + 1, i % d.max(1) + 1);
    Some(if v[i].is_finite() {
        format!(
            "value {} at row {r}, column {c} is too large in magnitude (at most 1e100: rescale the data)",
            crate::error::number(v[i])
        )
    } else {
        format!("NaN or infinite value at row {r}, column {c} (not allowed here)")
    })
}

/// The one conversion from the tensor layer (`sample`, `nn`, `score`: candle [`Tensor`]s of
/// shape `[n, d]`) to the row-major layer (`inverse`, `smc`, `impute`, `metrics`: `Vec<f64>`
/// of `n * d` entries, row `i` at `[i d, (i + 1) d)`): the values of a 2-D tensor as
/// row-major `f64`, with its shape `(n, d)`. Any other rank is an [`Error::InvalidInput`].
/// See `docs/architecture.md`, "One data type per layer".
pub fn to_rows(x: &Tensor) -> Result<(Vec<f64>, usize, usize)> {
    let (n, d) = match *x.dims() {
        [n, d] => (n, d),
        ref dims => return Err(Error::invalid(format!("expected a [n, d] tensor, got shape {dims:?}"))),
    };
    Ok((
        x.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        n,
        d,
    ))
}

/// The inverse of [`to_rows`]: the row-major `f64` values `v` (`n * d` of them) as an
/// `[n, d]` tensor of `dtype` on `device`.
pub fn from_rows(v: Vec<f64>, d: usize, dtype: candle_core::DType, device: &candle_core::Device) -> Result<Tensor> {
    if d == 0 || !v.len().is_multiple_of(d) {
        return Err(Error::invalid(format!(
            "{} values do not make rows of dimension {d}",
            v.len()
        )));
    }
    let n = v.len() / d;
    Ok(Tensor::from_vec(v, (n, d), device)?.to_dtype(dtype)?)
}

/// The one standardisation of the crate: per-column means and standard deviations of the
/// row-major `[n, d]` values `v`, skipping NaN (missing) cells. Column `j` with `n_j`
/// non-NaN values `x_ij` gets `mean_j = sum_i x_ij / n_j` and
/// `sd_j = sqrt(sum_i (x_ij - mean_j)^2 / (n_j - ddof))` (`ddof = 1`: the unbiased
/// variance; `0`: the population variance), with `sd_j = 1` where the variance is not a
/// finite number above `1e-24` (a constant column, or `n_j <= ddof`) and `mean_j = 0` for
/// a column with no values. The sums add `x / n_j` (and `(x - mean_j)^2 / (n_j - ddof)`)
/// term by term, in row order. Used by
/// `nn::model::Normalisation` (the trained networks' coordinates), `impute::Encoding`
/// (table coordinates) and the missingness mechanisms of `impute::mechanism`.
pub fn column_mean_sd(v: &[f64], d: usize, ddof: usize) -> (Vec<f64>, Vec<f64>) {
    let mut count = vec![0usize; d];
    for r in v.chunks(d.max(1)) {
        for (c, x) in count.iter_mut().zip(r) {
            *c += usize::from(!x.is_nan());
        }
    }
    let mut mean = vec![0.0; d];
    for r in v.chunks(d.max(1)) {
        for j in 0..d.min(r.len()) {
            if !r[j].is_nan() {
                mean[j] += r[j] / count[j] as f64;
            }
        }
    }
    let mut var = vec![0.0; d];
    for r in v.chunks(d.max(1)) {
        for j in 0..d.min(r.len()) {
            if !r[j].is_nan() && count[j] > ddof {
                var[j] += (r[j] - mean[j]).powi(2) / (count[j] - ddof) as f64;
            }
        }
    }
    let sd = var
        .iter()
        .map(|v| if v.is_finite() && *v > 1e-24 { v.sqrt() } else { 1.0 })
        .collect();
    (mean, sd)
}

/// The most classes a class-conditional model (or a labelled data set) may have.
pub const MAX_CLASSES: usize = 1 << 16;

const UNSUPPORTED_EXT: &str = "unsupported extension (expected .npy or .csv)";

/// Reads an `[n, d]` point set, choosing the format from the extension:
/// `.npy` → [`read_npy`] (keeps F32/F64); `.csv` / `.txt` → [`read_csv`] with default
/// options and no missing values allowed, then [`Table::to_tensor`] (F64). NaN, infinite
/// and huge values (beyond [`MAX_ABS_VALUE`]) are an error in every format (missing values
/// are legal only where a command says so).
///
/// For `.txt` the delimiter is sniffed from the first line (comma if it has one, else tab,
/// else a single space, as written by `numpy.savetxt`). Extensions are matched
/// case-insensitively; any other extension is an [`Error::File`].
pub fn read_points(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let t = match extension(path).as_deref() {
        Some("npy") => read_npy(path)?,
        Some("csv") => read_csv(path, &CsvOptions::default())?.to_tensor()?,
        Some("txt") => {
            let opts = CsvOptions {
                delimiter: self::csv::sniff_delimiter(path)?,
                ..CsvOptions::default()
            };
            read_csv(path, &opts)?.to_tensor()?
        }
        _ => return Err(Error::file(path, UNSUPPORTED_EXT)),
    };
    let (_, d) = t.dims2()?;
    let v = to_rows(&t)?.0;
    match check_values(&v, d) {
        Some(msg) => Err(Error::file(path, msg)),
        None => Ok(t),
    }
}

/// Class labels from numbers read from a file (a labels file, or a label column):
/// returns the labels and the number of classes `K = max + 1`. Each value must be a
/// non-negative integer and `K` at most [`MAX_CLASSES`], checked before
/// anything of size `K` (one-hot codes, class embeddings, class frequencies) is allocated.
/// `what` names the source in messages ([`Error::InvalidInput`], 1-based rows).
pub fn labels_from(values: &[f64], what: &str) -> Result<(Vec<u32>, usize)> {
    let most = MAX_CLASSES;
    let labels = values
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if !(c >= 0.0 && c.fract() == 0.0) {
                Err(Error::invalid(format!(
                    "{what}: label {} in row {} is not a non-negative integer",
                    crate::error::number(c),
                    i + 1
                )))
            } else if c >= most as f64 {
                Err(Error::invalid(format!(
                    "{what}: label {} in row {} is too large (labels are class numbers 0 to {})",
                    crate::error::number(c),
                    i + 1,
                    most - 1
                )))
            } else {
                Ok(c as u32)
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    let k = labels.iter().max().map_or(0, |m| *m as usize + 1);
    Ok((labels, k))
}

/// Writes an `[n, d]` point set, choosing the format from the extension: `.npy` →
/// [`write_npy`]; `.csv` (or `.txt`, comma-separated) → [`write_csv`] without a header.
/// Any other extension is an [`Error::File`].
pub fn write_points(path: impl AsRef<Path>, points: &Tensor) -> Result<()> {
    let path = path.as_ref();
    match extension(path).as_deref() {
        Some("npy") => write_npy(path, points),
        Some("csv") | Some("txt") => write_csv(path, None, points),
        _ => Err(Error::file(path, UNSUPPORTED_EXT)),
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A temporary directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "scoregen-data-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Names of the entries in the directory, sorted.
        pub fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::TempDir;
    use super::*;
    use candle_core::{DType, Device};
    use std::{fs, io};

    #[test]
    fn write_atomic_writes_and_replaces() {
        let dir = TempDir::new();
        let p = dir.join("a.txt");
        write_atomic(&p, |w| Ok(w.write_all(b"first")?)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, |w| Ok(w.write_all(b"second")?)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(dir.entries(), vec!["a.txt".to_string()]);
    }

    #[test]
    fn write_atomic_failure_leaves_no_file() {
        let dir = TempDir::new();
        let p = dir.join("out.csv");
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial data")?;
            Err(Error::invalid("boom"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(ref m) if m == "boom"));
        assert!(!p.exists());
        assert!(dir.entries().is_empty(), "left: {:?}", dir.entries());
    }

    #[test]
    fn write_atomic_failure_keeps_existing_file() {
        let dir = TempDir::new();
        let p = dir.join("keep.npy");
        fs::write(&p, b"precious").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"garbage")?;
            Err(Error::Io(io::Error::other("disk on fire")))
        })
        .unwrap_err();
        // A plain i/o error from the closure is reported against the path.
        assert!(matches!(err, Error::File { .. }), "{err}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"precious");
        assert_eq!(dir.entries(), vec!["keep.npy".to_string()]);
    }

    #[test]
    fn write_atomic_missing_directory() {
        let dir = TempDir::new();
        let p = dir.join("no/such/dir/x.npy");
        let err = write_atomic(&p, |_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::File { .. }));
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = write_atomic(dir.path(), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn points_dispatch() {
        let dir = TempDir::new();
        let t = Tensor::from_vec(vec![1.5f64, -2.0, 0.1, 1e-300], (2, 2), &Device::Cpu).unwrap();
        for name in ["p.npy", "p.csv", "P.CSV", "p.txt"] {
            let p = dir.join(name);
            write_points(&p, &t).unwrap();
            let back = read_points(&p).unwrap();
            assert_eq!(back.dtype(), DType::F64);
            assert_eq!(back.to_vec2::<f64>().unwrap(), t.to_vec2::<f64>().unwrap(), "{name}");
        }
        let p = dir.join("p.json");
        let err = write_points(&p, &t).unwrap_err();
        assert!(err.to_string().contains("unsupported extension"), "{err}");
        let err = read_points(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: unsupported extension (expected .npy or .csv)", p.display())
        );
        assert!(read_points(dir.join("noext")).is_err());
    }

    #[test]
    fn read_points_txt_space_delimited() {
        let dir = TempDir::new();
        let p = dir.join("s.txt");
        fs::write(&p, "1.000000000000000000e+00 2.5e-01\n-3 4\n").unwrap();
        let t = read_points(&p).unwrap();
        assert_eq!(t.to_vec2::<f64>().unwrap(), vec![vec![1.0, 0.25], vec![-3.0, 4.0]]);
    }

    #[test]
    fn labels_are_checked_before_any_allocation() {
        let (l, k) = labels_from(&[0.0, 2.0, 1.0], "labels.csv").unwrap();
        assert_eq!((l, k), (vec![0, 2, 1], 3));
        // Issue 15: a label of 10^9 made the trainer allocate a 10^9-row class embedding.
        let e = labels_from(&[0.0, 1e9], "labels.csv").unwrap_err().to_string();
        assert!(e.contains("label 1000000000 in row 2 is too large"), "{e}");
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            assert!(labels_from(&[bad], "x").is_err(), "{bad}");
        }
        assert_eq!(labels_from(&[], "x").unwrap().1, 0);
    }

    #[test]
    fn read_points_csv_rejects_missing() {
        let dir = TempDir::new();
        let p = dir.join("m.csv");
        fs::write(&p, "a,b\n1,2\n3,NA\n").unwrap();
        let err = read_points(&p).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing value at row 3, column 2 (missing values are not allowed here)"),
            "{err}"
        );
    }
}
