//! Particle-system machinery: log-weights, effective sample size, resampling schemes
//! behind an ESS threshold, the running estimate of the log normalising constant, the
//! ancestry of the particles, and the one particle-filter driver ([`run_feynman_kac`]) that
//! every SMC method of the library (smc-impute, MCGdiff, the twisted SMC; see
//! docs/methods.md) is a [`FeynmanKac`] model of.
//!
//! A Feynman–Kac model (Chopin & Papaspiliopoulos 2020) is an initial law, Markov
//! transitions and potentials `G_k`; a particle filter alternates *reweight*
//! (`log w += log G_k`), *resample* (when `ESS < threshold N`) and *move*. The estimate of
//! the normalising constant is `log Z = sum_k log sum_i W_{k-1}^i G_k^i` with `W` the
//! normalised weights before the k-th reweighting; it is unbiased on the natural scale.
//!
//! The resampling schemes are small pure functions of the normalised weights and uniforms
//! (they never draw their own randomness), so a run is reproducible from its streams.

use crate::linalg::log_sum_exp;
use crate::{Error, Result};

/// A resampling scheme: returns `N` ancestor indices with `E[#offspring of i] = N W_i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resampling {
    /// `N` independent draws from the categorical law `W` (inverse CDF at sorted uniforms).
    Multinomial,
    /// One uniform in each stratum `[(i)/N, (i+1)/N)`.
    Stratified,
    /// One uniform `u`, points `(i + u)/N`.
    Systematic,
    /// `floor(N W_i)` copies of each particle, the rest multinomially on the residuals.
    Residual,
}

impl std::str::FromStr for Resampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "multinomial" => Ok(Resampling::Multinomial),
            "stratified" => Ok(Resampling::Stratified),
            "systematic" => Ok(Resampling::Systematic),
            "residual" => Ok(Resampling::Residual),
            other => Err(Error::invalid(format!(
                "unknown resampling scheme '{other}' (expected multinomial, stratified, systematic or residual)"
            ))),
        }
    }
}

impl Resampling {
    /// How many uniforms [`Self::resample`] needs for `n` particles.
    pub fn uniforms_needed(&self, n: usize) -> usize {
        match self {
            Resampling::Systematic => 1,
            Resampling::Multinomial | Resampling::Stratified => n,
            // floor(N W_i) is deterministic; at most n residual draws.
            Resampling::Residual => n,
        }
    }

    /// Ancestor indices (`n` of them, sorted) for the normalised weights `w` (sum 1) from the
    /// uniforms `u` in `[0, 1)` ([`Self::uniforms_needed`] of them).
    pub fn resample(&self, w: &[f64], u: &[f64]) -> Vec<usize> {
        let n = w.len();
        match self {
            Resampling::Multinomial => {
                let mut points = u.to_vec(); // one draw per uniform
                points.sort_by(f64::total_cmp);
                inverse_cdf(w, &points)
            }
            Resampling::Stratified => {
                let points: Vec<f64> = (0..n).map(|i| (i as f64 + u[i]) / n as f64).collect();
                inverse_cdf(w, &points)
            }
            Resampling::Systematic => {
                let points: Vec<f64> = (0..n).map(|i| (i as f64 + u[0]) / n as f64).collect();
                inverse_cdf(w, &points)
            }
            Resampling::Residual => {
                let mut out = Vec::with_capacity(n);
                let mut resid = Vec::with_capacity(n);
                for (i, &wi) in w.iter().enumerate() {
                    let copies = (n as f64 * wi).floor() as usize;
                    out.extend(std::iter::repeat_n(i, copies));
                    resid.push(n as f64 * wi - copies as f64);
                }
                let r = n - out.len();
                if r > 0 {
                    let total: f64 = resid.iter().sum();
                    let rw: Vec<f64> = resid.iter().map(|v| v / total).collect();
                    let picks = Resampling::Multinomial.resample(&rw, &u[..r]);
                    out.extend(picks);
                }
                out.sort_unstable();
                out
            }
        }
    }
}

/// One draw from the categorical law with (unnormalised, non-negative) weights `w` at the
/// uniform `u` in `[0, 1)`: the index `i` with `cumsum(w)_{i-1} <= u sum(w) < cumsum(w)_i`,
/// by [`inverse_cdf`] (the one categorical draw of the library).
pub fn categorical(w: &[f64], u: f64) -> usize {
    let total: f64 = w.iter().sum();
    inverse_cdf(w, &[u * total])[0]
}

/// The indices `i` with `cumsum(w)_{i-1} <= p < cumsum(w)_i` for sorted points `p` (the
/// last index for points at or beyond the total).
pub fn inverse_cdf(w: &[f64], points: &[f64]) -> Vec<usize> {
    let n = w.len();
    let mut out = Vec::with_capacity(points.len());
    let mut j = 0;
    let mut cum = w[0];
    for &p in points {
        while p >= cum && j + 1 < n {
            j += 1;
            cum += w[j];
        }
        out.push(j);
    }
    out
}

/// Normalised weights `W_i = exp(l_i - logsumexp(l))`.
pub fn normalise(logw: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(logw);
    logw.iter().map(|l| (l - lse).exp()).collect()
}

/// The effective sample size `1 / sum_i W_i^2` of log-weights (between 1 and N).
pub fn ess(logw: &[f64]) -> f64 {
    let w = normalise(logw);
    1.0 / w.iter().map(|v| v * v).sum::<f64>()
}

/// A weighted particle population's bookkeeping: log-weights, the running `log Z`, the ESS
/// trace and the ancestry (the ancestor of each particle at each resampling).
#[derive(Clone, Debug)]
pub struct Particles {
    /// Current (unnormalised) log-weights.
    pub logw: Vec<f64>,
    /// Running estimate of the log normalising constant.
    pub log_z: f64,
    /// ESS after each reweighting.
    pub ess_trace: Vec<f64>,
    /// Ancestor indices at each resampling event.
    pub ancestry: Vec<Vec<usize>>,
    /// The scheme.
    pub scheme: Resampling,
    /// Resample when `ESS < threshold N` (1: always, 0: never).
    pub threshold: f64,
}

impl Particles {
    /// `n` equally weighted particles.
    pub fn new(n: usize, scheme: Resampling, threshold: f64) -> Self {
        Particles {
            logw: vec![0.0; n],
            log_z: 0.0,
            ess_trace: Vec::new(),
            ancestry: Vec::new(),
            scheme,
            threshold,
        }
    }

    /// Number of particles.
    pub fn len(&self) -> usize {
        self.logw.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.logw.is_empty()
    }

    /// Multiplies the weights by the potentials `exp(log_g)` and updates `log Z` by
    /// `log sum_i W_i G_i`. Errors if every weight vanished (all potentials `-inf` or NaN).
    pub fn reweight(&mut self, log_g: &[f64]) -> Result<()> {
        let before = log_sum_exp(&self.logw);
        for (l, g) in self.logw.iter_mut().zip(log_g) {
            *l += if g.is_nan() { f64::NEG_INFINITY } else { *g };
        }
        let after = log_sum_exp(&self.logw);
        if !after.is_finite() {
            return Err(Error::Numerical(
                "particle weights degenerated: every weight is zero or infinite".into(),
            ));
        }
        self.log_z += after - before;
        self.ess_trace.push(ess(&self.logw));
        Ok(())
    }

    /// Resamples if the ESS is below the threshold: returns the ancestor indices (and resets
    /// the weights to equal) or `None`. `u` supplies the uniforms
    /// ([`Resampling::uniforms_needed`]).
    pub fn maybe_resample(&mut self, u: &[f64]) -> Option<Vec<usize>> {
        let n = self.len();
        if ess(&self.logw) >= self.threshold * n as f64 && self.threshold < 1.0 {
            return None;
        }
        Some(self.resample(u))
    }

    /// Resamples unconditionally: returns the ancestors and resets the weights.
    pub fn resample(&mut self, u: &[f64]) -> Vec<usize> {
        let w = normalise(&self.logw);
        let a = self.scheme.resample(&w, u);
        self.logw.iter_mut().for_each(|l| *l = 0.0);
        self.ancestry.push(a.clone());
        a
    }

    /// Normalised weights.
    pub fn weights(&self) -> Vec<f64> {
        normalise(&self.logw)
    }

    /// Number of resampling events so far.
    pub fn resamplings(&self) -> usize {
        self.ancestry.len()
    }
}

/// A Feynman–Kac model (Chopin & Papaspiliopoulos 2020, "An introduction to sequential
/// Monte Carlo", ch. 5; the `FeynmanKac` class of their `particles` library): an initial law
/// `M_0`, proposals `M_k`, and log-potentials `log G_k`, run by [`run_feynman_kac`]. The
/// model owns its particles and whatever it carries per particle (scores, twists); the
/// driver owns the weights, the resampling, `log Z` and the diagnostics.
///
/// Each step `k` (`0 <= k < K`) is, in the driver's order:
/// 1. [`Self::pre_log_potential`]: a potential computed from the particles before they move
///    (an auxiliary or "look-ahead" weight, such as the predictive density of the next
///    observation under the locally optimal proposal, as in MCGdiff and smc-impute);
/// 2. resampling, when the weights changed since the last check and `ESS < threshold N`
///    ([`Self::select`] keeps the ancestors);
/// 3. [`Self::propagate`]: the move by the proposal, and the potential of the moved
///    particles. A *twisted* model (Wu et al. 2023's TDS) folds its twist into it,
///    `log G~_k = log G_k + log psi_{k+1}(x') - log psi_k(x)`, and removes the last twist
///    in [`Self::final_log_potential`]; the target is unchanged, only the variance is.
///
/// After the last step the driver resamples once more (equal weights out). Several
/// independent systems may run together ([`Shape::systems`]; rows of a table, say): they
/// share the model's batched evaluations but have their own weights, resampling and
/// random streams, so each one's result is what it would be alone.
pub trait FeynmanKac {
    /// How many systems, particles and moves.
    fn shape(&self) -> Shape;

    /// Draws the particles from the initial law and returns `log G_0` of the `B N`
    /// particles (system-major), or `None` when `G_0 = 1`.
    fn initial(&mut self) -> Result<Option<Vec<f64>>>;

    /// The log-potential of step `k` from the particles before they move, or `None`.
    fn pre_log_potential(&mut self, _k: usize) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }

    /// In system `b`, makes particle `ancestors[i]` (indices within the system) particle
    /// `i`, with all that the model carries per particle.
    fn select(&mut self, b: usize, ancestors: &[usize]);

    /// Moves the particles from step `k` to `k + 1` and returns the log-potential of the
    /// moved particles, or `None`. A model whose state diverged returns
    /// [`Error::Numerical`] (see [`crate::error::check_finite`]).
    fn propagate(&mut self, k: usize) -> Result<Option<Vec<f64>>>;

    /// A last log-potential after the final move (a twisted model's `G_K / psi_K`), or `None`.
    fn final_log_potential(&mut self) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }

    /// `count` uniforms for the resampling of system `b` at step `k` (`k = K`: the final
    /// resampling), from the model's random streams.
    fn uniforms(&self, b: usize, k: usize, count: usize) -> Vec<f64>;
}

/// The size of a [`FeynmanKac`] model's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Independent particle systems `B` run together.
    pub systems: usize,
    /// Particles per system `N`.
    pub particles: usize,
    /// Moves `K`.
    pub steps: usize,
}

impl Shape {
    /// One system of `particles` particles and `steps` moves.
    pub fn single(particles: usize, steps: usize) -> Shape {
        Shape {
            systems: 1,
            particles,
            steps,
        }
    }
}

/// What [`run_feynman_kac`] reports per particle system.
#[derive(Clone, Debug, Default)]
pub struct SmcDiagnostics {
    /// The estimate of the log normalising constant, `sum_k log sum_i W_{k-1}^i G_k^i`.
    pub log_z: f64,
    /// ESS after each reweighting.
    pub ess: Vec<f64>,
    /// Resampling events during the run (the final resampling not counted).
    pub resamplings: usize,
    /// Ancestor indices of every resampling, the final one last.
    pub ancestry: Vec<Vec<usize>>,
}

impl SmcDiagnostics {
    /// The smallest ESS / N of the run (1 when no reweighting happened).
    pub fn ess_min(&self, n: usize) -> f64 {
        self.ess.iter().fold(1.0f64, |a, e| a.min(e / n as f64))
    }
}

/// Runs the particle filter of `model` (see [`FeynmanKac`] for the order of a step):
/// reweighting by the potentials, resampling with `scheme` when `ESS < threshold N`,
/// the running `log Z`, a final resampling to equal weights (the model's particles are then
/// `N` equally weighted draws per system). `progress(k, K)` after each move.
pub fn run_feynman_kac(
    model: &mut dyn FeynmanKac,
    scheme: Resampling,
    threshold: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SmcDiagnostics>> {
    let Shape {
        systems,
        particles: n,
        steps,
    } = model.shape();
    let mut parts: Vec<Particles> = (0..systems).map(|_| Particles::new(n, scheme, threshold)).collect();
    let reweight = |parts: &mut [Particles], log_g: Option<Vec<f64>>| -> Result<bool> {
        match log_g {
            Some(g) => {
                for (p, g) in parts.iter_mut().zip(g.chunks(n)) {
                    p.reweight(g)?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    };
    let mut dirty = reweight(&mut parts, model.initial()?)?;
    for k in 0..steps {
        dirty |= reweight(&mut parts, model.pre_log_potential(k)?)?;
        if dirty {
            for (b, p) in parts.iter_mut().enumerate() {
                let u = model.uniforms(b, k, scheme.uniforms_needed(n));
                if let Some(a) = p.maybe_resample(&u) {
                    model.select(b, &a);
                }
            }
        }
        dirty = reweight(&mut parts, model.propagate(k)?)?;
        progress(k + 1, steps);
    }
    reweight(&mut parts, model.final_log_potential()?)?;
    let mut out = Vec::with_capacity(systems);
    for (b, mut p) in parts.into_iter().enumerate() {
        let resamplings = p.resamplings();
        let u = model.uniforms(b, steps, scheme.uniforms_needed(n));
        let a = p.resample(&u);
        model.select(b, &a);
        out.push(SmcDiagnostics {
            log_z: p.log_z,
            ess: p.ess_trace,
            resamplings,
            ancestry: p.ancestry,
        });
    }
    Ok(out)
}

/// Gathers rows `idx` of a row-major `[n, d]` buffer.
pub fn gather_rows(x: &[f64], d: usize, idx: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        out.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, Noise, Purpose};

    fn weights(n: usize, seed: u64) -> Vec<f64> {
        let u = Noise::new(seed).uniforms(stream(Purpose::User, 0), n);
        let g: Vec<f64> = u.iter().map(|v| (3.0 * v).exp()).collect();
        let s: f64 = g.iter().sum();
        g.iter().map(|v| v / s).collect()
    }

    /// Expected offspring `N W_i` for every scheme (Monte Carlo over 4000 replicates, each
    /// count's error bar from its own binomial-like variance), and lower variance for
    /// stratified / systematic / residual than multinomial.
    #[test]
    fn schemes_are_unbiased_and_ordered_in_variance() {
        let n = 8;
        let w = weights(n, 3);
        let reps = 4000;
        let noise = Noise::new(11);
        let mut var_total = Vec::new();
        for scheme in [
            Resampling::Multinomial,
            Resampling::Stratified,
            Resampling::Systematic,
            Resampling::Residual,
        ] {
            let mut sum = vec![0.0; n];
            let mut sum2 = vec![0.0; n];
            for r in 0..reps {
                let u = noise.uniforms(stream(Purpose::Resample, r as u64), scheme.uniforms_needed(n));
                let a = scheme.resample(&w, &u);
                assert_eq!(a.len(), n);
                let mut c = vec![0.0; n];
                for i in a {
                    c[i] += 1.0;
                }
                for i in 0..n {
                    sum[i] += c[i];
                    sum2[i] += c[i] * c[i];
                }
            }
            let mut tv = 0.0;
            for i in 0..n {
                let mean = sum[i] / reps as f64;
                let var = sum2[i] / reps as f64 - mean * mean;
                tv += var;
                let se = (var.max(1e-12) / reps as f64).sqrt();
                let expect = n as f64 * w[i];
                assert!(
                    (mean - expect).abs() < 4.5 * se + 1e-9,
                    "{scheme:?}: offspring of {i}: {mean} vs {expect} (se {se})"
                );
            }
            var_total.push(tv);
        }
        // Multinomial's variance is sum N W (1 - W); the others are well below it.
        let multi_exact: f64 = w.iter().map(|v| n as f64 * v * (1.0 - v)).sum();
        assert!((var_total[0] - multi_exact).abs() < 0.1 * multi_exact);
        for v in &var_total[1..] {
            assert!(*v < 0.6 * var_total[0], "{var_total:?}");
        }
    }

    /// A linear-Gaussian state-space model as a [`FeynmanKac`] model (the bootstrap filter):
    /// `x_0 ~ N(0, 1)`, `x_k = a x_{k-1} + q z`, `y_k ~ N(x_k, r^2)`; `B` systems at once.
    struct Ar1 {
        ys: Vec<f64>,
        a: f64,
        q: f64,
        r: f64,
        n: usize,
        seeds: Vec<u64>,
        x: Vec<f64>,
    }

    impl Ar1 {
        fn log_lik(&self, k: usize) -> Vec<f64> {
            let r2 = self.r * self.r;
            self.x
                .iter()
                .map(|x| -0.5 * ((self.ys[k] - x).powi(2) / r2 + (2.0 * std::f64::consts::PI * r2).ln()))
                .collect()
        }
    }

    impl FeynmanKac for Ar1 {
        fn shape(&self) -> Shape {
            let one = Shape::single(self.n, self.ys.len() - 1);
            Shape {
                systems: self.seeds.len(),
                ..one
            }
        }
        fn initial(&mut self) -> Result<Option<Vec<f64>>> {
            self.x = self
                .seeds
                .iter()
                .flat_map(|&s| Noise::new(s).normals(stream(Purpose::Init, 0), self.n, 1))
                .collect();
            Ok(Some(self.log_lik(0)))
        }
        fn select(&mut self, b: usize, a: &[usize]) {
            let blk = &mut self.x[b * self.n..(b + 1) * self.n];
            let g = gather_rows(blk, 1, a);
            blk.copy_from_slice(&g);
        }
        fn propagate(&mut self, k: usize) -> Result<Option<Vec<f64>>> {
            for (b, &s) in self.seeds.iter().enumerate() {
                let z = Noise::new(s).normals(stream(Purpose::Step, k as u64), self.n, 1);
                for (x, z) in self.x[b * self.n..(b + 1) * self.n].iter_mut().zip(z) {
                    *x = self.a * *x + self.q * z;
                }
            }
            Ok(Some(self.log_lik(k + 1)))
        }
        fn uniforms(&self, b: usize, k: usize, count: usize) -> Vec<f64> {
            Noise::new(self.seeds[b]).uniforms(stream(Purpose::Resample, k as u64), count)
        }
    }

    /// The driver's `log Z` of a bootstrap filter against the Kalman filter's exact
    /// `log p(y_0..y_K)`: the mean over 40 independent systems (run together in one model)
    /// within 4.5 standard errors of the run-to-run spread (the `O(1/N)` bias of `log Z` is
    /// far below it at N = 500); final populations of equal weight; and each system of the
    /// batch gives the same bytes as when it runs alone.
    #[test]
    fn driver_log_z_matches_the_kalman_filter() {
        let (a, q, r) = (0.9, 0.5, 0.7);
        let ys = vec![0.3, -0.2, 0.8, 1.1, 0.4, -0.5, 0.0, 0.9];
        // Kalman filter: predictive N(m, P + r^2) of each y.
        let (mut m, mut p, mut exact) = (0.0f64, 1.0f64, 0.0f64);
        for (k, &y) in ys.iter().enumerate() {
            if k > 0 {
                m *= a;
                p = a * a * p + q * q;
            }
            let s = p + r * r;
            exact += -0.5 * ((y - m).powi(2) / s + (2.0 * std::f64::consts::PI * s).ln());
            let gain = p / s;
            m += gain * (y - m);
            p *= 1.0 - gain;
        }
        let seeds: Vec<u64> = (0..40).collect();
        let model = |seeds: Vec<u64>| Ar1 {
            ys: ys.clone(),
            a,
            q,
            r,
            n: 500,
            seeds,
            x: Vec::new(),
        };
        let mut all = model(seeds.clone());
        let d = run_feynman_kac(&mut all, Resampling::Systematic, 0.5, &mut |_, _| {}).unwrap();
        let lz: Vec<f64> = d.iter().map(|d| d.log_z).collect();
        let mean = lz.iter().sum::<f64>() / lz.len() as f64;
        let sd = (lz.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (lz.len() - 1) as f64).sqrt();
        let se = sd / (lz.len() as f64).sqrt();
        assert!(
            (mean - exact).abs() < 4.5 * se + 1e-3,
            "log Z {mean} vs {exact} (se {se})"
        );
        assert!(d
            .iter()
            .all(|d| d.ess.len() == ys.len() && d.ancestry.len() == d.resamplings + 1));
        let mut one = model(vec![7]);
        let d1 = run_feynman_kac(&mut one, Resampling::Systematic, 0.5, &mut |_, _| {}).unwrap();
        assert_eq!(d1[0].log_z, d[7].log_z);
        assert_eq!(one.x, all.x[7 * 500..8 * 500].to_vec());
    }

    #[test]
    fn categorical_is_the_inverse_cdf() {
        let w = [0.5, 0.0, 1.5, 2.0];
        assert_eq!(categorical(&w, 0.0), 0);
        assert_eq!(categorical(&w, 0.124), 0);
        assert_eq!(categorical(&w, 0.126), 2);
        assert_eq!(categorical(&w, 0.499), 2);
        assert_eq!(categorical(&w, 0.51), 3);
        assert_eq!(categorical(&w, 0.999_999), 3);
    }

    #[test]
    fn ess_formula() {
        assert!((ess(&[0.0; 10]) - 10.0).abs() < 1e-12);
        let l = [0.0, f64::NEG_INFINITY, f64::NEG_INFINITY];
        assert!((ess(&l) - 1.0).abs() < 1e-12);
        // W = (0.5, 0.25, 0.25): 1 / (0.25 + 0.0625 * 2) = 8/3.
        let l = [2f64.ln(), 0.0, 0.0];
        assert!((ess(&l) - 8.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_weights_are_reported() {
        let mut p = Particles::new(3, Resampling::Systematic, 0.5);
        let err = p.reweight(&[f64::NEG_INFINITY; 3]).unwrap_err();
        assert!(err.to_string().contains("degenerated"));
    }

    #[test]
    fn log_z_accumulates_mean_potentials() {
        let mut p = Particles::new(4, Resampling::Systematic, 0.5);
        p.reweight(&[0.0, 1f64.ln(), 2f64.ln(), 4f64.ln()]).unwrap();
        // mean of (1, 1, 2, 4) = 2.
        assert!((p.log_z - 2f64.ln()).abs() < 1e-12);
        let a = p.resample(&[0.5]);
        assert_eq!(a.len(), 4);
        p.reweight(&[3f64.ln(); 4]).unwrap();
        assert!((p.log_z - 6f64.ln()).abs() < 1e-12);
    }
}
