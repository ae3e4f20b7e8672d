//! Seeded, bit-reproducible random streams.
//!
//! Every random draw of the library comes from a [`Noise`] source: a seed plus a *stream*
//! number that names what the draw is for (initial state, step `k`, corrector `j` of step
//! `k`, ...). Inside a stream, particle `i` always reads the same ChaCha8 words, whatever
//! the batch size or the number of threads, so results are bit-reproducible for a seed and
//! the first `n` particles of a run with `N > n` particles equal a run with `n` particles.
//! Normals are drawn by Box–Muller from exactly two 64-bit words per pair.

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
        let pairs = d.div_ceil(2);
        let mut out = vec![0.0; n * d];
        if d == 0 {
            return out;
        }
        out.par_chunks_mut(CHUNK * d).enumerate().for_each(|(c, chunk)| {
            let first = (c * CHUNK) as u128;
            // 2 u64 = 4 u32 words per pair.
            let mut rng = self.rng_at(stream, first * pairs as u128 * 4);
            for row in chunk.chunks_mut(d) {
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
        });
        out
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
}
