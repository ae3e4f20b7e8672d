//! 2-D convolutions on GEMM (im2col, Chellapilla, Puri & Simard 2006), with both backward
//! products, as candle [`CustomOp2`]s on the CPU, in f32 and f64.
//!
//! For an input `x` (`[n, C_in, H, W]`, NCHW), weights `w` (`[C_out, C_in, k, k]`), stride `s`
//! and zero padding `p`, the output is `[n, C_out, H_o, W_o]`, `H_o = (H + 2p - k) / s + 1`:
//!
//! `y[b, o, i, j] = sum_{c, u, v} w[o, c, u, v] x[b, c, s i + u - p, s j + v - p]`
//!
//! (entries of `x` outside the image are zero). With the im2col matrix
//! `X_col[(c, u, v), (b, i, j)] = x[b, c, s i + u - p, s j + v - p]` (`K = C_in k^2` rows,
//! `n H_o W_o` columns) and `W` the weights as a `[C_out, K]` matrix, the three products are
//!
//! * forward: `Y = W X_col` (plus a bias per channel, or per image and channel, added as
//!   the product is written back to NCHW: [`conv2d_bias`]);
//! * gradient of the input: `dX_col = W^T dY`, scattered back (col2im, summed) into `dx`;
//! * gradient of the weights: `dW = dY X_col^T`, whose reduction runs over all `n H_o W_o`
//!   output pixels, with `dY` the output gradient as a `[C_out, n H_o W_o]` matrix.
//!
//! The columns are split into chunks of whole images of at least 256 output pixels (4
//! images at 8x8, 16 at 4x4); each chunk is one product on the `gemm` crate's kernels (the
//! ones candle's own matmul uses) with `Parallelism::None`, its im2col columns built in a
//! per-thread scratch buffer, and rayon hands the chunks to its threads by work stealing.
//! The weight gradient is one partial product per chunk, the partials summed in chunk
//! order. The chunks depend on the shapes only, so every output entry is computed by the
//! same sequence of floating-point operations whatever the number of threads: results are
//! bit-reproducible.
//!
//! The backward ops are themselves differentiable (each of the three maps is bilinear and
//! the adjoint of one is another), so gradients of gradients are available too.

/// Defines `fn $name<T: Bound>(args)` running `$body` compiled for AVX-512 or AVX2 + FMA when
/// the CPU has them, else for the baseline target (the element-wise passes of the
/// convolutions, of GroupNorm and of the fused MLP; the body should call an
/// `#[inline(always)]` function).
/// The results are the same bits on every path: Rust never contracts `a * b + c` into a
/// fused multiply-add, and the passes fix their summation order explicitly.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident<$t:ident: $bound:path>($($arg:ident : $ty:ty),*) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name<$t: $bound>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4<$t: $bound>($($arg: $ty),*) $body
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3<$t: $bound>($($arg: $ty),*) $body
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the features were detected.
                    return unsafe { v4::<$t>($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features were detected.
                    return unsafe { v3::<$t>($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use multiversion;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// The element types the kernels support (f32, f64).
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::AddAssign
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn storage(v: Vec<Self>) -> CpuStorage;
    fn from_f64(v: f64) -> Self;
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    /// This thread's pool of scratch buffers ([`take`], [`give`]).
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static POOL_F32: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
    static POOL_F64: std::cell::RefCell<Vec<Vec<f64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    /// A vectorisable `exp` (Cephes' `expf`: `2^n e^r`, `|r| <= ln 2 / 2`, degree-7 polynomial,
    /// relative error about `1e-7`), the argument clamped to `[-87, 88]` (results from
    /// `1.6e-38` to `1.7e38`; NaN stays NaN).
    #[inline(always)]
    fn exp(self) -> Self {
        let x = self.clamp(-87.0, 88.0);
        // Round x log2(e) to the nearest integer (exact for |x log2 e| < 2^22).
        let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
        // r = x - n ln 2 in two steps (ln 2 = 0.693359375 - 2.12194440e-4).
        let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let e = p * (r * r) + r + 1.0;
        e * f32::from_bits(((n as i32 + 127) << 23) as u32)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Self>>>> {
        &POOL_F32
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn pool() -> &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<Self>>>> {
        &POOL_F64
    }
}

/// The contiguous data of a tensor argument.
pub(crate) fn data<'a, T: Float>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let Some(v) = T::slice(s) else {
        bail!("{op}: both arguments must have the same dtype, f32 or f64")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: arguments must be contiguous"),
    }
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(
        n: usize,
        (c_in, h, w): (usize, usize, usize),
        (c_out, k): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        if stride == 0 || k == 0 || h + 2 * pad < k || w + 2 * pad < k {
            bail!("conv2d: kernel {k} (stride {stride}, padding {pad}) does not fit a {h}x{w} image")
        }
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (w + 2 * pad - k) / stride + 1;
        Ok(Geom {
            n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            ho,
            wo,
        })
    }

    /// Rows of the im2col matrix, `C_in k^2`.
    fn kk(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// For a stride-1 convolution that keeps the width (`W_o = W`), the valid outputs of
    /// kernel offset `(u, v)` (rows `ri`, columns `rj`) read a contiguous run of the image:
    /// `(output start, input start, length)` of the flattened run, which also covers the
    /// entries `j` outside `rj` of each row (those wrap around to a neighbouring row).
    fn same_run(
        &self,
        ri: &std::ops::Range<usize>,
        rj: &std::ops::Range<usize>,
        u: usize,
        v: usize,
    ) -> Option<(usize, usize, usize)> {
        if self.stride != 1 || self.wo != self.w || ri.is_empty() || rj.is_empty() {
            return None;
        }
        let d0 = ri.start * self.wo + rj.start;
        let d1 = (ri.end - 1) * self.wo + rj.end;
        // Input index of output f: f + (u - pad) w + (v - pad).
        let s0 = (ri.start + u - self.pad) * self.w + rj.start + v - self.pad;
        Some((d0, s0, d1 - d0))
    }

    /// For each kernel offset `(u, v)` (index `u k + v`), the output pixels `i W_o + j` that
    /// read outside the image (the entries a contiguous run of [`Geom::same_run`] must zero).
    fn outside(&self) -> Vec<Vec<usize>> {
        let k = self.k;
        let mut lists = Vec::with_capacity(k * k);
        for u in 0..k {
            let ri = self.valid(u, self.h, self.ho);
            for v in 0..k {
                let rj = self.valid(v, self.w, self.wo);
                let mut l = Vec::new();
                for i in 0..self.ho {
                    for j in 0..self.wo {
                        if !ri.contains(&i) || !rj.contains(&j) {
                            l.push(i * self.wo + j);
                        }
                    }
                }
                lists.push(l);
            }
        }
        lists
    }

    /// The output positions `o` with `0 <= s o + u - p < len` (`u` the kernel offset), as a
    /// range of `o`, with `len_o` outputs along that axis.
    fn valid(&self, u: usize, len: usize, len_o: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.pad);
        // s o + u >= p  <=>  o >= ceil((p - u) / s)
        let lo = if u >= p { 0 } else { (p - u).div_ceil(s) };
        // s o + u - p <= len - 1  <=>  o <= (len - 1 + p - u) / s
        let hi = if len + p > u {
            ((len - 1 + p - u) / s + 1).min(len_o)
        } else {
            0
        };
        lo..hi.max(lo)
    }
}

/// `dst := beta * lhs rhs` (`read = false`) or `dst += lhs rhs` (`read = true`), with strides
/// `(row, column)` for each `m x k`, `k x n`, `m x n` matrix, single-threaded.
///
/// # Safety
/// The pointers and strides must describe valid matrices of those shapes; `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (dst_rs, dst_cs): (usize, usize),
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Output columns (pixels) per chunk of images in the forward and input-gradient products:
/// each chunk is one GEMM with `N = n_b P` columns, the smallest whole number of images
/// with at least this many pixels (at 8x8, 4 images; at 4x4, 16).
const CHUNK_COLS: usize = 256;

/// Columns per chunk of the weight gradient's reduction: one partial product `[K, C_out]`
/// per chunk, summed in chunk order (small chunks give both cores work even at 4x4).
const WEIGHT_CHUNK_COLS: usize = 256;

/// Images per chunk for a target number of columns: depends on the shapes only, never on the
/// number of threads, so every output entry is computed by the same operations.
fn chunk_images(g: &Geom, cols: usize) -> usize {
    cols.div_ceil(g.p().max(1)).clamp(1, g.n.max(1))
}

/// A buffer of at least `len` entries from this thread's pool (entries hold stale values;
/// callers overwrite what they read). Return it with [`give`].
fn take<T: Float>(len: usize) -> Vec<T> {
    let mut v = T::pool().with(|p| {
        let mut p = p.borrow_mut();
        // The smallest pooled buffer that is large enough, else the largest.
        let pick = (0..p.len())
            .filter(|&i| p[i].len() >= len)
            .min_by_key(|&i| p[i].len())
            .or_else(|| (0..p.len()).max_by_key(|&i| p[i].len()));
        pick.map(|i| p.swap_remove(i)).unwrap_or_default()
    });
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    v
}

/// Returns a buffer from [`take`] to this thread's pool (at most 8 are kept).
fn give<T: Float>(v: Vec<T>) {
    T::pool().with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 8 {
            p.push(v);
        }
    });
}

multiversion! {
    /// The im2col columns of images `b0 .. b0 + nb` into `col` (`[K, nb P]`, row `(c, u, v)`,
    /// column `(b - b0, i, j)`); every entry is written.
    fn im2col_chunk<T: Float>(x: &[T], g: &Geom, b0: usize, nb: usize, col: &mut [T]) {
        im2col_impl(x, g, b0, nb, col)
    }
}

#[inline(always)]
fn im2col_impl<T: Float>(x: &[T], g: &Geom, b0: usize, nb: usize, col: &mut [T]) {
    let (p, k) = (g.p(), g.k);
    let cols = nb * p;
    let outside = g.outside();
    for (r, row) in col.chunks_mut(cols).enumerate().take(g.kk()) {
        let (c, u, v) = (r / (k * k), (r / k) % k, r % k);
        let (ri, rj) = (g.valid(u, g.h, g.ho), g.valid(v, g.w, g.wo));
        if ri.is_empty() || rj.is_empty() {
            row.fill(T::ZERO);
            continue;
        }
        for bl in 0..nb {
            let src = &x[((b0 + bl) * g.c_in + c) * g.h * g.w..][..g.h * g.w];
            let dst = &mut row[bl * p..][..p];
            if let Some((d0, s0, len)) = g.same_run(&ri, &rj, u, v) {
                // One contiguous copy, then zero the entries outside the image (before the
                // run, after it, and those that wrapped around from a neighbouring row).
                dst[d0..d0 + len].copy_from_slice(&src[s0..s0 + len]);
                for &f in &outside[u * k + v] {
                    dst[f] = T::ZERO;
                }
                continue;
            }
            for i in 0..g.ho {
                let dst = &mut dst[i * g.wo..][..g.wo];
                if !ri.contains(&i) {
                    dst.fill(T::ZERO);
                    continue;
                }
                let y = g.stride * i + u - g.pad;
                let src = &src[y * g.w..][..g.w];
                dst[..rj.start].fill(T::ZERO);
                dst[rj.end..].fill(T::ZERO);
                if g.stride == 1 {
                    let x0 = rj.start + v - g.pad;
                    dst[rj.clone()].copy_from_slice(&src[x0..x0 + rj.len()]);
                } else {
                    for j in rj.clone() {
                        dst[j] = src[g.stride * j + v - g.pad];
                    }
                }
            }
        }
    }
}

multiversion! {
    /// `dst[o, (b - b0, pix)] = src[b, o, pix]` for images `b0 .. b0 + nb` of an NCHW tensor
    /// with `c` channels of `p` pixels: the images side by side as one `[c, nb p]` matrix.
    fn gather_chunk<T: Float>(src: &[T], c: usize, p: usize, b0: usize, nb: usize, dst: &mut [T]) {
        gather_impl(src, c, p, b0, nb, dst)
    }
}

#[inline(always)]
fn gather_impl<T: Float>(src: &[T], c: usize, p: usize, b0: usize, nb: usize, dst: &mut [T]) {
    let cols = nb * p;
    for o in 0..c {
        for bl in 0..nb {
            dst[o * cols + bl * p..][..p].copy_from_slice(&src[((b0 + bl) * c + o) * p..][..p]);
        }
    }
}

/// A bias added in the forward product's epilogue: per output channel (`[C_out]`) or per
/// image and output channel (`[n, C_out]`, e.g. a time embedding).
#[derive(Clone, Copy)]
enum Bias<'a, T> {
    None,
    Channel(&'a [T]),
    ImageChannel(&'a [T]),
}

/// Forward: `y = W X_col (+ bias)`, one GEMM per chunk of images (`N = n_b P` columns),
/// the chunks in parallel; the result is scattered back to NCHW with the bias added.
fn forward<T: Float>(x: &[T], w: &[T], bias: Bias<T>, g: &Geom) -> Vec<T> {
    let (p, kk, co) = (g.p(), g.kk(), g.c_out);
    let total = g.n * co * p;
    let mut y: Vec<T> = Vec::with_capacity(total);
    if total == 0 {
        return y;
    }
    let nb = chunk_images(g, CHUNK_COLS);
    y.spare_capacity_mut()[..total]
        .par_chunks_mut(nb * co * p)
        .enumerate()
        .for_each(|(i, out)| {
            let (b0, nbh) = (i * nb, out.len() / (co * p));
            let cols = nbh * p;
            let mut col = take::<T>(kk * cols);
            im2col_chunk(x, g, b0, nbh, &mut col[..kk * cols]);
            let mut tmp = take::<T>(co * cols);
            // SAFETY: `w` is `[C_out, K]`, `col` holds `[K, cols]`, `tmp` holds `[C_out, cols]`,
            // distinct buffers.
            unsafe {
                matmul(
                    (co, cols, kk),
                    tmp.as_mut_ptr(),
                    (cols, 1),
                    w.as_ptr(),
                    (kk, 1),
                    col.as_ptr(),
                    (cols, 1),
                )
            }
            write_back(&tmp[..co * cols], out, bias, b0, co, p);
            give(col);
            give(tmp);
        });
    // SAFETY: the chunks cover `0..total` and every entry of each was written above.
    unsafe { y.set_len(total) };
    y
}

multiversion! {
    /// `out[b, o, pix] = tmp[o, (b - b0, pix)] + bias` for the images of one chunk (`out`
    /// holds them, NCHW).
    fn write_back<T: Float>(tmp: &[T], out: &mut [std::mem::MaybeUninit<T>], bias: Bias<T>, b0: usize, co: usize, p: usize) {
        write_back_impl(tmp, out, bias, b0, co, p)
    }
}

#[inline(always)]
fn write_back_impl<T: Float>(
    tmp: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    bias: Bias<T>,
    b0: usize,
    co: usize,
    p: usize,
) {
    let nbh = out.len() / (co * p);
    let cols = nbh * p;
    for bl in 0..nbh {
        for o in 0..co {
            let b = match bias {
                Bias::None => T::ZERO,
                Bias::Channel(v) => v[o],
                Bias::ImageChannel(v) => v[(b0 + bl) * co + o],
            };
            let src = &tmp[o * cols + bl * p..][..p];
            for (d, &s) in out[(bl * co + o) * p..][..p].iter_mut().zip(src) {
                d.write(s + b);
            }
        }
    }
}

/// Gradient of the input: `dx = col2im(W^T dY)`, one GEMM per chunk of images, the chunks
/// in parallel; each chunk's images are summed in a fixed order.
fn backward_input<T: Float>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (p, kk, co) = (g.p(), g.kk(), g.c_out);
    let chw = g.c_in * g.h * g.w;
    let mut dx = vec![T::ZERO; g.n * chw];
    if dx.is_empty() {
        return dx;
    }
    let nb = chunk_images(g, CHUNK_COLS);
    dx.par_chunks_mut(nb * chw).enumerate().for_each(|(i, dxc)| {
        let (b0, nbh) = (i * nb, dxc.len() / chw);
        let cols = nbh * p;
        let mut dyc = take::<T>(co * cols);
        gather_chunk(dy, co, p, b0, nbh, &mut dyc[..co * cols]);
        let mut dcol = take::<T>(kk * cols);
        // SAFETY: `W^T` is `[K, C_out]` (strides 1, K), `dyc` holds `[C_out, cols]`, `dcol`
        // holds `[K, cols]`, distinct buffers.
        unsafe {
            matmul(
                (kk, cols, co),
                dcol.as_mut_ptr(),
                (cols, 1),
                w.as_ptr(),
                (1, kk),
                dyc.as_ptr(),
                (cols, 1),
            )
        }
        col2im_chunk(&mut dcol[..kk * cols], g, nbh, dxc);
        give(dyc);
        give(dcol);
    });
    dx
}

multiversion! {
    /// `dx += col2im(dcol)` for the `nb` images of one chunk (`dcol` is `[K, nb P]`; the
    /// entries of `dcol` that fall outside the image are zeroed on the way).
    fn col2im_chunk<T: Float>(dcol: &mut [T], g: &Geom, nb: usize, dxc: &mut [T]) {
        col2im_impl(dcol, g, nb, dxc)
    }
}

#[inline(always)]
fn col2im_impl<T: Float>(dcol: &mut [T], g: &Geom, nbh: usize, dxc: &mut [T]) {
    let (p, kk, k) = (g.p(), g.kk(), g.k);
    let chw = g.c_in * g.h * g.w;
    let cols = nbh * p;
    // col2im: rows in a fixed order, so the sums are deterministic.
    let outside = g.outside();
    for r in 0..kk {
        let (c, u, v) = (r / (k * k), (r / k) % k, r % k);
        let (ri, rj) = (g.valid(u, g.h, g.ho), g.valid(v, g.w, g.wo));
        if ri.is_empty() || rj.is_empty() {
            continue;
        }
        for bl in 0..nbh {
            let src = &mut dcol[r * cols + bl * p..][..p];
            let dst = &mut dxc[bl * chw + c * g.h * g.w..][..g.h * g.w];
            if let Some((d0, s0, len)) = g.same_run(&ri, &rj, u, v) {
                // Zero the entries that would wrap around, then add one contiguous run.
                for &f in &outside[u * k + v] {
                    src[f] = T::ZERO;
                }
                for (o, &a) in dst[s0..s0 + len].iter_mut().zip(&src[d0..d0 + len]) {
                    *o += a;
                }
                continue;
            }
            let src = &*src;
            for i in ri.clone() {
                let y = g.stride * i + u - g.pad;
                let src = &src[i * g.wo..][..g.wo];
                let dst = &mut dst[y * g.w..][..g.w];
                if g.stride == 1 {
                    let x0 = rj.start + v - g.pad;
                    for (d, &s) in dst[x0..x0 + rj.len()].iter_mut().zip(&src[rj.clone()]) {
                        *d += s;
                    }
                } else {
                    for j in rj.clone() {
                        dst[g.stride * j + v - g.pad] += src[j];
                    }
                }
            }
        }
    }
}

/// Gradient of the weights: `dW = dY X_col^T`, one partial product per chunk of images (in
/// parallel), the partials summed in chunk order.
fn backward_weight<T: Float>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (p, kk, co) = (g.p(), g.kk(), g.c_out);
    let mut dw = vec![T::ZERO; co * kk];
    if dw.is_empty() || g.n * p == 0 {
        return dw;
    }
    let nb = chunk_images(g, WEIGHT_CHUNK_COLS);
    let chunks = g.n.div_ceil(nb);
    let mut partial = take::<T>(chunks * co * kk);
    partial[..chunks * co * kk]
        .par_chunks_mut(co * kk)
        .enumerate()
        .for_each(|(i, part)| {
            let b0 = i * nb;
            let nbh = nb.min(g.n - b0);
            let cols = nbh * p;
            let mut col = take::<T>(kk * cols);
            im2col_chunk(x, g, b0, nbh, &mut col[..kk * cols]);
            let mut dyc = take::<T>(co * cols);
            gather_chunk(dy, co, p, b0, nbh, &mut dyc[..co * cols]);
            // The partial `dW^T = X_col dY^T` (`[K, C_out]`).
            // SAFETY: `col` holds `[K, cols]`; `dyc^T` is `[cols, C_out]` (strides 1, cols);
            // `part` is `[K, C_out]`; distinct buffers.
            unsafe {
                matmul(
                    (kk, co, cols),
                    part.as_mut_ptr(),
                    (co, 1),
                    col.as_ptr(),
                    (cols, 1),
                    dyc.as_ptr(),
                    (1, cols),
                )
            }
            give(col);
            give(dyc);
        });
    let partial_ref = &partial;
    dw.par_chunks_mut(kk).enumerate().for_each(|(o, row)| {
        for c in 0..chunks {
            let part = &partial_ref[c * kk * co..][..kk * co];
            for (r, d) in row.iter_mut().enumerate() {
                *d += part[r * co + o];
            }
        }
    });
    give(partial);
    dw
}

/// Which of the three maps an op computes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `(x, w) -> y`.
    Forward,
    /// `(dy, w) -> dx`, for an input of `h x w` pixels.
    Input { h: usize, w: usize },
    /// `(x, dy) -> dw`, for a `k x k` kernel.
    Weight { k: usize },
}

/// One of the three convolution maps as a candle op.
#[derive(Clone, Copy, Debug)]
struct Conv {
    kind: Kind,
    stride: usize,
    pad: usize,
}

impl Conv {
    /// The geometry from the two arguments' shapes.
    fn geom(&self, a: &Shape, b: &Shape) -> Result<Geom> {
        let (s, p) = (self.stride, self.pad);
        match self.kind {
            Kind::Forward => {
                let (n, c_in, h, w) = a.dims4()?;
                let (c_out, c_in2, k, k2) = b.dims4()?;
                if c_in != c_in2 || k != k2 {
                    bail!("conv2d: input {a:?} and square kernel {b:?} do not match")
                }
                Geom::new(n, (c_in, h, w), (c_out, k), s, p)
            }
            Kind::Input { h, w } => {
                let (n, c_out, ho, wo) = a.dims4()?;
                let (c_out2, c_in, k, _) = b.dims4()?;
                let g = Geom::new(n, (c_in, h, w), (c_out, k), s, p)?;
                if c_out != c_out2 || (g.ho, g.wo) != (ho, wo) {
                    bail!("conv2d backward: output gradient {a:?} does not match kernel {b:?}")
                }
                Ok(g)
            }
            Kind::Weight { k } => {
                let (n, c_in, h, w) = a.dims4()?;
                let (n2, c_out, ho, wo) = b.dims4()?;
                let g = Geom::new(n, (c_in, h, w), (c_out, k), s, p)?;
                if n != n2 || (g.ho, g.wo) != (ho, wo) {
                    bail!("conv2d backward: output gradient {b:?} does not match input {a:?}")
                }
                Ok(g)
            }
        }
    }

    fn run<T: Float>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.shape(), l2.shape())?;
        let (a, b) = (data::<T>(s1, l1, self.name())?, data::<T>(s2, l2, self.name())?);
        let (v, shape): (Vec<T>, Shape) = match self.kind {
            Kind::Forward => (forward(a, b, Bias::None, &g), (g.n, g.c_out, g.ho, g.wo).into()),
            Kind::Input { .. } => (backward_input(a, b, &g), (g.n, g.c_in, g.h, g.w).into()),
            Kind::Weight { .. } => (backward_weight(a, b, &g), (g.c_out, g.c_in, g.k, g.k).into()),
        };
        Ok((T::storage(v), shape))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Forward => "gemm-conv2d",
            Kind::Input { .. } => "gemm-conv2d-backward-input",
            Kind::Weight { .. } => "gemm-conv2d-backward-weight",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>(s1, l1, s2, l2),
            _ => bail!("{}: both arguments must be f32 or both f64", self.name()),
        }
    }

    /// The adjoints: with `F(x, w)` the forward map, `B_x(dy, w)` the input gradient and
    /// `B_w(x, dy)` the weight gradient, `<u, F(x, w)> = <B_x(u, w), x> = <B_w(x, u), w>`, so
    /// each map's gradients are the other two.
    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (s, p) = (self.stride, self.pad);
        Ok(match self.kind {
            Kind::Forward => {
                // a = x, b = w, grad = dy.
                let (_, _, h, w) = a.dims4()?;
                let k = b.dim(2)?;
                (
                    Some(conv2d_backward_input(grad, b, s, p, (h, w))?),
                    Some(conv2d_backward_weight(a, grad, s, p, k)?),
                )
            }
            Kind::Input { .. } => {
                // a = dy, b = w, grad has the input's shape: dx = B_x(dy, w) is linear in dy
                // with adjoint F(., w), and in w with adjoint B_w(., dy).
                let k = b.dim(2)?;
                (
                    Some(conv2d(grad, b, s, p)?),
                    Some(conv2d_backward_weight(grad, a, s, p, k)?),
                )
            }
            Kind::Weight { .. } => {
                // a = x, b = dy, grad has the kernel's shape: dw = B_w(x, dy).
                let (_, _, h, w) = a.dims4()?;
                (
                    Some(conv2d_backward_input(b, grad, s, p, (h, w))?),
                    Some(conv2d(a, grad, s, p)?),
                )
            }
        })
    }
}

/// The forward convolution with a bias added in its epilogue, `(x, w, bias) -> y`, `bias`
/// of shape `[C_out]` or `[n, C_out]`.
#[derive(Clone, Copy, Debug)]
struct ConvBias {
    stride: usize,
    pad: usize,
}

impl ConvBias {
    fn run<T: Float>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let conv = Conv {
            kind: Kind::Forward,
            stride: self.stride,
            pad: self.pad,
        };
        let g = conv.geom(l1.shape(), l2.shape())?;
        let (x, w) = (data::<T>(s1, l1, "conv2d-bias")?, data::<T>(s2, l2, "conv2d-bias")?);
        let b = data::<T>(s3, l3, "conv2d-bias")?;
        let bias = match l3.shape().dims() {
            [c] if *c == g.c_out => Bias::Channel(b),
            [n, c] if *n == g.n && *c == g.c_out => Bias::ImageChannel(b),
            _ => bail!(
                "conv2d-bias: bias {:?} is neither [{}] nor [{}, {}]",
                l3.shape(),
                g.c_out,
                g.n,
                g.c_out
            ),
        };
        Ok((T::storage(forward(x, w, bias, &g)), (g.n, g.c_out, g.ho, g.wo).into()))
    }
}

impl candle_core::CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "gemm-conv2d-bias"
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
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                self.run::<f32>((s1, l1), (s2, l2), (s3, l3))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                self.run::<f64>((s1, l1), (s2, l2), (s3, l3))
            }
            _ => bail!("conv2d-bias: all arguments must be f32 or all f64"),
        }
    }

    /// `dx = B_x(dy, w)`, `dw = B_w(x, dy)`, and the bias gradient the sum of `dy` over the
    /// pixels (and the images, for a per-channel bias), in a fixed order.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (s, p) = (self.stride, self.pad);
        let (_, _, h, wd) = x.dims4()?;
        let k = w.dim(2)?;
        let db = if b.rank() == 1 {
            channel_sum(grad)?
        } else {
            let (n, c, ho, wo) = grad.dims4()?;
            grad.contiguous()?.reshape((n, c, ho * wo))?.sum(2)?
        };
        Ok((
            Some(conv2d_backward_input(grad, w, s, p, (h, wd))?),
            Some(conv2d_backward_weight(x, grad, s, p, k)?),
            Some(db),
        ))
    }
}

/// [`conv2d`] plus a bias, `y[b, o, i, j] = (x * w)[b, o, i, j] + bias[o]` for `bias` of shape
/// `[C_out]`, or `+ bias[b, o]` for `bias` of shape `[n, C_out]` (a per-image shift such as a
/// projected time embedding), added while the product is written back (one pass fewer than
/// a separate addition). Differentiable in all three arguments.
pub fn conv2d_bias(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let y = x.conv2d(w, padding, stride, 1, 1)?;
        let (n, c, _, _) = y.dims4()?;
        let b = if bias.rank() == 1 {
            bias.reshape((1, c, 1, 1))?
        } else {
            bias.reshape((n, c, 1, 1))?
        };
        return y.broadcast_add(&b);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, ConvBias { stride, pad: padding })
}

/// Nearest-neighbour upsampling x2 of `[n, C, H, W]` (`Up`), and its adjoint, the sum of
/// each 2x2 block (`Down`).
#[derive(Clone, Copy, Debug)]
enum Resample {
    Up,
    Down,
}

impl Resample {
    fn run<T: Float>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data::<T>(s, l, "upsample")?;
        let (n, c, h, w) = l.shape().dims4()?;
        match self {
            Resample::Up => {
                let mut y: Vec<T> = Vec::with_capacity(4 * x.len());
                if !x.is_empty() {
                    y.spare_capacity_mut()[..4 * x.len()]
                        .par_chunks_mut(4 * h * w)
                        .zip(x.par_chunks(h * w))
                        .for_each(|(out, src)| {
                            for i in 0..2 * h {
                                let row = &src[(i / 2) * w..][..w];
                                for (j, o) in out[i * 2 * w..][..2 * w].iter_mut().enumerate() {
                                    o.write(row[j / 2]);
                                }
                            }
                        });
                }
                // SAFETY: every entry of `0..4 len` was written above.
                unsafe { y.set_len(4 * x.len()) };
                Ok((T::storage(y), (n, c, 2 * h, 2 * w).into()))
            }
            Resample::Down => {
                if !h.is_multiple_of(2) || !w.is_multiple_of(2) {
                    bail!("upsample backward: odd size {h}x{w}")
                }
                let (ho, wo) = (h / 2, w / 2);
                let mut y = vec![T::ZERO; x.len() / 4];
                if !y.is_empty() {
                    y.par_chunks_mut(ho * wo)
                        .zip(x.par_chunks(h * w))
                        .for_each(|(out, src)| {
                            for i in 0..ho {
                                for j in 0..wo {
                                    let a = &src[2 * i * w + 2 * j..];
                                    let b = &src[(2 * i + 1) * w + 2 * j..];
                                    out[i * wo + j] = (a[0] + a[1]) + (b[0] + b[1]);
                                }
                            }
                        });
                }
                Ok((T::storage(y), (n, c, ho, wo).into()))
            }
        }
    }
}

impl candle_core::CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        match self {
            Resample::Up => "upsample-nearest-2x",
            Resample::Down => "upsample-nearest-2x-backward",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            _ => bail!("upsample: f32 or f64 only"),
        }
    }

    /// The two maps are each other's adjoints.
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let other = match self {
            Resample::Up => Resample::Down,
            Resample::Down => Resample::Up,
        };
        Ok(Some(grad.contiguous()?.apply_op1(other)?))
    }
}

/// Nearest-neighbour upsampling x2, `[n, C, H, W] -> [n, C, 2H, 2W]`,
/// `y[b, c, i, j] = x[b, c, i / 2, j / 2]`; its gradient sums each 2x2 block (candle's own
/// `upsample_nearest2d` backward overwrites rather than accumulates, and a broadcast's
/// backward is a slow strided reduction). Differentiable to any order.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let (n, c, h, w) = x.dims4()?;
        return x
            .reshape((n, c, h, 1, w, 1))?
            .broadcast_as((n, c, h, 2, w, 2))?
            .reshape((n, c, 2 * h, 2 * w));
    }
    x.contiguous()?.apply_op1(Resample::Up)
}

/// `y[b, o, ...] + bias[o]` for `y` of shape `[n, C, ...]` and `bias` of shape `[C]`.
#[derive(Clone, Copy, Debug)]
struct AddBias;

impl AddBias {
    fn run<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, b) = (data::<T>(s1, l1, "add-bias")?, data::<T>(s2, l2, "add-bias")?);
        let c = b.len();
        let dims = l1.shape().dims();
        if dims.len() < 2 || dims[1] != c || l2.shape().rank() != 1 {
            bail!("add-bias: {:?} and bias {:?} do not match", l1.shape(), l2.shape())
        }
        let inner: usize = dims[2..].iter().product();
        let mut out = y.to_vec();
        if inner > 0 {
            out.par_chunks_mut(c * inner).for_each(|img| {
                for (row, &bo) in img.chunks_mut(inner).zip(b) {
                    row.iter_mut().for_each(|v| *v += bo);
                }
            });
        }
        Ok((T::storage(out), l1.shape().clone()))
    }
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-channel-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Self::run::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => Self::run::<f64>(s1, l1, s2, l2),
            _ => bail!("add-bias: both arguments must be f32 or both f64"),
        }
    }

    fn bwd(&self, _y: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(channel_sum(grad)?)))
    }
}

/// `sum_{b, ...} dy[b, o, ...]`, in a fixed order (images, then pixels).
#[derive(Clone, Copy, Debug)]
struct ChannelSum;

impl ChannelSum {
    fn run<T: Float>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = data::<T>(s, l, "channel-sum")?;
        let dims = l.shape().dims();
        if dims.len() < 2 {
            bail!("channel-sum: need [n, C, ...], got {:?}", l.shape())
        }
        let (n, c) = (dims[0], dims[1]);
        let inner: usize = dims[2..].iter().product();
        let mut out = vec![T::ZERO; c];
        out.par_iter_mut().enumerate().for_each(|(o, acc)| {
            for b in 0..n {
                for &v in &dy[(b * c + o) * inner..][..inner] {
                    *acc += v;
                }
            }
        });
        Ok((T::storage(out), c.into()))
    }
}

impl candle_core::CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => Self::run::<f32>(s, l),
            CpuStorage::F64(_) => Self::run::<f64>(s, l),
            _ => bail!("channel-sum: f32 or f64 only"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut shape = vec![1; arg.rank()];
        shape[1] = arg.dim(1)?;
        Ok(Some(grad.reshape(shape)?.broadcast_as(arg.shape())?.contiguous()?))
    }
}

/// `y + bias` per channel: `y` is `[n, C, ...]`, `bias` is `[C]`; the gradient of the bias is
/// the per-channel sum of the output gradient, in a fixed order (candle's own reduction over
/// the batch and pixel axes of a broadcast is slow).
pub fn add_channel_bias(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !y.device().is_cpu() {
        // Off the host: candle's broadcast (its backward is the same per-channel sum).
        let mut shape = vec![1; y.rank()];
        shape[1] = bias.elem_count();
        return y.broadcast_add(&bias.reshape(shape)?);
    }
    y.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

/// `sum_{b, ...} dy[b, o, ...]` for `dy` of shape `[n, C, ...]`: `[C]`.
pub fn channel_sum(dy: &Tensor) -> Result<Tensor> {
    dy.contiguous()?.apply_op1(ChannelSum)
}

/// The convolution `y = x * w` (cross-correlation, as candle's and PyTorch's `conv2d`) of
/// `x` (`[n, C_in, H, W]`) with a square kernel `w` (`[C_out, C_in, k, k]`), stride `stride`
/// and zero padding `padding` on every side; `[n, C_out, H_o, W_o]` with
/// `H_o = (H + 2 padding - k) / stride + 1`. Differentiable (see the module documentation).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // Off the host (a CUDA device): candle's own convolution and its backward.
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let op = Conv {
        kind: Kind::Forward,
        stride,
        pad: padding,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// The gradient `dx = col2im(W^T dY)` of `<dy, conv2d(x, w)>` with respect to `x`, for an
/// input of `h x w` pixels (`hw`): the transposed convolution of `dy` (`[n, C_out, H_o, W_o]`).
pub fn conv2d_backward_input(
    dy: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    hw: (usize, usize),
) -> Result<Tensor> {
    let op = Conv {
        kind: Kind::Input { h: hw.0, w: hw.1 },
        stride,
        pad: padding,
    };
    dy.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// The gradient `dW = dY X_col^T` of `<dy, conv2d(x, w)>` with respect to a `k x k` kernel
/// `w`: `[C_out, C_in, k, k]`.
pub fn conv2d_backward_weight(x: &Tensor, dy: &Tensor, stride: usize, padding: usize, k: usize) -> Result<Tensor> {
    let op = Conv {
        kind: Kind::Weight { k },
        stride,
        pad: padding,
    };
    x.contiguous()?.apply_op2(&dy.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::max_rel;
    use candle_core::{DType, Device, Var};

    fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        crate::nn::test_util::random(shape, seed, 1.0, 0.0)
            .to_dtype(dtype)
            .unwrap()
    }

    /// The gradient of `sum(conv2d(x, w) r)` (candle's forward) in `v` (`x` or `w`), entry by
    /// entry: `(L(v + e_i) - L(v - e_i)) / 2`, exact for a linear function up to rounding.
    fn linear_gradient(v: &Var, x: &Var, w: &Var, r: &Tensor, stride: usize, pad: usize) -> Tensor {
        let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let eval = |i: usize, d: f64| -> f64 {
            let mut p = base.clone();
            p[i] += d;
            let p = Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap();
            let (xx, ww) = if std::ptr::eq(v, x) {
                (&p, w.as_tensor())
            } else {
                (x.as_tensor(), &p)
            };
            let y = xx.conv2d(ww, pad, stride, 1, 1).unwrap();
            (y * r).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };
        let g: Vec<f64> = (0..base.len()).map(|i| (eval(i, 1.0) - eval(i, -1.0)) / 2.0).collect();
        Tensor::from_vec(g, v.shape(), &Device::Cpu).unwrap()
    }

    /// Forward and both gradients against candle's `conv2d`, over strides, paddings, kernel
    /// sizes, channel counts, batch sizes (including 1) and odd image sizes.
    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        let (mut cases, mut fallbacks) = (0, 0);
        for (seed, &(n, c_in, c_out, h, w)) in [
            (1, 1, 1, 5, 5),
            (3, 3, 4, 8, 8),
            (2, 8, 5, 7, 6),
            (1, 16, 8, 4, 4),
            (4, 2, 32, 6, 9),
            // Several chunks of images (8x8: 4 images per chunk, the last one short; 4x4: 16).
            (9, 3, 5, 8, 8),
            (70, 2, 3, 4, 4),
        ]
        .iter()
        .enumerate()
        {
            for k in [1, 3] {
                for stride in [1, 2] {
                    for pad in [0, 1] {
                        if h + 2 * pad < k || w + 2 * pad < k {
                            continue;
                        }
                        let s = 10 * seed as u64 + (k + 2 * stride + 4 * pad) as u64;
                        let x = Var::from_tensor(&random(&[n, c_in, h, w], s, DType::F64)).unwrap();
                        let wt = Var::from_tensor(&random(&[c_out, c_in, k, k], s + 1, DType::F64)).unwrap();
                        let ours = conv2d(x.as_tensor(), wt.as_tensor(), stride, pad).unwrap();
                        let theirs = x.as_tensor().conv2d(wt.as_tensor(), pad, stride, 1, 1).unwrap();
                        let what = format!("n {n} c {c_in}->{c_out} {h}x{w} k {k} stride {stride} pad {pad}");
                        assert!(max_rel(&ours, &theirs) < 1e-10, "forward, {what}");
                        let r = random(theirs.dims(), s + 2, DType::F64);
                        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                        // candle's own backward fails when the two axes need different output
                        // paddings (odd / even sides at stride 2); there, the reference is the
                        // central difference of the (linear) objective with candle's forward,
                        // exact up to rounding.
                        let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().ok();
                        for (v, name) in [(&x, "input"), (&wt, "weight")] {
                            let a = g1.get(v.as_tensor()).unwrap();
                            let b = match &g2 {
                                Some(g2) => g2.get(v.as_tensor()).unwrap().clone(),
                                None => {
                                    fallbacks += 1;
                                    linear_gradient(v, &x, &wt, &r, stride, pad)
                                }
                            };
                            assert!(max_rel(a, &b) < 1e-10, "{name} gradient, {what}: {}", max_rel(a, &b));
                        }
                        // f32 agrees to single precision.
                        let x32 = x.as_tensor().to_dtype(DType::F32).unwrap();
                        let w32 = wt.as_tensor().to_dtype(DType::F32).unwrap();
                        let y32 = conv2d(&x32, &w32, stride, pad).unwrap();
                        assert!(
                            max_rel(&y32, &x32.conv2d(&w32, pad, stride, 1, 1).unwrap()) < 1e-5,
                            "f32, {what}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert!(
            cases >= 52 && fallbacks < cases,
            "{cases} cases, {fallbacks} by differences"
        );
    }

    /// The backward ops' own gradients (second derivatives) against the adjoint identities,
    /// `<u, B_x(dy, w)> = <F(u, w), dy>` and `<U, B_w(x, dy)> = <F(x, U), dy>`, differentiated.
    #[test]
    fn backward_ops_are_differentiable() {
        let (stride, pad, k) = (2, 1, 3);
        let x = Var::from_tensor(&random(&[2, 3, 7, 6], 1, DType::F64)).unwrap();
        let w = Var::from_tensor(&random(&[4, 3, k, k], 2, DType::F64)).unwrap();
        let dy = Var::from_tensor(&random(&[2, 4, 4, 3], 3, DType::F64)).unwrap();
        let u = random(&[2, 3, 7, 6], 4, DType::F64);
        let uw = random(&[4, 3, k, k], 5, DType::F64);
        let inner = |a: &Tensor, b: &Tensor| (a * b).unwrap().sum_all().unwrap();
        // <u, B_x(dy, w)> versus <F(u, w), dy>, gradients in dy and w.
        let l1 = inner(
            &u,
            &conv2d_backward_input(dy.as_tensor(), w.as_tensor(), stride, pad, (7, 6)).unwrap(),
        );
        let l2 = inner(&conv2d(&u, w.as_tensor(), stride, pad).unwrap(), dy.as_tensor());
        // <U, B_w(x, dy)> versus <F(x, U), dy>, gradients in x and dy.
        let l3 = inner(
            &uw,
            &conv2d_backward_weight(x.as_tensor(), dy.as_tensor(), stride, pad, k).unwrap(),
        );
        let l4 = inner(&conv2d(x.as_tensor(), &uw, stride, pad).unwrap(), dy.as_tensor());
        for (a, b, vars) in [(l1, l2, [&dy, &w]), (l3, l4, [&x, &dy])] {
            let (av, bv) = (a.to_scalar::<f64>().unwrap(), b.to_scalar::<f64>().unwrap());
            assert!((av - bv).abs() < 1e-10 * bv.abs().max(1.0), "{av} vs {bv}");
            let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
            for v in vars {
                let e = max_rel(ga.get(v.as_tensor()).unwrap(), gb.get(v.as_tensor()).unwrap());
                assert!(e < 1e-10, "{e}");
            }
        }
    }

    /// The same inputs give bit-identical results on 1, 2 and 3 threads (several chunks of
    /// images in every product: 70 images of 8x8 are 18 chunks of 4).
    #[test]
    fn independent_of_the_thread_count() {
        let x = Var::from_tensor(&random(&[70, 16, 8, 8], 7, DType::F32)).unwrap();
        let w = Var::from_tensor(&random(&[24, 16, 3, 3], 8, DType::F32)).unwrap();
        let b = Var::from_tensor(&random(&[70, 24], 9, DType::F32)).unwrap();
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = conv2d_bias(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1, 1).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                [
                    y,
                    g.get(x.as_tensor()).unwrap().clone(),
                    g.get(w.as_tensor()).unwrap().clone(),
                    g.get(b.as_tensor()).unwrap().clone(),
                ]
                .iter()
                .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
                .collect()
            })
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }

    /// The fused bias (per channel, or per image and channel) against the convolution plus a
    /// broadcast addition, values and the gradients of all three arguments, over several
    /// chunks of images.
    #[test]
    fn conv_with_bias_matches_conv_plus_broadcast() {
        for (n, per_image) in [(9, false), (9, true), (1, true)] {
            let x = Var::from_tensor(&random(&[n, 3, 8, 8], 1, DType::F64)).unwrap();
            let w = Var::from_tensor(&random(&[5, 3, 3, 3], 2, DType::F64)).unwrap();
            let shape: &[usize] = if per_image { &[n, 5] } else { &[5] };
            let b = Var::from_tensor(&random(shape, 3, DType::F64)).unwrap();
            let r = random(&[n, 5, 8, 8], 4, DType::F64);
            let ours = conv2d_bias(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1, 1).unwrap();
            let bb = if per_image {
                b.as_tensor().reshape((n, 5, 1, 1)).unwrap()
            } else {
                b.as_tensor().reshape((1, 5, 1, 1)).unwrap()
            };
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bb)
                .unwrap();
            assert!(max_rel(&ours, &theirs) < 1e-12);
            let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w, &b] {
                let e = max_rel(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                assert!(e < 1e-10, "n {n}, per image {per_image}: {e}");
            }
        }
        let x = random(&[2, 3, 8, 8], 1, DType::F64);
        let w = random(&[5, 3, 3, 3], 2, DType::F64);
        for bad in [&[4][..], &[3, 5], &[2, 4]] {
            assert!(conv2d_bias(&x, &w, &random(bad, 3, DType::F64), 1, 1).is_err());
        }
    }

    #[test]
    fn channel_bias_and_its_gradient() {
        let y = Var::from_tensor(&random(&[3, 4, 5, 2], 1, DType::F64)).unwrap();
        let b = Var::from_tensor(&random(&[4], 2, DType::F64)).unwrap();
        let r = random(&[3, 4, 5, 2], 3, DType::F64);
        let ours = add_channel_bias(y.as_tensor(), b.as_tensor()).unwrap();
        let theirs = y
            .as_tensor()
            .broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        assert!(max_rel(&ours, &theirs) < 1e-15);
        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&y, &b] {
            assert!(max_rel(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap()) < 1e-12);
        }
    }

    /// Upsampling against the broadcast composition, its gradient, and the gradient of its
    /// gradient (the adjoint pair).
    #[test]
    fn upsample_and_its_adjoint() {
        let x = Var::from_tensor(&random(&[3, 2, 4, 3], 1, DType::F64)).unwrap();
        let r = random(&[3, 2, 8, 6], 2, DType::F64);
        let ours = upsample2x(x.as_tensor()).unwrap();
        let theirs = x
            .as_tensor()
            .reshape((3, 2, 4, 1, 3, 1))
            .unwrap()
            .broadcast_as((3, 2, 4, 2, 3, 2))
            .unwrap()
            .reshape((3, 2, 8, 6))
            .unwrap();
        assert_eq!(max_rel(&ours, &theirs), 0.0);
        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        assert!(max_rel(a, &b.clone()) < 1e-14);
        // <u, D(v)> = <U(u), v>, differentiated in v.
        let u = random(&[3, 2, 4, 3], 3, DType::F64);
        let v = Var::from_tensor(&r).unwrap();
        let down = v.as_tensor().contiguous().unwrap().apply_op1(Resample::Down).unwrap();
        let l = (down * &u).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap();
        assert!(max_rel(g.get(v.as_tensor()).unwrap(), &upsample2x(&u).unwrap()) < 1e-15);
    }

    /// The f32 `exp` against f64's on a fine grid of `[-87, 88]`, and its clamping.
    #[test]
    fn fast_f32_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=175_000 {
            let x = -87.0 + i as f64 * 1e-3;
            let x32 = x as f32;
            let e = (<f32 as Float>::exp(x32) as f64 - (x32 as f64).exp()).abs() / (x32 as f64).exp();
            worst = worst.max(e);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(<f32 as Float>::exp(f32::NAN).is_nan());
        assert_eq!(<f32 as Float>::exp(1000.0), <f32 as Float>::exp(88.0));
        assert!(<f32 as Float>::exp(88.0).is_finite() && <f32 as Float>::exp(-1000.0) > 0.0);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = random(&[1, 2, 4, 4], 1, DType::F64);
        assert!(conv2d(&x, &random(&[3, 3, 3, 3], 2, DType::F64), 1, 1).is_err());
        assert!(conv2d(&x, &random(&[3, 2, 5, 5], 2, DType::F64), 1, 0).is_err());
        assert!(conv2d(&x, &random(&[3, 2, 3, 3], 2, DType::F32), 1, 1).is_err());
        assert!(conv2d(&x, &random(&[3, 2, 3, 3], 2, DType::F64), 0, 1).is_err());
    }
}
