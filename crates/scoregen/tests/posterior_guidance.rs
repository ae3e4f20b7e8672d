//! DPS, Pi-GDM, TMPD and DDRM against laws derived from their papers' updates.
//!
//! With a Gaussian prior `N(mu, diag(c))`, a mask operator and exact (analytic) scores, every
//! quantity these methods use is affine in `x`: the score `-(x - m mu)/(m^2 c + s^2)`, the
//! Tweedie denoiser `x0_hat = mu + m c (x - m mu)/(m^2 c + s^2)`, its Jacobian `J = m c/(m^2 c
//! + s^2)` and hence the guidance terms (DPS excepted: its step is normalised by the residual).
//! So each coordinate of the output is Gaussian, and its mean and variance follow from a
//! scalar recursion over the method's grid, written here from the papers' formulas (not from
//! the library's code): `x' = F x + h + sd z` per step, `x_T ~ N(0, s(T)^2)`, then the final
//! Tweedie denoising. The samples are compared with that law within Monte-Carlo error bars
//! (`n` independent samples: the standard error of a mean is `sd / sqrt(n)`, of a variance
//! `v sqrt(2 / (n - 1))`), and the law itself with the exact posterior where the method is
//! exact. A method that ignored `y` would produce the prior's law, many standard errors away.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use scoregen::benchmarks::gmm::gmm_problem;
use scoregen::inverse::{
    sample_posterior, ExactPosterior, Method, Observation, Operator, PigdmUpdate, PosteriorOptions,
};
use scoregen::metrics::{sliced_wasserstein, SlicedOptions};
use scoregen::process::Process;
use scoregen::rng::Noise;
use scoregen::sample::default_process;
use scoregen::score::{Covariance, GaussianMixture, MixtureScore};

/// The prior `N((1, -0.5), diag(2, 0.5))`; coordinate 0 observed as `y = 3`, `sigma_y = 0.5`:
/// the posterior of coordinate 0 is `N(1 + 2 * 2 / 2.25, 2 * 0.25 / 2.25) = N(2.778, 0.222)`,
/// 1.25 prior standard deviations from the prior mean, with 1/9 of its variance.
const MU: [f64; 2] = [1.0, -0.5];
const C: [f64; 2] = [2.0, 0.5];
const Y: f64 = 3.0;
const SIGMA_Y: f64 = 0.5;
const N: usize = 4000;

fn setup() -> (MixtureScore, Observation, Process) {
    let law = GaussianMixture::gaussian(MU.to_vec(), Covariance::Diagonal(C.to_vec())).unwrap();
    let p = default_process(law.radius());
    let obs = Observation {
        op: Operator::Mask {
            dim: 2,
            observed: vec![0],
        },
        y: vec![Y],
        sigma_y: SIGMA_Y,
    };
    (MixtureScore::new(Arc::new(law), p.clone()), obs, p)
}

fn opts(steps: usize, seed: u64) -> PosteriorOptions {
    PosteriorOptions {
        n: N,
        steps,
        seed,
        ..Default::default()
    }
}

/// The exact posterior `(mean, variance)` of coordinate 0.
fn posterior0() -> (f64, f64) {
    let k = C[0] / (C[0] + SIGMA_Y * SIGMA_Y);
    (
        MU[0] + k * (Y - MU[0]),
        C[0] * SIGMA_Y * SIGMA_Y / (C[0] + SIGMA_Y * SIGMA_Y),
    )
}

/// Prior quantities of coordinate `j` at time `t`, as affine maps `(slope, intercept)`:
/// the score, the denoiser `x0_hat`, and `Cov(x_0 | x_t)`.
fn prior_at(p: &Process, t: f64, j: usize) -> ((f64, f64), (f64, f64), f64) {
    let (m, s) = (p.m(t), p.s(t));
    let v = m * m * C[j] + s * s;
    let score = (-1.0 / v, m * MU[j] / v);
    let jac = m * C[j] / v;
    let x0 = (jac, MU[j] - jac * m * MU[j]);
    (score, x0, C[j] * s * s / v)
}

/// The law of one coordinate after the chain `x' = f_k x + h_k + sd_k z` (`step(t, t')` gives
/// `(f, h, sd)`) from `x_T ~ N(0, s(T)^2)`, then the final denoising at `t_min`.
fn chain_law(p: &Process, o: &PosteriorOptions, j: usize, step: &dyn Fn(f64, f64) -> (f64, f64, f64)) -> (f64, f64) {
    let ts = o.grid.times(p, o.steps, o.t_min, p.t_max()).unwrap();
    let (mut mean, mut var) = (0.0, p.s(ts[0]).powi(2));
    for w in ts.windows(2) {
        let (f, h, sd) = step(w[0], w[1]);
        mean = f * mean + h;
        var = f * f * var + sd * sd;
    }
    let (_, (a, b), _) = prior_at(p, o.t_min, j);
    (a * mean + b, a * a * var)
}

/// The affine map `x -> mean(x)` as `(slope, intercept)`.
fn affine(f: impl Fn(f64) -> f64) -> (f64, f64) {
    let h = f(0.0);
    (f(1.0) - h, h)
}

/// The guidance methods' step on coordinate `j` (`tmpd`, Pi-GDM `paper` / `score`): the
/// prior's DDPM step plus the guidance of the observed coordinate 0.
fn guided_step<'a>(p: &'a Process, kind: &str, j: usize) -> impl Fn(f64, f64) -> (f64, f64, f64) + 'a {
    let kind = kind.to_string();
    move |t, t1| {
        let ker = p.reverse_kernel(t, t1, 1.0);
        let ((sa, sb), (ja, jb), cov) = prior_at(p, t, j);
        let (m, s, m1) = (p.m(t), p.s(t), p.m(t1));
        let r2 = s * s / (m * m + s * s);
        let mean = |x: f64| {
            let score = sa * x + sb;
            let g = if j == 0 {
                let e = Y - (ja * x + jb);
                // TMPD: Sigma = A C_t A^T + sigma_y^2 with C_t = Cov(x_0 | x_t) = (s^2/m) J.
                // Pi-GDM: Sigma = r_t^2 A A^T + sigma_y^2.
                let sigma = if kind == "tmpd" { cov } else { r2 } + SIGMA_Y * SIGMA_Y;
                ja * e / sigma
            } else {
                0.0
            };
            match kind.as_str() {
                "paper" => ker.ax * x + ker.kappa * score + m1 * m * r2 * g,
                _ => ker.ax * x + ker.kappa * (score + g),
            }
        };
        let (f, h) = affine(mean);
        (f, h, ker.var.sqrt())
    }
}

/// Sample mean and variance of column `j`, and the covariance of the two columns.
fn moments(x: &[f64]) -> ([f64; 2], [f64; 2], f64) {
    let n = (x.len() / 2) as f64;
    let mut mean = [0.0; 2];
    for r in x.chunks(2) {
        mean[0] += r[0] / n;
        mean[1] += r[1] / n;
    }
    let (mut var, mut cov) = ([0.0; 2], 0.0);
    for r in x.chunks(2) {
        let (a, b) = (r[0] - mean[0], r[1] - mean[1]);
        var[0] += a * a / (n - 1.0);
        var[1] += b * b / (n - 1.0);
        cov += a * b / (n - 1.0);
    }
    (mean, var, cov)
}

/// Checks the samples against the derived per-coordinate laws (independent coordinates)
/// within 4.5 standard errors.
fn check_law(name: &str, x: &[f64], law: [(f64, f64); 2]) {
    let (mean, var, cov) = moments(x);
    let n = (x.len() / 2) as f64;
    for j in 0..2 {
        let (lm, lv) = law[j];
        let (se_m, se_v) = ((lv / n).sqrt(), lv * (2.0 / (n - 1.0)).sqrt());
        assert!(
            (mean[j] - lm).abs() < 4.5 * se_m,
            "{name}: coordinate {j} mean {} vs derived {lm} (se {se_m})",
            mean[j]
        );
        assert!(
            (var[j] - lv).abs() < 4.5 * se_v,
            "{name}: coordinate {j} variance {} vs derived {lv} (se {se_v})",
            var[j]
        );
    }
    let se_c = (law[0].1 * law[1].1 / n).sqrt();
    assert!(cov.abs() < 4.5 * se_c, "{name}: covariance {cov} (se {se_c})");
}

/// TMPD with the exact Gaussian score: its Tweedie moments are exact (`Cov(x_0 | x_t) =
/// (s^2/m) J`), so it runs the DDPM chain on the exact posterior score. The derived law of
/// that chain is within 4% of the exact posterior: the DDPM chain's own discretisation at 400
/// steps (the unobserved coordinate, the plain prior chain, is 3% short in variance too), and
/// the samples follow it.
#[test]
fn tmpd_recovers_the_gaussian_posterior() {
    let (score, obs, p) = setup();
    let o = opts(400, 1);
    let law = [
        chain_law(&p, &o, 0, &guided_step(&p, "tmpd", 0)),
        chain_law(&p, &o, 1, &guided_step(&p, "tmpd", 1)),
    ];
    let (pm, pv) = posterior0();
    assert!(
        (law[0].0 - pm).abs() < 0.02 * pv.sqrt() && (law[0].1 / pv - 1.0).abs() < 0.04,
        "{law:?} vs ({pm}, {pv})"
    );
    assert!(
        (law[1].0 - MU[1]).abs() < 0.01 && (law[1].1 / C[1] - 1.0).abs() < 0.04,
        "{law:?}"
    );
    let rep = sample_posterior(&score, &obs, &Method::Tmpd, &o, &mut |_, _| {}).unwrap();
    check_law("tmpd", &rep.samples, law);
}

/// Pi-GDM with the paper's update on the Gaussian prior, at 20 steps (the paper's regime is
/// tens of steps): the derived law of its chain (the fixed-size correction `m' m r_t^2 g`
/// added to the prior's DDPM step) is `N(2.84, 0.083)`, not the posterior `N(2.78, 0.22)`;
/// with more steps the repeated full corrections pull `A x0_hat` onto `y` (200 steps:
/// `N(3.00, 0.023)`). The samples follow the derived law; without the `m'` factor the law
/// would be `N(2.93, 0.072)`, 20 standard errors away.
#[test]
fn pigdm_follows_its_papers_update() {
    let (score, obs, p) = setup();
    let o = opts(20, 2);
    let law = [
        chain_law(&p, &o, 0, &guided_step(&p, "paper", 0)),
        chain_law(&p, &o, 1, &guided_step(&p, "paper", 1)),
    ];
    // The law moved from the prior N(1, 2) toward y = 3.
    assert!(law[0].0 > 2.0 && law[0].1 < 0.5, "{law:?}");
    let m = Method::Pigdm {
        update: PigdmUpdate::Paper,
    };
    let rep = sample_posterior(&score, &obs, &m, &o, &mut |_, _| {}).unwrap();
    check_law("pigdm", &rep.samples, law);
}

/// Pi-GDM's `r_t^2 = s^2 / (m^2 + s^2)` is `Cov(x_0 | x_t)` of a standard normal prior, so
/// with the `score` update (the likelihood score added to the prior score) and a `N(0, 1)`
/// prior it is exact too: the derived law is the posterior `N(y / (1 + sigma_y^2),
/// sigma_y^2 / (1 + sigma_y^2))` to 1%, and the samples follow it. With the `N(1, 2)`
/// coordinate (`r_t^2` wrong) the derived law is not the posterior, and the samples follow it.
#[test]
fn pigdm_score_update_is_exact_for_a_standard_normal_prior() {
    let (score, obs, p) = setup();
    let o = opts(400, 3);
    let m = Method::Pigdm {
        update: PigdmUpdate::Score,
    };
    let law = [
        chain_law(&p, &o, 0, &guided_step(&p, "score", 0)),
        chain_law(&p, &o, 1, &guided_step(&p, "score", 1)),
    ];
    let rep = sample_posterior(&score, &obs, &m, &o, &mut |_, _| {}).unwrap();
    check_law("pigdm score", &rep.samples, law);
    let (pm, pv) = posterior0();
    assert!(
        (law[0].0 - pm).abs() > 0.02 || (law[0].1 / pv - 1.0).abs() > 0.05,
        "{law:?}"
    );
    // Standard normal prior on the observed coordinate.
    let law1 = GaussianMixture::gaussian(vec![0.0, 0.0], Covariance::Diagonal(vec![1.0, 1.0])).unwrap();
    let score1 = MixtureScore::new(Arc::new(law1), p.clone());
    let rep = sample_posterior(&score1, &obs, &m, &o, &mut |_, _| {}).unwrap();
    let (mean, var, _) = moments(&rep.samples);
    let (em, ev) = (
        Y / (1.0 + SIGMA_Y * SIGMA_Y),
        SIGMA_Y * SIGMA_Y / (1.0 + SIGMA_Y * SIGMA_Y),
    );
    let n = N as f64;
    assert!(
        (mean[0] - em).abs() < 4.5 * (ev / n).sqrt() + 0.01 * ev.sqrt(),
        "{mean:?} vs {em}"
    );
    assert!(
        (var[0] - ev).abs() < 4.5 * ev * (2.0 / n).sqrt() + 0.01 * ev,
        "{var:?} vs {ev}"
    );
}

/// The DDRM chain on coordinate `j` with `(eta, eta_b, eta_c)`, in the VE scale `u = x / m`
/// (Kawar et al. 2022, Eq. 7-8; the mask has `s_1 = 1`, so `ybar = y`, `sigma_1 = sigma_y`).
fn ddrm_law(p: &Process, o: &PosteriorOptions, j: usize, eta: [f64; 3]) -> (f64, f64) {
    let ts = o.grid.times(p, o.steps, o.t_min, p.t_max()).unwrap();
    let s1 = SIGMA_Y;
    let sg_t = p.sigma(ts[0]);
    let (mut mean, mut var) = if j == 0 && sg_t > s1 {
        (Y, sg_t * sg_t - s1 * s1)
    } else {
        (0.0, sg_t * sg_t)
    };
    for w in ts.windows(2) {
        let (t, t1) = (w[0], w[1]);
        let (sg, sg1, m) = (p.sigma(t), p.sigma(t1), p.m(t));
        let (_, (ja, jb), _) = prior_at(p, t, j);
        // x0_hat as a function of u (x = m u).
        let x0 = |u: f64| ja * m * u + jb;
        let (f, h, sd) = if j == 1 {
            let c = (1.0 - eta[2] * eta[2]).sqrt();
            let (f, h) = affine(|u| x0(u) + c * sg1 * (u - x0(u)) / sg);
            (f, h, eta[2] * sg1)
        } else if sg1 < s1 {
            let c = (1.0 - eta[0] * eta[0]).sqrt();
            let (f, h) = affine(|u| x0(u) + c * sg1 * (Y - x0(u)) / s1);
            (f, h, eta[0] * sg1)
        } else {
            let (f, h) = affine(|u| (1.0 - eta[1]) * x0(u) + eta[1] * Y);
            (f, h, (sg1 * sg1 - eta[1] * eta[1] * s1 * s1).max(0.0).sqrt())
        };
        mean = f * mean + h;
        var = f * f * var + sd * sd;
    }
    let m_min = p.m(o.t_min);
    let (_, (a, b), _) = prior_at(p, o.t_min, j);
    (a * m_min * mean + b, (a * m_min).powi(2) * var)
}

/// DDRM with `eta = eta_b = eta_c = 1` and with the defaults `(0.85, 1, 1)` on the diagonal
/// problem: the samples follow the derived law of the chain. The law is not the posterior
/// `N(2.778, 0.222)` with this many steps: with `eta_b = 1` the observed direction is reset to
/// `y + sqrt(sigma_t^2 - sigma_y^2) z` until `sigma_t` reaches `sigma_y`; below, `eta = 1`
/// gives the memoryless `x0_hat + sigma' z`, which shrinks toward the prior mean by
/// `c / (c + sigma^2)` per step and forgets `y` (mean 1.20, variance 0.97), while `eta = 0.85`
/// pulls toward `y` at every step (mean 2.91, variance 0.026). On the unobserved coordinate
/// `eta_c = 1` gives variance `c/2` (0.243 for 0.5). Both differ from the prior chain's law
/// by many standard errors.
#[test]
fn ddrm_follows_its_derived_law() {
    let (score, obs, p) = setup();
    let (pm, _) = posterior0();
    for (i, eta) in [[1.0, 1.0, 1.0], [0.85, 1.0, 1.0]].into_iter().enumerate() {
        let o = opts(400, 4 + i as u64);
        let law = [ddrm_law(&p, &o, 0, eta), ddrm_law(&p, &o, 1, eta)];
        assert!(
            (law[1].0 - MU[1]).abs() < 0.01 && (law[1].1 / (0.5 * C[1]) - 1.0).abs() < 0.05,
            "{law:?}"
        );
        if eta[0] < 1.0 {
            assert!(law[0].0 > MU[0] + 0.75 * (pm - MU[0]), "{law:?}");
        }
        let m = Method::Ddrm {
            eta: eta[0],
            eta_b: eta[1],
            eta_c: eta[2],
        };
        let rep = sample_posterior(&score, &obs, &m, &o, &mut |_, _| {}).unwrap();
        check_law(&format!("ddrm {eta:?}"), &rep.samples, law);
    }
}

/// DPS on the Gaussian problem (its normalised step is not affine, so no closed law): the
/// observed coordinate moves from the prior mean toward `y` with the right sign, its error
/// to the posterior mean shrinks to under a quarter of the prior's, and the unobserved
/// coordinate keeps the prior mean; a method that ignored `y` fails the first two.
#[test]
fn dps_moves_toward_the_observation() {
    let (score, obs, _) = setup();
    let o = opts(400, 6);
    let rep = sample_posterior(&score, &obs, &"dps".parse::<Method>().unwrap(), &o, &mut |_, _| {}).unwrap();
    let (mean, var, _) = moments(&rep.samples);
    let (pm, _) = posterior0();
    let n = N as f64;
    assert!(mean[0] > MU[0] + 0.5 * (pm - MU[0]), "dps mean {mean:?}");
    assert!((mean[0] - pm).abs() < 0.25 * (pm - MU[0]), "dps mean {mean:?} vs {pm}");
    assert!(
        (mean[1] - MU[1]).abs() < 4.5 * (var[1] / n).sqrt() + 0.02,
        "dps mean {mean:?}"
    );
}

/// On small mixture problems of the benchmark's recipe (dx = 3, dy = 1, 25 components),
/// every method's samples are closer to the exact posterior (sliced Wasserstein, 1000
/// samples, noise floor about 0.1) than prior samples are on each problem, and by a factor
/// 0.6 over the problems (measured: 0.33 to 0.41).
#[test]
fn every_guidance_method_beats_the_prior_on_a_mixture() {
    let noise = Noise::new(11);
    let sw = SlicedOptions::default();
    let n = 1000;
    let tensor = |x: Vec<f64>| Tensor::from_vec(x, (n, 3), &Device::Cpu).unwrap();
    let mut checked = 0;
    let (mut totals, mut base_total) = ([0.0; 4], 0.0);
    for index in 0..3u64 {
        let (prior, obs) = gmm_problem(3, 1, &noise, index).unwrap();
        let post = ExactPosterior::new(&prior, &obs.op, &obs.y, obs.sigma_y).unwrap();
        let reference = tensor(post.sample(n, &noise, 100 + index));
        let base = sliced_wasserstein(&tensor(prior.sample(n, &noise, 200 + index)), &reference, &sw).unwrap();
        if base < 1.0 {
            // The observation barely moves this posterior: nothing to beat.
            continue;
        }
        checked += 1;
        let score = MixtureScore::new(Arc::new(prior.clone()), default_process(prior.radius()));
        for (k, name) in ["dps", "pigdm", "tmpd", "ddrm"].into_iter().enumerate() {
            let m: Method = name.parse().unwrap();
            let o = PosteriorOptions {
                n,
                steps: 200,
                seed: index,
                ..Default::default()
            };
            let rep = sample_posterior(&score, &obs, &m, &o, &mut |_, _| {}).unwrap();
            let d = sliced_wasserstein(&tensor(rep.samples), &reference, &sw).unwrap();
            assert!(d < base, "problem {index}: {name} SW {d} vs prior {base}");
            totals[k] += d;
        }
        base_total += base;
    }
    assert!(checked >= 2);
    for (name, t) in ["dps", "pigdm", "tmpd", "ddrm"].iter().zip(totals) {
        assert!(t < 0.6 * base_total, "{name}: total SW {t} vs prior {base_total}");
    }
}
