//! Built-in data sets, named on the command line as `builtin:NAME`.
//!
//! Six synthetic laws used throughout the diffusion-model literature and one small real
//! data set compiled into the library (so the binary needs no files at run time):
//!
//! | name | d | classes | law |
//! | --- | --- | --- | --- |
//! | `two-spheres` | 3 | 2 | uniform on the sphere of radius 1 (label 0) or 2 (label 1), equal class probabilities |
//! | `gmm25` | 2 | 25 | the 5x5 grid mixture [`GaussianMixture::grid25`]`(2, &Noise::new(0))`, see [`gmm25_law`] |
//! | `moons` | 2 | 2 | two interleaving half circles (scikit-learn's `make_moons`), noise sd 0.05 |
//! | `swiss-roll` | 2 | — | `t = 1.5 pi (1 + 2u)`, `x = (t cos t, t sin t) / 5 + N(0, 0.1^2 I)` |
//! | `checkerboard` | 2 | — | uniform on the 8 black squares of a 4x4 board on `[-4, 4]^2` |
//! | `funnel` | 10 | — | Neal's funnel: `v ~ N(0, 3^2)`, `x_i \| v ~ N(0, e^v)`, `i = 1..9` |
//! | `digits` | 64 | 10 | the 1797 real 8x8 handwritten digits (UCI / scikit-learn), pixels scaled to `[0, 1]` |
//!
//! Synthetic sets are deterministic functions of `(n, seed)`: every draw comes from the
//! `Purpose::Exact` streams of [`Noise::new`]`(seed)` (indices 0, 1, 2, ..., one per
//! kind of draw), row `i` reading only its own words, so the first `n` rows of a set of
//! `N > n` points equal the set of `n` points. Points are `[n, d]` F64 tensors on the CPU.
//!
//! The attribution and licences of the real data are in the crate's `data/README.md`.

use std::f64::consts::PI;
use std::io::Read;

use candle_core::{Device, Tensor};

use crate::rng::{stream, Noise, Purpose};
use crate::score::GaussianMixture;
use crate::{Error, Result};

/// The names accepted by [`load`], in the order they are listed in messages.
pub const NAMES: [&str; 7] = [
    "two-spheres",
    "gmm25",
    "moons",
    "swiss-roll",
    "checkerboard",
    "funnel",
    "digits",
];

/// The number of points of a synthetic set when none is asked for.
pub const DEFAULT_N: usize = 10_000;

/// The command-line prefix that names a built-in data set.
pub const PREFIX: &str = "builtin:";

/// The 8x8 digits, 1797 rows of `64 pixels (0..16), label (0..9)`, gzipped CSV without header.
static DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// A loaded built-in data set.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The canonical name (one of [`NAMES`]).
    pub name: String,
    /// The points, an `[n, d]` F64 tensor on the CPU.
    pub x: Tensor,
    /// One label per point for labelled sets, in `0..n_classes`.
    pub labels: Option<Vec<u32>>,
    /// The number of classes; 0 for an unlabelled set.
    pub n_classes: usize,
    /// `(height, width)` of an image, row-major, for image data sets (`h * w = d`).
    pub image_shape: Option<(usize, usize)>,
    /// A one-line description of the law or the source.
    pub description: String,
}

/// The name after `builtin:` in a data argument, or `None` if `arg` does not start with
/// `builtin:` (then it is a file path).
pub fn parse_data_arg(arg: &str) -> Option<&str> {
    arg.strip_prefix(PREFIX)
}

/// The exact law of `gmm25`: [`GaussianMixture::grid25`] in dimension 2 with the weights
/// drawn from seed 0, whatever the seed of the samples, so the law is always the same.
pub fn gmm25_law() -> GaussianMixture {
    GaussianMixture::grid25(2, &Noise::new(0)).expect("grid25 in dimension 2 is a valid mixture")
}

/// Loads the built-in data set `name` (what follows `builtin:` on the command line).
///
/// `n` is the number of points of a synthetic set ([`DEFAULT_N`] when `None`; it must be
/// at least 1) and `seed` seeds its draws; both are ignored for the real set `digits`,
/// which always returns its 1797 rows. Fails with [`Error::InvalidInput`] for an unknown
/// name or `n = Some(0)` for a synthetic set.
pub fn load(name: &str, n: Option<usize>, seed: u64) -> Result<Dataset> {
    if !NAMES.contains(&name) {
        return Err(Error::invalid(format!(
            "unknown built-in data set '{}' (expected {})",
            crate::error::excerpt(name),
            NAMES.join(", ")
        )));
    }
    if name == "digits" {
        return digits();
    }
    let n = n.unwrap_or(DEFAULT_N);
    if n == 0 {
        return Err(Error::invalid(format!(
            "built-in data set '{name}': the number of points must be at least 1"
        )));
    }
    let noise = Noise::new(seed);
    let s = match name {
        "two-spheres" => two_spheres(n, &noise),
        "gmm25" => gmm25(n, &noise),
        "moons" => moons(n, &noise),
        "swiss-roll" => swiss_roll(n, &noise),
        "checkerboard" => checkerboard(n, &noise),
        "funnel" => funnel(n, &noise),
        _ => unreachable!("every name of NAMES is handled"),
    };
    let d = s.x.len() / n;
    Ok(Dataset {
        name: name.to_string(),
        x: Tensor::from_vec(s.x, (n, d), &Device::Cpu)?,
        labels: s.labels,
        n_classes: s.n_classes,
        image_shape: None,
        description: s.description.to_string(),
    })
}

/// A synthetic draw before it becomes a [`Dataset`].
struct Synthetic {
    x: Vec<f64>,
    labels: Option<Vec<u32>>,
    n_classes: usize,
    description: &'static str,
}

fn exact(index: u64) -> u64 {
    stream(Purpose::Exact, index)
}

/// Label 0 with probability 1/2 (uniform `u <= 1/2`), else 1.
fn coin(u: f64) -> u32 {
    u32::from(u > 0.5)
}

/// Class by a uniform (stream 0), direction = normalised standard normal (stream 1),
/// radius 1 + class.
fn two_spheres(n: usize, noise: &Noise) -> Synthetic {
    let u = noise.uniforms(exact(0), n);
    let mut x = noise.normals(exact(1), n, 3);
    let labels: Vec<u32> = u.iter().map(|&u| coin(u)).collect();
    for (row, &l) in x.chunks_mut(3).zip(&labels) {
        // A zero normal vector has probability 0 (and cannot come out of Box–Muller).
        let scale = f64::from(l + 1) / row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v *= scale);
    }
    Synthetic {
        x,
        labels: Some(labels),
        n_classes: 2,
        description: "uniform on the sphere of radius 1 (label 0) or radius 2 (label 1) in R^3, \
                      classes equally likely",
    }
}

/// `gmm25_law().sample_labelled(n, noise, 0)` (streams 0 and 1); labels = components.
fn gmm25(n: usize, noise: &Noise) -> Synthetic {
    let (x, labels) = gmm25_law().sample_labelled(n, noise, 0);
    Synthetic {
        x,
        labels: Some(labels.into_iter().map(|k| k as u32).collect()),
        n_classes: 25,
        description: "25-component Gaussian mixture in R^2: means 8 (i, j), i, j in -2..2, identity \
                      covariances, weights g_k^2 with g_k ~ N(0, 1) from seed 0 (label = component)",
    }
}

/// Class by a uniform (stream 0), `t = pi u` (stream 1), noise N(0, 0.05^2 I) (stream 2).
/// Outer moon (label 0): `(cos t, sin t)`; inner (label 1): `(1 - cos t, 1 - sin t - 0.5)`.
/// Unlike scikit-learn (evenly spaced `t`, exactly `n / 2` outer points) the points are
/// i.i.d. from the law.
fn moons(n: usize, noise: &Noise) -> Synthetic {
    let u = noise.uniforms(exact(0), n);
    let t = noise.uniforms(exact(1), n);
    let e = noise.normals(exact(2), n, 2);
    let mut x = vec![0.0; 2 * n];
    let mut labels = vec![0; n];
    for i in 0..n {
        let l = coin(u[i]);
        let ti = PI * t[i];
        let (a, b) = if l == 0 {
            (ti.cos(), ti.sin())
        } else {
            (1.0 - ti.cos(), 1.0 - ti.sin() - 0.5)
        };
        x[2 * i] = a + 0.05 * e[2 * i];
        x[2 * i + 1] = b + 0.05 * e[2 * i + 1];
        labels[i] = l;
    }
    Synthetic {
        x,
        labels: Some(labels),
        n_classes: 2,
        description: "two moons (scikit-learn convention): t ~ U[0, pi], label 0 at (cos t, sin t), label 1 at \
                      (1 - cos t, 1 - sin t - 0.5), each equally likely, plus N(0, 0.05^2 I) noise",
    }
}

/// `t = 1.5 pi (1 + 2u)` (u from stream 0), `x = (t cos t, t sin t) / 5 + N(0, 0.1^2 I)`
/// (noise from stream 1).
fn swiss_roll(n: usize, noise: &Noise) -> Synthetic {
    let u = noise.uniforms(exact(0), n);
    let e = noise.normals(exact(1), n, 2);
    let mut x = vec![0.0; 2 * n];
    for i in 0..n {
        let t = 1.5 * PI * (1.0 + 2.0 * u[i]);
        x[2 * i] = t * t.cos() / 5.0 + 0.1 * e[2 * i];
        x[2 * i + 1] = t * t.sin() / 5.0 + 0.1 * e[2 * i + 1];
    }
    Synthetic {
        x,
        labels: None,
        n_classes: 0,
        description: "2-D swiss roll: t = 1.5 pi (1 + 2u), u ~ U(0, 1), x = (t cos t, t sin t) / 5 + N(0, 0.1^2 I)",
    }
}

/// The 8 black squares `(i, j)` (column `i`, row `j` in `0..4`, square `[-4 + 2i, -2 + 2i) x
/// [-4 + 2j, -2 + 2j)`) are those with `i + j` even, as in FFJORD's `checkerboard`.
/// Square `k = floor(8 u)` (stream 0) is `i = k / 2`, `j = 2 (k % 2) + i % 2`; the offsets in
/// the square are `2 (1 - u)` with `u` from streams 1 and 2.
fn checkerboard(n: usize, noise: &Noise) -> Synthetic {
    let sq = noise.uniforms(exact(0), n);
    let ux = noise.uniforms(exact(1), n);
    let uy = noise.uniforms(exact(2), n);
    let mut x = vec![0.0; 2 * n];
    for r in 0..n {
        // u is in (0, 1]; u = 1 would give k = 8.
        let k = ((8.0 * sq[r]) as usize).min(7);
        let (i, j) = black_square(k);
        x[2 * r] = -4.0 + 2.0 * i as f64 + 2.0 * (1.0 - ux[r]);
        x[2 * r + 1] = -4.0 + 2.0 * j as f64 + 2.0 * (1.0 - uy[r]);
    }
    Synthetic {
        x,
        labels: None,
        n_classes: 0,
        description: "uniform on the 8 black squares (side 2) of a 4x4 checkerboard on [-4, 4]^2, \
                      the square at the bottom left corner black",
    }
}

/// Black square `k` in `0..8` as `(column, row)`.
fn black_square(k: usize) -> (usize, usize) {
    let i = k / 2;
    (i, 2 * (k % 2) + i % 2)
}

/// `v = 3 z_0`, `x_i = exp(v / 2) z_i` with `z ~ N(0, I_10)` (stream 0).
fn funnel(n: usize, noise: &Noise) -> Synthetic {
    let mut x = noise.normals(exact(0), n, 10);
    for row in x.chunks_mut(10) {
        row[0] *= 3.0;
        let sd = (0.5 * row[0]).exp();
        row[1..].iter_mut().for_each(|v| *v *= sd);
    }
    Synthetic {
        x,
        labels: None,
        n_classes: 0,
        description:
            "Neal's funnel in R^10: v ~ N(0, 3^2), x_i | v ~ N(0, e^v) for i = 1..9; coordinates (v, x_1..x_9)",
    }
}

const DIGITS_ROWS: usize = 1797;

/// The real digits: decompresses the embedded table and scales the pixels to `[0, 1]`.
fn digits() -> Result<Dataset> {
    let corrupt = |msg: String| Error::file("builtin:digits", format!("embedded table is corrupt: {msg}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut x = Vec::with_capacity(DIGITS_ROWS * 64);
    let mut labels = Vec::with_capacity(DIGITS_ROWS);
    for (line_no, line) in text.lines().enumerate() {
        let bad = |what: &str| corrupt(format!("line {}: {what}", line_no + 1));
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(bad(&format!("{} fields, expected 65", fields.len())));
        }
        for f in &fields[..64] {
            let p: u8 = f
                .trim()
                .parse()
                .map_err(|_| bad(&format!("pixel '{f}' is not an integer")))?;
            if p > 16 {
                return Err(bad(&format!("pixel {p} out of 0..16")));
            }
            x.push(f64::from(p) / 16.0);
        }
        let l: u32 = fields[64].trim().parse().map_err(|_| bad("label is not an integer"))?;
        if l > 9 {
            return Err(bad(&format!("label {l} out of 0..9")));
        }
        labels.push(l);
    }
    if labels.len() != DIGITS_ROWS {
        return Err(corrupt(format!("{} rows, expected {DIGITS_ROWS}", labels.len())));
    }
    Ok(Dataset {
        name: "digits".to_string(),
        x: Tensor::from_vec(x, (DIGITS_ROWS, 64), &Device::Cpu)?,
        labels: Some(labels),
        n_classes: 10,
        image_shape: Some((8, 8)),
        description: "1797 real 8x8 handwritten digits (UCI optical recognition of handwritten digits, \
                      as bundled by scikit-learn; CC BY 4.0), pixels 0..16 scaled to [0, 1], label = digit"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ds: &Dataset) -> (usize, usize, Vec<f64>) {
        let (n, d) = ds.x.dims2().unwrap();
        (n, d, ds.x.flatten_all().unwrap().to_vec1::<f64>().unwrap())
    }

    fn mean_var(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n)
    }

    #[test]
    fn parse_and_names() {
        assert_eq!(parse_data_arg("builtin:moons"), Some("moons"));
        assert_eq!(parse_data_arg("builtin:"), Some(""));
        assert_eq!(parse_data_arg("data/moons.csv"), None);
        assert_eq!(parse_data_arg("Builtin:moons"), None);
        let err = load("nope", None, 0).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert_eq!(
            err.to_string(),
            "unknown built-in data set 'nope' (expected two-spheres, gmm25, moons, swiss-roll, checkerboard, \
             funnel, digits)"
        );
        for name in NAMES {
            if name != "digits" {
                let err = load(name, Some(0), 0).unwrap_err();
                assert!(matches!(err, Error::InvalidInput(_)), "{name}");
                assert!(err.to_string().contains("at least 1"), "{err}");
                let ds = load(name, Some(1), 0).unwrap();
                assert_eq!(ds.x.dims()[0], 1);
            }
        }
        // The default size, and shapes/metadata of every set.
        let expect = [
            ("two-spheres", 3, 2),
            ("gmm25", 2, 25),
            ("moons", 2, 2),
            ("swiss-roll", 2, 0),
            ("checkerboard", 2, 0),
            ("funnel", 10, 0),
        ];
        for (name, d, k) in expect {
            let ds = load(name, None, 3).unwrap();
            assert_eq!(ds.name, name);
            assert_eq!(ds.x.dims(), &[DEFAULT_N, d], "{name}");
            assert_eq!(ds.x.dtype(), candle_core::DType::F64);
            assert_eq!(ds.n_classes, k, "{name}");
            assert_eq!(ds.labels.is_some(), k > 0, "{name}");
            if let Some(l) = &ds.labels {
                assert_eq!(l.len(), DEFAULT_N);
                assert!(l.iter().all(|&c| (c as usize) < k));
            }
            assert!(ds.image_shape.is_none());
            assert!(!ds.description.is_empty());
            assert!(rows(&ds).2.iter().all(|v| v.is_finite()), "{name}");
        }
    }

    #[test]
    fn deterministic_in_seed_and_prefix_stable() {
        for name in NAMES {
            let a = load(name, Some(300), 5).unwrap();
            let b = load(name, Some(300), 5).unwrap();
            let c = load(name, Some(300), 6).unwrap();
            let (_, _, va) = rows(&a);
            assert_eq!(va, rows(&b).2, "{name}");
            assert_eq!(a.labels, b.labels, "{name}");
            if name == "digits" {
                // Real data: n and seed are ignored.
                assert_eq!(va, rows(&c).2);
                continue;
            }
            assert_ne!(va, rows(&c).2, "{name}");
            // The first 100 rows of 300 are the 100-point set.
            let p = load(name, Some(100), 5).unwrap();
            let (_, d, vp) = rows(&p);
            assert_eq!(&va[..100 * d], &vp[..], "{name}");
            if let (Some(la), Some(lp)) = (&a.labels, &p.labels) {
                assert_eq!(&la[..100], &lp[..]);
            }
        }
    }

    #[test]
    fn two_spheres_radii_shares_and_isotropy() {
        let n = 20_000;
        let ds = load("two-spheres", Some(n), 1).unwrap();
        let (_, d, x) = rows(&ds);
        assert_eq!(d, 3);
        let labels = ds.labels.unwrap();
        let mut sums = [[0.0; 3]; 2];
        let mut counts = [0usize; 2];
        for (row, &l) in x.chunks(3).zip(&labels) {
            let r = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((r - f64::from(l + 1)).abs() < 1e-12, "label {l}, radius {r}");
            counts[l as usize] += 1;
            for j in 0..3 {
                sums[l as usize][j] += row[j] / r;
            }
        }
        // Class share: binomial, se = sqrt(p (1 - p) / n) with p = 1/2.
        let share = counts[0] as f64 / n as f64;
        assert!((share - 0.5).abs() < 4.0 * (0.25 / n as f64).sqrt(), "share {share}");
        // A uniform unit vector has mean 0 and per-coordinate variance 1/3, so the mean of
        // n_c of them has se 1/sqrt(3 n_c) per coordinate.
        for c in 0..2 {
            let se = 1.0 / (3.0 * counts[c] as f64).sqrt();
            for j in 0..3 {
                let m = sums[c][j] / counts[c] as f64;
                assert!(m.abs() < 4.0 * se, "class {c} coordinate {j}: mean {m}");
            }
        }
    }

    #[test]
    fn gmm25_matches_its_law() {
        let n = 20_000;
        let ds = load("gmm25", Some(n), 2).unwrap();
        let law = gmm25_law();
        assert_eq!(law.n_components(), 25);
        // Exactly the law's own sampler with seed 2, index 0.
        let (xs, ls) = law.sample_labelled(n, &Noise::new(2), 0);
        let (_, _, x) = rows(&ds);
        assert_eq!(x, xs);
        let labels = ds.labels.unwrap();
        assert!(labels.iter().zip(&ls).all(|(a, &b)| *a as usize == b));
        // Component shares: binomial, se_k = sqrt(w_k (1 - w_k) / n).
        let mut counts = [0usize; 25];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        for (k, w) in law.weights().iter().enumerate() {
            let share = counts[k] as f64 / n as f64;
            let se = (w * (1.0 - w) / n as f64).sqrt();
            assert!((share - w).abs() < 4.0 * se + 1e-12, "component {k}: {share} vs {w}");
        }
        // The weights do not depend on the seed of the samples.
        assert_eq!(gmm25_law().weights(), law.weights());
    }

    #[test]
    fn moons_lie_on_their_half_circles() {
        let n = 20_000;
        let ds = load("moons", Some(n), 3).unwrap();
        let (_, _, x) = rows(&ds);
        let labels = ds.labels.unwrap();
        let mut res = [Vec::new(), Vec::new()];
        let mut count0 = 0;
        for (p, &l) in x.chunks(2).zip(&labels) {
            // Centre and side of the half circle: outer (0, 0), upper; inner (1, 0.5), lower.
            let (cx, cy, up) = if l == 0 { (0.0, 0.0, 1.0) } else { (1.0, 0.5, -1.0) };
            let (dx, dy) = (p[0] - cx, p[1] - cy);
            // Noise sd 0.05: |e| > 0.3 (6 sd) has probability exp(-18) per point.
            assert!(up * dy > -0.3, "label {l}: {p:?} on the wrong side");
            assert!(dx > -1.3 && dx < 1.3);
            res[l as usize].push((dx * dx + dy * dy).sqrt() - 1.0);
            count0 += usize::from(l == 0);
        }
        let share = count0 as f64 / n as f64;
        assert!((share - 0.5).abs() < 4.0 * (0.25 / n as f64).sqrt(), "share {share}");
        for r in &res {
            assert!(r.iter().all(|v| v.abs() < 0.3));
            // Radial residual ~ the noise's normal component N(0, 0.05^2), up to O(sd^2):
            // its mean is ~sd^2/2 = 0.00125 and its variance ~0.0025 (se of a variance
            // 0.0025 sqrt(2/n) ~ 3.5e-5 here; 10% allows for the curvature terms).
            let (m, v) = mean_var(r);
            assert!(
                m.abs() < 0.0025 + 4.0 * 0.05 / (r.len() as f64).sqrt(),
                "mean residual {m}"
            );
            assert!((v / 0.0025 - 1.0).abs() < 0.1, "residual variance {v}");
        }
    }

    #[test]
    fn swiss_roll_lies_on_its_spiral() {
        let n = 4000;
        let ds = load("swiss-roll", Some(n), 4).unwrap();
        let (_, d, x) = rows(&ds);
        assert_eq!(d, 2);
        // The curve t -> (t cos t, t sin t) / 5 on [1.5 pi, 4.5 pi], finely discretised
        // (arc length ~ 18, so spacing ~ 0.002 with 8000 points).
        let m = 8000;
        let curve: Vec<(f64, f64)> = (0..m)
            .map(|k| {
                let t = 1.5 * PI * (1.0 + 2.0 * k as f64 / (m - 1) as f64);
                (t * t.cos() / 5.0, t * t.sin() / 5.0)
            })
            .collect();
        let mut d2 = Vec::with_capacity(n);
        for p in x.chunks(2) {
            let best = curve
                .iter()
                .map(|(a, b)| (p[0] - a).powi(2) + (p[1] - b).powi(2))
                .fold(f64::INFINITY, f64::min);
            // Noise sd 0.1: the distance to the curve is at most |e|, and |e| > 0.6 (6 sd)
            // has probability exp(-18) per point.
            assert!(best < 0.36, "point {p:?} is {} from the curve", best.sqrt());
            d2.push(best);
        }
        // The squared distance is ~ the squared normal component of the noise, mean 0.01
        // (se 0.01 sqrt(2 / n) ~ 2e-4; 15% allows for curvature and the ends).
        let (md, _) = mean_var(&d2);
        assert!((md / 0.01 - 1.0).abs() < 0.15, "mean squared distance {md}");
        // Radii: between 1.5 pi / 5 and 4.5 pi / 5 up to noise.
        for p in x.chunks(2) {
            let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
            assert!(r > 1.5 * PI / 5.0 - 0.6 && r < 4.5 * PI / 5.0 + 0.6, "radius {r}");
        }
    }

    #[test]
    fn checkerboard_fills_the_black_squares_evenly() {
        let n = 40_000;
        let ds = load("checkerboard", Some(n), 5).unwrap();
        let (_, _, x) = rows(&ds);
        let mut counts = [[0usize; 4]; 4];
        for p in x.chunks(2) {
            assert!(p.iter().all(|&v| (-4.0..4.0).contains(&v)), "{p:?} off the board");
            let i = ((p[0] + 4.0) / 2.0).floor() as usize;
            let j = ((p[1] + 4.0) / 2.0).floor() as usize;
            assert_eq!((i + j) % 2, 0, "{p:?} in a white square");
            counts[i][j] += 1;
        }
        // The bottom-left square [-4, -2)^2 is black, and the 8 black squares each hold a
        // binomial share 1/8: se = sqrt(n (1/8) (7/8)).
        let se = (n as f64 * 0.125 * 0.875).sqrt();
        for i in 0..4 {
            for j in 0..4 {
                if (i + j) % 2 == 0 {
                    let c = counts[i][j] as f64;
                    assert!((c - n as f64 / 8.0).abs() < 4.0 * se, "square ({i}, {j}): {c}");
                }
            }
        }
        // Within the squares the offsets are uniform on [0, 2): mean 1, se sqrt(1/3 / n).
        let off: Vec<f64> = x.iter().map(|v| (v + 4.0).rem_euclid(2.0)).collect();
        let (m, _) = mean_var(&off);
        assert!(
            (m - 1.0).abs() < 4.0 * (1.0 / 3.0 / off.len() as f64).sqrt(),
            "offset mean {m}"
        );
        let mut seen: Vec<(usize, usize)> = (0..8).map(black_square).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn funnel_has_the_right_scales() {
        let n = 40_000;
        let ds = load("funnel", Some(n), 6).unwrap();
        let (_, d, x) = rows(&ds);
        assert_eq!(d, 10);
        let v: Vec<f64> = x.chunks(10).map(|r| r[0]).collect();
        let (mv, vv) = mean_var(&v);
        // se of the mean 3 / sqrt(n); se of a normal variance var sqrt(2 / n).
        assert!(mv.abs() < 4.0 * 3.0 / (n as f64).sqrt(), "mean of v {mv}");
        assert!((vv - 9.0).abs() < 4.0 * 9.0 * (2.0 / n as f64).sqrt(), "var of v {vv}");
        // Given v, x_i / exp(v / 2) is standard normal: variance 1 within 4 se over 9 n values.
        let z: Vec<f64> = x
            .chunks(10)
            .flat_map(|r| r[1..].iter().map(move |xi| xi / (0.5 * r[0]).exp()))
            .collect();
        let (mz, vz) = mean_var(&z);
        assert!(mz.abs() < 4.0 / (z.len() as f64).sqrt(), "mean {mz}");
        assert!((vz - 1.0).abs() < 4.0 * (2.0 / z.len() as f64).sqrt(), "var {vz}");
    }

    #[test]
    fn digits_is_the_real_table() {
        let ds = load("digits", None, 0).unwrap();
        assert_eq!(ds.name, "digits");
        assert_eq!(ds.x.dims(), &[1797, 64]);
        assert_eq!(ds.n_classes, 10);
        assert_eq!(ds.image_shape, Some((8, 8)));
        let (_, _, x) = rows(&ds);
        assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Pixels are k / 16 exactly, and both ends of the range occur.
        assert!(x.iter().all(|&v| (v * 16.0).fract() == 0.0));
        assert!(x.contains(&0.0) && x.contains(&1.0));
        // First row of the file: 0,0,5,13,9,1,0,0,... label 0.
        assert_eq!(&x[..6], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0, 9.0 / 16.0, 1.0 / 16.0]);
        let labels = ds.labels.unwrap();
        assert_eq!(&labels[..3], &[0, 1, 2]);
        // Label counts computed once from the file with
        // `zcat data/digits.csv.gz | awk -F, '{print $NF}' | sort -n | uniq -c`.
        let expected = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];
        let mut counts = [0usize; 10];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, expected);
        // `n` is ignored for the real set, even 0.
        assert_eq!(load("digits", Some(0), 9).unwrap().x.dims(), &[1797, 64]);
    }
}
