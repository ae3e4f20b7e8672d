//! The Bernoulli restricted Boltzmann machine (Smolensky 1986; Hinton 2002): binary visible `v in {0,1}^V` and
//! hidden `h in {0,1}^H` units with
//! `p(v, h) ∝ exp(v^T W h + b^T v + c^T h)`
//! (no visible–visible or hidden–hidden links), so the
//! conditionals factorise:
//! `p(h_j = 1 | v) = sigma(c_j + (v^T W)_j)`, `p(v_i = 1 | h) = sigma(b_i + (W h)_i)`.
//! The free energy `F(v) = -b^T v - sum_j softplus(c_j + (v^T W)_j)` gives `p(v) ∝ exp(-F(v))`.
//!
//! **CD-k** (contrastive divergence, Hinton 2002): the log-likelihood gradient is
//! `<v h^T>_data - <v h^T>_model`; the positive phase uses `p(h | v_data)`, the negative phase
//! `v_k` after `k` Gibbs steps `v -> h -> v` started at the data, with `p(h | v_k)`:
//! `dW = <v_0 p(h|v_0)^T> - <v_k p(h|v_k)^T>`, `db = <v_0 - v_k>`, `dc = <p(h|v_0) - p(h|v_k)>`,
//! applied by SGD with momentum (Hinton's practical guide: small random `W`, zero hidden
//! biases, visible biases `log(p_i / (1 - p_i))` of the data means).
//!
//! Plain `f64` vectors; every Bernoulli draw comes from [`Noise`] streams (training batch `j`:
//! `(Purpose::Train, 2^47 + j)`, epoch shuffles `(Purpose::Train, 2^46 + e)`, Gibbs step `k`
//! of [`Rbm::gibbs`]: `(Purpose::Step, k)`), so runs are bit-reproducible for a seed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::io::write_atomic;
use crate::rng::{stream, Noise, Purpose};
use crate::{Error, Result};

/// Training settings of [`train_rbm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RbmConfig {
    /// Hidden units `H`.
    pub hidden: usize,
    /// Gibbs steps `k` of CD-k.
    pub k: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Momentum of the SGD updates.
    pub momentum: f64,
    /// L2 weight decay on `W`.
    pub weight_decay: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for RbmConfig {
    fn default() -> Self {
        RbmConfig {
            hidden: 128,
            k: 1,
            epochs: 30,
            batch: 20,
            lr: 0.05,
            momentum: 0.5,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// A Bernoulli RBM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rbm {
    /// Visible units `V`.
    pub visible: usize,
    /// Hidden units `H`.
    pub hidden: usize,
    /// Weights `W`, row-major `V x H`.
    pub w: Vec<f64>,
    /// Visible biases `b`.
    pub b: Vec<f64>,
    /// Hidden biases `c`.
    pub c: Vec<f64>,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// What [`train_rbm`] reports.
#[derive(Clone, Debug)]
pub struct RbmReport {
    /// Mean squared reconstruction error per pixel after each epoch:
    /// `mean (v - p(v | h = p(h | v)))^2` over the training data (mean-field, deterministic).
    pub recon_error: Vec<f64>,
    /// Reconstruction error of the initial machine.
    pub initial_recon_error: f64,
    /// Mean free energy of the data after each epoch.
    pub free_energy: Vec<f64>,
}

impl Rbm {
    /// A machine with `W ~ N(0, 0.01^2)` from `Noise::new(seed)` and zero biases.
    pub fn new(visible: usize, hidden: usize, seed: u64) -> Result<Self> {
        if visible == 0 || hidden == 0 {
            return Err(Error::invalid("rbm: need at least one visible and one hidden unit"));
        }
        let w = Noise::new(seed)
            .normals(stream(Purpose::Train, 1 << 40), visible * hidden, 1)
            .iter()
            .map(|z| 0.01 * z)
            .collect();
        Ok(Rbm {
            visible,
            hidden,
            w,
            b: vec![0.0; visible],
            c: vec![0.0; hidden],
        })
    }

    fn check(&self, v: &[f64], what: &str) -> Result<usize> {
        if !v.len().is_multiple_of(self.visible) {
            return Err(Error::invalid(format!(
                "{what}: {} values are not rows of {} visible units",
                v.len(),
                self.visible
            )));
        }
        Ok(v.len() / self.visible)
    }

    /// `p(h = 1 | v)` for rows `v` (`[n, V]` row-major), `[n, H]`.
    pub fn hidden_probs(&self, v: &[f64]) -> Vec<f64> {
        let (nv, nh) = (self.visible, self.hidden);
        let n = v.len() / nv;
        let mut out = vec![0.0; n * nh];
        for r in 0..n {
            let o = &mut out[r * nh..(r + 1) * nh];
            o.copy_from_slice(&self.c);
            for i in 0..nv {
                let x = v[r * nv + i];
                if x != 0.0 {
                    let wi = &self.w[i * nh..(i + 1) * nh];
                    for j in 0..nh {
                        o[j] += x * wi[j];
                    }
                }
            }
            for p in o.iter_mut() {
                *p = sigmoid(*p);
            }
        }
        out
    }

    /// `p(v = 1 | h)` for rows `h` (`[n, H]`), `[n, V]`.
    pub fn visible_probs(&self, h: &[f64]) -> Vec<f64> {
        let (nv, nh) = (self.visible, self.hidden);
        let n = h.len() / nh;
        let mut out = vec![0.0; n * nv];
        for r in 0..n {
            let hr = &h[r * nh..(r + 1) * nh];
            for i in 0..nv {
                let wi = &self.w[i * nh..(i + 1) * nh];
                let s: f64 = wi.iter().zip(hr).map(|(a, b)| a * b).sum();
                out[r * nv + i] = sigmoid(self.b[i] + s);
            }
        }
        out
    }

    /// The free energy `F(v) = -b^T v - sum_j softplus(c_j + (v^T W)_j)` of each row.
    pub fn free_energy(&self, v: &[f64]) -> Result<Vec<f64>> {
        let n = self.check(v, "free energy")?;
        let (nv, nh) = (self.visible, self.hidden);
        Ok((0..n)
            .map(|r| {
                let vr = &v[r * nv..(r + 1) * nv];
                let mut pre = self.c.clone();
                for i in 0..nv {
                    for j in 0..nh {
                        pre[j] += vr[i] * self.w[i * nh + j];
                    }
                }
                -vr.iter().zip(&self.b).map(|(a, b)| a * b).sum::<f64>() - pre.iter().map(|&z| softplus(z)).sum::<f64>()
            })
            .collect())
    }

    /// Mean squared reconstruction error per pixel, `mean (v - p(v | p(h | v)))^2`.
    pub fn reconstruction_error(&self, v: &[f64]) -> Result<f64> {
        self.check(v, "reconstruction")?;
        let r = self.visible_probs(&self.hidden_probs(v));
        Ok(v.iter().zip(&r).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / v.len().max(1) as f64)
    }

    /// `steps` Gibbs sweeps `v -> h -> v` from the rows `v0` (binary, `[n, V]`), with the
    /// draws of sweep `k` from `(Purpose::Step, k)` of `Noise::new(seed)`. Returns the final
    /// binary states and the final means `p(v | h)` (smoother pictures).
    pub fn gibbs(&self, v0: &[f64], steps: usize, seed: u64) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = self.check(v0, "gibbs")?;
        let noise = Noise::new(seed);
        let mut v = v0.to_vec();
        let mut pv = v0.to_vec();
        for k in 0..steps {
            let u = noise.uniforms(stream(Purpose::Step, k as u64), n * (self.hidden + self.visible));
            let (uh, uv) = u.split_at(n * self.hidden);
            let h = bernoulli(&self.hidden_probs(&v), uh);
            pv = self.visible_probs(&h);
            v = bernoulli(&pv, uv);
        }
        Ok((v, pv))
    }

    /// Writes the machine as JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(&RbmFile {
            format: RBM_FORMAT.into(),
            rbm: self.clone(),
        })
        .map_err(|e| Error::invalid(e.to_string()))?;
        write_atomic(path, |w| Ok(w.write_all(text.as_bytes())?))
    }

    /// Reads a machine written by [`Rbm::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let f: RbmFile = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not an RBM file: {e}")))?;
        let r = f.rbm;
        if f.format != RBM_FORMAT
            || r.w.len() != r.visible * r.hidden
            || r.b.len() != r.visible
            || r.c.len() != r.hidden
        {
            return Err(Error::file(path, "not an RBM file: inconsistent shapes or format"));
        }
        Ok(r)
    }
}

const RBM_FORMAT: &str = "scoregen-rbm-1";

#[derive(Serialize, Deserialize)]
struct RbmFile {
    format: String,
    rbm: Rbm,
}

fn bernoulli(p: &[f64], u: &[f64]) -> Vec<f64> {
    p.iter().zip(u).map(|(&p, &u)| if u <= p { 1.0 } else { 0.0 }).collect()
}

/// Binarises pixels at a threshold: `1` where `x >= threshold`, else `0` (the digits, scaled
/// to `[0, 1]`, at `8 / 16 = 0.5`).
pub fn binarise(x: &[f64], threshold: f64) -> Vec<f64> {
    x.iter().map(|&v| if v >= threshold { 1.0 } else { 0.0 }).collect()
}

/// Trains an RBM with `V = visible` units by CD-k on binary rows `data` (`[n, V]` row-major,
/// values 0 or 1); `progress(epoch, recon_error)` after each epoch.
pub fn train_rbm(
    data: &[f64],
    visible: usize,
    cfg: &RbmConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(Rbm, RbmReport)> {
    if visible == 0 || data.is_empty() || !data.len().is_multiple_of(visible) {
        return Err(Error::invalid(format!(
            "rbm: {} values are not rows of {visible} visible units",
            data.len()
        )));
    }
    if let Some(bad) = data.iter().find(|&&x| x != 0.0 && x != 1.0) {
        return Err(Error::invalid(format!(
            "rbm: data must be binary (0 or 1), found {bad}"
        )));
    }
    let ok = cfg.k >= 1
        && cfg.epochs >= 1
        && cfg.batch >= 1
        && cfg.lr > 0.0
        && cfg.lr.is_finite()
        && (0.0..1.0).contains(&cfg.momentum)
        && cfg.weight_decay >= 0.0;
    if !ok {
        return Err(Error::invalid(
            "rbm: need k, epochs, batch >= 1, lr > 0, momentum in [0, 1), weight decay >= 0",
        ));
    }
    let n = data.len() / visible;
    let mut rbm = Rbm::new(visible, cfg.hidden, cfg.seed)?;
    // Visible biases log(p / (1 - p)) of the pixel means (clamped).
    for i in 0..visible {
        let p = ((0..n).map(|r| data[r * visible + i]).sum::<f64>() / n as f64).clamp(1e-3, 1.0 - 1e-3);
        rbm.b[i] = (p / (1.0 - p)).ln();
    }
    let (nv, nh) = (visible, cfg.hidden);
    let noise = Noise::new(cfg.seed);
    let (mut mw, mut mb, mut mc) = (vec![0.0; nv * nh], vec![0.0; nv], vec![0.0; nh]);
    let mut rep = RbmReport {
        recon_error: vec![],
        initial_recon_error: rbm.reconstruction_error(data)?,
        free_energy: vec![],
    };
    let mut batch_id = 0u64;
    for epoch in 0..cfg.epochs {
        let u = noise.uniforms(stream(Purpose::Train, (1 << 46) + epoch as u64), n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| u[a].total_cmp(&u[b]));
        for rows in order.chunks(cfg.batch) {
            let m = rows.len();
            let v0: Vec<f64> = rows
                .iter()
                .flat_map(|&r| data[r * nv..(r + 1) * nv].iter().copied())
                .collect();
            let ph0 = rbm.hidden_probs(&v0);
            let u = noise.uniforms(stream(Purpose::Train, (1 << 47) + batch_id), cfg.k * m * (nh + nv));
            batch_id += 1;
            let mut h = bernoulli(&ph0, &u[..m * nh]);
            let mut vk = v0.clone();
            let mut phk = ph0.clone();
            for s in 0..cfg.k {
                let base = s * m * (nh + nv);
                if s > 0 {
                    h = bernoulli(&phk, &u[base..base + m * nh]);
                }
                let pv = rbm.visible_probs(&h);
                vk = bernoulli(&pv, &u[base + m * nh..base + m * (nh + nv)]);
                phk = rbm.hidden_probs(&vk);
            }
            let scale = cfg.lr / m as f64;
            for i in 0..nv {
                for j in 0..nh {
                    let mut g = 0.0;
                    for r in 0..m {
                        g += v0[r * nv + i] * ph0[r * nh + j] - vk[r * nv + i] * phk[r * nh + j];
                    }
                    let idx = i * nh + j;
                    mw[idx] = cfg.momentum * mw[idx] + scale * g - cfg.lr * cfg.weight_decay * rbm.w[idx];
                    rbm.w[idx] += mw[idx];
                }
            }
            for i in 0..nv {
                let g: f64 = (0..m).map(|r| v0[r * nv + i] - vk[r * nv + i]).sum();
                mb[i] = cfg.momentum * mb[i] + scale * g;
                rbm.b[i] += mb[i];
            }
            for j in 0..nh {
                let g: f64 = (0..m).map(|r| ph0[r * nh + j] - phk[r * nh + j]).sum();
                mc[j] = cfg.momentum * mc[j] + scale * g;
                rbm.c[j] += mc[j];
            }
        }
        let e = rbm.reconstruction_error(data)?;
        if !e.is_finite() {
            return Err(Error::Numerical(format!(
                "rbm: reconstruction error is {e} at epoch {}",
                epoch + 1
            )));
        }
        let f = rbm.free_energy(data)?;
        rep.free_energy.push(f.iter().sum::<f64>() / n as f64);
        rep.recon_error.push(e);
        progress(epoch + 1, e);
    }
    Ok((rbm, rep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::builtin;

    fn digits() -> Vec<f64> {
        let ds = builtin::load("digits", None, 0).unwrap();
        let x: Vec<f64> =
            ds.x.to_dtype(candle_core::DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
        binarise(&x, 0.5)
    }

    /// `F(v) = -log sum_h exp(v^T W h + b^T v + c^T h)`, checked by enumerating `h` on a tiny
    /// machine; and the conditionals against Bayes' rule on the enumerated joint.
    #[test]
    fn free_energy_and_conditionals_are_exact() {
        let mut r = Rbm::new(3, 2, 4).unwrap();
        r.w = vec![0.5, -1.0, 0.3, 0.8, -0.2, 0.1];
        r.b = vec![0.1, -0.3, 0.2];
        r.c = vec![-0.5, 0.4];
        let v = [1.0, 0.0, 1.0];
        let mut z = 0.0;
        let mut h1 = 0.0;
        for hb in 0..4 {
            let h = [(hb & 1) as f64, (hb >> 1) as f64];
            let mut e = 0.0;
            for i in 0..3 {
                e += r.b[i] * v[i];
                for j in 0..2 {
                    e += v[i] * r.w[i * 2 + j] * h[j];
                }
            }
            e += r.c[0] * h[0] + r.c[1] * h[1];
            z += e.exp();
            h1 += h[0] * e.exp();
        }
        let f = r.free_energy(&v).unwrap()[0];
        assert!((f + z.ln()).abs() < 1e-12, "{f} vs {}", -z.ln());
        assert!((r.hidden_probs(&v)[0] - h1 / z).abs() < 1e-12);
    }

    /// CD-1 on the binarised digits: the reconstruction error falls from epoch 1 to the last
    /// and below the initial machine's (which, with `W ~ 0` and the visible biases at the
    /// pixel means, predicts the means: its error is the mean pixel variance).
    #[test]
    fn cd_lowers_the_reconstruction_error_on_digits() {
        let x = digits();
        let cfg = RbmConfig {
            hidden: 64,
            epochs: 10,
            ..Default::default()
        };
        let (rbm, rep) = train_rbm(&x, 64, &cfg, &mut |_, _| {}).unwrap();
        eprintln!(
            "recon error initial {:.4}, per epoch {:.4?}; free energy {:.2?}",
            rep.initial_recon_error, rep.recon_error, rep.free_energy
        );
        let e = &rep.recon_error;
        assert!(
            e[e.len() - 1] < 0.8 * e[0] && e[e.len() - 1] < rep.initial_recon_error,
            "{e:?}"
        );
        // Gibbs samples are binary and reproducible.
        let (v, pv) = rbm.gibbs(&vec![0.0; 64 * 4], 20, 1).unwrap();
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0) && pv.iter().all(|&p| (0.0..=1.0).contains(&p)));
        assert_eq!(rbm.gibbs(&vec![0.0; 64 * 4], 20, 1).unwrap().0, v);
        // Round trip.
        let p = std::env::temp_dir().join(format!("scoregen-rbm-{}.json", std::process::id()));
        rbm.save(&p).unwrap();
        // serde_json's parser is exact to the last ulp or so (no `float_roundtrip` feature).
        let back = Rbm::load(&p).unwrap();
        let diff = back
            .w
            .iter()
            .chain(&back.b)
            .chain(&back.c)
            .zip(rbm.w.iter().chain(&rbm.b).chain(&rbm.c));
        assert!(diff.map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) < 1e-14);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn bad_rbm_input_is_rejected() {
        let cfg = RbmConfig::default();
        assert!(train_rbm(&[0.0, 1.0, 0.5, 1.0], 2, &cfg, &mut |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("binary"));
        assert!(train_rbm(&[0.0, 1.0, 1.0], 2, &cfg, &mut |_, _| {}).is_err());
        let bad = RbmConfig { k: 0, ..cfg };
        assert!(train_rbm(&[0.0, 1.0], 2, &bad, &mut |_, _| {}).is_err());
    }
}
