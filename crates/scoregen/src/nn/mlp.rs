//! The MLP score network ([`MlpConfig::reference`], the network of the training benchmarks
//! in `BENCHMARKS.md`):
//! `[x, phi(t)] -> H -> H -> H -> d` with SiLU activations, where `phi(t)` are 16 Fourier
//! features `sin(w_k t/T), cos(w_k t/T)`, `w_k = pi 2^(k-1)`, `k = 0..7`. With classes, a
//! learned embedding of the class (index `n_classes` is the *null* class used by
//! classifier-free guidance) is added to the first hidden layer.

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::rng::{stream, Noise, Purpose};
use crate::score::Parametrisation;
use crate::{Error, Result};

/// Architecture of an [`Mlp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Data dimension `d`.
    pub dim: usize,
    /// Hidden width `H`.
    pub hidden: usize,
    /// Number of hidden layers (>= 1).
    pub depth: usize,
    /// Number of Fourier time features (even).
    pub fourier: usize,
    /// Number of classes (0: unconditional).
    pub n_classes: usize,
    /// What the network outputs.
    pub param: Parametrisation,
}

impl MlpConfig {
    /// The reference MLP: `d + 16` Fourier features, 3 x 256 SiLU, EDM-preconditioned output
    /// (Karras et al. 2022; [`Parametrisation::Edm`]), which beat eps on held-out sliced W1
    /// on five of six synthetic sets at each of three seeds (`BENCHMARKS.md`, quality).
    pub fn reference(dim: usize) -> Self {
        MlpConfig {
            dim,
            hidden: 256,
            depth: 3,
            fourier: 16,
            n_classes: 0,
            param: Parametrisation::Edm,
        }
    }
}

/// Checks the sizes of an MLP body (`what` names the network in the error): `dim`,
/// `hidden`, `depth >= 1` and an even number `fourier >= 2` of Fourier time features.
fn check_body(what: &str, dim: usize, hidden: usize, depth: usize, fourier: usize) -> Result<()> {
    if dim == 0 || hidden == 0 || depth == 0 || fourier == 0 || !fourier.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "{what}: need dim, hidden, depth >= 1 and an even number of Fourier features"
        )));
    }
    Ok(())
}

/// The parameters of the MLP body that the score MLP and the energy network
/// ([`super::energy::EnergyNet`]) share: `in.w` (`[d + F, H]`), `in.b`, `h{i}.w`, `h{i}.b`
/// for `i = 1..depth`, `out.w` (`[H, out]`), `out.b`, and with classes `class.emb`
/// (`[K + 1, H]`), and the Fourier frequencies `w_k = pi 2^(k - 1)`, `k < F / 2`, as a
/// `[1, F / 2]` tensor.
pub(crate) struct MlpBody {
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    pub freqs: Tensor,
}

impl MlpBody {
    /// PyTorch-style initialisation `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (the output layer
    /// scaled by 0.1; class embeddings of unit variance), parameter `k` drawn from the
    /// stream `(Purpose::Train, first_stream + k)` of `Noise::new(seed)`, `streams` being
    /// `(first_stream, seed)`. `sizes` is `[d, H, depth, F, out, K]`, checked by
    /// [`check_body`] (`what` names the network).
    pub fn init(what: &str, sizes: [usize; 6], streams: (u64, u64), dtype: DType, device: &Device) -> Result<Self> {
        let [d, h, depth, fourier, out, n_classes] = sizes;
        let (first_stream, seed) = streams;
        check_body(what, d, h, depth, fourier)?;
        let noise = Noise::new(seed);
        let mut names = vec![];
        let mut vars = vec![];
        let mut k = 0u64;
        let mut layer = |name: &str, fan_in: usize, rows: usize, cols: usize, scale: f64| -> Result<()> {
            let b = 1.0 / (fan_in as f64).sqrt();
            let u = noise.uniforms(stream(Purpose::Train, first_stream + k), rows * cols);
            k += 1;
            let v: Vec<f64> = u.iter().map(|u| scale * b * (2.0 * u - 1.0)).collect();
            let t = Tensor::from_vec(v, (rows, cols), device)?.to_dtype(dtype)?;
            names.push(name.to_string());
            vars.push(Var::from_tensor(&t)?);
            Ok(())
        };
        layer("in.w", d + fourier, d + fourier, h, 1.0)?;
        layer("in.b", d + fourier, 1, h, 1.0)?;
        for i in 1..depth {
            layer(&format!("h{i}.w"), h, h, h, 1.0)?;
            layer(&format!("h{i}.b"), h, 1, h, 1.0)?;
        }
        layer("out.w", h, h, out, 0.1)?;
        layer("out.b", h, 1, out, 0.1)?;
        if n_classes > 0 {
            // Embedding rows N(0, 1)-ish: uniform with unit variance.
            layer("class.emb", 3, n_classes + 1, h, 1.0)?;
        }
        let f: Vec<f64> = (0..fourier / 2)
            .map(|k| std::f64::consts::PI * 2f64.powi(k as i32 - 1))
            .collect();
        let freqs = Tensor::from_vec(f, (1, fourier / 2), device)?.to_dtype(dtype)?;
        Ok(MlpBody { names, vars, freqs })
    }

    /// The parameter `name` (one of `names`) as a tensor.
    pub fn var(&self, name: &str) -> &Tensor {
        let i = self.names.iter().position(|n| n == name).expect("parameter exists");
        self.vars[i].as_tensor()
    }
}

/// The MLP; its parameters are [`Var`]s, named for checkpoints.
pub struct Mlp {
    /// The architecture.
    pub config: MlpConfig,
    body: MlpBody,
}

impl Mlp {
    /// A network with PyTorch-style initialisation `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
    /// drawn from `Noise::new(seed)`; the last layer is scaled by 0.1.
    pub fn new(config: MlpConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let c = &config;
        let sizes = [c.dim, c.hidden, c.depth, c.fourier, c.dim, c.n_classes];
        let body = MlpBody::init("mlp", sizes, (1 << 40, seed), dtype, device)?;
        Ok(Mlp { config, body })
    }

    /// A network with the given parameter values (by name, as in [`Mlp::names`]).
    pub fn with_values(config: MlpConfig, values: &[Tensor], device: &Device) -> Result<Self> {
        let net = Mlp::new(
            config,
            0,
            values.first().map(|v| v.dtype()).unwrap_or(DType::F32),
            device,
        )?;
        super::set_parameters("mlp", &net.body.vars, &net.body.names, values)?;
        Ok(net)
    }

    /// The parameters, in a fixed order.
    pub fn vars(&self) -> &[Var] {
        &self.body.vars
    }

    /// The parameter names, in the order of [`Mlp::vars`].
    pub fn names(&self) -> &[String] {
        &self.body.names
    }

    /// The parameter `name` (one of [`Mlp::names`]) as a tensor.
    pub(crate) fn var(&self, name: &str) -> &Tensor {
        self.body.var(name)
    }

    /// The Fourier frequencies `w_k` as a `[1, fourier / 2]` tensor.
    pub(crate) fn freqs(&self) -> &Tensor {
        &self.body.freqs
    }

    /// The output for `x` (`[n, d]`) at normalised times `tau = t / T` (`[n, 1]`) and
    /// classes (`n` indices in `0..=n_classes`, the last the null class).
    pub fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        let arg = tau.broadcast_mul(&self.body.freqs)?;
        let feats = Tensor::cat(&[x, &arg.sin()?, &arg.cos()?], 1)?;
        let mut h = feats.matmul(self.var("in.w"))?.broadcast_add(self.var("in.b"))?;
        if self.config.n_classes > 0 {
            let c = match classes {
                Some(c) => c.clone(),
                None => Tensor::full(self.config.n_classes as u32, x.dims()[0], x.device())?,
            };
            h = (h + self.var("class.emb").index_select(&c, 0)?)?;
        }
        h = h.silu()?;
        for i in 1..self.config.depth {
            h = h
                .matmul(self.var(&format!("h{i}.w")))?
                .broadcast_add(self.var(&format!("h{i}.b")))?
                .silu()?;
        }
        Ok(h.matmul(self.var("out.w"))?.broadcast_add(self.var("out.b"))?)
    }
}
