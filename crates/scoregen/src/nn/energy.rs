//! Energy networks (LeCun et al. 2006; Du & Mordatch 2019): a scalar MLP `f_theta(t, x)` whose score is its input
//! gradient.
//!
//! **Sign convention**: `f` is the *unnormalised log-density*, `p_theta(x) = exp(f(x)) / Z`,
//! so the energy is `E = -f` and the score is `s_theta(t, x) = grad_x f_theta(t, x)` (`Z`
//! drops out).
//!
//! Architecture: `[x, phi(t)] -> H -> ... -> H -> 1` with SiLU, the Fourier time features of
//! [`super::mlp`] (`phi(t)` at normalised time `tau = t / T`; a time-free EBM uses
//! `tau = 0`), initialised from [`crate::rng::Noise`] streams like [`super::Mlp`].
//!
//! Because candle's second backward pass is wrong (it detaches intermediate gradients; see
//! [`super::jvp`]), the input gradient and the
//! Hessian-vector product are written **explicitly** with tensor ops, so that losses built
//! on the score (DSM on `grad_x f`; SSM / ESM on `v^T (∂ grad_x f / ∂x) v`) are trained by
//! candle's first-order backward:
//!
//! * forward: `z_1 = [x, phi] W_1 + b_1`, `a_l = silu(z_l)`, `z_{l+1} = a_l W_{l+1} + b_{l+1}`,
//!   `f = a_L w + b`;
//! * reverse (the gradient): `c_L = w^T`, `g_l = c_l ⊙ silu'(z_l)`, `c_{l-1} = g_l W_l^T`,
//!   `grad_x f = g_1 (W_1[:d])^T`;
//! * forward-over-reverse (the Hessian-vector product `H v`): tangents
//!   `dz_1 = v W_1[:d]`, `dz_{l+1} = (silu'(z_l) ⊙ dz_l) W_{l+1}`; `dc_L = 0`,
//!   `dg_l = c_l ⊙ silu''(z_l) ⊙ dz_l + dc_l ⊙ silu'(z_l)`, `dc_{l-1} = dg_l W_l^T`,
//!   `H v = dg_1 (W_1[:d])^T`.
//!
//! **Checkpoint** (a directory): `energy.safetensors` (parameters) and `energy.json`
//! ([`EnergyMeta`]: architecture, process, data normalisation, training notes), both
//! written under temporary names and renamed, the JSON last.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::jvp::{silu_prime, silu_second, tangent_matmul, tangents_3d};
use super::mlp::MlpBody;
use super::model::Normalisation;
use crate::io::write_atomic;
use crate::process::Process;
use crate::score::Score;
use crate::{Error, Result};

/// Architecture of an [`EnergyNet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyConfig {
    /// Data dimension `d`.
    pub dim: usize,
    /// Hidden width `H`.
    pub hidden: usize,
    /// Number of hidden layers (>= 1).
    pub depth: usize,
    /// Number of Fourier time features (even, >= 2).
    pub fourier: usize,
}

impl EnergyConfig {
    /// A small default: `H = 128`, 3 hidden layers, 16 Fourier features.
    pub fn small(dim: usize) -> Self {
        EnergyConfig {
            dim,
            hidden: 128,
            depth: 3,
            fourier: 16,
        }
    }
}

/// The energy MLP `f_theta(t, x)` (log-density up to a constant; energy `E = -f`).
pub struct EnergyNet {
    /// The architecture.
    pub config: EnergyConfig,
    body: MlpBody,
}

/// Primal quantities of one forward pass.
struct Forward {
    /// Pre-activations `z_l`, `l = 1..L`.
    zs: Vec<Tensor>,
    /// `f`, `[n, 1]`.
    f: Tensor,
}

impl EnergyNet {
    /// A network with PyTorch-style initialisation `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` drawn
    /// from `Noise::new(seed)`; the output layer is scaled by 0.1.
    pub fn new(config: EnergyConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let c = &config;
        // Streams apart from the score MLP's (1 << 40) + k.
        let sizes = [c.dim, c.hidden, c.depth, c.fourier, 1, 0];
        let body = MlpBody::init("energy network", sizes, ((1 << 40) + (1 << 20), seed), dtype, device)?;
        Ok(EnergyNet { config, body })
    }

    /// A network with the given parameter values (in the order of [`EnergyNet::names`]).
    pub fn with_values(config: EnergyConfig, values: &[Tensor], device: &Device) -> Result<Self> {
        let dtype = values.first().map(|v| v.dtype()).unwrap_or(DType::F32);
        let net = EnergyNet::new(config, 0, dtype, device)?;
        super::set_parameters("energy network", &net.body.vars, &net.body.names, values)?;
        Ok(net)
    }

    /// The parameters, in a fixed order.
    pub fn vars(&self) -> &[Var] {
        &self.body.vars
    }

    /// The parameter names, in the order of [`EnergyNet::vars`].
    pub fn names(&self) -> &[String] {
        &self.body.names
    }

    /// The dtype of the parameters.
    pub fn dtype(&self) -> DType {
        self.body.vars[0].dtype()
    }

    fn var(&self, name: &str) -> &Tensor {
        self.body.var(name)
    }

    /// `W_l` of hidden layer `l` (1-based; `l = 1` is the input layer).
    fn weight(&self, l: usize) -> &Tensor {
        if l == 1 {
            self.var("in.w")
        } else {
            self.var(&format!("h{}.w", l - 1))
        }
    }

    fn check(&self, x: &Tensor, tau: &Tensor) -> Result<usize> {
        let (n, d) = x.dims2()?;
        if d != self.config.dim {
            return Err(Error::invalid(format!(
                "points have dimension {d}, the energy network {}",
                self.config.dim
            )));
        }
        if tau.dims() != [n, 1] {
            return Err(Error::invalid(format!(
                "times of shape {:?} for {n} points (expected [{n}, 1])",
                tau.dims()
            )));
        }
        Ok(n)
    }

    fn run(&self, x: &Tensor, tau: &Tensor) -> Result<Forward> {
        self.check(x, tau)?;
        let arg = tau.broadcast_mul(&self.body.freqs)?;
        let feats = Tensor::cat(&[x, &arg.sin()?, &arg.cos()?], 1)?;
        let mut zs = Vec::with_capacity(self.config.depth);
        let mut z = feats.matmul(self.var("in.w"))?.broadcast_add(self.var("in.b"))?;
        for i in 1..self.config.depth {
            let a = z.silu()?;
            zs.push(z);
            z = a
                .matmul(self.var(&format!("h{i}.w")))?
                .broadcast_add(self.var(&format!("h{i}.b")))?;
        }
        let a = z.silu()?;
        zs.push(z);
        let f = a.matmul(self.var("out.w"))?.broadcast_add(self.var("out.b"))?;
        Ok(Forward { zs, f })
    }

    /// `f_theta(tau, x)` for each row of `x` (`[n, d]`) at normalised times `tau` (`[n, 1]`),
    /// as an `[n]` tensor.
    pub fn forward(&self, x: &Tensor, tau: &Tensor) -> Result<Tensor> {
        Ok(self.run(x, tau)?.f.squeeze(1)?)
    }

    /// `(f, grad_x f)` (`[n]`, `[n, d]`) by the explicit reverse pass of the module
    /// documentation; differentiable in the parameters by candle's first-order backward.
    pub fn grad(&self, x: &Tensor, tau: &Tensor) -> Result<(Tensor, Tensor)> {
        let fw = self.run(x, tau)?;
        let (g, _) = self.reverse(&fw, None)?;
        Ok((fw.f.squeeze(1)?, g))
    }

    /// `(f, grad_x f, H v)` with the Hessian-vector products `H v = (∂ grad_x f / ∂x) v`
    /// for tangents `v` (`[n, d]` or `[k, n, d]`; `H v` has `v`'s shape), by explicit
    /// forward-over-reverse tangent propagation.
    pub fn grad_hvp(&self, x: &Tensor, tau: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let fw = self.run(x, tau)?;
        let (n, d) = x.dims2()?;
        let (dv, flat) = tangents_3d(v, n, d)?;
        // Forward tangents of the pre-activations.
        let mut dzs = Vec::with_capacity(self.config.depth);
        let mut dz = tangent_matmul(&dv, &self.var("in.w").narrow(0, 0, d)?)?;
        for l in 1..self.config.depth {
            let da = dz.broadcast_mul(&silu_prime(&fw.zs[l - 1])?)?;
            let next = tangent_matmul(&da, self.weight(l + 1))?;
            dzs.push(dz);
            dz = next;
        }
        dzs.push(dz);
        let (g, hv) = self.reverse(&fw, Some(&dzs))?;
        let hv = hv.expect("tangents given");
        let hv = if flat { hv.squeeze(0)? } else { hv };
        Ok((fw.f.squeeze(1)?, g, hv))
    }

    /// The reverse pass, with its tangent when the forward tangents `dzs` are given.
    fn reverse(&self, fw: &Forward, dzs: Option<&[Tensor]>) -> Result<(Tensor, Option<Tensor>)> {
        let d = self.config.dim;
        // c_L = w^T (broadcast over rows); its tangent dc_L is zero.
        let mut c = self.var("out.w").t()?.contiguous()?;
        let mut dc: Option<Tensor> = None;
        let mut l = self.config.depth;
        loop {
            let z = &fw.zs[l - 1];
            let sp = silu_prime(z)?;
            let g = c.broadcast_mul(&sp)?;
            let dg = match dzs {
                Some(dzs) => {
                    let mut t = dzs[l - 1].broadcast_mul(&silu_second(z)?.broadcast_mul(&c)?)?;
                    if let Some(dc) = &dc {
                        t = (t + dc.broadcast_mul(&sp)?)?;
                    }
                    Some(t)
                }
                None => None,
            };
            let w = self.weight(l);
            let w = if l == 1 { w.narrow(0, 0, d)? } else { w.clone() };
            let wt = w.t()?.contiguous()?;
            let c_next = g.matmul(&wt)?;
            let dc_next = dg.map(|dg| tangent_matmul(&dg, &wt)).transpose()?;
            if l == 1 {
                // c_0 restricted to the x inputs is grad_x f; its tangent is H v.
                return Ok((c_next, dc_next));
            }
            c = c_next;
            dc = dc_next;
            l -= 1;
        }
    }
}

/// An [`EnergyNet`] with its forward process as a [`Score`]: `score(t, x) = grad_x f(t/T, x)`,
/// so every sampler of [`crate::sample`] runs on an energy model. For a time-free EBM (trained
/// at `tau = 0`) pass `time_free = true`: the score is then `grad_x f(0, x)` at every `t`.
pub struct EnergyScore {
    net: EnergyNet,
    process: Process,
    time_free: bool,
}

impl EnergyScore {
    /// The score of `net`, whose time input is `t / T` of `process` (or always 0 when
    /// `time_free`).
    pub fn new(net: EnergyNet, process: Process, time_free: bool) -> Self {
        EnergyScore {
            net,
            process,
            time_free,
        }
    }

    /// The network.
    pub fn net(&self) -> &EnergyNet {
        &self.net
    }

    /// The network, giving up the wrapper.
    pub fn into_net(self) -> EnergyNet {
        self.net
    }

    /// The normalised time fed to the network at forward time `t`.
    pub fn tau(&self, t: f64) -> f64 {
        if self.time_free {
            0.0
        } else {
            t / self.process.t_max()
        }
    }

    /// `f(t, x)` (the unnormalised log-density) for each row, `[n]`, in `x`'s dtype.
    pub fn log_density(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let n = x.dims2()?.0;
        let dt = self.net.dtype();
        let tau = Tensor::full(self.tau(t), (n, 1), x.device())?.to_dtype(dt)?;
        Ok(self.net.forward(&x.to_dtype(dt)?, &tau)?.detach().to_dtype(x.dtype())?)
    }
}

impl Score for EnergyScore {
    fn dim(&self) -> usize {
        self.net.config.dim
    }

    fn process(&self) -> &Process {
        &self.process
    }

    fn score(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let n = x.dims2()?.0;
        let dt = self.net.dtype();
        let tau = Tensor::full(self.tau(t), (n, 1), x.device())?.to_dtype(dt)?;
        let (_, g) = self.net.grad(&x.to_dtype(dt)?, &tau)?;
        Ok(g.detach().to_dtype(x.dtype())?)
    }

    /// Exact through the explicit Hessian-vector product: the score is `grad_x f`, so
    /// `x0_hat = (x + s^2 grad f)/m` and `J^T v = (v + s^2 H v)/m` (`H` symmetric).
    fn denoise_vjp(&self, t: f64, x: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dims2()?.0;
        let dt = self.net.dtype();
        let tau = Tensor::full(self.tau(t), (n, 1), x.device())?.to_dtype(dt)?;
        let (_, g, hv) = self.net.grad_hvp(&x.to_dtype(dt)?, &tau, &v.to_dtype(dt)?)?;
        let p = self.process();
        let (m, s2) = (p.m(t), p.s(t).powi(2));
        let x0 = (x + g.detach().to_dtype(x.dtype())?.affine(s2, 0.0)?)?.affine(1.0 / m, 0.0)?;
        let jv = (v + hv.detach().to_dtype(x.dtype())?.affine(s2, 0.0)?)?.affine(1.0 / m, 0.0)?;
        Ok((x0, jv))
    }
}

/// The JSON of an energy checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnergyMeta {
    /// Format tag.
    pub format: String,
    /// Architecture.
    pub arch: EnergyConfig,
    /// The forward process of a noise-conditional energy (`None`: time-free EBM, `tau = 0`).
    pub process: Option<Process>,
    /// Data normalisation: the network works on `(x - mean) / std`.
    pub normalisation: Normalisation,
    /// How it was trained (free text, e.g. `"cd"`).
    pub trained_by: String,
    /// Optimiser steps done.
    pub step: usize,
}

const ENERGY_FORMAT: &str = "scoregen-energy-1";
const ENERGY_META: &str = "energy.json";
const ENERGY_WEIGHTS: &str = "energy.safetensors";

/// Writes `net` and `meta` to the directory `dir` (created if needed): the weights, then the
/// JSON, each written to a temporary file and renamed.
pub fn save_energy(dir: &Path, net: &EnergyNet, meta: &EnergyMeta) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create directory: {e}")))?;
    let map: HashMap<String, Tensor> = net
        .names()
        .iter()
        .zip(net.vars())
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let wpath = dir.join(ENERGY_WEIGHTS);
    let tmp = dir.join(format!(".{ENERGY_WEIGHTS}.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&map, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(&wpath, format!("cannot write weights: {e}"))
    })?;
    std::fs::rename(&tmp, &wpath).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(&wpath, format!("cannot rename weights: {e}"))
    })?;
    let mut meta = meta.clone();
    meta.format = ENERGY_FORMAT.into();
    meta.arch = net.config.clone();
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(dir.join(ENERGY_META), |w| Ok(w.write_all(text.as_bytes())?))
}

/// Reads an energy checkpoint written by [`save_energy`].
pub fn load_energy(dir: &Path) -> Result<(EnergyNet, EnergyMeta)> {
    let path = dir.join(ENERGY_META);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::file(dir, format!("not an energy checkpoint ({ENERGY_META}: {e})")))?;
    let meta: EnergyMeta =
        serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("corrupted checkpoint: {e}")))?;
    if meta.format != ENERGY_FORMAT {
        return Err(Error::file(&path, format!("unknown format '{}'", meta.format)));
    }
    // Sizes from the file are checked before anything is allocated from them.
    let a = &meta.arch;
    let (d, h, f) = (a.dim as f64, a.hidden as f64, a.fourier as f64);
    let params = (d + f) * h + (a.depth as f64 - 1.0) * h * h + h * (a.depth as f64 + 1.0) + h + 1.0;
    if a.dim > super::train::MAX_CHECKPOINT_DIM
        || a.fourier > 4096
        || a.depth > 1000
        || params > super::train::MAX_CHECKPOINT_PARAMS as f64
    {
        return Err(Error::file(
            &path,
            format!(
                "architecture too large (dim {}, hidden {}, depth {}, fourier {}: about {params:.3e} parameters, at most {})",
                a.dim,
                a.hidden,
                a.depth,
                a.fourier,
                super::train::MAX_CHECKPOINT_PARAMS
            ),
        ));
    }
    let wpath = dir.join(ENERGY_WEIGHTS);
    let map = candle_core::safetensors::load(&wpath, &Device::Cpu)
        .map_err(|e| Error::file(&wpath, format!("corrupted or missing weights: {e}")))?;
    let probe = EnergyNet::new(meta.arch.clone(), 0, DType::F32, &Device::Cpu)?;
    let values = probe
        .names()
        .iter()
        .map(|n| {
            map.get(n)
                .cloned()
                .ok_or_else(|| Error::file(&wpath, format!("weights lack '{n}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let net = EnergyNet::with_values(meta.arch.clone(), &values, &Device::Cpu)
        .map_err(|e| Error::file(dir, e.to_string()))?;
    Ok((net, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, Noise, Purpose};

    fn tiny() -> EnergyNet {
        let cfg = EnergyConfig {
            dim: 3,
            hidden: 8,
            depth: 2,
            fourier: 4,
        };
        EnergyNet::new(cfg, 5, DType::F64, &Device::Cpu).unwrap()
    }

    fn normals(i: u64, n: usize, d: usize) -> Tensor {
        Noise::new(13)
            .normal_tensor(stream(Purpose::User, i), n, d, DType::F64, &Device::Cpu)
            .unwrap()
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    fn tau4() -> Tensor {
        Tensor::new(&[[0.0f64], [0.2], [0.5], [0.9]], &Device::Cpu).unwrap()
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        for depth in [1, 2, 3] {
            let net = EnergyNet::new(
                EnergyConfig {
                    dim: 3,
                    hidden: 8,
                    depth,
                    fourier: 4,
                },
                5,
                DType::F64,
                &Device::Cpu,
            )
            .unwrap();
            let x = normals(0, 4, 3);
            let (f, g) = net.grad(&x, &tau4()).unwrap();
            assert!(max_abs(&(&f - net.forward(&x, &tau4()).unwrap()).unwrap()) < 1e-15);
            let h = 1e-5;
            for j in 0..3 {
                let mut e = vec![0.0; 12];
                for i in 0..4 {
                    e[3 * i + j] = h;
                }
                let e = Tensor::from_vec(e, (4, 3), &Device::Cpu).unwrap();
                let fp = net.forward(&(&x + &e).unwrap(), &tau4()).unwrap();
                let fm = net.forward(&(&x - &e).unwrap(), &tau4()).unwrap();
                let fd = (fp - fm).unwrap().affine(0.5 / h, 0.0).unwrap();
                let gj = g.narrow(1, j, 1).unwrap().squeeze(1).unwrap();
                let rel = max_abs(&(&gj - &fd).unwrap()) / max_abs(&fd);
                assert!(rel < 1e-6, "depth {depth} coordinate {j}: relative error {rel:e}");
            }
        }
    }

    #[test]
    fn hessian_vector_product_matches_finite_differences() {
        let net = tiny();
        let x = normals(0, 4, 3);
        let v = normals(1, 4, 3);
        let (_, _, hv) = net.grad_hvp(&x, &tau4(), &v).unwrap();
        let h = 1e-5;
        let gp = net.grad(&(&x + v.affine(h, 0.0).unwrap()).unwrap(), &tau4()).unwrap().1;
        let gm = net.grad(&(&x - v.affine(h, 0.0).unwrap()).unwrap(), &tau4()).unwrap().1;
        let fd = (gp - gm).unwrap().affine(0.5 / h, 0.0).unwrap();
        let rel = max_abs(&(&hv - &fd).unwrap()) / max_abs(&fd);
        assert!(rel < 1e-6, "relative error {rel:e}");
        // Several tangents at once; the Hessian is symmetric: u^T H v = v^T H u.
        let u = normals(2, 4, 3);
        let both = Tensor::stack(&[&v, &u], 0).unwrap();
        let (_, _, hh) = net.grad_hvp(&x, &tau4(), &both).unwrap();
        assert!(max_abs(&(hh.get(0).unwrap() - &hv).unwrap()) < 1e-14);
        let uhv = (&u * &hv).unwrap().sum(1).unwrap();
        let vhu = (&v * hh.get(1).unwrap()).unwrap().sum(1).unwrap();
        assert!(max_abs(&(uhv - vhu).unwrap()) < 1e-12);
    }

    #[test]
    fn checkpoint_round_trip_and_errors() {
        let net = tiny();
        let dir = std::env::temp_dir().join(format!("scoregen-energy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = EnergyMeta {
            format: String::new(),
            arch: net.config.clone(),
            process: None,
            normalisation: Normalisation {
                mean: vec![0.0; 3],
                std: vec![1.0; 3],
            },
            trained_by: "test".into(),
            step: 7,
        };
        save_energy(&dir, &net, &meta).unwrap();
        let (back, m) = load_energy(&dir).unwrap();
        assert_eq!(m.step, 7);
        let x = normals(0, 4, 3);
        assert_eq!(
            max_abs(&(net.forward(&x, &tau4()).unwrap() - back.forward(&x, &tau4()).unwrap()).unwrap()),
            0.0
        );
        // Huge sizes in the file are refused before anything is allocated (issue 15).
        let good = std::fs::read_to_string(dir.join(ENERGY_META)).unwrap();
        let huge = good.replacen("\"hidden\": 8", "\"hidden\": 1000000000000", 1);
        assert_ne!(huge, good, "{good}");
        std::fs::write(dir.join(ENERGY_META), huge).unwrap();
        let e = load_energy(&dir).err().unwrap().to_string();
        assert!(e.contains("too large"), "{e}");
        std::fs::write(dir.join(ENERGY_META), "{").unwrap();
        assert!(load_energy(&dir).err().unwrap().to_string().contains("corrupted"));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = net.forward(&normals(0, 4, 2), &tau4()).err().unwrap();
        assert!(e.to_string().contains("dimension 2"), "{e}");
    }
}
