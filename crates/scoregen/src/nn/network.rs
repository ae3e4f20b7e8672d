//! Score networks of more than one architecture behind one interface.
//!
//! Every network maps flat rows `x` (`[n, d]`), normalised times `tau = t / T` (`[n, 1]`)
//! and optional classes (`n` indices in `0..=n_classes`, the last the *null* class of
//! classifier-free guidance) to an output `[n, d]` in its [`Parametrisation`]:
//! `f(x, tau, c) ≈ eps`, `score` or `x_0`. [`ScoreNet`] is that interface; the trainer, the
//! checkpoints and [`super::LearnedScore`] use it through [`Network`], built from an
//! [`Arch`] (the serialisable description stored in `checkpoint.json` as
//! `{"kind": "mlp" | "unet", ...config}`).

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::mlp::{Mlp, MlpConfig};
use super::unet::{Unet, UnetConfig};
use crate::score::Parametrisation;
use crate::Result;

/// A score network `f(x, tau, c)` on flat rows, with named parameters.
pub trait ScoreNet {
    /// The output for `x` (`[n, d]`) at normalised times `tau = t / T` (`[n, 1]`) and classes
    /// (`n` indices in `0..=n_classes`, the last the null class; `None`: the null class).
    fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor>;
    /// The parameters, in a fixed order.
    fn vars(&self) -> &[Var];
    /// The parameter names, in the order of [`ScoreNet::vars`] (keys of the checkpoints).
    fn names(&self) -> &[String];
    /// The data dimension `d`.
    fn dim(&self) -> usize;
    /// The number of classes (0: unconditional).
    fn n_classes(&self) -> usize;
    /// What the network outputs.
    fn param(&self) -> Parametrisation;
}

impl ScoreNet for Mlp {
    fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        Mlp::forward(self, x, tau, classes)
    }
    fn vars(&self) -> &[Var] {
        Mlp::vars(self)
    }
    fn names(&self) -> &[String] {
        Mlp::names(self)
    }
    fn dim(&self) -> usize {
        self.config.dim
    }
    fn n_classes(&self) -> usize {
        self.config.n_classes
    }
    fn param(&self) -> Parametrisation {
        self.config.param
    }
}

impl ScoreNet for Unet {
    fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        Unet::forward(self, x, tau, classes)
    }
    fn vars(&self) -> &[Var] {
        Unet::vars(self)
    }
    fn names(&self) -> &[String] {
        Unet::names(self)
    }
    fn dim(&self) -> usize {
        self.config.dim()
    }
    fn n_classes(&self) -> usize {
        self.config.n_classes
    }
    fn param(&self) -> Parametrisation {
        self.config.param
    }
}

/// The architecture of a score network (stored in checkpoints, tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arch {
    /// The MLP of [`super::mlp`] (vector data).
    Mlp(MlpConfig),
    /// The convolutional U-Net of [`super::unet`] (images, flattened row-major).
    Unet(UnetConfig),
}

impl From<MlpConfig> for Arch {
    fn from(c: MlpConfig) -> Self {
        Arch::Mlp(c)
    }
}

impl From<UnetConfig> for Arch {
    fn from(c: UnetConfig) -> Self {
        Arch::Unet(c)
    }
}

impl Arch {
    /// The data dimension `d` (`height * width` for images).
    pub fn dim(&self) -> usize {
        match self {
            Arch::Mlp(c) => c.dim,
            Arch::Unet(c) => c.dim(),
        }
    }

    /// The number of classes (0: unconditional).
    pub fn n_classes(&self) -> usize {
        match self {
            Arch::Mlp(c) => c.n_classes,
            Arch::Unet(c) => c.n_classes,
        }
    }

    /// What the network outputs.
    pub fn param(&self) -> Parametrisation {
        match self {
            Arch::Mlp(c) => c.param,
            Arch::Unet(c) => c.param,
        }
    }

    /// `(height, width)` of an image model, `None` for vector data.
    pub fn image_shape(&self) -> Option<(usize, usize)> {
        match self {
            Arch::Mlp(_) => None,
            Arch::Unet(c) => Some((c.height, c.width)),
        }
    }

    /// A short name: `mlp` or `unet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Arch::Mlp(_) => "mlp",
            Arch::Unet(_) => "unet",
        }
    }
}

/// A score network of any [`Arch`].
pub enum Network {
    /// An MLP.
    Mlp(Mlp),
    /// A U-Net.
    Unet(Unet),
}

impl Network {
    /// A freshly initialised network (seeded, see [`Mlp::new`] and [`Unet::new`]).
    pub fn new(arch: &Arch, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        Ok(match arch {
            Arch::Mlp(c) => Network::Mlp(Mlp::new(c.clone(), seed, dtype, device)?),
            Arch::Unet(c) => Network::Unet(Unet::new(c.clone(), seed, dtype, device)?),
        })
    }

    /// A network with the given parameter values (in the order of [`ScoreNet::names`]).
    pub fn with_values(arch: &Arch, values: &[Tensor], device: &Device) -> Result<Self> {
        Ok(match arch {
            Arch::Mlp(c) => Network::Mlp(Mlp::with_values(c.clone(), values, device)?),
            Arch::Unet(c) => Network::Unet(Unet::with_values(c.clone(), values, device)?),
        })
    }

    /// The parameter names of a network of architecture `arch`, without building it.
    pub fn names_of(arch: &Arch) -> Result<Vec<String>> {
        Ok(Network::new(arch, 0, DType::F32, &Device::Cpu)?.names().to_vec())
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        match self {
            Network::Mlp(m) => Arch::Mlp(m.config.clone()),
            Network::Unet(u) => Arch::Unet(u.config.clone()),
        }
    }

    /// The MLP, if this network is one (for losses written for the MLP's layers).
    pub fn as_mlp(&self) -> Option<&Mlp> {
        match self {
            Network::Mlp(m) => Some(m),
            Network::Unet(_) => None,
        }
    }

    fn inner(&self) -> &dyn ScoreNet {
        match self {
            Network::Mlp(m) => m,
            Network::Unet(u) => u,
        }
    }
}

impl From<Mlp> for Network {
    fn from(m: Mlp) -> Self {
        Network::Mlp(m)
    }
}

impl From<Unet> for Network {
    fn from(u: Unet) -> Self {
        Network::Unet(u)
    }
}

impl ScoreNet for Network {
    fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        self.inner().forward(x, tau, classes)
    }
    fn vars(&self) -> &[Var] {
        self.inner().vars()
    }
    fn names(&self) -> &[String] {
        self.inner().names()
    }
    fn dim(&self) -> usize {
        self.inner().dim()
    }
    fn n_classes(&self) -> usize {
        self.inner().n_classes()
    }
    fn param(&self) -> Parametrisation {
        self.inner().param()
    }
}
