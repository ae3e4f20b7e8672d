//! Samplers against exact answers for Gaussian data.
//!
//! For Gaussian data `N(mu, diag(lambda))` the score is affine in `x`, so every step of
//! Euler–Maruyama, the exponential integrator, Heun, DDPM and DDIM is an affine map
//! `x' = A x + c + sigma z` per coordinate. We read `A`, `c`, `sigma` off the sampler's own
//! `predictor_step` (inputs x = 0 / 1, z = 0 / 1) and propagate mean and variance exactly:
//! the law of the discretised chain, with no Monte-Carlo error. Started from the exact
//! `p_T`, the continuous reverse process ends exactly at `p_{t_min} = N(m mu, m^2 lambda + s^2)`,
//! so the distance between the two laws is the discretisation error alone.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use scoregen::process::{Process, TimeGrid};
use scoregen::rng::{stream, Noise, Purpose};
use scoregen::sample::{predictor_step, sample, sample_from, BFn, SampleOptions, Sampler};
use scoregen::score::{Covariance, GaussianMixture, MixtureScore, Score};

const MU: [f64; 3] = [1.0, -0.5, 0.3];
const LAM: [f64; 3] = [0.5, 1.0, 2.0];

fn gaussian_score(p: Process) -> MixtureScore {
    let law = GaussianMixture::gaussian(MU.to_vec(), Covariance::Diagonal(LAM.to_vec())).unwrap();
    MixtureScore::new(Arc::new(law), p)
}

fn rows(v: &[[f64; 3]]) -> Tensor {
    Tensor::from_vec(v.concat(), (v.len(), 3), &Device::Cpu).unwrap()
}

/// Exact law (per-coordinate mean and variance) of the chain after `steps` steps from
/// `N(mean0, var0)`, using the sampler's own step.
fn chain_law(
    score: &MixtureScore,
    sampler: &Sampler,
    ts: &[f64],
    mean0: [f64; 3],
    var0: [f64; 3],
) -> ([f64; 3], [f64; 3]) {
    let (mut mean, mut var) = (mean0, var0);
    let zero = rows(&[[0.0; 3]]);
    let one = rows(&[[1.0; 3]]);
    for w in ts.windows(2) {
        let f = |x: &Tensor, z: &Tensor| -> Vec<f64> {
            predictor_step(score, sampler, w[0], w[1], x, Some(z))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let c = f(&zero, &zero);
        let a1 = f(&one, &zero);
        let s1 = f(&zero, &one);
        for i in 0..3 {
            let a = a1[i] - c[i];
            let sig = s1[i] - c[i];
            mean[i] = a * mean[i] + c[i];
            var[i] = a * a * var[i] + sig * sig;
        }
    }
    (mean, var)
}

fn target(p: &Process, t: f64) -> ([f64; 3], [f64; 3]) {
    let (m, s) = (p.m(t), p.s(t));
    (
        std::array::from_fn(|i| m * MU[i]),
        std::array::from_fn(|i| m * m * LAM[i] + s * s),
    )
}

fn law_error(p: &Process, sampler: &Sampler, steps: usize) -> f64 {
    let score = gaussian_score(p.clone());
    let t_min = 1e-2;
    let ts = TimeGrid::Uniform.times(p, steps, t_min, p.t_max()).unwrap();
    let (m0, v0) = target(p, p.t_max());
    let (m, v) = chain_law(&score, sampler, &ts, m0, v0);
    let (mt, vt) = target(p, t_min);
    (0..3).map(|i| (m[i] - mt[i]).abs() + (v[i] - vt[i]).abs()).sum()
}

fn observed_order(p: &Process, sampler: &Sampler) -> Vec<f64> {
    // VE steps are huge at the top of the grid (g^2 h ~ 60 with 100 uniform steps): start finer.
    let base = if matches!(p, Process::Ve { .. }) { 800 } else { 100 };
    let errs: Vec<f64> = [base, 2 * base, 4 * base, 8 * base]
        .iter()
        .map(|&n| law_error(p, sampler, n))
        .collect();
    errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
}

#[test]
fn discretisation_error_shrinks_at_the_expected_order() {
    // (Euler–Maruyama with b = 1 on VE(0.01, 20) has a nearly cancelling first-order
    // coefficient and reaches order 1 only past 6400 steps; VE(0.01, 10) is asymptotic sooner.)
    let processes = [
        Process::ou(2.0, 5.0),
        Process::ddpm_linear(),
        Process::sub_vp_linear(),
        Process::ve(0.01, 10.0),
    ];
    let cases: Vec<(Sampler, f64)> = vec![
        (Sampler::EulerMaruyama { b: BFn::Const(1.0) }, 1.0),
        (Sampler::EulerMaruyama { b: BFn::Const(0.0) }, 1.0),
        (Sampler::ExpIntegrator { b: BFn::Const(1.0) }, 1.0),
        (Sampler::ExpIntegrator { b: BFn::Const(0.0) }, 1.0),
        (Sampler::Heun, 2.0),
        (Sampler::Ddpm, 1.0),
        (Sampler::Ddim { eta: 0.0 }, 1.0),
    ];
    for p in &processes {
        for (s, order) in &cases {
            let o = observed_order(p, s);
            let last = *o.last().unwrap();
            assert!(
                (last - order).abs() < 0.15 * order,
                "{p:?} {s:?}: observed orders {o:?}, expected {order}"
            );
        }
    }
}

#[test]
fn exact_chain_law_converges_to_target_for_every_b() {
    // b = 0 (PF-ODE), 1 (reverse SDE), 2.5 and a time-varying b all reach p_{t_min}.
    let p = Process::ou(2.0, 5.0);
    let bs = [
        BFn::Const(0.0),
        BFn::Const(1.0),
        BFn::Const(2.5),
        BFn::Fn(Arc::new(|u: f64| 0.5 + 0.3 * u)),
    ];
    for b in bs {
        for s in [
            Sampler::EulerMaruyama { b: b.clone() },
            Sampler::ExpIntegrator { b: b.clone() },
        ] {
            // First order, with a constant growing like 1 + b^2: 4x the steps, 1/4 the error.
            let (e1, e2) = (law_error(&p, &s, 4000), law_error(&p, &s, 16000));
            assert!(
                e2 < 5e-3 && (e1 / e2 - 4.0).abs() < 0.6,
                "{s:?}: law errors {e1} -> {e2}"
            );
        }
    }
}

/// Monte-Carlo check of the real samplers (noise included) on a full-covariance Gaussian.
fn mc_check(sampler: &Sampler, steps: usize, n: usize, seed: u64) {
    let sigma = [2.0, 0.6, 0.6, 1.0];
    let mu = [1.0, -2.0];
    let law = GaussianMixture::gaussian(mu.to_vec(), Covariance::Full(sigma.to_vec())).unwrap();
    let p = Process::ou(2.0, 6.0);
    let score = MixtureScore::new(Arc::new(law), p.clone());
    let opts = SampleOptions {
        steps,
        t_min: 1e-3,
        denoise: false,
        seed,
        ..Default::default()
    };
    let x = sample(&score, sampler, &opts, n, &mut |_, _| {}).unwrap();
    let v: Vec<Vec<f64>> = x.to_vec2().unwrap();
    let (m, s) = (p.m(1e-3), p.s(1e-3));
    let tm = [m * mu[0], m * mu[1]];
    let tc = [
        m * m * sigma[0] + s * s,
        m * m * sigma[1],
        m * m * sigma[2],
        m * m * sigma[3] + s * s,
    ];
    let nf = n as f64;
    let mean: Vec<f64> = (0..2).map(|j| v.iter().map(|r| r[j]).sum::<f64>() / nf).collect();
    let cov = |a: usize, b: usize| v.iter().map(|r| (r[a] - mean[a]) * (r[b] - mean[b])).sum::<f64>() / (nf - 1.0);
    // 4.5 standard errors: Var(mean_j) = C_jj / n, Var(cov_ab) = (C_aa C_bb + C_ab^2) / n.
    for j in 0..2 {
        let se = (tc[3 * j] / nf).sqrt();
        assert!(
            (mean[j] - tm[j]).abs() < 4.5 * se,
            "{sampler:?}: mean[{j}] = {} vs {}",
            mean[j],
            tm[j]
        );
    }
    for (a, b) in [(0, 0), (0, 1), (1, 1)] {
        let c = tc[2 * a + b];
        let se = ((tc[3 * a] * tc[3 * b] + c * c) / nf).sqrt();
        assert!(
            (cov(a, b) - c).abs() < 4.5 * se,
            "{sampler:?}: cov[{a}{b}] = {} vs {c}",
            cov(a, b)
        );
    }
}

#[test]
fn every_sampler_matches_a_gaussian_target_within_monte_carlo_error() {
    let n = 20_000;
    let samplers = vec![
        (Sampler::EulerMaruyama { b: BFn::Const(1.0) }, 1000),
        (Sampler::EulerMaruyama { b: BFn::Const(0.0) }, 1000),
        (Sampler::EulerMaruyama { b: BFn::Const(2.0) }, 2000),
        (Sampler::ExpIntegrator { b: BFn::Const(1.0) }, 1000),
        (Sampler::ExpIntegrator { b: BFn::Const(0.5) }, 1000),
        (Sampler::Heun, 200),
        (Sampler::Ddpm, 1000),
        (Sampler::Ddim { eta: 0.0 }, 1000),
        (Sampler::Ddim { eta: 0.5 }, 1000),
        // ALD's variance lags by about ln(r)/(M delta) (module docs): 2000 levels make that
        // 1%, well inside the Monte-Carlo tolerance of 4.5 * C sqrt(2/n) = 6%.
        (
            Sampler::AnnealedLangevin {
                steps_per_level: 10,
                step_ratio: 0.2,
            },
            20000,
        ),
        (
            Sampler::PredictorCorrector {
                predictor: Box::new(Sampler::EulerMaruyama { b: BFn::Const(1.0) }),
                snr: 0.16,
                corrector_steps: 1,
            },
            1000,
        ),
        (
            Sampler::PredictorCorrector {
                predictor: Box::new(Sampler::Ddpm),
                snr: 0.16,
                corrector_steps: 1,
            },
            1000,
        ),
    ];
    for (i, (s, steps)) in samplers.iter().enumerate() {
        mc_check(s, *steps, n, 100 + i as u64);
    }
}

#[test]
fn same_seed_same_bytes_and_prefix_property() {
    let score = gaussian_score(Process::ou(2.0, 5.0));
    let s = Sampler::EulerMaruyama { b: BFn::Const(1.0) };
    let opts = SampleOptions {
        steps: 50,
        seed: 3,
        ..Default::default()
    };
    let a: Vec<f64> = sample(&score, &s, &opts, 100, &mut |_, _| {})
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = sample(&score, &s, &opts, 100, &mut |_, _| {})
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let c: Vec<f64> = sample(
        &score,
        &s,
        &SampleOptions {
            seed: 4,
            ..opts.clone()
        },
        100,
        &mut |_, _| {},
    )
    .unwrap()
    .flatten_all()
    .unwrap()
    .to_vec1()
    .unwrap();
    assert_ne!(a, c);
    // The first 40 particles of a run with 100 equal a run with 40.
    let e: Vec<f64> = sample(&score, &s, &opts, 40, &mut |_, _| {})
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(&a[..120], &e[..]);
}

#[test]
fn divergence_is_reported_not_hidden() {
    // Euler–Maruyama with 3 steps on a stiff target blows up: an error, not NaN output.
    let law = GaussianMixture::gaussian(vec![0.0], Covariance::Scalar(1e-8)).unwrap();
    let score = MixtureScore::new(Arc::new(law), Process::ou(2.0, 5.0));
    let x = Noise::new(0)
        .normal_tensor(stream(Purpose::Init, 0), 10, 1, candle_core::DType::F64, &Device::Cpu)
        .unwrap();
    let opts = SampleOptions {
        steps: 40,
        t_min: 1e-6,
        denoise: false,
        ..Default::default()
    };
    let r = sample_from(
        &score,
        &Sampler::EulerMaruyama { b: BFn::Const(1.0) },
        &opts,
        x.affine(1e300, 0.0).unwrap(),
        &mut |_, _| {},
    );
    assert!(r.is_err(), "expected a divergence error");
    assert_eq!(score.dim(), 1);
}

/// The DDPM / DDIM step of the samplers is [`Process::reverse_kernel`], the kernel every
/// posterior method and the imputer move by: one step of `predictor_step` equals
/// `ax x + kappa score + sd z` bit for bit (so the exact chain laws above cover the
/// posterior kernels), and one step of `sample_posterior` with nothing observed has the
/// Gaussian law of that kernel: from `x_T ~ N(0, s(T)^2)` and the affine Gaussian score
/// `-(x - m mu) / c`, `c = m^2 lambda + s^2`, it is `N(kappa m mu / c, A^2 s(T)^2 + var)`
/// with `A = ax - kappa / c` (tolerance 4.5 standard errors of the mean and variance).
#[test]
fn posterior_kernel_is_the_sampler_kernel() {
    use scoregen::inverse::{sample_posterior, Method, Observation, Operator, PosteriorOptions};
    for p in [
        Process::ou(2.0, 5.0),
        Process::ddpm_linear(),
        Process::sub_vp_linear(),
        Process::ve(0.01, 50.0),
    ] {
        let score = gaussian_score(p.clone());
        let x = rows(&[[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]]);
        let z = rows(&[[0.7, 1.1, -0.4], [-2.0, 0.5, 0.25]]);
        for eta in [0.0, 0.5, 1.0] {
            for (a, b) in [(0.7, 0.6), (0.1, 0.05)] {
                let (t0, t1) = (a * p.t_max(), b * p.t_max());
                let k = p.reverse_kernel(t0, t1, eta);
                let got: Vec<f64> = predictor_step(&score, &Sampler::Ddim { eta }, t0, t1, &x, Some(&z))
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let sc: Vec<f64> = score.score(t0, &x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
                let zv: Vec<f64> = z.flatten_all().unwrap().to_vec1().unwrap();
                let want: Vec<f64> = (0..6)
                    .map(|i| {
                        let m = k.mean_of(xv[i], sc[i]);
                        if eta == 0.0 {
                            m
                        } else {
                            m + zv[i] * k.sd()
                        }
                    })
                    .collect();
                assert_eq!(got, want, "{p:?} eta {eta} ({t0}, {t1})");
            }
        }
        // One posterior step from T down to t1 with nothing observed.
        let t1 = 0.5 * p.t_max();
        let n = 20_000;
        let obs = Observation {
            op: Operator::Mask {
                dim: 3,
                observed: Vec::new(),
            },
            y: Vec::new(),
            sigma_y: 0.0,
        };
        let opts = PosteriorOptions {
            n,
            particles: n,
            steps: 1,
            grid: TimeGrid::Uniform,
            t_min: t1,
            denoise: false,
            seed: 4,
            ..Default::default()
        };
        let r = sample_posterior(&score, &obs, &Method::SmcImpute, &opts, &mut |_, _| {}).unwrap();
        let t0 = p.t_max();
        let k = p.reverse_kernel(t0, t1, 1.0);
        let (m0, s0) = (p.m(t0), p.s(t0));
        for j in 0..3 {
            let c = m0 * m0 * LAM[j] + s0 * s0;
            let a = k.ax - k.kappa / c;
            let mean = k.kappa * m0 * MU[j] / c;
            let var = a * a * p.prior_std().powi(2) + k.var;
            let col: Vec<f64> = r.samples.iter().skip(j).step_by(3).copied().collect();
            let mu = col.iter().sum::<f64>() / n as f64;
            let v = col.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1) as f64;
            let (se_m, se_v) = ((var / n as f64).sqrt(), var * (2.0 / n as f64).sqrt());
            assert!((mu - mean).abs() < 4.5 * se_m, "{p:?} coord {j}: mean {mu} vs {mean}");
            assert!((v - var).abs() < 4.5 * se_v, "{p:?} coord {j}: var {v} vs {var}");
        }
    }
}

/// A score with a non-finite value.
struct NanScore(MixtureScore);

impl Score for NanScore {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn process(&self) -> &Process {
        self.0.process()
    }
    fn score(&self, _t: f64, x: &Tensor) -> scoregen::Result<Tensor> {
        Ok(x.affine(f64::NAN, 0.0)?)
    }
}

/// The Langevin corrector stops with a numerical error on a non-finite score (it used to
/// skip the step, hiding the divergence).
#[test]
fn corrector_stops_on_a_non_finite_score() {
    use scoregen::sample::langevin_corrector_step;
    let score = NanScore(gaussian_score(Process::ou(2.0, 5.0)));
    let x = rows(&[[0.1, 0.2, 0.3]]);
    let err = langevin_corrector_step(&score, 1.0, &x, &x, 0.16).unwrap_err();
    assert!(matches!(err, scoregen::Error::Numerical(_)), "{err}");
}

/// The adaptive PF-ODE sampler (`rk45`) on Gaussian data: the flow is affine per
/// coordinate, so two probe rows (x = 0 and x = 1) integrated in the same system give the
/// solver's map `x -> a x + c` exactly; pushing the exact `p_T` through it must give
/// `p_{t_min}` within the ODE tolerance, and a tighter tolerance must do better.
#[test]
fn rk45_transports_the_exact_prior_to_the_data_law() {
    for p in [
        Process::ou(2.0, 8.0),
        Process::sub_vp(2.0, 8.0),
        Process::ve(0.01, 100.0),
    ] {
        let score = gaussian_score(p.clone());
        let t_min = 1e-2;
        let err = |tol: f64| {
            let opts = SampleOptions {
                t_min,
                denoise: false,
                ..Default::default()
            };
            let sampler = Sampler::Rk45 { rtol: tol, atol: tol };
            let out: Vec<f64> = sample_from(&score, &sampler, &opts, rows(&[[0.0; 3], [1.0; 3]]), &mut |_, _| {})
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (m0, v0) = target(&p, p.t_max());
            let (mt, vt) = target(&p, t_min);
            (0..3)
                .map(|i| {
                    let (c, a) = (out[i], out[3 + i] - out[i]);
                    (a * m0[i] + c - mt[i]).abs() + (a * a * v0[i] - vt[i]).abs() / vt[i]
                })
                .fold(0.0, f64::max)
        };
        let (loose, tight) = (err(1e-3), err(1e-7));
        assert!(tight < 1e-4, "{p:?}: error {tight} at tolerance 1e-7");
        assert!(tight < loose, "{p:?}: error {loose} at 1e-3, {tight} at 1e-7");
    }
    // Bad tolerances are refused.
    let score = gaussian_score(Process::ou(2.0, 8.0));
    let bad = Sampler::Rk45 { rtol: 0.0, atol: 1e-5 };
    assert!(sample(&score, &bad, &SampleOptions::default(), 4, &mut |_, _| {}).is_err());
}
