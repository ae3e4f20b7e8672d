//! GroupNorm (Wu & He 2018), optionally followed by SiLU (Elfwing, Uchibe & Doya 2018), as one
//! candle op with a hand-written backward pass, on the CPU in f32 and f64.
//!
//! For `x` of shape `[n, C, H, W]` split into `G` groups of `C / G` channels, each group `g` of
//! each image has `L = (C / G) H W` entries with mean `mu` and (biased) variance `var`; with
//! `r = 1 / sqrt(var + eps)` and `xh = (x - mu) r`,
//!
//! `y = gamma_c xh + beta_c`, and the output is `z = y` or `z = SiLU(y) = y sigma(y)`.
//!
//! Backward, for an output gradient `dz`: `dy = dz` (or `dz sigma(y) (1 + y (1 - sigma(y)))`),
//! `dbeta_c = sum dy`, `dgamma_c = sum dy xh` (over images and pixels), and with
//! `dxh = gamma_c dy`, per group,
//!
//! `dx = r (dxh - mean(dxh) - xh mean(dxh xh))`.
//!
//! Forward and backward are one pass each over the data instead of the ~10 forward and ~20
//! backward tensor ops (each allocating) of the composition; work is split over images and
//! the parameter gradients are summed over images in a fixed order, so results do not depend
//! on the number of threads.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{data, multiversion, Float};

/// Partial sums per lane in [`lane_sum`]: the compiler keeps them in one vector register.
const LANES: usize = 8;

/// `sum_i f(a_i, b_i)` over two slices of the same length, accumulated in [`LANES`]
/// interleaved partial sums (vectorisable) that are combined in a fixed order, so the result
/// depends on the data only.
#[inline(always)]
fn lane_sum<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let mut s = T::ZERO;
    for (&x, &y) in ra.iter().zip(rb) {
        s += f(x, y);
    }
    for v in acc {
        s += v;
    }
    s
}

/// Per-group statistics `(mu, r)` of a slice.
#[inline(always)]
fn stats<T: Float>(v: &[T], eps: f64) -> (T, T) {
    let len = T::from_f64(v.len() as f64);
    let mu = lane_sum(v, v, |a, _| a) / len;
    let q = lane_sum(v, v, |a, _| (a - mu) * (a - mu));
    (mu, T::ONE / (q / len + T::from_f64(eps)).sqrt())
}

#[inline(always)]
fn sigmoid<T: Float>(y: T) -> T {
    T::ONE / (T::ONE + (-y).exp())
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
}

impl Dims {
    fn of(x: &Shape, groups: usize) -> Result<Self> {
        let dims = x.dims();
        if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
            bail!("group-norm: {x:?} does not split into {groups} groups of channels")
        }
        Ok(Dims {
            n: dims[0],
            c: dims[1],
            hw: dims[2..].iter().product(),
            groups,
        })
    }

    /// Entries of one group of one image.
    fn len(&self) -> usize {
        self.c / self.groups * self.hw
    }
}

/// Forward: `(x, gamma, beta) -> z`.
#[derive(Clone, Copy, Debug)]
struct GroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// Backward: `(x, [gamma; beta], dz) -> [dx (flattened); dgamma; dbeta]`.
#[derive(Clone, Copy, Debug)]
struct GroupNormBackward(GroupNorm);

impl GroupNorm {
    fn forward<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T], d: &Dims) -> Vec<T> {
        let mut z = vec![T::ZERO; x.len()];
        let chw = d.c * d.hw;
        if chw == 0 {
            return z;
        }
        let (eps, silu) = (self.eps, self.silu);
        z.par_chunks_mut(chw)
            .enumerate()
            .for_each(|(b, zb)| forward_image(x, gamma, beta, d, eps, silu, b, zb));
        z
    }

    fn backward<T: Float>(&self, x: &[T], gb: &[T], dz: &[T], d: &Dims) -> Vec<T> {
        let (chw, c) = (d.c * d.hw, d.c);
        let (gamma, beta) = gb.split_at(c);
        let mut out = vec![T::ZERO; x.len() + 2 * c];
        let (dx, dparams) = out.split_at_mut(x.len());
        // Per-image parameter gradients, summed over images in order below.
        let mut partial = vec![T::ZERO; d.n * 2 * c];
        let (eps, silu) = (self.eps, self.silu);
        if chw > 0 {
            dx.par_chunks_mut(chw)
                .zip(partial.par_chunks_mut(2 * c))
                .enumerate()
                .for_each(|(b, (dxb, pb))| backward_image(x, gamma, beta, dz, d, eps, silu, b, dxb, pb));
        }
        for pb in partial.chunks(2 * c) {
            for (acc, &v) in dparams.iter_mut().zip(pb) {
                *acc += v;
            }
        }
        out
    }
}

multiversion! {
    /// [`GroupNorm::forward`] for image `b` into its output `zb`.
    fn forward_image<T: Float>(x: &[T], gamma: &[T], beta: &[T], d: &Dims, eps: f64, silu: bool, b: usize, zb: &mut [T]) {
        forward_image_impl(x, gamma, beta, d, eps, silu, b, zb)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_image_impl<T: Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    d: &Dims,
    eps: f64,
    silu: bool,
    b: usize,
    zb: &mut [T],
) {
    let (chw, len, cg) = (d.c * d.hw, d.len(), d.c / d.groups);
    for g in 0..d.groups {
        let off = b * chw + g * len;
        let (mu, r) = stats(&x[off..off + len], eps);
        for j in 0..cg {
            let ch = g * cg + j;
            let (ga, be) = (gamma[ch], beta[ch]);
            let src = &x[off + j * d.hw..][..d.hw];
            let dst = &mut zb[ch * d.hw..][..d.hw];
            if silu {
                for (o, &a) in dst.iter_mut().zip(src) {
                    let y = ga * ((a - mu) * r) + be;
                    *o = y * sigmoid(y);
                }
            } else {
                for (o, &a) in dst.iter_mut().zip(src) {
                    *o = ga * ((a - mu) * r) + be;
                }
            }
        }
    }
}

multiversion! {
    /// [`GroupNorm::backward`] for image `b`: its input gradient `dxb` and its parameter
    /// gradients `pb` (`[dgamma, dbeta]`).
    fn backward_image<T: Float>(
        x: &[T],
        gamma: &[T],
        beta: &[T],
        dz: &[T],
        d: &Dims,
        eps: f64,
        silu: bool,
        b: usize,
        dxb: &mut [T],
        pb: &mut [T]
    ) {
        backward_image_impl(x, gamma, beta, dz, d, eps, silu, b, dxb, pb)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_image_impl<T: Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    dz: &[T],
    d: &Dims,
    eps: f64,
    silu: bool,
    b: usize,
    dxb: &mut [T],
    pb: &mut [T],
) {
    let (chw, len, cg, c) = (d.c * d.hw, d.len(), d.c / d.groups, d.c);
    let (pg, pbeta) = pb.split_at_mut(c);
    for g in 0..d.groups {
        let off = b * chw + g * len;
        let (mu, r) = stats(&x[off..off + len], eps);
        let (mut s1, mut s2) = (T::ZERO, T::ZERO);
        for j in 0..cg {
            let ch = g * cg + j;
            let xs = &x[off + j * d.hw..][..d.hw];
            let dzs = &dz[off + j * d.hw..][..d.hw];
            let dst = &mut dxb[ch * d.hw..][..d.hw];
            // dy (through the SiLU) into dst first.
            if silu {
                for ((o, &a), &dzv) in dst.iter_mut().zip(xs).zip(dzs) {
                    let y = gamma[ch] * ((a - mu) * r) + beta[ch];
                    let s = sigmoid(y);
                    *o = dzv * s * (T::ONE + y * (T::ONE - s));
                }
            } else {
                dst.copy_from_slice(dzs);
            }
            // dbeta = sum dy, dgamma = sum dy xh; with dxh = gamma dy the
            // group sums are sum dxh = gamma dbeta, sum dxh xh = gamma dgamma.
            let sb = lane_sum(dst, dst, |a, _| a);
            let sg = lane_sum(dst, xs, |a, b| a * ((b - mu) * r));
            pg[ch] = sg;
            pbeta[ch] = sb;
            s1 += gamma[ch] * sb;
            s2 += gamma[ch] * sg;
            for o in dst.iter_mut() {
                *o = gamma[ch] * *o;
            }
        }
        let l = T::from_f64(len as f64);
        let (m1, m2) = (s1 / l, s2 / l);
        let dst = &mut dxb[g * len..][..len];
        for (o, &a) in dst.iter_mut().zip(&x[off..off + len]) {
            let xh = (a - mu) * r;
            *o = r * (*o - m1 - xh * m2);
        }
    }
}

fn dtype_error(op: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{op}: all arguments must be f32 or all f64")
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), self.groups)?;
        if l2.shape().dims() != [d.c] || l3.shape().dims() != [d.c] {
            bail!(
                "group-norm: gamma {:?} / beta {:?} must have {} entries",
                l2.shape(),
                l3.shape(),
                d.c
            )
        }
        fn run<T: Float>(
            op: &GroupNorm,
            d: &Dims,
            a: (&CpuStorage, &Layout),
            b: (&CpuStorage, &Layout),
            c: (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let x = data::<T>(a.0, a.1, "group-norm")?;
            let g = data::<T>(b.0, b.1, "group-norm")?;
            let be = data::<T>(c.0, c.1, "group-norm")?;
            Ok(T::storage(op.forward(x, g, be, d)))
        }
        let st = match s1 {
            CpuStorage::F32(_) => run::<f32>(self, &d, (s1, l1), (s2, l2), (s3, l3))?,
            CpuStorage::F64(_) => run::<f64>(self, &d, (s1, l1), (s2, l2), (s3, l3))?,
            _ => return dtype_error("group-norm"),
        };
        Ok((st, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gb = Tensor::cat(&[gamma, beta], 0)?;
        let packed = x
            .contiguous()?
            .apply_op3_no_bwd(&gb, &grad.contiguous()?, &GroupNormBackward(*self))?;
        let (m, c) = (x.elem_count(), gamma.elem_count());
        Ok((
            Some(packed.narrow(0, 0, m)?.reshape(x.shape())?),
            Some(packed.narrow(0, m, c)?),
            Some(packed.narrow(0, m + c, c)?),
        ))
    }
}

impl CustomOp3 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "group-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), self.0.groups)?;
        if l2.shape().dims() != [2 * d.c] || l3.shape() != l1.shape() {
            bail!(
                "group-norm backward: arguments {:?}, {:?}, {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        let n = l1.shape().elem_count() + 2 * d.c;
        fn run<T: Float>(
            op: &GroupNorm,
            d: &Dims,
            a: (&CpuStorage, &Layout),
            b: (&CpuStorage, &Layout),
            c: (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let x = data::<T>(a.0, a.1, "group-norm backward")?;
            let gb = data::<T>(b.0, b.1, "group-norm backward")?;
            let dz = data::<T>(c.0, c.1, "group-norm backward")?;
            Ok(T::storage(op.backward(x, gb, dz, d)))
        }
        let st = match s1 {
            CpuStorage::F32(_) => run::<f32>(&self.0, &d, (s1, l1), (s2, l2), (s3, l3))?,
            CpuStorage::F64(_) => run::<f64>(&self.0, &d, (s1, l1), (s2, l2), (s3, l3))?,
            _ => return dtype_error("group-norm backward"),
        };
        Ok((st, n.into()))
    }
}

/// GroupNorm of `x` (`[n, C, ...]`) over `groups` groups of channels and all pixels, scaled by
/// `gamma` and shifted by `beta` (both `[C]`), then SiLU when `silu` (see the module
/// documentation for the formulas). Differentiable once (its backward is not itself
/// differentiable).
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return composed(x, gamma, beta, groups, eps, silu);
    }
    let op = GroupNorm { groups, eps, silu };
    x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// [`group_norm`] as a composition of candle ops (mean, variance, broadcasts), for devices
/// other than the host (the CUDA backend), where the fused operation has no kernel.
fn composed(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    if groups == 0 || c % groups != 0 {
        bail!("group_norm: {c} channels do not split into {groups} groups");
    }
    let per_group = x.elem_count() / (n * groups);
    let xg = x.reshape((n, groups, per_group))?;
    let xc = xg.broadcast_sub(&xg.mean_keepdim(2)?)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let y = xc
        .broadcast_div(&var.affine(1.0, eps)?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1; dims.len()];
    shape[1] = c;
    let y = y
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::{max_rel, random};
    use candle_core::{DType, Var};

    /// The composition of candle ops that `unet.rs` used before, and that the CUDA path
    /// still uses ([`composed`]): the fused op must agree with it.
    fn reference(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, silu: bool) -> Tensor {
        composed(x, gamma, beta, groups, 1e-5, silu).unwrap()
    }

    #[test]
    fn matches_the_candle_composition_forward_and_backward() {
        for (i, &(n, c, h, w, groups)) in [(1, 4, 3, 3, 2), (3, 6, 4, 5, 3), (2, 8, 8, 8, 8), (2, 4, 2, 2, 1)]
            .iter()
            .enumerate()
        {
            for silu in [false, true] {
                let s = 10 * i as u64 + silu as u64;
                let x = Var::from_tensor(&random(&[n, c, h, w], s, 2.0, 0.7)).unwrap();
                let g = Var::from_tensor(&random(&[c], s + 1, 0.5, 1.0)).unwrap();
                let b = Var::from_tensor(&random(&[c], s + 2, 0.5, 0.1)).unwrap();
                let r = random(&[n, c, h, w], s + 3, 1.0, 0.0);
                let ours = group_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), groups, 1e-5, silu).unwrap();
                let theirs = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), groups, silu);
                let what = format!("{n}x{c}x{h}x{w}, {groups} groups, silu {silu}");
                assert!(max_rel(&ours, &theirs) < 1e-10, "forward, {what}");
                let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for (v, name) in [(&x, "x"), (&g, "gamma"), (&b, "beta")] {
                    let e = max_rel(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                    assert!(e < 1e-10, "{name} gradient, {what}: {e}");
                }
                // f32 agrees to single precision.
                let f = |t: &Var| t.as_tensor().to_dtype(DType::F32).unwrap();
                let z32 = group_norm(&f(&x), &f(&g), &f(&b), groups, 1e-5, silu).unwrap();
                assert!(max_rel(&z32, &reference(&f(&x), &f(&g), &f(&b), groups, silu)) < 1e-5);
            }
        }
    }

    #[test]
    fn independent_of_the_thread_count_and_bad_shapes() {
        let x = Var::from_tensor(&random(&[5, 8, 4, 4], 1, 1.0, 0.0).to_dtype(DType::F32).unwrap()).unwrap();
        let g = Var::from_tensor(&random(&[8], 2, 0.5, 1.0).to_dtype(DType::F32).unwrap()).unwrap();
        let b = Var::from_tensor(&random(&[8], 3, 0.5, 0.0).to_dtype(DType::F32).unwrap()).unwrap();
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let z = group_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 4, 1e-5, true).unwrap();
                let gr = z.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![z.flatten_all().unwrap().to_vec1().unwrap()];
                for v in [&x, &g, &b] {
                    out.push(gr.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap());
                }
                out
            })
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
        assert!(group_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 3, 1e-5, true).is_err());
        assert!(group_norm(
            x.as_tensor(),
            b.as_tensor(),
            &b.as_tensor().narrow(0, 0, 4).unwrap(),
            4,
            1e-5,
            true
        )
        .is_err());
    }
}
