//! A small convolutional U-Net score network for greyscale images (DDPM-style, Ho et al.
//! 2020, without attention), on candle-core tensor ops.
//!
//! Rows `x` (`[n, H*W]`, row-major images, as the rest of the library) are reshaped to
//! `[n, 1, H, W]`. With channels `C_0, ..., C_{L-1}` (one per level; level `l` works at
//! `H / 2^l x W / 2^l`):
//!
//! * time embedding `e = SiLU(W_2 SiLU(W_1 phi(tau) + b_1) + b_2 [+ E[c]])`, `phi` the Fourier
//!   features of [`super::mlp`] (`sin(w_k tau), cos(w_k tau)`, `w_k = pi 2^(k-1)`), `E` a
//!   learned class embedding whose last row is the null class (classifier-free guidance);
//! * residual block `R(h) = skip(h) + conv_2(SiLU(GN_2(conv_1(SiLU(GN_1(h))) + P e)))`: 3x3
//!   convolutions (padding 1), GroupNorm `GN(h) = gamma (h - mu_g) / sqrt(var_g + 1e-5) + beta`
//!   over the channels of each group and all pixels, the time embedding projected by `P` and
//!   added per channel, `skip` a 1x1 convolution when the channel count changes;
//! * encoder: `h = conv_in(x)`; at each level `blocks` residual blocks, the result kept as the
//!   level's skip, then a 3x3 convolution of stride 2 (down) except at the last level;
//! * middle: one residual block;
//! * decoder, from the last level up: concatenate the level's skip, `blocks` residual blocks,
//!   then nearest-neighbour upsampling x2 and a 3x3 convolution to `C_{l-1}` (up);
//! * output: `conv_out(SiLU(GN(h)))` to one channel, flattened back to `[n, H*W]`, in the
//!   configured [`Parametrisation`] (eps by default).
//!
//! Backward passes used: the GEMM convolutions and per-channel bias of [`super::conv`]
//! (stride 1 and 2, the bias and the time embedding added in the convolution's epilogue), the fused GroupNorm + SiLU of [`super::groupnorm`], the
//! upsampling of [`super::conv::upsample2x`] (candle's own `upsample_nearest2d` backward
//! overwrites rather than accumulates the gradient of its input, so it is not used), `cat`,
//! reductions; checked
//! against finite differences in the tests. Parameters are initialised PyTorch-style,
//! `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, from [`Noise`] streams (GroupNorm `gamma = 1`,
//! `beta = 0`; the output convolution scaled by 0.1), so training is bit-reproducible.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::rng::{stream, Noise, Purpose};
use crate::score::Parametrisation;
use crate::{Error, Result};

/// Architecture of a [`Unet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnetConfig {
    /// Image height `H` (divisible by `2^(levels - 1)`).
    pub height: usize,
    /// Image width `W` (divisible by `2^(levels - 1)`).
    pub width: usize,
    /// Channels of each level, from full resolution down (each divisible by `groups`).
    pub channels: Vec<usize>,
    /// Residual blocks per level, on each side of the U.
    pub blocks: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Number of Fourier time features (even).
    pub fourier: usize,
    /// Width of the time (and class) embedding.
    pub time_dim: usize,
    /// Number of classes (0: unconditional).
    pub n_classes: usize,
    /// What the network outputs.
    pub param: Parametrisation,
}

impl UnetConfig {
    /// The default U-Net for `height x width` images: channels 32, then 64 for every further
    /// level, halving while both sides stay even and at least 4 (8x8: levels 8, 4; 16x16:
    /// 16, 8, 4); one residual block per level and side, 8 groups, 16 Fourier features, a
    /// 128-wide embedding, unconditional, eps output.
    pub fn for_image(height: usize, width: usize) -> Self {
        let mut levels = 1;
        let (mut h, mut w) = (height, width);
        while h.is_multiple_of(2) && w.is_multiple_of(2) && h / 2 >= 4 && w / 2 >= 4 {
            levels += 1;
            h /= 2;
            w /= 2;
        }
        let channels = (0..levels).map(|l| if l == 0 { 32 } else { 64 }).collect();
        UnetConfig {
            height,
            width,
            channels,
            blocks: 1,
            groups: 8,
            fourier: 16,
            time_dim: 128,
            n_classes: 0,
            param: Parametrisation::Eps,
        }
    }

    /// The data dimension `d = H W`.
    pub fn dim(&self) -> usize {
        self.height * self.width
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("unet: {m}")));
        let levels = self.channels.len();
        if levels == 0 || levels > 16 {
            return bad(format!("need 1 to 16 levels of channels, got {levels}"));
        }
        let f = 1usize << (levels - 1);
        if self.height == 0 || self.width == 0 || !self.height.is_multiple_of(f) || !self.width.is_multiple_of(f) {
            return bad(format!(
                "image {}x{} is not divisible by 2^{} for {levels} levels",
                self.height,
                self.width,
                levels - 1
            ));
        }
        if self.groups == 0 || self.channels.iter().any(|&c| c == 0 || !c.is_multiple_of(self.groups)) {
            return bad(format!(
                "channels {:?} must be positive multiples of the {} groups",
                self.channels, self.groups
            ));
        }
        if self.blocks == 0 || self.time_dim == 0 || self.fourier == 0 || !self.fourier.is_multiple_of(2) {
            return bad("need blocks >= 1, time_dim >= 1 and an even number of Fourier features".into());
        }
        Ok(())
    }
}

/// Collects named parameters in a fixed order, each drawn from its own stream.
struct Builder {
    noise: Noise,
    dtype: DType,
    device: Device,
    names: Vec<String>,
    vars: Vec<Var>,
}

impl Builder {
    fn push(&mut self, name: String, v: Vec<f64>, shape: &[usize]) -> Result<()> {
        let t = Tensor::from_vec(v, shape, &self.device)?.to_dtype(self.dtype)?;
        self.names.push(name);
        self.vars.push(Var::from_tensor(&t)?);
        Ok(())
    }

    /// `U(-bound, bound)` entries; the stream index is the parameter's position.
    fn uniform(&mut self, name: String, shape: &[usize], bound: f64) -> Result<()> {
        let k = self.vars.len() as u64;
        let n: usize = shape.iter().product();
        let u = self.noise.uniforms(stream(Purpose::Train, (1 << 40) + k), n);
        let v = u.iter().map(|u| bound * (2.0 * u - 1.0)).collect();
        self.push(name, v, shape)
    }

    fn constant(&mut self, name: String, shape: &[usize], value: f64) -> Result<()> {
        let n: usize = shape.iter().product();
        self.push(name, vec![value; n], shape)
    }

    fn linear(&mut self, name: &str, fan_in: usize, out: usize) -> Result<()> {
        let b = 1.0 / (fan_in as f64).sqrt();
        self.uniform(format!("{name}.w"), &[fan_in, out], b)?;
        self.uniform(format!("{name}.b"), &[1, out], b)
    }

    fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize, scale: f64) -> Result<()> {
        let b = scale / ((c_in * k * k) as f64).sqrt();
        self.uniform(format!("{name}.w"), &[c_out, c_in, k, k], b)?;
        self.uniform(format!("{name}.b"), &[c_out], b)
    }

    fn group_norm(&mut self, name: &str, c: usize) -> Result<()> {
        self.constant(format!("{name}.g"), &[c], 1.0)?;
        self.constant(format!("{name}.b"), &[c], 0.0)
    }

    fn res(&mut self, name: &str, c_in: usize, c_out: usize, e: usize) -> Result<()> {
        self.group_norm(&format!("{name}.gn1"), c_in)?;
        self.conv(&format!("{name}.conv1"), c_in, c_out, 3, 1.0)?;
        self.linear(&format!("{name}.temb"), e, c_out)?;
        self.group_norm(&format!("{name}.gn2"), c_out)?;
        self.conv(&format!("{name}.conv2"), c_out, c_out, 3, 1.0)?;
        if c_in != c_out {
            self.conv(&format!("{name}.skip"), c_in, c_out, 1, 1.0)?;
        }
        Ok(())
    }
}

/// The U-Net; its parameters are [`Var`]s, named for checkpoints.
pub struct Unet {
    /// The architecture.
    pub config: UnetConfig,
    names: Vec<String>,
    vars: Vec<Var>,
    index: HashMap<String, usize>,
    freqs: Tensor,
}

impl Unet {
    /// A network with PyTorch-style initialisation drawn from `Noise::new(seed)` (see the
    /// module documentation).
    pub fn new(config: UnetConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut b = Builder {
            noise: Noise::new(seed),
            dtype,
            device: device.clone(),
            names: vec![],
            vars: vec![],
        };
        let (ch, e, levels) = (&config.channels, config.time_dim, config.channels.len());
        b.linear("time.l1", config.fourier, e)?;
        b.linear("time.l2", e, e)?;
        if config.n_classes > 0 {
            // Entries of variance 1/12, the order of the time embedding's.
            b.uniform("class.emb".into(), &[config.n_classes + 1, e], 0.5)?;
        }
        b.conv("in", 1, ch[0], 3, 1.0)?;
        let mut c = ch[0];
        for l in 0..levels {
            for j in 0..config.blocks {
                b.res(&format!("enc{l}.res{j}"), c, ch[l], e)?;
                c = ch[l];
            }
            if l + 1 < levels {
                b.conv(&format!("enc{l}.down"), c, c, 3, 1.0)?;
            }
        }
        b.res("mid.res0", c, c, e)?;
        for l in (0..levels).rev() {
            for j in 0..config.blocks {
                let c_in = if j == 0 { c + ch[l] } else { ch[l] };
                b.res(&format!("dec{l}.res{j}"), c_in, ch[l], e)?;
                c = ch[l];
            }
            if l > 0 {
                b.conv(&format!("dec{l}.up"), c, ch[l - 1], 3, 1.0)?;
                c = ch[l - 1];
            }
        }
        b.group_norm("out.gn", c)?;
        b.conv("out", c, 1, 3, 0.1)?;
        let f: Vec<f64> = (0..config.fourier / 2)
            .map(|k| std::f64::consts::PI * 2f64.powi(k as i32 - 1))
            .collect();
        let freqs = Tensor::from_vec(f, (1, config.fourier / 2), device)?.to_dtype(dtype)?;
        let index = b.names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Ok(Unet {
            config,
            names: b.names,
            vars: b.vars,
            index,
            freqs,
        })
    }

    /// A network with the given parameter values (by name, as in [`Unet::names`]).
    pub fn with_values(config: UnetConfig, values: &[Tensor], device: &Device) -> Result<Self> {
        let dtype = values.first().map(|v| v.dtype()).unwrap_or(DType::F32);
        let net = Unet::new(config, 0, dtype, device)?;
        super::set_parameters("unet", &net.vars, &net.names, values)?;
        Ok(net)
    }

    /// The parameters, in a fixed order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The parameter names, in the order of [`Unet::vars`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        match self.index.get(name) {
            Some(&i) => Ok(self.vars[i].as_tensor()),
            None => Err(Error::invalid(format!("unet: no parameter '{name}'"))),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// `x W + b`.
    fn linear(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let w = self.p(&format!("{name}.w"))?;
        Ok(x.matmul(w)?.broadcast_add(self.p(&format!("{name}.b"))?)?)
    }

    /// A `k x k` convolution with padding `k / 2` and the given stride, plus a bias per channel.
    fn conv(&self, name: &str, x: &Tensor, stride: usize) -> Result<Tensor> {
        let w = self.p(&format!("{name}.w"))?;
        let k = w.dim(2)?;
        Ok(super::conv::conv2d_bias(
            x,
            w,
            self.p(&format!("{name}.b"))?,
            stride,
            k / 2,
        )?)
    }

    /// GroupNorm then SiLU: normalise over each group of channels and all pixels, then
    /// `SiLU(gamma h + beta)` (one fused op, [`super::groupnorm`]).
    fn group_norm_silu(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let gamma = self.p(&format!("{name}.g"))?;
        let beta = self.p(&format!("{name}.b"))?;
        Ok(super::groupnorm::group_norm(
            x,
            gamma,
            beta,
            self.config.groups,
            1e-5,
            true,
        )?)
    }

    fn res(&self, name: &str, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.group_norm_silu(&format!("{name}.gn1"), x)?;
        // conv_1's bias and the projected time embedding, added per image and channel in
        // the convolution's epilogue.
        let w1 = self.p(&format!("{name}.conv1.w"))?;
        let shift = self
            .linear(&format!("{name}.temb"), temb)?
            .broadcast_add(self.p(&format!("{name}.conv1.b"))?)?;
        let h = super::conv::conv2d_bias(&h, w1, &shift, 1, w1.dim(2)? / 2)?;
        let h = self.group_norm_silu(&format!("{name}.gn2"), &h)?;
        let h = self.conv(&format!("{name}.conv2"), &h, 1)?;
        let skip = if self.has(&format!("{name}.skip.w")) {
            self.conv(&format!("{name}.skip"), x, 1)?
        } else {
            x.clone()
        };
        Ok((h + skip)?)
    }

    /// Nearest-neighbour upsampling x2: `[n, c, h, w] -> [n, c, 2h, 2w]`.
    fn upsample(x: &Tensor) -> Result<Tensor> {
        Ok(super::conv::upsample2x(x)?)
    }

    /// The embedding `e` of the times and classes (`[n, time_dim]`, after SiLU).
    fn embedding(&self, tau: &Tensor, classes: Option<&Tensor>, n: usize) -> Result<Tensor> {
        let arg = tau.broadcast_mul(&self.freqs)?;
        let feats = Tensor::cat(&[&arg.sin()?, &arg.cos()?], 1)?;
        let mut e = self.linear("time.l2", &self.linear("time.l1", &feats)?.silu()?)?;
        if self.config.n_classes > 0 {
            let c = match classes {
                Some(c) => c.clone(),
                None => Tensor::full(self.config.n_classes as u32, n, tau.device())?,
            };
            e = (e + self.p("class.emb")?.index_select(&c, 0)?)?;
        }
        Ok(e.silu()?)
    }

    /// The output for `x` (`[n, H*W]`) at normalised times `tau = t / T` (`[n, 1]`) and
    /// classes (`n` indices in `0..=n_classes`, the last the null class).
    pub fn forward(&self, x: &Tensor, tau: &Tensor, classes: Option<&Tensor>) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let (hh, ww) = (self.config.height, self.config.width);
        if d != hh * ww {
            return Err(Error::invalid(format!(
                "unet: rows of dimension {d}, expected {hh}x{ww} = {}",
                hh * ww
            )));
        }
        let e = self.embedding(tau, classes, n)?;
        let levels = self.config.channels.len();
        let mut h = self.conv("in", &x.reshape((n, 1, hh, ww))?, 1)?;
        let mut skips = Vec::with_capacity(levels);
        for l in 0..levels {
            for j in 0..self.config.blocks {
                h = self.res(&format!("enc{l}.res{j}"), &h, &e)?;
            }
            skips.push(h.clone());
            if l + 1 < levels {
                h = self.conv(&format!("enc{l}.down"), &h, 2)?;
            }
        }
        h = self.res("mid.res0", &h, &e)?;
        for l in (0..levels).rev() {
            let skip = skips.pop().ok_or_else(|| Error::invalid("unet: skip stack empty"))?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            for j in 0..self.config.blocks {
                h = self.res(&format!("dec{l}.res{j}"), &h, &e)?;
            }
            if l > 0 {
                h = self.conv(&format!("dec{l}.up"), &Self::upsample(&h)?, 1)?;
            }
        }
        let h = self.group_norm_silu("out.gn", &h)?;
        Ok(self.conv("out", &h, 1)?.reshape((n, d))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n_classes: usize) -> UnetConfig {
        UnetConfig {
            height: 4,
            width: 4,
            channels: vec![4, 6],
            blocks: 1,
            groups: 2,
            fourier: 4,
            time_dim: 8,
            n_classes,
            param: Parametrisation::Eps,
        }
    }

    fn inputs(n: usize, d: usize, k: usize, dtype: DType) -> (Tensor, Tensor, Option<Tensor>) {
        let noise = Noise::new(11);
        let dev = Device::Cpu;
        let x = noise
            .normal_tensor(stream(Purpose::User, 0), n, d, dtype, &dev)
            .unwrap();
        let tau: Vec<f64> = noise.uniforms(stream(Purpose::User, 1), n);
        let tau = Tensor::from_vec(tau, (n, 1), &dev).unwrap().to_dtype(dtype).unwrap();
        let c =
            (k > 0).then(|| Tensor::from_vec((0..n as u32).map(|i| i % (k as u32 + 1)).collect(), n, &dev).unwrap());
        (x, tau, c)
    }

    /// `L = sum(f(x) * r)` for fixed `r`, in f64.
    fn objective(net: &Unet, x: &Tensor, tau: &Tensor, c: Option<&Tensor>, r: &Tensor) -> Tensor {
        (net.forward(x, tau, c).unwrap() * r).unwrap().sum_all().unwrap()
    }

    #[test]
    fn gradients_match_finite_differences_for_every_parameter() {
        let dev = Device::Cpu;
        let cfg = tiny(3);
        let net = Unet::new(cfg.clone(), 5, DType::F64, &dev).unwrap();
        // Move GroupNorm's gamma / beta off 1 / 0 and scale the output layer up so every
        // parameter has a gradient of order one.
        for (name, var) in net.names().iter().zip(net.vars()) {
            let n = var.elem_count();
            let u = Noise::new(3).uniforms(stream(Purpose::User, name.len() as u64 + 100), n);
            let jitter = Tensor::from_vec(u, var.shape(), &dev)
                .unwrap()
                .affine(0.4, -0.2)
                .unwrap();
            let p = var.as_tensor();
            if name.contains("gn") && (name.ends_with(".g") || name.ends_with(".b")) {
                var.set(&(p + jitter).unwrap()).unwrap();
            } else if name.starts_with("out.") {
                var.set(&p.affine(10.0, 0.0).unwrap()).unwrap();
            }
        }
        let (x, tau, c) = inputs(3, 16, 3, DType::F64);
        let r = Noise::new(4)
            .normal_tensor(stream(Purpose::User, 9), 3, 16, DType::F64, &dev)
            .unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let loss = objective(&net, xv.as_tensor(), &tau, c.as_ref(), &r);
        let grads = loss.backward().unwrap();
        let h = 1e-6;
        let mut checked = 0;
        let mut targets: Vec<(String, &Var)> = net.names().iter().cloned().zip(net.vars()).collect();
        targets.push(("input x".into(), &xv));
        for (name, var) in targets {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            // Up to 4 entries spread over the tensor.
            let picks: Vec<usize> = (0..4).map(|i| i * base.len() / 4).collect();
            for &i in &picks {
                let eval = |delta: f64| -> f64 {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap()).unwrap();
                    let l = objective(&net, xv.as_tensor(), &tau, c.as_ref(), &r);
                    l.to_scalar::<f64>().unwrap()
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
                    .unwrap();
                let err = (fd - g[i]).abs() / (1e-4 + fd.abs().max(g[i].abs()));
                assert!(err < 1e-5, "{name}[{i}]: backprop {} vs finite difference {fd}", g[i]);
                checked += 1;
            }
            let largest = picks.iter().map(|&i| g[i].abs()).fold(0.0, f64::max);
            assert!(largest > 1e-6, "{name}: only vanishing gradients checked ({largest})");
        }
        assert!(checked > 4 * 40, "{checked} entries checked");
    }

    #[test]
    fn shapes_for_8x8_and_16x16() {
        let dev = Device::Cpu;
        for (side, levels) in [(8, 2), (16, 3)] {
            let cfg = UnetConfig {
                n_classes: 10,
                ..UnetConfig::for_image(side, side)
            };
            assert_eq!(cfg.channels.len(), levels);
            let net = Unet::new(cfg, 0, DType::F32, &dev).unwrap();
            let (x, tau, c) = inputs(5, side * side, 10, DType::F32);
            let y = net.forward(&x, &tau, c.as_ref()).unwrap();
            assert_eq!(y.dims(), &[5, side * side]);
            // Unconditional use of a conditional network: the null class.
            let y0 = net.forward(&x, &tau, None).unwrap();
            assert_eq!(y0.dims(), &[5, side * side]);
            assert!(net.forward(&x.narrow(1, 0, 10).unwrap(), &tau, None).is_err());
        }
        // Non-square images.
        let net = Unet::new(UnetConfig::for_image(8, 16), 0, DType::F32, &dev).unwrap();
        let (x, tau, _) = inputs(2, 128, 0, DType::F32);
        assert_eq!(net.forward(&x, &tau, None).unwrap().dims(), &[2, 128]);
    }

    #[test]
    fn seeded_initialisation_and_bad_configs() {
        let dev = Device::Cpu;
        let a = Unet::new(tiny(0), 1, DType::F32, &dev).unwrap();
        let b = Unet::new(tiny(0), 1, DType::F32, &dev).unwrap();
        let c = Unet::new(tiny(0), 2, DType::F32, &dev).unwrap();
        let flat = |n: &Unet| -> Vec<f32> {
            n.vars()
                .iter()
                .flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
        for bad in [
            UnetConfig { height: 5, ..tiny(0) },
            UnetConfig {
                channels: vec![4, 5],
                ..tiny(0)
            },
            UnetConfig {
                channels: vec![],
                ..tiny(0)
            },
            UnetConfig { blocks: 0, ..tiny(0) },
            UnetConfig { fourier: 3, ..tiny(0) },
            UnetConfig { groups: 0, ..tiny(0) },
        ] {
            assert!(Unet::new(bad, 0, DType::F32, &dev).is_err());
        }
        let values: Vec<Tensor> = a.vars().iter().map(|v| v.as_tensor().clone()).collect();
        let d = Unet::with_values(tiny(0), &values, &dev).unwrap();
        assert_eq!(flat(&a), flat(&d));
        assert!(Unet::with_values(tiny(0), &values[1..], &dev).is_err());
    }
}
