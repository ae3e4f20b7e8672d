//! The fused CPU engine of the score MLP ([`super::mlp`]): an explicit forward and backward
//! pass over preallocated workspaces, the products on the `gemm` crate's kernels, bias and
//! class embedding written into the products' destination before they accumulate, SiLU and
//! its derivative as one vectorised pass, and the optimiser (AdamW, global-norm clipping,
//! EMA) as one in-place pass over a flat parameter buffer. It is the "fully fused MLP" of
//! tiny-cuda-nn (Müller et al. 2021) and of XLA's fusion, on the CPU; candle's
//! [`super::Mlp`] stays the reference implementation that the tests compare against.
//!
//! **Network** (row-major `[n, c]` activations, weights `[in, out]` as in [`super::Mlp`]):
//! `h_0 = [x, sin(w_k tau), cos(w_k tau)]`, `z_1 = h_0 W_1 + b_1 (+ E[c])`,
//! `a_l = silu(z_l) = z_l sigma(z_l)`, `z_{l+1} = a_l W_{l+1} + b_{l+1}`, output
//! `f = a_L W_out + b_out`.
//!
//! **Backward** (reverse-mode, Rumelhart et al. 1986), for an output cotangent `g_f`:
//! `dW_out = a_L^T g_f`, `db_out = 1^T g_f`, `g_{a_L} = g_f W_out^T`, and per layer
//! `g_z = g_a ⊙ silu'(z)` with `silu'(z) = sigma + a (1 - sigma)` (from the stored `a` and
//! `sigma`), `dW = a_{l-1}^T g_z`, `db = 1^T g_z`, `dE[c_i] += g_z[i]`, `g_{a_{l-1}} = g_z W^T`;
//! the input gradient is `g_x = g_{z_1} W_1[0..d]^T` (the time features do not depend on `x`).
//!
//! **Determinism.** Rows are processed in chunks of a fixed size ([`TRAIN_CHUNK`],
//! [`INFER_CHUNK`]), each chunk by one thread (products single-threaded), and the parameter
//! gradient is the sum of the chunks' gradients in chunk order; the gradient norm is summed
//! in `f64` over fixed blocks of [`OPT_BLOCK`] parameters, in order. Nothing depends on the
//! number of threads or on which thread ran a chunk, so training is bit-reproducible for a
//! seed on a given machine, whatever `RAYON_NUM_THREADS` is. There is one parallel region
//! for the forward-backward of a step and two for the gradient sum and the optimiser, with
//! chunks handed out by work stealing: a thread that loses its core to another process
//! delays at most one chunk, instead of every product (no per-product barrier).

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::mlp::{Mlp, MlpConfig};
pub use super::optim::AdamWStep;
use crate::score::{tweedie, Parametrisation};
use crate::{Error, Result};

/// Rows per chunk of a training step (fixed: the gradient's summation order depends on it).
pub const TRAIN_CHUNK: usize = 128;
/// Rows per chunk of an inference call.
pub const INFER_CHUNK: usize = 128;
/// Parameters per block of the gradient-norm and optimiser passes.
pub const OPT_BLOCK: usize = 1 << 14;

/// A floating-point type of the engine: `f32` (training, inference) or `f64` (tests);
/// conversions to and from `f64` are candle's [`candle_core::WithDType`].
pub trait Real:
    candle_core::WithDType
    + Default
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The logistic `sigma(z) = 1 / (1 + exp(-z))`, finite for every finite `z`.
    fn sigmoid(self) -> Self;
    /// `sin`.
    fn sin(self) -> Self;
    /// `cos`.
    fn cos(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// The values of a 1- or 2-dimensional tensor, converted to this type.
    fn tensor_values(t: &Tensor) -> Result<Vec<Self>>;
}

/// `exp(x)` in `f32` by range reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, and the degree-7
/// Taylor polynomial of `e^r` (truncation `|r|^8 / 8! < 6e-9`, so the error is a few `f32`
/// roundings on the clamped range `[-87, 88]`), written with plain arithmetic and bit casts so
/// that it vectorises.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let k = x * LOG2E + MAGIC;
    let n = k - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from the integer in k's low mantissa bits.
    let ni = (k.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    p * scale
}

/// The methods of [`Real`] that `f32` and `f64` implement alike (the float's own `sin`,
/// `cos`, `sqrt`; tensor values converted to its dtype).
macro_rules! real_common {
    ($t:ty, $dtype:expr) => {
        fn sin(self) -> Self {
            <$t>::sin(self)
        }
        fn cos(self) -> Self {
            <$t>::cos(self)
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            <$t>::sqrt(self)
        }
        fn tensor_values(t: &Tensor) -> Result<Vec<Self>> {
            Ok(t.to_dtype($dtype)?.flatten_all()?.to_vec1()?)
        }
    };
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + exp_f32(-self))
    }
    real_common!(f32, DType::F32);
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn sigmoid(self) -> Self {
        // (1 + tanh(z / 2)) / 2: no overflow for very negative z.
        0.5 * (1.0 + (0.5 * self).tanh())
    }
    real_common!(f64, DType::F64);
}

super::conv::multiversion! {
    fn silu_forward<T: Real>(a: &mut [T], s: &mut [T]) {
        for (a, s) in a.iter_mut().zip(s.iter_mut()) {
            let z = *a;
            let sg = z.sigmoid();
            *s = sg;
            *a = z * sg;
        }
    }
}

super::conv::multiversion! {
    fn silu_backward<T: Real>(g: &mut [T], a: &[T], s: &[T]) {
        for ((g, &a), &s) in g.iter_mut().zip(a).zip(s) {
            *g *= s + a * (T::ONE - s);
        }
    }
}

super::conv::multiversion! {
    fn add_rows<T: Real>(acc: &mut [T], x: &[T], cols: usize) {
        // acc[j] += sum_i x[i, j], rows in order.
        for row in x.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

super::conv::multiversion! {
    fn sum_into<T: Real>(dst: &mut [T], src: &[T]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// `dst[m x n] (= or +=) A B` with `A` `[m x k]` and `B` `[k x n]` given by element strides
/// (row, column), `dst` row-major with row stride `dst_rs`; single-threaded.
///
/// # Safety
/// The pointers must cover the strided ranges, and `dst` must not alias `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    a: *const T,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    b_rs: usize,
    b_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * dst_rs), 0, n);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        T::ONE,
        T::ONE,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Where each parameter of the MLP lives in the flat buffer, in the order of
/// [`Mlp::names`] (`in.w`, `in.b`, `h1.w`, `h1.b`, ..., `out.w`, `out.b`, `class.emb`).
#[derive(Clone, Debug)]
pub struct Layout {
    /// The architecture.
    pub config: MlpConfig,
    /// `(name, offset, shape)` of each parameter.
    pub entries: Vec<(String, usize, (usize, usize))>,
    /// Total number of parameters.
    pub len: usize,
}

impl Layout {
    /// The layout of `config` (the same names and shapes as [`Mlp::new`]).
    pub fn new(config: &MlpConfig) -> Self {
        let (d, h) = (config.dim, config.hidden);
        let mut shapes = vec![
            ("in.w".to_string(), (d + config.fourier, h)),
            ("in.b".to_string(), (1, h)),
        ];
        for i in 1..config.depth {
            shapes.push((format!("h{i}.w"), (h, h)));
            shapes.push((format!("h{i}.b"), (1, h)));
        }
        shapes.push(("out.w".into(), (h, d)));
        shapes.push(("out.b".into(), (1, d)));
        if config.n_classes > 0 {
            shapes.push(("class.emb".into(), (config.n_classes + 1, h)));
        }
        let mut off = 0;
        let entries = shapes
            .into_iter()
            .map(|(n, s)| {
                let e = (n, off, s);
                off += s.0 * s.1;
                e
            })
            .collect();
        Layout {
            config: config.clone(),
            entries,
            len: off,
        }
    }

    /// Offset of weight (`2 l`) and bias (`2 l + 1`) of layer `l` (0: input, `depth`: output).
    fn layer(&self, l: usize) -> (usize, usize) {
        (self.entries[2 * l].1, self.entries[2 * l + 1].1)
    }

    fn emb(&self) -> Option<usize> {
        (self.config.n_classes > 0).then(|| self.entries[2 * self.config.depth + 2].1)
    }

    /// The flat buffer of parameter tensors given in this layout's order.
    pub fn flatten<T: Real>(&self, values: &[Tensor]) -> Result<Vec<T>> {
        if values.len() != self.entries.len() {
            return Err(Error::invalid(format!(
                "mlp: {} parameter tensors for {} parameters",
                values.len(),
                self.entries.len()
            )));
        }
        let mut out = Vec::with_capacity(self.len);
        for ((name, _, (r, c)), v) in self.entries.iter().zip(values) {
            if v.dims() != [*r, *c] {
                return Err(Error::invalid(format!(
                    "mlp: parameter {name} of shape {:?}, expected [{r}, {c}]",
                    v.dims()
                )));
            }
            out.extend(T::tensor_values(v)?);
        }
        Ok(out)
    }

    /// The parameter tensors (this layout's order and shapes, dtype `dtype`) of a flat buffer.
    pub fn tensors<T: Real>(&self, flat: &[T], dtype: DType) -> Result<Vec<Tensor>> {
        self.entries
            .iter()
            .map(|(_, off, (r, c))| {
                let v: Vec<f64> = flat[*off..off + r * c].iter().map(|v| v.to_f64()).collect();
                Ok(Tensor::from_vec(v, (*r, *c), &Device::Cpu)?.to_dtype(dtype)?)
            })
            .collect()
    }
}

/// Per-chunk buffers of the forward and backward passes.
struct Workspace<T> {
    rows: usize,
    /// `[rows, d + fourier]`: the input `[x, phi(tau)]`.
    feats: Vec<T>,
    /// Per hidden layer, `[rows, H]`: the activations `a = silu(z)` and `sigma(z)`.
    act: Vec<Vec<T>>,
    sig: Vec<Vec<T>>,
    /// `[rows, d]`: the output, then its cotangent.
    out: Vec<T>,
    /// Two `[rows, H]` cotangent buffers (ping-pong).
    g1: Vec<T>,
    g2: Vec<T>,
}

impl<T: Real> Workspace<T> {
    fn new(config: &MlpConfig, rows: usize) -> Self {
        let (d, h) = (config.dim, config.hidden);
        Workspace {
            rows,
            feats: vec![T::ZERO; rows * (d + config.fourier)],
            act: (0..config.depth).map(|_| vec![T::ZERO; rows * h]).collect(),
            sig: (0..config.depth).map(|_| vec![T::ZERO; rows * h]).collect(),
            out: vec![T::ZERO; rows * d],
            g1: vec![T::ZERO; rows * h],
            g2: vec![T::ZERO; rows * h],
        }
    }
}

/// The MLP's parameters as one flat buffer with its [`Layout`], and the fused passes.
pub struct FusedMlp<T> {
    /// Where each parameter lives in [`FusedMlp::params`].
    pub layout: Layout,
    /// The parameters, flat.
    pub params: Vec<T>,
    freqs: Vec<T>,
    pool: Mutex<Vec<Workspace<T>>>,
}

impl<T: Real> FusedMlp<T> {
    /// An engine for `config` with the flat parameters `params`.
    pub fn new(config: &MlpConfig, params: Vec<T>) -> Result<Self> {
        let layout = Layout::new(config);
        if params.len() != layout.len {
            return Err(Error::invalid(format!(
                "mlp: {} parameters, the architecture has {}",
                params.len(),
                layout.len
            )));
        }
        // The frequencies of Mlp::new, w_k = pi 2^(k - 1), rounded to T like candle's.
        let freqs = (0..config.fourier / 2)
            .map(|k| T::from_f64(std::f64::consts::PI * 2f64.powi(k as i32 - 1)))
            .collect();
        Ok(FusedMlp {
            layout,
            params,
            freqs,
            pool: Mutex::new(vec![]),
        })
    }

    /// The engine of a candle [`Mlp`] (a copy of its current parameters).
    pub fn from_mlp(net: &Mlp) -> Result<Self> {
        let layout = Layout::new(&net.config);
        let values: Vec<Tensor> = net.vars().iter().map(|v| v.as_tensor().clone()).collect();
        let flat = layout.flatten(&values)?;
        FusedMlp::new(&net.config, flat)
    }

    /// The architecture.
    pub fn config(&self) -> &MlpConfig {
        &self.layout.config
    }

    fn check(&self, n: usize, x: &[T], tau: &[T], classes: Option<&[u32]>) -> Result<()> {
        let c = self.config();
        if x.len() != n * c.dim || tau.len() != n || classes.is_some_and(|k| k.len() != n) {
            return Err(Error::invalid(format!(
                "mlp: inputs of {} values, {} times and {:?} classes for {n} rows of dimension {}",
                x.len(),
                tau.len(),
                classes.map(|k| k.len()),
                c.dim
            )));
        }
        if let Some(k) = classes {
            if let Some(bad) = k.iter().find(|&&k| k as usize > c.n_classes) {
                return Err(Error::invalid(format!(
                    "mlp: class {bad} out of range (0..={})",
                    c.n_classes
                )));
            }
        }
        Ok(())
    }

    fn take_workspace(&self) -> Workspace<T> {
        let ws = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        ws.unwrap_or_else(|| Workspace::new(self.config(), INFER_CHUNK))
    }

    fn give_workspace(&self, ws: Workspace<T>) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(ws);
        }
    }

    /// The output `f(x, tau, c)` (`[n, d]`, row-major) of `n` rows `x` (`[n, d]`) at normalised
    /// times `tau` (`n`), classes as in [`Mlp::forward`] (`None`: the null class), written
    /// into `out`. Rows are processed in parallel chunks of [`INFER_CHUNK`].
    pub fn forward(&self, x: &[T], tau: &[T], classes: Option<&[u32]>, out: &mut [T]) -> Result<()> {
        let d = self.config().dim;
        let n = tau.len();
        self.check(n, x, tau, classes)?;
        if out.len() != n * d {
            return Err(Error::invalid("mlp: output buffer of the wrong size"));
        }
        let job = |(c, out): (usize, &mut [T])| {
            let r0 = c * INFER_CHUNK;
            let rows = out.len() / d;
            let mut ws = self.take_workspace();
            ws.rows = rows;
            load_x(&mut ws, d, self.config().fourier, &x[r0 * d..(r0 + rows) * d]);
            forward_chunk(
                &self.layout,
                &self.params,
                &self.freqs,
                &mut ws,
                &tau[r0..r0 + rows],
                classes.map(|k| &k[r0..r0 + rows]),
            );
            out.copy_from_slice(&ws.out[..rows * d]);
            self.give_workspace(ws);
        };
        if n <= INFER_CHUNK {
            out.chunks_mut(INFER_CHUNK * d).enumerate().for_each(job);
        } else {
            out.par_chunks_mut(INFER_CHUNK * d).enumerate().for_each(job);
        }
        Ok(())
    }

    /// The output `f` (as [`FusedMlp::forward`]) and the input gradient
    /// `(∂f/∂x)^T u` for output cotangents `u` (`[n, d]`), row by row.
    pub fn vjp_input(
        &self,
        x: &[T],
        tau: &[T],
        classes: Option<&[u32]>,
        u: &[T],
        out: &mut [T],
        dx: &mut [T],
    ) -> Result<()> {
        let d = self.config().dim;
        let n = tau.len();
        self.check(n, x, tau, classes)?;
        if out.len() != n * d || dx.len() != n * d || u.len() != n * d {
            return Err(Error::invalid("mlp: cotangent or output buffer of the wrong size"));
        }
        let job = |(c, (out, dx)): (usize, (&mut [T], &mut [T]))| {
            let r0 = c * INFER_CHUNK;
            let rows = out.len() / d;
            let mut ws = self.take_workspace();
            ws.rows = rows;
            load_x(&mut ws, d, self.config().fourier, &x[r0 * d..(r0 + rows) * d]);
            let cl = classes.map(|k| &k[r0..r0 + rows]);
            forward_chunk(
                &self.layout,
                &self.params,
                &self.freqs,
                &mut ws,
                &tau[r0..r0 + rows],
                cl,
            );
            out.copy_from_slice(&ws.out[..rows * d]);
            ws.out[..rows * d].copy_from_slice(&u[r0 * d..(r0 + rows) * d]);
            backward_chunk(&self.layout, &self.params, &mut ws, cl, None, Some(dx));
            self.give_workspace(ws);
        };
        if n <= INFER_CHUNK {
            out.chunks_mut(INFER_CHUNK * d)
                .zip(dx.chunks_mut(INFER_CHUNK * d))
                .enumerate()
                .for_each(job);
        } else {
            out.par_chunks_mut(INFER_CHUNK * d)
                .zip(dx.par_chunks_mut(INFER_CHUNK * d))
                .enumerate()
                .for_each(job);
        }
        Ok(())
    }
}

/// Copies the chunk's `x` rows into the first `d` columns of the input features.
fn load_x<T: Real>(ws: &mut Workspace<T>, d: usize, fourier: usize, x: &[T]) {
    let w = d + fourier;
    for (f, x) in ws.feats.chunks_exact_mut(w).zip(x.chunks_exact(d)) {
        f[..d].copy_from_slice(x);
    }
}

/// The forward pass of one chunk whose `x` is already in `ws.feats[:, ..d]`; the output goes
/// to `ws.out`, the activations and sigmoids of every hidden layer are kept for the backward.
fn forward_chunk<T: Real>(
    layout: &Layout,
    p: &[T],
    freqs: &[T],
    ws: &mut Workspace<T>,
    tau: &[T],
    classes: Option<&[u32]>,
) {
    let cfg = &layout.config;
    let (d, h, rows) = (cfg.dim, cfg.hidden, ws.rows);
    let (win, half) = (d + cfg.fourier, cfg.fourier / 2);
    // Rows at the time of the previous row (a sampler's batch: all of them) copy its features.
    let mut prev: Option<T> = None;
    for i in 0..rows {
        let t = tau[i];
        let (done, f) = ws.feats.split_at_mut(i * win);
        let f = &mut f[..win];
        if prev == Some(t) {
            let p = &done[(i - 1) * win..i * win];
            f[d..].copy_from_slice(&p[d..]);
        } else {
            for (k, &w) in freqs.iter().enumerate() {
                let arg = t * w;
                f[d + k] = arg.sin();
                f[d + half + k] = arg.cos();
            }
        }
        prev = Some(t);
    }
    let null = cfg.n_classes as u32;
    for l in 0..cfg.depth {
        let (wo, bo) = layout.layer(l);
        let (inp, k, act_rest) = if l == 0 {
            (ws.feats.as_ptr(), win, &mut ws.act[..])
        } else {
            let (prev, rest) = ws.act.split_at_mut(l);
            (prev[l - 1].as_ptr(), h, rest)
        };
        let z = &mut act_rest[0][..rows * h];
        let bias = &p[bo..bo + h];
        match (l, layout.emb()) {
            (0, Some(eo)) => {
                for (i, zr) in z.chunks_exact_mut(h).enumerate() {
                    let c = classes.map_or(null, |c| c[i]) as usize;
                    let e = &p[eo + c * h..eo + (c + 1) * h];
                    for ((z, &b), &e) in zr.iter_mut().zip(bias).zip(e) {
                        *z = b + e;
                    }
                }
            }
            _ => {
                for zr in z.chunks_exact_mut(h) {
                    zr.copy_from_slice(bias);
                }
            }
        }
        // SAFETY: `inp` is `[rows, k]` row-major, the weight `[k, h]` row-major, `z` `[rows, h]`.
        unsafe {
            matmul(rows, h, k, z.as_mut_ptr(), h, true, inp, k, 1, p.as_ptr().add(wo), h, 1);
        }
        silu_forward(z, &mut ws.sig[l][..rows * h]);
    }
    let (wo, bo) = layout.layer(cfg.depth);
    let out = &mut ws.out[..rows * d];
    for r in out.chunks_exact_mut(d) {
        r.copy_from_slice(&p[bo..bo + d]);
    }
    // SAFETY: as above, with the `[h, d]` output weight.
    unsafe {
        matmul(
            rows,
            d,
            h,
            out.as_mut_ptr(),
            d,
            true,
            ws.act[cfg.depth - 1].as_ptr(),
            h,
            1,
            p.as_ptr().add(wo),
            d,
            1,
        );
    }
}

/// The backward pass of one chunk after [`forward_chunk`], for the output cotangent in
/// `ws.out`: the parameter gradient into `grad` (overwritten; same layout as `p`) and/or the
/// input gradient into `dx` (`[rows, d]`).
fn backward_chunk<T: Real>(
    layout: &Layout,
    p: &[T],
    ws: &mut Workspace<T>,
    classes: Option<&[u32]>,
    mut grad: Option<&mut [T]>,
    mut dx: Option<&mut [T]>,
) {
    let cfg = &layout.config;
    let (d, h, rows) = (cfg.dim, cfg.hidden, ws.rows);
    let win = d + cfg.fourier;
    let g_out = &ws.out[..rows * d];
    let (wo, bo) = layout.layer(cfg.depth);
    if let Some(g) = grad.as_deref_mut() {
        // dW_out = a_L^T g_out; db_out = column sums.
        // SAFETY: a_L^T is `[h, rows]` with strides (1, h); g_out `[rows, d]`.
        unsafe {
            matmul(
                h,
                d,
                rows,
                g.as_mut_ptr().add(wo),
                d,
                false,
                ws.act[cfg.depth - 1].as_ptr(),
                1,
                h,
                g_out.as_ptr(),
                d,
                1,
            );
        }
        let gb = &mut g[bo..bo + d];
        gb.fill(T::ZERO);
        add_rows(gb, g_out, d);
    }
    // g_a = g_out W_out^T: W_out^T is `[d, h]` with strides (1, d).
    // SAFETY: as stated.
    unsafe {
        matmul(
            rows,
            h,
            d,
            ws.g1.as_mut_ptr(),
            h,
            false,
            g_out.as_ptr(),
            d,
            1,
            p.as_ptr().add(wo),
            1,
            d,
        );
    }
    let (mut ga, mut gnext) = (&mut ws.g1, &mut ws.g2);
    for l in (0..cfg.depth).rev() {
        let gz = &mut ga[..rows * h];
        silu_backward(gz, &ws.act[l][..rows * h], &ws.sig[l][..rows * h]);
        let (w_off, b_off) = layout.layer(l);
        let (inp, k) = if l == 0 {
            (ws.feats.as_ptr(), win)
        } else {
            (ws.act[l - 1].as_ptr(), h)
        };
        if let Some(g) = grad.as_deref_mut() {
            // SAFETY: inp^T is `[k, rows]` with strides (1, k); gz `[rows, h]`.
            unsafe {
                matmul(
                    k,
                    h,
                    rows,
                    g.as_mut_ptr().add(w_off),
                    h,
                    false,
                    inp,
                    1,
                    k,
                    gz.as_ptr(),
                    h,
                    1,
                );
            }
            let gb = &mut g[b_off..b_off + h];
            gb.fill(T::ZERO);
            add_rows(gb, gz, h);
            if l == 0 {
                if let Some(eo) = layout.emb() {
                    let null = cfg.n_classes as u32;
                    g[eo..eo + (cfg.n_classes + 1) * h].fill(T::ZERO);
                    for (i, zr) in gz.chunks_exact(h).enumerate() {
                        let c = classes.map_or(null, |c| c[i]) as usize;
                        sum_into(&mut g[eo + c * h..eo + (c + 1) * h], zr);
                    }
                }
            }
        }
        if l > 0 {
            // g_a(prev) = gz W^T: W^T is `[h, h]` with strides (1, h).
            // SAFETY: as stated.
            unsafe {
                matmul(
                    rows,
                    h,
                    h,
                    gnext.as_mut_ptr(),
                    h,
                    false,
                    gz.as_ptr(),
                    h,
                    1,
                    p.as_ptr().add(w_off),
                    1,
                    h,
                );
            }
            std::mem::swap(&mut ga, &mut gnext);
        } else if let Some(dx) = dx.take() {
            // g_x = gz W_in[..d]^T: `[d, h]` with strides (1, h).
            // SAFETY: as stated; only the first d rows of W_in are read.
            unsafe {
                matmul(
                    rows,
                    d,
                    h,
                    dx.as_mut_ptr(),
                    d,
                    false,
                    gz.as_ptr(),
                    h,
                    1,
                    p.as_ptr().add(w_off),
                    1,
                    h,
                );
            }
        }
    }
}

/// One mini-batch of the denoising score-matching loss (see [`super::loss`]): per row `i`,
/// `x_t = m_i x_0 + s_i eps`, the network at `c_i x_t` and `tau_i`, and the residual in the
/// network's parametrisation (`eps`: `f - eps`; `x0`: `f - x_0`; `score`: `s_i f + eps`;
/// `edm`: `f - (s_i x_0 - m_i eps) / kappa_i`), all from [`tweedie::dsm_coefficients`] and
/// [`tweedie::net_input_scale`].
pub struct DsmBatch<'a, T> {
    /// Clean rows `[n, d]`.
    pub x0: &'a [T],
    /// Noise `[n, d]`.
    pub eps: &'a [T],
    /// `m(t_i)`, `s(t_i)` and the network's time input `tau_i` ([`tweedie::net_time`]) per
    /// row.
    pub m: &'a [T],
    /// See `m`.
    pub s: &'a [T],
    /// See `m`.
    pub tau: &'a [T],
    /// Classes per row (`None`: the null class).
    pub classes: Option<&'a [u32]>,
    /// `[n, d]` 1/0 weights of observed cells (`None`: all observed).
    pub observed: Option<&'a [T]>,
}

struct TrainChunk<T> {
    ws: Workspace<T>,
    grad: Vec<T>,
    loss: f64,
}

/// The fused DSM loss and its gradient, with preallocated per-chunk workspaces.
pub struct DsmEngine<T> {
    layout: Layout,
    freqs: Vec<T>,
    param: Parametrisation,
    chunks: Vec<TrainChunk<T>>,
    grad_norm2: f64,
}

impl<T: Real> DsmEngine<T> {
    /// An engine for `config` (workspaces grow to the first batch's size and are reused).
    pub fn new(config: &MlpConfig) -> Self {
        let fm = FusedMlp::<T>::new(config, vec![T::ZERO; Layout::new(config).len]).expect("sizes agree");
        DsmEngine {
            layout: fm.layout,
            freqs: fm.freqs,
            param: config.param,
            chunks: vec![],
            grad_norm2: 0.0,
        }
    }

    /// The mean loss `sum w r^2 / max(sum w, 1)` (every cell weighs 1 without a mask) at the
    /// flat parameters `p`, and its gradient in `grad` (`p`'s layout).
    pub fn loss_grad(&mut self, p: &[T], b: &DsmBatch<T>, grad: &mut [T]) -> Result<f64> {
        let cfg = &self.layout.config;
        let (d, win) = (cfg.dim, cfg.dim + cfg.fourier);
        let n = b.tau.len();
        if b.x0.len() != n * d
            || b.eps.len() != n * d
            || b.m.len() != n
            || b.s.len() != n
            || b.classes.is_some_and(|c| c.len() != n)
            || b.observed.is_some_and(|o| o.len() != n * d)
            || p.len() != self.layout.len
            || grad.len() != self.layout.len
        {
            return Err(Error::invalid("dsm: batch or parameter buffers of inconsistent sizes"));
        }
        let count = match b.observed {
            Some(o) => o.iter().map(|w| w.to_f64()).sum::<f64>().max(1.0),
            None => (n * d) as f64,
        };
        let n_chunks = n.div_ceil(TRAIN_CHUNK);
        while self.chunks.len() < n_chunks {
            self.chunks.push(TrainChunk {
                ws: Workspace::new(cfg, TRAIN_CHUNK),
                grad: vec![T::ZERO; self.layout.len],
                loss: 0.0,
            });
        }
        let (layout, freqs, param) = (&self.layout, &self.freqs, self.param);
        let two_over = T::from_f64(2.0 / count);
        self.chunks[..n_chunks].par_iter_mut().enumerate().for_each(|(c, ch)| {
            let r0 = c * TRAIN_CHUNK;
            let rows = TRAIN_CHUNK.min(n - r0);
            let ws = &mut ch.ws;
            ws.rows = rows;
            let span = r0 * d..(r0 + rows) * d;
            let (x0, eps) = (&b.x0[span.clone()], &b.eps[span.clone()]);
            // Per row: the network's input `c (m x_0 + s eps)` ([`tweedie::net_input_scale`]).
            for i in 0..rows {
                let (m, s) = (b.m[r0 + i], b.s[r0 + i]);
                let c = T::from_f64(tweedie::net_input_scale(param, m.to_f64(), s.to_f64()));
                let (cm, cs) = (c * m, c * s);
                let f = &mut ws.feats[i * win..i * win + d];
                for j in 0..d {
                    f[j] = cm * x0[i * d + j] + cs * eps[i * d + j];
                }
            }
            let cl = b.classes.map(|k| &k[r0..r0 + rows]);
            forward_chunk(layout, p, freqs, ws, &b.tau[r0..r0 + rows], cl);
            let mut loss = 0.0f64;
            for i in 0..rows {
                // The residual's coefficients ([`tweedie::dsm_coefficients`]); no allocation.
                let k = tweedie::dsm_coefficients(param, b.m[r0 + i].to_f64(), b.s[r0 + i].to_f64());
                let (alpha, tx, te) = (
                    T::from_f64(k.weight),
                    T::from_f64(k.target_x0),
                    T::from_f64(k.target_eps),
                );
                for j in 0..d {
                    let k = i * d + j;
                    let f = ws.out[k];
                    let r = alpha * (f - tx * x0[k] - te * eps[k]);
                    let w = b.observed.map_or(T::ONE, |o| o[r0 * d + k]);
                    let wr = w * r;
                    loss += (wr * r).to_f64();
                    ws.out[k] = two_over * wr * alpha;
                }
            }
            ch.loss = loss;
            backward_chunk(layout, p, ws, cl, Some(&mut ch.grad), None);
        });
        // Sum the chunks' gradients in chunk order, over fixed blocks, with the squared norm.
        let chunks = &self.chunks[..n_chunks];
        let norms: Vec<f64> = grad
            .par_chunks_mut(OPT_BLOCK)
            .enumerate()
            .map(|(bi, g)| {
                let o = bi * OPT_BLOCK;
                g.copy_from_slice(&chunks[0].grad[o..o + g.len()]);
                for ch in &chunks[1..] {
                    sum_into(g, &ch.grad[o..o + g.len()]);
                }
                g.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>()
            })
            .collect();
        self.grad_norm2 = norms.iter().sum();
        Ok(chunks.iter().map(|c| c.loss).sum::<f64>() / count)
    }

    /// The squared norm `sum g^2` of the last gradient of [`DsmEngine::loss_grad`] (in `f64`,
    /// over the blocks of [`OPT_BLOCK`] in order, like [`norm2`]).
    pub fn grad_norm2(&self) -> f64 {
        self.grad_norm2
    }
}

/// The mean DSM loss of [`DsmBatch`] (no gradient) through [`FusedMlp::forward`].
pub fn dsm_loss<T: Real>(net: &FusedMlp<T>, b: &DsmBatch<T>) -> Result<f64> {
    let d = net.config().dim;
    let n = b.tau.len();
    let param = net.config().param;
    let mut xt = vec![T::ZERO; n * d];
    for i in 0..n {
        let c = T::from_f64(tweedie::net_input_scale(param, b.m[i].to_f64(), b.s[i].to_f64()));
        for j in 0..d {
            xt[i * d + j] = c * (b.m[i] * b.x0[i * d + j] + b.s[i] * b.eps[i * d + j]);
        }
    }
    let mut out = vec![T::ZERO; n * d];
    net.forward(&xt, b.tau, b.classes, &mut out)?;
    let (mut sum, mut count) = (0.0, 0.0);
    for i in 0..n {
        let dc = tweedie::dsm_coefficients(param, b.m[i].to_f64(), b.s[i].to_f64());
        for j in 0..d {
            let k = i * d + j;
            let f = out[k].to_f64();
            let r = dc.weight * (f - dc.target_x0 * b.x0[k].to_f64() - dc.target_eps * b.eps[k].to_f64());
            let w = b.observed.map_or(1.0, |o| o[k].to_f64());
            sum += w * r * r;
            count += w;
        }
    }
    Ok(sum / count.max(1.0))
}

/// The squared global norm `sum g^2` (in `f64`, over fixed blocks in order).
pub fn norm2<T: Real>(g: &[T]) -> f64 {
    let parts: Vec<f64> = g
        .par_chunks(OPT_BLOCK)
        .map(|b| b.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>())
        .collect();
    parts.iter().sum()
}

/// One AdamW step (Loshchilov & Hutter 2019) with global-norm clipping and an EMA, in place,
/// element by element:
/// `g' = c g` with `c = min(1, clip / (|g| + 1e-12))`, `m = b1 m + (1 - b1) g'`,
/// `v = b2 v + (1 - b2) g'^2`, `p -= lr (m / (1 - b1^k) / (sqrt(v / (1 - b2^k)) + eps) + wd p)`,
/// `ema = decay ema + (1 - decay) p`. `norm2` is `sum g^2` if known ([`norm2`] otherwise).
/// Returns the gradient norm `|g|` before clipping.
pub fn adamw_ema<T: Real>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    ema: &mut [T],
    h: &AdamWStep,
    norm2_of_g: Option<f64>,
) -> f64 {
    let norm = norm2_of_g.unwrap_or_else(|| norm2(g)).sqrt();
    let scale = if h.clip > 0.0 {
        (h.clip / (norm + 1e-12)).min(1.0)
    } else {
        1.0
    };
    let c = |x: f64| T::from_f64(x);
    let (b1, b2) = (c(h.beta1), c(h.beta2));
    let (ob1, ob2) = (c(1.0 - h.beta1), c(1.0 - h.beta2));
    let (ic1, ic2) = (
        c(1.0 / (1.0 - h.beta1.powi(h.step))),
        c(1.0 / (1.0 - h.beta2.powi(h.step))),
    );
    let (lr, wd, eps, sc) = (c(h.lr), c(h.weight_decay), c(h.eps), c(scale));
    let (dk, odk) = (c(h.ema_decay), c(1.0 - h.ema_decay));
    let k = OPT_BLOCK;
    p.par_chunks_mut(k)
        .zip(g.par_chunks(k))
        .zip(m.par_chunks_mut(k))
        .zip(v.par_chunks_mut(k))
        .zip(ema.par_chunks_mut(k))
        .for_each(|((((p, g), m), v), e)| {
            adam_block(p, g, m, v, e, [b1, b2, ob1, ob2, ic1, ic2, lr, wd, eps, sc, dk, odk]);
        });
    norm
}

super::conv::multiversion! {
    fn adam_block<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], e: &mut [T], k: [T; 12]) {
        let [b1, b2, ob1, ob2, ic1, ic2, lr, wd, eps, sc, dk, odk] = k;
        for i in 0..p.len().min(g.len()).min(m.len()).min(v.len()).min(e.len()) {
            let gi = g[i] * sc;
            let mi = b1 * m[i] + ob1 * gi;
            let vi = b2 * v[i] + ob2 * (gi * gi);
            m[i] = mi;
            v[i] = vi;
            let upd = (mi * ic1) / ((vi * ic2).sqrt() + eps) + wd * p[i];
            let pi = p[i] - lr * upd;
            p[i] = pi;
            e[i] = dk * e[i] + odk * pi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::loss::{dsm_loss as candle_dsm, masked_dsm_loss};
    use crate::process::Process;
    use crate::rng::{stream, Noise, Purpose};

    fn config(param: Parametrisation, n_classes: usize) -> MlpConfig {
        MlpConfig {
            dim: 3,
            hidden: 24,
            depth: 3,
            fourier: 6,
            n_classes,
            param,
        }
    }

    struct Case {
        x0: Vec<f64>,
        eps: Vec<f64>,
        t: Vec<f64>,
        classes: Option<Vec<u32>>,
        mask: Option<Vec<f64>>,
    }

    fn case(n: usize, d: usize, classes: usize, masked: bool) -> Case {
        let noise = Noise::new(31);
        let t: Vec<f64> = noise
            .uniforms(stream(Purpose::User, 2), n)
            .iter()
            .map(|u| 0.01 + 4.0 * u)
            .collect();
        Case {
            x0: noise.normals(stream(Purpose::User, 0), n, d),
            eps: noise.normals(stream(Purpose::User, 1), n, d),
            t,
            classes: (classes > 0).then(|| {
                noise
                    .uniforms(stream(Purpose::User, 3), n)
                    .iter()
                    .map(|u| ((u * (classes + 1) as f64) as u32).min(classes as u32))
                    .collect()
            }),
            mask: masked.then(|| (0..n * d).map(|k| f64::from(u8::from(k % 5 != 2))).collect()),
        }
    }

    fn batch<'a>(
        c: &'a Case,
        p: &Process,
        param: Parametrisation,
        m: &'a mut Vec<f64>,
        s: &'a mut Vec<f64>,
        tau: &'a mut Vec<f64>,
    ) -> DsmBatch<'a, f64> {
        *m = c.t.iter().map(|&t| p.m(t)).collect();
        *s = c.t.iter().map(|&t| p.s(t)).collect();
        *tau = c.t.iter().map(|&t| tweedie::net_time(param, p, t)).collect();
        DsmBatch {
            x0: &c.x0,
            eps: &c.eps,
            m,
            s,
            tau,
            classes: c.classes.as_deref(),
            observed: c.mask.as_deref(),
        }
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / (1.0 + b.abs())
    }

    /// The engine's output and DSM gradient against candle's forward and autograd, in f64,
    /// for every parametrisation, with and without classes and a mask, over several chunks.
    #[test]
    fn dsm_gradient_matches_candle_autograd() {
        let dev = Device::Cpu;
        let n = TRAIN_CHUNK + 37;
        let (ou, ve) = (Process::ou(2.0, 5.0), Process::ve(0.01, 20.0));
        for (param, k, masked, p) in [
            (Parametrisation::Eps, 0, false, &ou),
            (Parametrisation::Score, 2, false, &ou),
            (Parametrisation::X0, 0, true, &ou),
            (Parametrisation::Eps, 3, true, &ou),
            (Parametrisation::Edm, 2, true, &ou),
            (Parametrisation::Edm, 0, false, &ve),
        ] {
            let cfg = config(param, k);
            let net = Mlp::new(cfg.clone(), 5, DType::F64, &dev).unwrap();
            let fused = FusedMlp::<f64>::from_mlp(&net).unwrap();
            let mut c = case(n, cfg.dim, k, masked);
            // The case's times are on [0.01, 4.01], for a horizon of 5.
            c.t.iter_mut().for_each(|t| *t *= p.t_max() / 5.0);
            let tens = |v: &[f64], cols| Tensor::from_vec(v.to_vec(), (n, cols), &dev).unwrap();
            let (x0, eps) = (tens(&c.x0, cfg.dim), tens(&c.eps, cfg.dim));
            let cl = c
                .classes
                .as_ref()
                .map(|c| Tensor::from_vec(c.clone(), n, &dev).unwrap());
            let loss = match &c.mask {
                Some(mk) => masked_dsm_loss(&net, p, &x0, &c.t, &eps, cl.as_ref(), &tens(mk, cfg.dim)),
                None => candle_dsm(&net, p, &x0, &c.t, &eps, cl.as_ref()),
            }
            .unwrap();
            let want_loss = loss.to_scalar::<f64>().unwrap();
            let grads = loss.backward().unwrap();
            let want: Vec<f64> = net
                .vars()
                .iter()
                .flat_map(|v| {
                    grads
                        .get(v.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                })
                .collect();
            let (mut m, mut s, mut tau) = (vec![], vec![], vec![]);
            let b = batch(&c, p, param, &mut m, &mut s, &mut tau);
            let mut eng = DsmEngine::<f64>::new(&cfg);
            let mut g = vec![0.0; fused.params.len()];
            let got_loss = eng.loss_grad(&fused.params, &b, &mut g).unwrap();
            assert_eq!(eng.grad_norm2(), norm2(&g));
            assert!(
                rel(got_loss, want_loss) < 1e-12,
                "{param:?}: loss {got_loss} vs {want_loss}"
            );
            assert!(rel(dsm_loss(&fused, &b).unwrap(), want_loss) < 1e-12);
            let gmax = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            for (i, (a, w)) in g.iter().zip(&want).enumerate() {
                assert!((a - w).abs() < 1e-11 * gmax, "{param:?} k={k}: grad[{i}] {a} vs {w}");
            }
        }
    }

    /// The gradient and the input VJP against central differences of the loss, in f64.
    #[test]
    fn gradients_match_finite_differences() {
        let p = Process::ou(2.0, 5.0);
        let cfg = config(Parametrisation::Eps, 2);
        let net = Mlp::new(cfg.clone(), 9, DType::F64, &Device::Cpu).unwrap();
        let mut fused = FusedMlp::<f64>::from_mlp(&net).unwrap();
        let n = 9;
        let c = case(n, cfg.dim, 2, true);
        let (mut m, mut s, mut tau) = (vec![], vec![], vec![]);
        let b = batch(&c, &p, Parametrisation::Eps, &mut m, &mut s, &mut tau);
        let mut eng = DsmEngine::<f64>::new(&cfg);
        let mut g = vec![0.0; fused.params.len()];
        eng.loss_grad(&fused.params, &b, &mut g).unwrap();
        let h = 1e-6;
        let gmax = g.iter().fold(0f64, |a, v| a.max(v.abs()));
        // Every parameter tensor, a few entries each (the embedding rows of used classes).
        for (name, off, (r, cc)) in fused.layout.entries.clone() {
            for e in [0, r * cc / 2, r * cc - 1] {
                let i = off + e;
                let keep = fused.params[i];
                fused.params[i] = keep + h;
                let lp = dsm_loss(&fused, &b).unwrap();
                fused.params[i] = keep - h;
                let lm = dsm_loss(&fused, &b).unwrap();
                fused.params[i] = keep;
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-7 * (1.0 + gmax),
                    "{name}[{e}]: fd {fd} vs {}",
                    g[i]
                );
            }
        }
        // Input gradient: d/dx of u . f(x) by differences.
        let d = cfg.dim;
        let x = &c.x0;
        let u = &c.eps;
        let cls = c.classes.as_deref();
        let (mut out, mut dx) = (vec![0.0; n * d], vec![0.0; n * d]);
        fused.vjp_input(x, &tau, cls, u, &mut out, &mut dx).unwrap();
        let dot = |x: &[f64]| {
            let mut o = vec![0.0; n * d];
            fused.forward(x, &tau, cls, &mut o).unwrap();
            o.iter().zip(u).map(|(a, b)| a * b).sum::<f64>()
        };
        for i in [0, 4, n * d - 1] {
            let mut xp = x.clone();
            xp[i] += h;
            let mut xm = x.clone();
            xm[i] -= h;
            let fd = (dot(&xp) - dot(&xm)) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() < 1e-7 * (1.0 + fd.abs()),
                "dx[{i}]: fd {fd} vs {}",
                dx[i]
            );
        }
    }

    /// The f32 engine (polynomial exp) against the f64 one: relative error at f32 rounding.
    #[test]
    fn f32_forward_agrees_with_f64() {
        let cfg = MlpConfig {
            n_classes: 2,
            ..MlpConfig::reference(5)
        };
        let net = Mlp::new(cfg.clone(), 3, DType::F64, &Device::Cpu).unwrap();
        let f64net = FusedMlp::<f64>::from_mlp(&net).unwrap();
        let f32net = FusedMlp::<f32>::new(&cfg, f64net.params.iter().map(|&v| v as f32).collect()).unwrap();
        let n = 300;
        let c = case(n, 5, 2, false);
        let tau: Vec<f64> = c.t.iter().map(|t| t / 5.0).collect();
        let mut o64 = vec![0.0; n * 5];
        f64net.forward(&c.x0, &tau, c.classes.as_deref(), &mut o64).unwrap();
        let x32: Vec<f32> = c.x0.iter().map(|&v| v as f32).collect();
        let t32: Vec<f32> = tau.iter().map(|&v| v as f32).collect();
        let mut o32 = vec![0.0f32; n * 5];
        f32net.forward(&x32, &t32, c.classes.as_deref(), &mut o32).unwrap();
        let scale = o64.iter().fold(0f64, |a, v| a.max(v.abs()));
        for (a, b) in o32.iter().zip(&o64) {
            assert!((*a as f64 - b).abs() < 1e-5 * scale, "{a} vs {b}");
        }
        for z in [-100.0f32, -87.5, -20.0, -1.0, -1e-3, 0.0, 0.3, 5.0, 20.0, 87.0, 100.0] {
            let want = 1.0 / (1.0 + (-(z as f64)).exp());
            assert!((z.sigmoid() as f64 - want).abs() <= 3e-7 * want + 1e-38, "sigmoid({z})");
        }
    }

    /// The candle forward in f64 equals the engine's (the same network, any class).
    #[test]
    fn forward_matches_candle() {
        let dev = Device::Cpu;
        let cfg = config(Parametrisation::Eps, 3);
        let net = Mlp::new(cfg.clone(), 2, DType::F64, &dev).unwrap();
        let fused = FusedMlp::<f64>::from_mlp(&net).unwrap();
        let n = 2 * INFER_CHUNK + 5;
        let c = case(n, cfg.dim, 3, false);
        let tau: Vec<f64> = c.t.iter().map(|t| t / 5.0).collect();
        for classes in [None, c.classes.as_deref()] {
            let mut out = vec![0.0; n * cfg.dim];
            fused.forward(&c.x0, &tau, classes, &mut out).unwrap();
            let want: Vec<f64> = net
                .forward(
                    &Tensor::from_vec(c.x0.clone(), (n, cfg.dim), &dev).unwrap(),
                    &Tensor::from_vec(tau.clone(), (n, 1), &dev).unwrap(),
                    classes.map(|k| Tensor::from_vec(k.to_vec(), n, &dev).unwrap()).as_ref(),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        // Flattening and back is the identity.
        let back = fused.layout.tensors(&fused.params, DType::F64).unwrap();
        assert_eq!(fused.layout.flatten::<f64>(&back).unwrap(), fused.params);
    }

    /// The optimiser pass against the formula, element by element, in f64.
    #[test]
    fn adamw_ema_follows_the_formula() {
        let n = OPT_BLOCK + 7;
        let noise = Noise::new(4);
        let g = noise.normals(stream(Purpose::User, 0), n, 1);
        let p0 = noise.normals(stream(Purpose::User, 1), n, 1);
        let m0: Vec<f64> = noise
            .normals(stream(Purpose::User, 2), n, 1)
            .iter()
            .map(|v| 0.1 * v)
            .collect();
        let v0: Vec<f64> = noise.uniforms(stream(Purpose::User, 3), n);
        let e0 = noise.normals(stream(Purpose::User, 4), n, 1);
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 3,
            clip: 1.0,
            ema_decay: 0.9,
        };
        let (mut p, mut m, mut v, mut e) = (p0.clone(), m0.clone(), v0.clone(), e0.clone());
        let norm = adamw_ema(&mut p, &g, &mut m, &mut v, &mut e, &h, None);
        let want_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(rel(norm, want_norm) < 1e-12);
        let c = 1.0 / (want_norm + 1e-12);
        for i in [0, 5, OPT_BLOCK, n - 1] {
            let gi = c * g[i];
            let mi = 0.9 * m0[i] + 0.1 * gi;
            let vi = 0.999 * v0[i] + 0.001 * gi * gi;
            let pi = p0[i]
                - 1e-2 * (mi / (1.0 - 0.9f64.powi(3)) / ((vi / (1.0 - 0.999f64.powi(3))).sqrt() + 1e-8) + 0.01 * p0[i]);
            assert!(rel(p[i], pi) < 1e-12 && rel(m[i], mi) < 1e-12 && rel(v[i], vi) < 1e-12);
            assert!(rel(e[i], 0.9 * e0[i] + 0.1 * pi) < 1e-12);
        }
    }
}
