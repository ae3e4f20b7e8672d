//! Langevin samplers for unnormalised targets (Roberts & Tweedie 1996; Song & Ermon 2019).
//!
//! A [`Target`] gives `log pi(x)` up to a constant and its gradient, batched over the rows
//! of `x` (`[n, d]`, any float dtype). Each row is an independent chain.
//!
//! * **ULA** (unadjusted Langevin; SGLD of Welling & Teh 2011 with exact gradients):
//!   `x_{k+1} = x_k + h grad log pi(x_k) + sqrt(2h) z_k`. Its stationary law is biased by
//!   `O(h)`: for `N(mu, sigma^2)` it is exactly `N(mu, sigma^2 / (1 - h / (2 sigma^2)))`.
//! * **MALA**: the ULA move as a proposal `y`, accepted with probability
//!   `min(1, pi(y) q(x | y) / (pi(x) q(y | x)))`, `q(y | x) = N(y; x + h grad log pi(x), 2h I)`;
//!   exact stationary law; the acceptance rate is reported.
//! * **Annealed Langevin** (NCSN, Song & Ermon 2019, Algorithm 1) on a noise-conditional [`Score`]:
//!   for `sigma_1 > ... > sigma_L`, `alpha_i = eps sigma_i^2 / sigma_L^2`, `T` steps
//!   `x <- x + alpha_i / 2 s(x, sigma_i) + sqrt(alpha_i) z` at each level. Levels are read at
//!   the process times `t_i = t(sigma_i)`; for a VP process the update is applied to the
//!   VE-equivalent `y = x / m(t)`; one implementation with
//!   [`crate::sample::Sampler::AnnealedLangevin`] ([`crate::sample::annealed_langevin_levels`]).
//!
//! Randomness: the normals of step `k` come from the stream `(Purpose::Step, k)`, MALA's
//! uniforms of step `k` from `(Purpose::Resample, k)`, so runs are bit-reproducible and chain
//! `i` reads the same numbers whatever the number of chains.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::check_finite_tensor;
use crate::nn::score_matching::SigmaLadder;
use crate::nn::EnergyNet;
use crate::rng::{stream, Noise, Purpose};
use crate::sample::annealed_langevin_levels;
use crate::score::{GaussianMixture, Score};
use crate::{Error, Result};

/// An unnormalised target density `pi(x) ∝ exp(log_density(x))`.
pub trait Target {
    /// The dimension `d`.
    fn dim(&self) -> usize;

    /// `log pi(x)` up to a constant for each row of `x` (`[n, d]`), as `[n]`.
    fn log_density(&self, x: &Tensor) -> Result<Tensor>;

    /// `grad_x log pi(x)` for each row, `[n, d]`.
    fn grad_log_density(&self, x: &Tensor) -> Result<Tensor>;

    /// Both at once (override when they share work).
    fn log_density_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.log_density(x)?, self.grad_log_density(x)?))
    }
}

/// A Gaussian mixture as a target: `log pi = log p(x)`, `grad = score(x)` (exact).
pub struct MixtureTarget {
    law: Arc<GaussianMixture>,
}

impl MixtureTarget {
    /// The target `law`.
    pub fn new(law: Arc<GaussianMixture>) -> Self {
        MixtureTarget { law }
    }
}

fn rows_f64(x: &Tensor) -> Result<Vec<f64>> {
    Ok(crate::data::to_rows(x)?.0)
}

impl Target for MixtureTarget {
    fn dim(&self) -> usize {
        self.law.dim()
    }

    fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims2()?.0;
        let lp = self.law.log_prob(&rows_f64(x)?)?;
        Ok(Tensor::from_vec(lp, n, x.device())?.to_dtype(x.dtype())?)
    }

    fn grad_log_density(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.law.score_diffused(1.0, 0.0, &rows_f64(x)?)?;
        Ok(Tensor::from_vec(g, x.dims2()?, x.device())?.to_dtype(x.dtype())?)
    }
}

/// An energy network at a fixed normalised time `tau` as a target: `log pi = f(tau, x)`,
/// `grad = grad_x f` (explicit reverse pass, [`EnergyNet::grad`]); `tau = 0` for a
/// time-free EBM.
pub struct EnergyTarget<'a> {
    /// The network.
    pub net: &'a EnergyNet,
    /// The normalised time fed to it.
    pub tau: f64,
}

impl EnergyTarget<'_> {
    fn prepare(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dims2()?.0;
        let dt = self.net.dtype();
        Ok((
            x.to_dtype(dt)?.detach(),
            Tensor::full(self.tau, (n, 1), x.device())?.to_dtype(dt)?,
        ))
    }
}

impl Target for EnergyTarget<'_> {
    fn dim(&self) -> usize {
        self.net.config.dim
    }

    fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        let (xi, tau) = self.prepare(x)?;
        Ok(self.net.forward(&xi, &tau)?.detach().to_dtype(x.dtype())?)
    }

    fn grad_log_density(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.log_density_and_grad(x)?.1)
    }

    fn log_density_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (xi, tau) = self.prepare(x)?;
        let (f, g) = self.net.grad(&xi, &tau)?;
        Ok((f.detach().to_dtype(x.dtype())?, g.detach().to_dtype(x.dtype())?))
    }
}

/// Settings of [`ula`] and [`mala`].
#[derive(Clone, Debug, PartialEq)]
pub struct LangevinOptions {
    /// Step size `h > 0`.
    pub step: f64,
    /// Number of steps.
    pub steps: usize,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for LangevinOptions {
    fn default() -> Self {
        LangevinOptions {
            step: 1e-2,
            steps: 1000,
            seed: 0,
        }
    }
}

fn check(target_dim: usize, x: &Tensor, opts: &LangevinOptions) -> Result<(usize, usize)> {
    let (n, d) = x.dims2()?;
    if d != target_dim {
        return Err(Error::invalid(format!(
            "chains have dimension {d}, the target {target_dim}"
        )));
    }
    if n == 0 {
        return Err(Error::invalid("need at least one chain"));
    }
    if !(opts.step.is_finite() && opts.step > 0.0) {
        return Err(Error::invalid(format!(
            "Langevin step size must be positive, got {}",
            opts.step
        )));
    }
    Ok((n, d))
}

/// ULA from the chains `x0` (`[n, d]`): `x <- x + h grad log pi(x) + sqrt(2h) z`, `steps`
/// times; returns the final states.
pub fn ula(target: &dyn Target, x0: &Tensor, opts: &LangevinOptions) -> Result<Tensor> {
    let (n, d) = check(target.dim(), x0, opts)?;
    let noise = Noise::new(opts.seed);
    let h = opts.step;
    let mut x = x0.detach();
    for k in 0..opts.steps {
        let g = target.grad_log_density(&x)?;
        let z = noise.normal_tensor(stream(Purpose::Step, k as u64), n, d, x.dtype(), x.device())?;
        x = ((&x + g.affine(h, 0.0)?)? + z.affine((2.0 * h).sqrt(), 0.0)?)?;
        if k % 64 == 63 {
            check_finite_tensor(&x, "ULA")?;
        }
    }
    check_finite_tensor(&x, "ULA")?;
    Ok(x)
}

/// The outcome of [`mala`].
#[derive(Clone, Debug)]
pub struct MalaReport {
    /// Final states `[n, d]`.
    pub x: Tensor,
    /// Accepted proposals / proposals, over all chains and steps.
    pub acceptance_rate: f64,
}

/// MALA from the chains `x0` (`[n, d]`), `steps` proposals per chain (see the module
/// documentation).
pub fn mala(target: &dyn Target, x0: &Tensor, opts: &LangevinOptions) -> Result<MalaReport> {
    let (n, d) = check(target.dim(), x0, opts)?;
    let noise = Noise::new(opts.seed);
    let h = opts.step;
    let mut x = x0.detach();
    let (mut lp, mut g) = target.log_density_and_grad(&x)?;
    let mut accepted = 0usize;
    // log q(b | a) = -|b - a - h grad(a)|^2 / (4h) + const.
    let log_q = |to: &Tensor, from: &Tensor, grad_from: &Tensor| -> Result<Tensor> {
        Ok((to - from)?
            .sub(&grad_from.affine(h, 0.0)?)?
            .sqr()?
            .sum(1)?
            .affine(-1.0 / (4.0 * h), 0.0)?)
    };
    for k in 0..opts.steps {
        let z = noise.normal_tensor(stream(Purpose::Step, k as u64), n, d, x.dtype(), x.device())?;
        let y = ((&x + g.affine(h, 0.0)?)? + z.affine((2.0 * h).sqrt(), 0.0)?)?;
        let (lpy, gy) = target.log_density_and_grad(&y)?;
        let log_a = ((&lpy - &lp)? + (log_q(&x, &y, &gy)? - log_q(&y, &x, &g)?)?)?;
        let log_a: Vec<f64> = log_a.to_dtype(DType::F64)?.to_vec1()?;
        let u = noise.uniforms(stream(Purpose::Resample, k as u64), n);
        // NaN log-ratios (a proposal outside the target's support) are rejections.
        let acc: Vec<f64> = log_a
            .iter()
            .zip(&u)
            .map(|(&a, &u)| if u.ln() < a { 1.0 } else { 0.0 })
            .collect();
        accepted += acc.iter().filter(|&&a| a > 0.0).count();
        let a = Tensor::from_vec(acc, n, x.device())?.to_dtype(x.dtype())?;
        let keep = a.affine(-1.0, 1.0)?;
        let mix = |new: &Tensor, old: &Tensor| -> Result<Tensor> {
            if new.rank() == 1 {
                Ok(((new * &a)? + (old * &keep)?)?)
            } else {
                Ok((new.broadcast_mul(&a.unsqueeze(1)?)? + old.broadcast_mul(&keep.unsqueeze(1)?)?)?)
            }
        };
        // Where rejected, y may hold inf/NaN: zero it before mixing.
        let (y, lpy, gy) = if a.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? < n as f64 {
            let clean = |t: &Tensor| -> Result<Tensor> {
                let ok = t.eq(t)?; // false for NaN
                Ok(ok.where_cond(t, &t.zeros_like()?)?)
            };
            (clean(&y)?, clean(&lpy)?, clean(&gy)?)
        } else {
            (y, lpy, gy)
        };
        x = mix(&y, &x)?;
        lp = mix(&lpy, &lp)?;
        g = mix(&gy, &g)?;
    }
    check_finite_tensor(&x, "MALA")?;
    Ok(MalaReport {
        x,
        acceptance_rate: accepted as f64 / (n * opts.steps).max(1) as f64,
    })
}

/// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on a noise-conditional score, from
/// `x0` (`[n, d]`): at each level `sigma_i` of `ladder`, `steps_per_level` steps of
/// `x <- x + alpha_i / 2 s(t_i, x) + sqrt(alpha_i) z`, `alpha_i = eps sigma_i^2 / sigma_L^2`,
/// at `t_i = t(sigma_i)` of the score's process (VE-equivalent update for VP processes, see
/// the module documentation). Noise of step `k` (counted over all levels): `(Purpose::Step, k)`.
pub fn annealed_langevin(
    score: &dyn Score,
    ladder: &SigmaLadder,
    steps_per_level: usize,
    eps: f64,
    x0: &Tensor,
    seed: u64,
) -> Result<Tensor> {
    let (_, d) = x0.dims2()?;
    if d != score.dim() {
        return Err(Error::invalid(format!(
            "chains have dimension {d}, the score {}",
            score.dim()
        )));
    }
    if !(eps.is_finite() && eps > 0.0) || steps_per_level == 0 {
        return Err(Error::invalid(
            "annealed Langevin: need eps > 0 and at least one step per level",
        ));
    }
    let p = score.process();
    let sigmas = ladder.sigmas();
    let sigma_l = *sigmas.last().expect("a ladder has >= 2 levels");
    let ts: Vec<f64> = sigmas.iter().map(|&s| p.t_of_sigma(s)).collect();
    annealed_langevin_levels(
        score,
        &ts,
        steps_per_level,
        eps / (sigma_l * sigma_l),
        x0.detach(),
        &Noise::new(seed),
        &mut |_, _| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Covariance;
    use candle_core::Device;

    /// Per-coordinate means and variances of `[n, d]` samples.
    fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let (n, d) = x.dims2().unwrap();
        let v = rows_f64(x).unwrap();
        let mean: Vec<f64> = (0..d)
            .map(|j| v.iter().skip(j).step_by(d).sum::<f64>() / n as f64)
            .collect();
        let var: Vec<f64> = (0..d)
            .map(|j| v.iter().skip(j).step_by(d).map(|x| (x - mean[j]).powi(2)).sum::<f64>() / (n - 1) as f64)
            .collect();
        (mean, var)
    }

    fn target() -> (MixtureTarget, [f64; 2], [f64; 2]) {
        let (mu, var) = ([1.0, -2.0], [0.5, 2.0]);
        let law = GaussianMixture::gaussian(mu.to_vec(), Covariance::Diagonal(var.to_vec())).unwrap();
        (MixtureTarget::new(Arc::new(law)), mu, var)
    }

    fn start(n: usize) -> Tensor {
        Noise::new(99)
            .normal_tensor(stream(Purpose::Init, 0), n, 2, DType::F64, &Device::Cpu)
            .unwrap()
            .affine(3.0, 0.0)
            .unwrap()
    }

    /// `n` independent chains, each contributing its final state: the moments' Monte-Carlo
    /// standard errors are `sqrt(var / n)` (mean) and `var sqrt(2 / n)` (variance); the
    /// tolerance is 4.5 of them (two moments per coordinate, all should pass).
    #[test]
    fn mala_and_ula_sample_a_gaussian() {
        let n = 4000;
        let (tg, mu, var) = target();
        let opts = LangevinOptions {
            step: 0.05,
            steps: 400,
            seed: 1,
        };
        let r = mala(&tg, &start(n), &opts).unwrap();
        assert!(
            r.acceptance_rate > 0.0 && r.acceptance_rate < 1.0,
            "{}",
            r.acceptance_rate
        );
        let (m, v) = moments(&r.x);
        for j in 0..2 {
            let se_m = (var[j] / n as f64).sqrt();
            let se_v = var[j] * (2.0 / n as f64).sqrt();
            assert!(
                (m[j] - mu[j]).abs() < 4.5 * se_m,
                "MALA mean {m:?} (acc {})",
                r.acceptance_rate
            );
            assert!((v[j] - var[j]).abs() < 4.5 * se_v, "MALA var {v:?}");
        }
        // ULA: the stationary variance is var / (1 - h / (2 var)) exactly for a Gaussian
        // (an AR(1) chain): the O(h) bias, accounted for.
        let x = ula(&tg, &start(n), &opts).unwrap();
        let (m, v) = moments(&x);
        for j in 0..2 {
            let want = var[j] / (1.0 - opts.step / (2.0 * var[j]));
            let se_m = (want / n as f64).sqrt();
            let se_v = want * (2.0 / n as f64).sqrt();
            assert!((m[j] - mu[j]).abs() < 4.5 * se_m, "ULA mean {m:?}");
            assert!((v[j] - want).abs() < 4.5 * se_v, "ULA var {v:?} vs {want}");
        }
    }

    #[test]
    fn mala_acceptance_falls_with_the_step_and_runs_are_reproducible() {
        let (tg, _, _) = target();
        let rate = |step: f64| {
            mala(
                &tg,
                &start(500),
                &LangevinOptions {
                    step,
                    steps: 50,
                    seed: 2,
                },
            )
            .unwrap()
            .acceptance_rate
        };
        let (small, big) = (rate(0.01), rate(1.5));
        assert!(small > 0.9 && big < small, "{small} {big}");
        let o = LangevinOptions {
            step: 0.1,
            steps: 20,
            seed: 3,
        };
        let a = rows_f64(&ula(&tg, &start(100), &o).unwrap()).unwrap();
        let b = rows_f64(&ula(&tg, &start(100), &o).unwrap()).unwrap();
        assert_eq!(a, b);
        assert!(ula(&tg, &start(10).narrow(1, 0, 1).unwrap(), &o).is_err());
        assert!(mala(&tg, &start(10), &LangevinOptions { step: -1.0, ..o }).is_err());
    }

    /// Annealed Langevin with the exact scores of a diffused 2-mode mixture (VE): both
    /// modes populated in proportion to their weights.
    #[test]
    fn annealed_langevin_finds_both_modes() {
        use crate::process::Process;
        use crate::score::MixtureScore;
        let law = GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![-4.0, 0.0], vec![4.0, 0.0]],
            vec![Covariance::Scalar(0.25), Covariance::Scalar(0.25)],
        )
        .unwrap();
        let process = Process::ve(0.01, 20.0);
        let score = MixtureScore::new(Arc::new(law), process.clone());
        let ladder = SigmaLadder::for_process(&process, 0.0, 10).unwrap();
        let n = 2000;
        let x0 = Noise::new(5)
            .normal_tensor(stream(Purpose::Init, 0), n, 2, DType::F64, &Device::Cpu)
            .unwrap()
            .affine(20.0, 0.0)
            .unwrap();
        let x = annealed_langevin(&score, &ladder, 100, 2e-5, &x0, 1).unwrap();
        let v = rows_f64(&x).unwrap();
        let right = v.chunks(2).filter(|r| r[0] > 0.0).count() as f64 / n as f64;
        // Binomial standard error sqrt(0.21 / 2000) = 0.01; annealing keeps weights roughly.
        assert!((right - 0.7).abs() < 0.06, "share right {right}");
        let (_, var) = moments(&x.narrow(1, 1, 1).unwrap());
        assert!((var[0] - 0.25).abs() < 0.05, "within-mode variance {var:?}");
    }
}
