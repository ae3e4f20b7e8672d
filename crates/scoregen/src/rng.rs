//! Seeded, bit-reproducible random streams.
//!
//! Every random draw of the library comes from a [`Noise`] source: a seed plus a *stream*
//! number that names what the draw is for (initial state, step `k`, corrector `j` of step
//! `k`, ...). Inside a stream, particle `i` always reads the same ChaCha8 words, whatever
//! the batch size or the number of threads, so results are bit-reproducible for a seed and
//! the first `n` particles of a run with `N > n` particles equal a run with `n` particles.
//! Normals are drawn by Box–Muller from exactly two 64-bit words per pair: with the
//! platform's libm ([`Noise::normals`]) or with portable polynomial kernels
//! ([`Noise::normals_fast`], the samplers' step noise: the same words, faster, and the same
//! bits on every platform).

use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::Result;

/// What a stream is used for; combined with an index into a stream number by [`stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The initial draw from the prior.
    Init = 1,
    /// The noise of reverse step `k`.
    Step = 2,
    /// The noise of a corrector (Langevin) step.
    Corrector = 3,
    /// Exact samples from an analytic law.
    Exact = 4,
    /// Random directions, permutations and other draws of the metrics.
    Metric = 5,
    /// Resampling and other uniforms of particle methods.
    Resample = 6,
    /// Anything else, for callers outside the library.
    User = 7,
    /// Training: parameter initialisation, batches, times and noise of each step.
    Train = 8,
}

/// The stream number of `purpose` at `index` (e.g. the step number).
pub fn stream(purpose: Purpose, index: u64) -> u64 {
    ((purpose as u64) << 48) ^ index
}

const CHUNK: usize = 512;

/// A seeded source of independent random streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Noise {
    seed: u64,
}

fn unit_open(w: u64) -> f64 {
    // (0, 1]: never zero, so log is finite.
    ((w >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
}

impl Noise {
    /// A source for `seed`.
    pub fn new(seed: u64) -> Self {
        Noise { seed }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn rng_at(&self, stream: u64, word: u128) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng.set_word_pos(word);
        rng
    }

    /// `n * d` standard normals in particle-major order (`[n, d]` row-major). Particle `i`'s
    /// values depend only on `(seed, stream, i, d)`.
    pub fn normals(&self, stream: u64, n: usize, d: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * d];
        if d == 0 {
            return out;
        }
        out.par_chunks_mut(CHUNK * d)
            .enumerate()
            .for_each(|(c, chunk)| self.normals_rows(stream, c * CHUNK, d, chunk));
        out
    }

    /// Rows `first, first + 1, ...` of [`Noise::normals`] (as many as `out.len() / d`),
    /// written into `out`: the same values, bit for bit, so that a caller can draw the noise
    /// of a block of particles where it uses it. Runs on the calling thread.
    pub fn normals_rows(&self, stream: u64, first: usize, d: usize, out: &mut [f64]) {
        if d == 0 {
            return;
        }
        let pairs = d.div_ceil(2);
        // 2 u64 = 4 u32 words per pair.
        let mut rng = self.rng_at(stream, first as u128 * pairs as u128 * 4);
        for row in out.chunks_exact_mut(d) {
            for p in 0..pairs {
                let u1 = unit_open(rng.next_u64());
                let u2 = unit_open(rng.next_u64());
                let r = (-2.0 * u1.ln()).sqrt();
                let th = std::f64::consts::TAU * u2;
                row[2 * p] = r * th.cos();
                if 2 * p + 1 < d {
                    row[2 * p + 1] = r * th.sin();
                }
            }
        }
    }

    /// `n * d` standard normals from the same ChaCha8 words as [`Noise::normals`], through
    /// the same Box–Muller transform, but with `log`, `sin` and `cos` evaluated by portable
    /// polynomial kernels ([`box_muller`]) instead of the platform's libm: about ten times
    /// faster, the same bits on every platform, and within a few units in the last place
    /// of [`Noise::normals`]. The samplers draw their step noise from it.
    pub fn normals_fast(&self, stream: u64, n: usize, d: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * d];
        if d == 0 {
            return out;
        }
        out.par_chunks_mut(CHUNK * d)
            .enumerate()
            .for_each(|(c, chunk)| self.normals_fast_rows(stream, c * CHUNK, d, chunk));
        out
    }

    /// Rows `first, first + 1, ...` of [`Noise::normals_fast`] into `out` (as many as
    /// `out.len() / d`), on the calling thread; the same values bit for bit.
    pub fn normals_fast_rows(&self, stream: u64, first: usize, d: usize, out: &mut [f64]) {
        if d == 0 {
            return;
        }
        let pairs = d.div_ceil(2);
        let rows = out.len() / d;
        // The rows' words are consecutive in the stream: draw them all, transform them all
        // (four pairs at a time), then drop each row's unused last value when d is odd.
        let mut rng = self.rng_at(stream, first as u128 * pairs as u128 * 4);
        let mut words = vec![0u64; (rows * 2 * pairs).div_ceil(8) * 8];
        for w in words[..rows * 2 * pairs].iter_mut() {
            *w = rng.next_u64();
        }
        if d.is_multiple_of(2) {
            let mut tmp = vec![0.0; words.len()];
            box_muller_words(&words, &mut tmp);
            out[..rows * d].copy_from_slice(&tmp[..rows * d]);
        } else {
            let mut tmp = vec![0.0; words.len()];
            box_muller_words(&words, &mut tmp);
            for (row, t) in out.chunks_exact_mut(d).zip(tmp.chunks_exact(2 * pairs)) {
                row.copy_from_slice(&t[..d]);
            }
        }
    }

    /// An `[n, d]` tensor of [`Noise::normals_fast`].
    pub fn normal_tensor_fast(&self, stream: u64, n: usize, d: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = self.normals_fast(stream, n, d);
        Ok(Tensor::from_vec(v, (n, d), device)?.to_dtype(dtype)?)
    }

    /// `n` uniforms on (0, 1], one 64-bit word each; value `i` depends only on
    /// `(seed, stream, i)`.
    pub fn uniforms(&self, stream: u64, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let mut rng = self.rng_at(stream, (c * CHUNK) as u128 * 2);
            for v in chunk.iter_mut() {
                *v = unit_open(rng.next_u64());
            }
        });
        out
    }

    /// An `[n, d]` tensor of standard normals (see [`Noise::normals`]).
    pub fn normal_tensor(&self, stream: u64, n: usize, d: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = self.normals(stream, n, d);
        Ok(Tensor::from_vec(v, (n, d), device)?.to_dtype(dtype)?)
    }
}

/// Normals from words (two per pair; `words.len()` a multiple of 8, `out` as long):
/// dispatches to an AVX2 build of the same arithmetic where the CPU has it (plain IEEE
/// operations, never fused, so the bits are the same either way).
fn box_muller_words(words: &[u64], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above).
            unsafe { box_muller_words_avx2(words, out) };
            return;
        }
    }
    box_muller_words_generic(words, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn box_muller_words_avx2(words: &[u64], out: &mut [f64]) {
    box_muller_words_generic(words, out);
}

#[inline(always)]
fn box_muller_words_generic(words: &[u64], out: &mut [f64]) {
    for (w, o) in words.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        box_muller4(w.try_into().unwrap(), o.try_into().unwrap());
    }
}

/// [`box_muller`] on four pairs of words (interleaved `u1, u2, u1, u2, ...`), branch-free.
#[inline(always)]
fn box_muller4(w: &[u64; 8], out: &mut [f64; 8]) {
    let mut r = [0.0f64; 4];
    let mut x = [0.0f64; 4];
    let mut q = [0u64; 4];
    for j in 0..4 {
        r[j] = (-2.0 * ln_unit(unit_open(w[2 * j]))).sqrt();
        // u2 = n2 / 2^53; 4 u2 = n2 / 2^51 = q + y, q = round(n2 / 2^51), exact in integers.
        let n2 = (w[2 * j + 1] >> 11) + 1;
        q[j] = (n2 + (1 << 50)) >> 51;
        // (y + 1) 2^51 = n2 - (q - 1) 2^51 lies in [2^50, 3 2^50]: an exact small integer.
        let yi = n2 + (1 << 51) - (q[j] << 51);
        let y = int_to_f64(yi) - (1u64 << 51) as f64;
        x[j] = (y * (1.0 / (1u64 << 51) as f64)) * std::f64::consts::FRAC_PI_2;
    }
    for j in 0..4 {
        let (s, c) = (kernel_sin(x[j]), kernel_cos(x[j]));
        // Rotate by q quarter turns: odd q swaps sin and cos; sin < 0 for q = 2, 3 and
        // cos < 0 for q = 1, 2 (mod 4).
        let swap = q[j] & 1 == 1;
        let (sn, cs) = if swap { (c, s) } else { (s, c) };
        let sin = f64::from_bits(sn.to_bits() ^ ((q[j] & 2) << 62));
        let cos = f64::from_bits(cs.to_bits() ^ (((q[j] + 1) & 2) << 62));
        out[2 * j] = r[j] * cos;
        out[2 * j + 1] = r[j] * sin;
    }
}

/// `v as f64` for `v < 2^52`, exactly, by the exponent trick (vectorises without AVX-512).
#[inline(always)]
fn int_to_f64(v: u64) -> f64 {
    f64::from_bits(0x4330_0000_0000_0000 | v) - 4_503_599_627_370_496.0
}

// fdlibm notice:
//
// The polynomial coefficients of the `ln`, `sin`, `cos` and `exp` kernels below come from
// fdlibm, whose notice is kept as it asks: "Copyright (C) 1993 by Sun Microsystems, Inc.
// All rights reserved. Developed at SunPro, a Sun Microsystems, Inc. business. Permission
// to use, copy, modify, and distribute this software is freely granted, provided that
// this notice is preserved."

/// Box–Muller from two 64-bit words: with `u_j = (floor(w_j / 2^11) + 1) / 2^53` in `(0, 1]`,
/// returns `sqrt(-2 ln u_1) (cos 2 pi u_2, sin 2 pi u_2)`. The angle is reduced exactly in
/// integers (`4 u_2 = q + y`, `|y| <= 1/2`), and `ln`, `sin`, `cos` on the reduced ranges
/// are fdlibm's polynomial kernels (`e_log.c`, `k_sin.c`, `k_cos.c`, Sun Microsystems 1993),
/// branch-free so that pairs vectorise.
pub fn box_muller(w1: u64, w2: u64) -> (f64, f64) {
    let mut out = [0.0; 8];
    box_muller4(&[w1, w2, w1, w2, w1, w2, w1, w2], &mut out);
    (out[0], out[1])
}

/// `ln u` for `u` in `[2^-53, 1]` (normal numbers): `u = 2^k (1 + f)` with
/// `sqrt(2)/2 <= 1 + f < sqrt(2)`, `s = f / (2 + f)`, `ln(1 + f) = f - s (f - R(s^2))`
/// with fdlibm's minimax `R` (error below 1 ulp).
#[inline(always)]
fn ln_unit(u: f64) -> f64 {
    const LN2_HI: f64 = 0.6931471803691238;
    const LN2_LO: f64 = 1.9082149292705877e-10;
    const LG1: f64 = 0.6666666666666735;
    const LG2: f64 = 0.3999999999940942;
    const LG3: f64 = 0.2857142874366239;
    const LG4: f64 = 0.22222198432149784;
    const LG5: f64 = 0.1818357216161805;
    const LG6: f64 = 0.15313837699209373;
    const LG7: f64 = 0.14798198605116586;
    let bits = u.to_bits();
    let hx = (bits >> 32) as i64;
    let mut k = (hx >> 20) - 1023;
    let hm = hx & 0x000f_ffff;
    // Normalise the mantissa into [sqrt(2)/2, sqrt(2)): i = 0x100000 when it is above sqrt(2).
    let i = (hm + 0x95f64) & 0x10_0000;
    let m_bits = (((hm | (i ^ 0x3ff0_0000)) as u64) << 32) | (bits & 0xffff_ffff);
    k += i >> 20;
    let f = f64::from_bits(m_bits) - 1.0;
    let s = f / (2.0 + f);
    let dk = int_to_f64((k + 1024) as u64) - 1024.0;
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let rr = t2 + t1;
    dk * LN2_HI - ((s * (f - rr) - dk * LN2_LO) - f)
}

/// `sin x` for `|x| <= pi/4`: fdlibm's `__kernel_sin` (error below 1 ulp).
#[inline(always)]
fn kernel_sin(x: f64) -> f64 {
    const S1: f64 = -0.16666666666666632;
    const S2: f64 = 0.00833333333332249;
    const S3: f64 = -0.0001984126982985795;
    const S4: f64 = 2.7557313707070068e-06;
    const S5: f64 = -2.5050760253406863e-08;
    const S6: f64 = 1.58969099521155e-10;
    let z = x * x;
    let v = z * x;
    let r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    x + v * (S1 + z * r)
}

/// `cos x` for `|x| <= pi/4`: fdlibm's `__kernel_cos` polynomial, `1 - (z/2 - z r)`,
/// `z = x^2` (error about 1 ulp).
#[inline(always)]
fn kernel_cos(x: f64) -> f64 {
    const C1: f64 = 0.0416666666666666;
    const C2: f64 = -0.001388888888887411;
    const C3: f64 = 2.480158728947673e-05;
    const C4: f64 = -2.7557314351390663e-07;
    const C5: f64 = 2.087572321298175e-09;
    const C6: f64 = -1.1359647557788195e-11;
    let z = x * x;
    let r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    1.0 - (0.5 * z - z * r)
}

/// The standard normal quantile `Phi^{-1}(u)` for `u` in `(0, 1)` (values outside are clamped
/// to `[2^-1074, 1 - 2^-53]`): Acklam's rational approximation, relative error below
/// `1.2e-9` over the whole range.
pub fn normal_quantile(u: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let u = u.clamp(f64::MIN_POSITIVE * f64::EPSILON, 1.0 - f64::EPSILON / 2.0);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if u < 0.02425 {
        tail((-2.0 * u.ln()).sqrt())
    } else if u > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - u).ln()).sqrt())
    } else {
        let q = u - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_property_and_reproducibility() {
        let noise = Noise::new(7);
        let a = noise.normals(stream(Purpose::Step, 3), 2000, 5);
        let b = noise.normals(stream(Purpose::Step, 3), 700, 5);
        assert_eq!(&a[..700 * 5], &b[..]);
        let c = Noise::new(8).normals(stream(Purpose::Step, 3), 700, 5);
        assert_ne!(b, c);
        let e = noise.normals(stream(Purpose::Step, 4), 700, 5);
        assert_ne!(b, e);
    }

    /// The portable kernels against the platform's libm: `ln` within 2 ulp, and each normal
    /// within `8 eps max(r, 1)` of libm's Box–Muller (whose angle `TAU * u2` is itself
    /// rounded, so a relative comparison near the zeros of sin and cos would be meaningless),
    /// on 200,000 pairs and on edge words (`u = 2^-53`, `u = 1`, quarter turns).
    #[test]
    fn fast_normals_match_libm_box_muller() {
        let mut rng = Noise::new(3).rng_at(stream(Purpose::User, 9), 0);
        let mut words: Vec<u64> = (0..400_000).map(|_| rng.next_u64()).collect();
        for e in [
            0u64,
            u64::MAX,
            1 << 11,
            (1u64 << 63) - 1,
            1 << 63,
            1 << 62,
            3 << 62,
            1 << 61,
        ] {
            words.push(e);
            words.push(e.wrapping_add(1 << 11));
            words.push(e.wrapping_sub(1 << 11));
            words.push(e);
        }
        for w in words.chunks_exact(2) {
            let u1 = unit_open(w[0]);
            let r = (-2.0 * u1.ln()).sqrt();
            let th = std::f64::consts::TAU * unit_open(w[1]);
            let (a, b) = box_muller(w[0], w[1]);
            let tol = 8.0 * f64::EPSILON * r.max(1.0);
            assert!((a - r * th.cos()).abs() <= tol, "{w:?}: {a} vs {}", r * th.cos());
            assert!((b - r * th.sin()).abs() <= tol, "{w:?}: {b} vs {}", r * th.sin());
            let l = ln_unit(u1);
            assert!(
                (l - u1.ln()).abs() <= 2.0 * f64::EPSILON * u1.ln().abs(),
                "ln {u1}: {l}"
            );
        }
        for i in 0..=20_000 {
            let x = -std::f64::consts::FRAC_PI_4 + i as f64 * std::f64::consts::FRAC_PI_2 / 20_000.0;
            assert!((kernel_sin(x) - x.sin()).abs() <= 2.0 * f64::EPSILON * x.sin().abs());
            assert!((kernel_cos(x) - x.cos()).abs() <= 2.0 * f64::EPSILON);
        }
        // The row and batch forms agree, for odd and even d.
        let noise = Noise::new(5);
        for d in [1, 2, 7, 10] {
            let all = noise.normals_fast(stream(Purpose::Step, 1), 1500, d);
            let mut part = vec![0.0; 300 * d];
            noise.normals_fast_rows(stream(Purpose::Step, 1), 1000, d, &mut part);
            assert_eq!(&all[1000 * d..1300 * d], &part[..]);
            let slow = noise.normals(stream(Purpose::Step, 1), 1500, d);
            for (a, b) in all.iter().zip(&slow) {
                assert!((a - b).abs() <= 1e-13 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 200_000;
        let v = Noise::new(1).normals(stream(Purpose::User, 0), n, 1);
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022, sqrt(2/n) = 0.0032, sqrt(96/n) = 0.022.
        assert!(mean.abs() < 5.0 * 0.0023, "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * 0.0032, "var {var}");
        assert!((kurt - 3.0).abs() < 5.0 * 0.022, "kurtosis {kurt}");
        let u = Noise::new(1).uniforms(stream(Purpose::User, 1), n);
        let mu = u.iter().sum::<f64>() / n as f64;
        assert!((mu - 0.5).abs() < 5.0 * (1.0f64 / 12.0 / n as f64).sqrt());
        assert!(u.iter().all(|&x| x > 0.0 && x <= 1.0));
    }

    #[test]
    fn normal_quantile_matches_known_values() {
        // Phi^{-1} at 0.5, 0.975, 0.999 and 1e-10 (to 16 digits, from the inverse of erfc).
        for (u, want) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.999, 3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            let got = super::normal_quantile(u);
            assert!(
                (got - want).abs() <= 1.2e-9 * want.abs().max(1.0),
                "{u}: {got} vs {want}"
            );
            assert!((super::normal_quantile(1.0 - u) + got).abs() < 1e-6 * got.abs().max(1.0));
        }
        assert!(super::normal_quantile(1.0).is_finite() && super::normal_quantile(0.0).is_finite());
    }
}
