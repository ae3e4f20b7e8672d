//! The problem file (docs/formats.md), parsed and validated.
//!
//! ```json
//! {"prior": {"kind": "gaussian_mixture", "weights": [...], "means": [[...]],
//!            "covariances": [[[...]]]},
//!  "operator": {"kind": "dense", "matrix": [[...]]},
//!  "y": [...], "sigma_y": 0.3}
//! ```
//!
//! * `prior.kind`: `"gaussian_mixture"` (weights, means and one of `covariances` (full),
//!   `variances` (one diagonal per component) or `variance` (one number, or one per
//!   component)); `"gaussian"` (`mean` and one of `covariance`, `variances`, `variance`);
//!   `"model"` (`path` of a trained checkpoint).
//! * `operator.kind`: `"dense"` (`matrix`, `dy x dx`), `"mask"` (`observed`: indices; `y`
//!   are the observed values in that order), `"svd"` (`u` (`dy x r`), `s` (`r`), `v`
//!   (`dx x r`), `A = U diag(s) V^T`).
//! * `y` and `sigma_y >= 0` go with an operator. `operator`, `y` and `sigma_y` are optional
//!   for commands that only sample the prior.
//!
//! Every inconsistency (shape mismatch between `A`, `y` and the prior; a covariance that is
//! not positive definite; a negative `sigma_y`; a mask index out of range; an `svd`
//! operator whose `u` or `v` does not have orthonormal columns) is an
//! [`Error::InvalidInput`] or [`Error::File`] naming the problem.
//!
//! Sizes are checked before anything is allocated from them: an operator's dimension
//! (`dim` of a mask, `image` of an image operator) must equal the prior's, and no matrix
//! that a method may build from the file (an operator's `dy x dx`, a mixture component's
//! `d x d` covariance) may have more than [`MAX_MATRIX_ENTRIES`] entries.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{excerpt, number};
use crate::score::{Covariance, GaussianMixture};
use crate::{Error, Result};

/// The most entries of a dense matrix that a problem file may imply: an operator's
/// `dy x dx` (methods may form it densely, and its SVD factors) and a mixture prior's
/// `d x d` covariance. `2^25` entries are 256 MiB of `f64`: a 5792-dimensional prior,
/// or a 4096-pixel (64 x 64) image observed in full.
pub const MAX_MATRIX_ENTRIES: usize = 1 << 25;

/// The tolerance on `max |U^T U - I|` and `max |V^T V - I|` of an `svd` operator: factors
/// written with at least 7 significant digits pass.
pub const SVD_ORTHONORMAL_TOL: f64 = 1e-6;

/// The prior of a problem.
#[derive(Clone, Debug)]
pub enum Prior {
    /// A Gaussian or Gaussian mixture (exact scores at every `t`).
    Mixture(GaussianMixture),
    /// A trained model, by the path of its checkpoint directory.
    Model(PathBuf),
}

/// A linear observation operator `A`.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    /// A dense `dy x dx` matrix (row-major).
    Dense {
        /// Rows `dy`.
        rows: usize,
        /// Columns `dx`.
        cols: usize,
        /// Entries, row-major.
        a: Vec<f64>,
    },
    /// Observation of the coordinates `observed` of `x` (in that order).
    Mask {
        /// `dx`.
        dim: usize,
        /// Observed indices, distinct, each `< dx`.
        observed: Vec<usize>,
    },
    /// `A = U diag(s) V^T` with `U` (`dy x r`), `V` (`dx x r`), row-major.
    Svd {
        /// `dy`.
        rows: usize,
        /// `dx`.
        cols: usize,
        /// Left singular vectors, `dy x r`.
        u: Vec<f64>,
        /// Singular values, `r`.
        s: Vec<f64>,
        /// Right singular vectors, `dx x r`.
        v: Vec<f64>,
    },
}

impl Operator {
    /// `(dy, dx)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Operator::Dense { rows, cols, .. } | Operator::Svd { rows, cols, .. } => (*rows, *cols),
            Operator::Mask { dim, observed } => (observed.len(), *dim),
        }
    }
}

/// A parsed, validated problem file.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The prior `p_data`.
    pub prior: Prior,
    /// The operator `A`, if any.
    pub operator: Option<Operator>,
    /// The observation `y`, if any.
    pub y: Option<Vec<f64>>,
    /// The observation noise `sigma_y >= 0`, if given.
    pub sigma_y: Option<f64>,
}

/// A finite number of magnitude at most [`crate::data::MAX_ABS_VALUE`] (means, variances,
/// operator entries, `y`, `sigma_y`: every one of them is squared somewhere).
fn num(v: &Value, what: &str) -> Result<f64> {
    match v.as_f64() {
        Some(x) if x.abs() <= crate::data::MAX_ABS_VALUE => Ok(x),
        Some(x) if x.is_finite() => Err(Error::invalid(format!(
            "{what}: {} is too large in magnitude (at most 1e100: rescale the problem)",
            crate::error::number(x)
        ))),
        _ => Err(Error::invalid(format!(
            "{what}: expected a finite number, got {}",
            short(v)
        ))),
    }
}

/// The `"image": [h, w]` of an image operator (default: a square image of the prior's
/// dimension).
fn image_shape(v: &Value, dx: Option<usize>) -> Result<(usize, usize)> {
    match v.get("image") {
        Some(img) => {
            let s = vector(img, "operator.image")?;
            if s.len() != 2 || s.iter().any(|x| *x < 1.0 || x.fract() != 0.0) {
                return Err(Error::invalid(
                    "operator.image: expected [height, width] as positive integers",
                ));
            }
            // Both sides below the limit, so the casts are exact and `h * w` cannot overflow.
            let limit = MAX_MATRIX_ENTRIES as f64;
            if s[0] * s[1] > limit {
                return Err(Error::invalid(format!(
                    "operator.image: {}x{} is too large (more than {MAX_MATRIX_ENTRIES} pixels)",
                    number(s[0]),
                    number(s[1])
                )));
            }
            let (h, w) = (s[0] as usize, s[1] as usize);
            if let Some(d) = dx {
                if h * w != d {
                    return Err(Error::invalid(format!(
                        "operator.image: a {h}x{w} image has {} pixels, but the prior has dimension {d}",
                        h * w
                    )));
                }
            }
            Ok((h, w))
        }
        None => {
            let d = dx.ok_or_else(|| Error::invalid("operator.image: give [height, width]"))?;
            let side = (d as f64).sqrt().round() as usize;
            if side * side != d {
                return Err(Error::invalid(format!(
                    "operator.image: the prior's dimension {d} is not a square image; give [height, width]"
                )));
            }
            Ok((side, side))
        }
    }
}

/// A JSON value for a message: its text, cut to [`crate::error::EXCERPT_CHARS`]
/// characters on a character boundary.
fn short(v: &Value) -> String {
    excerpt(&v.to_string())
}

/// Checks that the columns `j` with `keep[j]` of the row-major `n x r` matrix `a` are
/// orthonormal: `max |A^T A - I| <= SVD_ORTHONORMAL_TOL` over those columns.
fn check_orthonormal(a: &[f64], n: usize, r: usize, keep: &[bool], what: &str) -> Result<()> {
    // A^T as r x n, then (A^T)(A^T)^T = A^T A through the blocked product.
    let mut at = vec![0.0; r * n];
    for i in 0..n {
        for j in 0..r {
            at[j * n + i] = a[i * r + j];
        }
    }
    let mut g = vec![0.0; r * r];
    crate::linalg::gemm_abt(&mut g, &at, &at, (r, n, r), 1.0, false);
    let mut worst = 0.0f64;
    for i in (0..r).filter(|&i| keep[i]) {
        for j in (0..r).filter(|&j| keep[j]) {
            let dev = (g[i * r + j] - if i == j { 1.0 } else { 0.0 }).abs();
            // NaN (from overflow) counts as the worst deviation.
            worst = if dev.is_nan() { f64::INFINITY } else { worst.max(dev) };
        }
    }
    if worst > SVD_ORTHONORMAL_TOL {
        return Err(Error::invalid(format!(
            "operator 'svd': the columns of {what} are not orthonormal (max |{w}^T {w} - I| = {worst:.3e} > \
             {SVD_ORTHONORMAL_TOL:e}); give the singular vectors of A = U diag(s) V^T to at least 7 significant digits",
            w = what.to_uppercase()
        )));
    }
    Ok(())
}

fn vector(v: &Value, what: &str) -> Result<Vec<f64>> {
    let a = v
        .as_array()
        .ok_or_else(|| Error::invalid(format!("{what}: expected an array of numbers")))?;
    a.iter()
        .enumerate()
        .map(|(i, x)| num(x, &format!("{what}[{i}]")))
        .collect()
}

/// A matrix given as an array of rows; returns `(rows, cols, row-major entries)`.
fn matrix(v: &Value, what: &str) -> Result<(usize, usize, Vec<f64>)> {
    let a = v
        .as_array()
        .ok_or_else(|| Error::invalid(format!("{what}: expected an array of rows")))?;
    if a.is_empty() {
        return Err(Error::invalid(format!("{what}: empty matrix")));
    }
    let mut out = Vec::new();
    let mut cols = None;
    for (i, row) in a.iter().enumerate() {
        let r = vector(row, &format!("{what}[{i}]"))?;
        match cols {
            None => cols = Some(r.len()),
            Some(c) if c != r.len() => {
                return Err(Error::invalid(format!(
                    "{what}: row {i} has {} entries, row 0 has {c}",
                    r.len()
                )))
            }
            _ => {}
        }
        out.extend(r);
    }
    Ok((a.len(), cols.unwrap_or(0), out))
}

fn field<'a>(obj: &'a Value, key: &str, what: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| Error::invalid(format!("{what}: missing field '{key}'")))
}

fn covariance(obj: &Value, d: usize, k: Option<usize>, what: &str) -> Result<Covariance> {
    let pick = |v: &'_ Value| -> Value {
        match k {
            Some(i) => v.get(i).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let idx = k.map(|i| format!("[{i}]")).unwrap_or_default();
    let (full_key, diag_key, scal_key) = if k.is_some() {
        ("covariances", "variances", "variance")
    } else {
        ("covariance", "variances", "variance")
    };
    if let Some(c) = obj.get(full_key) {
        let (r, cc, a) = matrix(&pick(c), &format!("{what}.{full_key}{idx}"))?;
        if r != d || cc != d {
            return Err(Error::invalid(format!(
                "{what}.{full_key}{idx}: expected {d}x{d}, got {r}x{cc}"
            )));
        }
        return Ok(Covariance::Full(a));
    }
    if let Some(v) = obj.get(diag_key) {
        // One diagonal per component, or (for a mixture) one shared diagonal.
        let shared = v.as_array().is_some_and(|a| a.first().is_some_and(|x| x.is_number()));
        let vv = if shared || k.is_none() { v.clone() } else { pick(v) };
        let diag = vector(&vv, &format!("{what}.{diag_key}{idx}"))?;
        if diag.len() != d {
            return Err(Error::invalid(format!(
                "{what}.{diag_key}{idx}: expected {d} variances, got {}",
                diag.len()
            )));
        }
        return Ok(Covariance::Diagonal(diag));
    }
    if let Some(v) = obj.get(scal_key) {
        let vv = if v.is_array() { pick(v) } else { v.clone() };
        return Ok(Covariance::Scalar(num(&vv, &format!("{what}.{scal_key}{idx}"))?));
    }
    Err(Error::invalid(format!(
        "{what}: give one of '{full_key}', '{diag_key}' or '{scal_key}'"
    )))
}

/// A mixture prior's dimension `d` must allow its `d x d` covariances.
fn check_prior_dim(d: usize) -> Result<()> {
    if d.checked_mul(d).is_none_or(|dd| dd > MAX_MATRIX_ENTRIES) {
        return Err(Error::invalid(format!(
            "prior: dimension {d} is too large for a Gaussian-mixture prior (its {d}x{d} covariances would \
             have more than {MAX_MATRIX_ENTRIES} entries)"
        )));
    }
    Ok(())
}

fn prior(v: &Value, base: Option<&Path>) -> Result<Prior> {
    let what = "prior";
    let kind = field(v, "kind", what)?.as_str().unwrap_or("");
    let built = match kind {
        "gaussian_mixture" => {
            // Weights are scale-free (normalised in log space): any finite value will do.
            let weights = field(v, "weights", what)?
                .as_array()
                .ok_or_else(|| Error::invalid("prior.weights: expected an array of numbers"))?
                .iter()
                .enumerate()
                .map(|(i, x)| match x.as_f64() {
                    Some(w) if w.is_finite() => Ok(w),
                    _ => Err(Error::invalid(format!(
                        "prior.weights[{i}]: expected a finite number, got {}",
                        short(x)
                    ))),
                })
                .collect::<Result<Vec<f64>>>()?;
            let (k, d, means) = matrix(field(v, "means", what)?, "prior.means")?;
            if d == 0 {
                return Err(Error::invalid("prior.means: the means are empty (dimension 0)"));
            }
            check_prior_dim(d)?;
            if k != weights.len() {
                return Err(Error::invalid(format!(
                    "prior: {} weights but {k} means",
                    weights.len()
                )));
            }
            let covs = (0..k)
                .map(|i| covariance(v, d, Some(i), what))
                .collect::<Result<Vec<_>>>()?;
            let means = means.chunks(d).map(|c| c.to_vec()).collect();
            GaussianMixture::new(weights, means, covs)
        }
        "gaussian" => {
            let mean = vector(field(v, "mean", what)?, "prior.mean")?;
            check_prior_dim(mean.len())?;
            let cov = covariance(v, mean.len(), None, what)?;
            GaussianMixture::gaussian(mean, cov)
        }
        "model" => {
            let p = field(v, "path", what)?
                .as_str()
                .ok_or_else(|| Error::invalid("prior.path: expected a string"))?;
            let p = PathBuf::from(p);
            let p = match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            };
            return Ok(Prior::Model(p));
        }
        other => {
            return Err(Error::invalid(format!(
                "prior.kind: unknown kind '{}' (expected gaussian_mixture, gaussian or model)",
                excerpt(other)
            )))
        }
    };
    Ok(Prior::Mixture(
        built.map_err(|e| Error::invalid(format!("prior: {e}")))?,
    ))
}

/// An operator's `dy x dx` must stay within [`MAX_MATRIX_ENTRIES`].
fn check_size(dy: usize, dx: usize) -> Result<()> {
    if dx > MAX_MATRIX_ENTRIES || dy.checked_mul(dx).is_none_or(|n| n > MAX_MATRIX_ENTRIES) {
        return Err(Error::invalid(format!(
            "operator: {dy}x{dx} is too large (at most {MAX_MATRIX_ENTRIES} entries)"
        )));
    }
    Ok(())
}

fn operator(v: &Value, dx: Option<usize>) -> Result<Operator> {
    let what = "operator";
    let kind = field(v, "kind", what)?.as_str().unwrap_or("");
    let op = match kind {
        "dense" => {
            let (rows, cols, a) = matrix(field(v, "matrix", what)?, "operator.matrix")?;
            if cols == 0 {
                return Err(Error::invalid("operator.matrix: the rows are empty"));
            }
            Operator::Dense { rows, cols, a }
        }
        "mask" => {
            let dim = match (v.get("dim"), dx) {
                (Some(x), _) => {
                    let dim = x
                        .as_u64()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| Error::invalid(format!("operator.dim: expected a positive integer, got {}", short(x))))?;
                    // Checked against the prior and the limit before `seen` is allocated.
                    match dx {
                        Some(d) if dim != d as u64 => {
                            return Err(Error::invalid(format!(
                                "operator.dim: {dim} does not match the prior's dimension {d}"
                            )))
                        }
                        _ if dim > MAX_MATRIX_ENTRIES as u64 => {
                            return Err(Error::invalid(format!(
                                "operator.dim: {dim} is too large (at most {MAX_MATRIX_ENTRIES})"
                            )))
                        }
                        _ => dim as usize,
                    }
                }
                (None, Some(d)) => d,
                (None, None) => {
                    return Err(Error::invalid(
                        "operator: a mask needs 'dim' when the prior's dimension is unknown",
                    ))
                }
            };
            let obs = field(v, "observed", what)?
                .as_array()
                .ok_or_else(|| Error::invalid("operator.observed: expected an array of indices"))?;
            let mut observed = Vec::with_capacity(obs.len());
            let mut seen = vec![false; dim];
            for (i, o) in obs.iter().enumerate() {
                let j = o.as_u64().ok_or_else(|| {
                    Error::invalid(format!(
                        "operator.observed[{i}]: expected a non-negative integer, got {}",
                        short(o)
                    ))
                })? as usize;
                if j >= dim {
                    return Err(Error::invalid(format!(
                        "operator.observed[{i}]: index {j} out of range for dimension {dim}"
                    )));
                }
                if seen[j] {
                    return Err(Error::invalid(format!("operator.observed[{i}]: index {j} given twice")));
                }
                seen[j] = true;
                observed.push(j);
            }
            Operator::Mask { dim, observed }
        }
        "svd" => {
            let (rows, r, u) = matrix(field(v, "u", what)?, "operator.u")?;
            let s = vector(field(v, "s", what)?, "operator.s")?;
            let (cols, r2, vv) = matrix(field(v, "v", what)?, "operator.v")?;
            if s.len() != r || r2 != r {
                return Err(Error::invalid(format!(
                    "operator: u has {r} columns, s {} values, v {r2} columns",
                    s.len()
                )));
            }
            if s.iter().any(|x| *x < 0.0) {
                return Err(Error::invalid("operator.s: singular values must be >= 0"));
            }
            if let Some(d) = dx {
                if cols != d {
                    return Err(Error::invalid(format!(
                        "operator acts on dimension {cols}, but the prior has dimension {d}"
                    )));
                }
            }
            check_size(rows, cols)?;
            // Zero singular values are dropped by `Operator::svd`: only the other columns
            // must be orthonormal.
            let keep: Vec<bool> = s.iter().map(|x| *x > 0.0).collect();
            check_orthonormal(&u, rows, r, &keep, "u")?;
            check_orthonormal(&vv, cols, r, &keep, "v")?;
            Operator::Svd {
                rows,
                cols,
                u,
                s,
                v: vv,
            }
        }
        "inpaint_box" | "outpaint_half" | "superres" | "blur" => {
            let (h, w) = image_shape(v, dx)?;
            let int = |name: &str| -> Result<usize> {
                field(v, name, what)?
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| Error::invalid(format!("operator.{name}: expected a non-negative integer")))
            };
            match kind {
                "inpaint_box" => {
                    let b = vector(field(v, "box", what)?, "operator.box")?;
                    // Anything larger than the image does not fit; the bound keeps the casts exact.
                    let b: Vec<f64> = b.iter().map(|x| x.min((h.max(w) + 1) as f64)).collect();
                    if b.len() != 4 || b.iter().any(|x| *x < 0.0 || x.fract() != 0.0) {
                        return Err(Error::invalid(
                            "operator.box: expected [top, left, height, width] as non-negative integers",
                        ));
                    }
                    Operator::inpaint_box(h, w, b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize)?
                }
                "outpaint_half" => {
                    let keep = field(v, "keep", what)?
                        .as_str()
                        .ok_or_else(|| Error::invalid("operator.keep: expected \"left\", \"right\", \"top\" or \"bottom\""))?;
                    Operator::outpaint_half(h, w, keep)?
                }
                "superres" => Operator::avg_pool(h, w, int("factor")?)?,
                _ => Operator::gaussian_blur(h, w, num(field(v, "sigma", what)?, "operator.sigma")?)?,
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "operator.kind: unknown kind '{}' (expected dense, mask, svd, inpaint_box, outpaint_half, superres or blur)",
                excerpt(other)
            )))
        }
    };
    let (r, c) = op.shape();
    if let Some(d) = dx {
        if c != d {
            return Err(Error::invalid(format!(
                "operator acts on dimension {c}, but the prior has dimension {d}"
            )));
        }
    }
    check_size(r, c)?;
    Ok(op)
}

impl Problem {
    /// Parses and validates a problem from JSON text; relative model paths are resolved
    /// against `base`.
    pub fn from_json(text: &str, base: Option<&Path>) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("malformed JSON: {}", crate::error::one_line(e))))?;
        if !v.is_object() {
            return Err(Error::invalid("expected a JSON object with a 'prior'"));
        }
        let prior = prior(field(&v, "prior", "problem")?, base)?;
        let dx = match &prior {
            Prior::Mixture(m) => Some(m.dim()),
            Prior::Model(_) => None,
        };
        let operator = v
            .get("operator")
            .filter(|o| !o.is_null())
            .map(|o| operator(o, dx))
            .transpose()?;
        let y = v
            .get("y")
            .filter(|o| !o.is_null())
            .map(|o| vector(o, "y"))
            .transpose()?;
        let sigma_y = v
            .get("sigma_y")
            .filter(|o| !o.is_null())
            .map(|o| num(o, "sigma_y"))
            .transpose()?;
        if let Some(s) = sigma_y {
            if s < 0.0 {
                return Err(Error::invalid(format!("sigma_y must be >= 0, got {}", number(s))));
            }
        }
        match (&operator, &y) {
            (Some(op), Some(y)) => {
                let (dy, _) = op.shape();
                if y.len() != dy {
                    return Err(Error::invalid(format!(
                        "y has {} values but the operator has {dy} rows",
                        y.len()
                    )));
                }
            }
            (Some(_), None) => return Err(Error::invalid("an operator is given but no 'y'")),
            (None, Some(_)) => return Err(Error::invalid("'y' is given but no operator")),
            (None, None) => {}
        }
        Ok(Problem {
            prior,
            operator,
            y,
            sigma_y,
        })
    }

    /// Reads a problem file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        Self::from_json(&text, path.parent()).map_err(|e| match e {
            Error::InvalidInput(m) => Error::file(path, m),
            other => other,
        })
    }

    /// The prior's Gaussian mixture, or an error for a model prior.
    pub fn mixture(&self) -> Result<&GaussianMixture> {
        match &self.prior {
            Prior::Mixture(m) => Ok(m),
            Prior::Model(p) => Err(Error::invalid(format!(
                "this command needs a Gaussian or Gaussian-mixture prior, the problem names the model {}",
                p.display()
            ))),
        }
    }

    /// The observation `y = A x + sigma_y z` of the problem (`sigma_y` defaults to 0); an
    /// error if the file has no operator or no `y`.
    pub fn observation(&self) -> Result<super::Observation> {
        match (&self.operator, &self.y) {
            (Some(op), Some(y)) => Ok(super::Observation {
                op: op.clone(),
                y: y.clone(),
                sigma_y: self.sigma_y.unwrap_or(0.0),
            }),
            _ => Err(Error::invalid(
                "the problem file needs an \"operator\" and \"y\" for posterior sampling",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_operators() {
        let prior = r#""prior": {"kind": "gaussian", "mean": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0], "variance": 1}"#;
        for (op, dy) in [
            (r#"{"kind": "inpaint_box", "box": [1, 1, 2, 2]}"#, 12),
            (r#"{"kind": "outpaint_half", "keep": "top"}"#, 8),
            (r#"{"kind": "superres", "factor": 2, "image": [4, 4]}"#, 4),
            (r#"{"kind": "blur", "sigma": 0.7}"#, 16),
        ] {
            let text = format!(
                r#"{{{prior}, "operator": {op}, "y": [{}], "sigma_y": 0.1}}"#,
                vec!["0"; dy].join(",")
            );
            let p = Problem::from_json(&text, None).unwrap();
            assert_eq!(p.operator.unwrap().shape(), (dy, 16));
        }
        for (op, needle) in [
            (r#"{"kind": "superres", "factor": 3}"#, "factor"),
            (r#"{"kind": "inpaint_box", "box": [3, 3, 2, 2]}"#, "does not fit"),
            (r#"{"kind": "outpaint_half", "keep": "middle"}"#, "unknown half"),
            (r#"{"kind": "blur", "sigma": 0.7, "image": [3, 3]}"#, "dimension"),
        ] {
            let text = format!(r#"{{{prior}, "operator": {op}, "y": [0], "sigma_y": 0.1}}"#);
            let e = Problem::from_json(&text, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn parses_the_design_example_and_variants() {
        let p = Problem::from_json(
            r#"{"prior": {"kind": "gaussian_mixture", "weights": [1, 3], "means": [[0, 0], [2, 1]],
                "covariances": [[[1, 0.2], [0.2, 1]], [[2, 0], [0, 0.5]]]},
               "operator": {"kind": "dense", "matrix": [[1, 0.5]]}, "y": [0.3], "sigma_y": 0.3}"#,
            None,
        )
        .unwrap();
        let m = p.mixture().unwrap();
        assert_eq!(m.dim(), 2);
        assert!((m.weights()[1] - 0.75).abs() < 1e-15);
        assert_eq!(p.operator.unwrap().shape(), (1, 2));
        let g = Problem::from_json(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 1, 2], "variance": 2}}"#,
            None,
        )
        .unwrap();
        assert_eq!(g.mixture().unwrap().dim(), 3);
        let v = Problem::from_json(
            r#"{"prior": {"kind": "gaussian_mixture", "weights": [1, 1], "means": [[0], [1]], "variance": [1, 2]},
               "operator": {"kind": "mask", "observed": [0]}, "y": [0.1], "sigma_y": 0}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            v.operator.unwrap(),
            Operator::Mask {
                dim: 1,
                observed: vec![0]
            }
        );
    }

    #[test]
    fn rejects_each_bad_case_with_a_clear_message() {
        let cases = [
            (r#"{"prior": "#, "malformed JSON"),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "covariance": [[1, 2], [2, 1]]}}"#,
                "not positive definite",
            ),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "dense", "matrix": [[1, 2, 3]]}, "y": [1]}"#,
                "dimension 3",
            ),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "dense", "matrix": [[1, 2]]}, "y": [1, 2]}"#,
                "y has 2 values",
            ),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "mask", "observed": [2]}, "y": [1]}"#,
                "out of range",
            ),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "mask", "observed": [0]}, "y": [1], "sigma_y": -1}"#,
                "sigma_y must be >= 0",
            ),
            (r#"{"prior": {"kind": "laplace"}}"#, "unknown kind 'laplace'"),
            (
                r#"{"prior": {"kind": "gaussian", "mean": [0, "a"], "variance": 1}}"#,
                "prior.mean[1]",
            ),
            (
                r#"{"prior": {"kind": "gaussian_mixture", "weights": [1], "means": [[0, 0], [1, 1]], "variance": 1}}"#,
                "1 weights but 2 means",
            ),
        ];
        for (text, needle) in cases {
            let e = Problem::from_json(text, None).unwrap_err().to_string();
            assert!(e.contains(needle), "'{e}' should mention '{needle}'");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    /// The inputs of issue 15 that panicked, aborted, hung or were accepted with a corrupt
    /// result, each now a one-line error (or, for the weights, a correct law).
    #[test]
    fn hostile_problem_files_of_issue_15() {
        let err = |text: &str| {
            let e = Problem::from_json(text, None).unwrap_err().to_string();
            assert!(!e.contains('\n'), "one line: {e}");
            e
        };
        // A multi-byte string cut at byte 40 while building the message: panicked.
        let long = "é".repeat(50);
        let e = err(&format!(
            r#"{{"prior": {{"kind": "gaussian", "mean": [0, "{long}"], "variance": 1}}}}"#
        ));
        assert!(e.contains("prior.mean[1]") && e.contains("..."), "{e}");
        let e = err(&format!(
            r#"{{"prior": {{"kind": "gaussian", "mean": [0, 0], "variance": 1}}, "operator": {{"kind": "mask", "observed": ["{long}"]}}, "y": [1]}}"#
        ));
        assert!(e.contains("operator.observed[0]"), "{e}");
        // An unknown kind is echoed truncated.
        let e = err(&format!(r#"{{"prior": {{"kind": "{}"}}}}"#, "x".repeat(5000)));
        assert!(e.len() < 200, "{e}");
        // `means: [[]]`: chunks(0) panicked.
        let e = err(r#"{"prior": {"kind": "gaussian_mixture", "weights": [1], "means": [[]], "variance": 1}}"#);
        assert!(e.contains("dimension 0"), "{e}");
        // A huge mask `dim` was allocated before it was compared with the prior's.
        let e = err(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "mask", "dim": 4611686018427387904, "observed": [0]}, "y": [1]}"#,
        );
        assert!(e.contains("does not match the prior's dimension 2"), "{e}");
        let e = err(
            r#"{"prior": {"kind": "model", "path": "m"}, "operator": {"kind": "mask", "dim": 18446744073709551615, "observed": [0]}, "y": [1]}"#,
        );
        assert!(e.contains("too large"), "{e}");
        // Huge image shapes: "capacity overflow" or an allocation abort.
        for image in ["[4294967296, 4294967296]", "[1e300, 1e300]", "[65536, 65536]"] {
            for op in [
                r#""kind": "blur", "sigma": 1"#,
                r#""kind": "superres", "factor": 2"#,
                r#""kind": "inpaint_box", "box": [0, 0, 1, 1]"#,
                r#""kind": "outpaint_half", "keep": "left""#,
            ] {
                for prior in [
                    r#"{"kind": "model", "path": "m"}"#,
                    r#"{"kind": "gaussian", "mean": [0, 0, 0, 0], "variance": 1}"#,
                ] {
                    let e = err(&format!(
                        r#"{{"prior": {prior}, "operator": {{{op}, "image": {image}}}, "y": [1]}}"#
                    ));
                    assert!(e.contains("too large") || e.contains("prior has dimension 4"), "{e}");
                }
            }
        }
        let e = err(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0, 0, 0], "variance": 1}, "operator": {"kind": "inpaint_box", "box": [1e300, 1e300, 1, 1]}, "y": [1]}"#,
        );
        assert!(
            e.contains("does not fit") || e.contains("too large in magnitude"),
            "{e}"
        );
        // A non-orthonormal `svd` operator: DDRM and MCGdiff returned samples near 1e5.
        let e = err(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "svd", "u": [[1]], "s": [1], "v": [[1e5], [0]]}, "y": [1]}"#,
        );
        assert!(
            e.contains("operator 'svd'") && e.contains("columns of v are not orthonormal"),
            "{e}"
        );
        let e = err(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "svd", "u": [[1, 1], [0, 1]], "s": [1, 1], "v": [[1, 0], [0, 1]]}, "y": [1, 1]}"#,
        );
        assert!(e.contains("columns of u are not orthonormal"), "{e}");
        // Orthonormal to 1e-7 passes; a zero singular value's column is not checked.
        let p = Problem::from_json(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0], "variance": 1}, "operator": {"kind": "svd", "u": [[1, 0], [0, 1]], "s": [2, 0], "v": [[0.70710678, 5], [0.70710678, 5]]}, "y": [1, 1]}"#,
            None,
        )
        .unwrap();
        assert_eq!(p.operator.unwrap().shape(), (2, 2));
        // Weights [1e308, 1e308]: their sum overflowed and every draw came from component 0.
        let p = Problem::from_json(
            r#"{"prior": {"kind": "gaussian_mixture", "weights": [1e308, 1e308], "means": [[0], [10]], "variance": 1}}"#,
            None,
        )
        .unwrap();
        let w = p.mixture().unwrap().weights();
        assert!((w[0] - 0.5).abs() < 1e-15 && (w[1] - 0.5).abs() < 1e-15, "{w:?}");
        // A prior too large for its d x d covariances.
        let e = err(&format!(
            r#"{{"prior": {{"kind": "gaussian", "mean": [{}], "variance": 1}}}}"#,
            vec!["0"; 6000].join(",")
        ));
        assert!(e.contains("dimension 6000 is too large"), "{e}");
    }

    #[test]
    fn blur_with_a_huge_sigma_is_quick() {
        // sigma 1e5 on a 2x2 image hung (a (6e5)^2 loop per pixel).
        let p = Problem::from_json(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0, 0, 0], "variance": 1}, "operator": {"kind": "blur", "sigma": 1e5}, "y": [0, 0, 0, 0]}"#,
            None,
        )
        .unwrap();
        let a = p.operator.unwrap().matrix();
        // The kernel is flat over the image: every entry is 1 / ks^2, with ks the sum of the
        // whole kernel (about sigma sqrt(2 pi) erf(3 / sqrt 2); 249,986.1 to 7 digits).
        let ks: f64 = (-300_000i64..=300_000)
            .map(|i| (-0.5 * (i as f64 / 1e5).powi(2)).exp())
            .sum();
        assert!((ks / 249_986.1 - 1.0).abs() < 1e-6, "{ks}");
        assert!(a.iter().all(|x| (x * ks * ks - 1.0).abs() < 1e-9), "{a:?}");
        let e = Problem::from_json(
            r#"{"prior": {"kind": "gaussian", "mean": [0, 0, 0, 0], "variance": 1}, "operator": {"kind": "blur", "sigma": 1e300}, "y": [0, 0, 0, 0]}"#,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1e300 is too large"), "{e}");
    }

    #[test]
    fn grid25_prior_matches_the_recipe() {
        let m = GaussianMixture::grid25(4, &crate::rng::Noise::new(0)).unwrap();
        assert_eq!(m.n_components(), 25);
        assert_eq!(m.means()[0], vec![-16.0, -16.0, -16.0, -16.0]);
        assert_eq!(m.means()[7], vec![-8.0, 0.0, -8.0, 0.0]);
        assert!((m.weights().iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
