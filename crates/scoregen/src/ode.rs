//! Dormand–Prince 5(4) for the probability-flow ODE (Dormand & Prince 1980): the
//! fifth-order solution with an embedded fourth-order error estimate, first-same-as-last,
//! and step-size control as in Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4 (the
//! solver of score_sde and SciPy's `RK45`). One system of `y` values (all particles or rows
//! together) shares each step; integration runs forward or backward in time.
//!
//! Used by [`crate::likelihood`] (the PF-ODE with the divergence integral) and by the
//! [`crate::sample::Sampler::Rk45`] sampler (the PF-ODE from `T` down to `t_min`).

use crate::{Error, Result};

/// A system `dy/dt = v(t, y)` on a flat vector `y`.
pub trait OdeSystem {
    /// `v(t, y)`, as long as `y`; a non-finite value is the system's own error to report.
    fn eval(&self, t: f64, y: &[f64]) -> Result<Vec<f64>>;
}

/// What a solve took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OdeStats {
    /// Evaluations of `v`.
    pub evaluations: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps.
    pub rejected: usize,
}

// Dormand–Prince 5(4) coefficients (Dormand & Prince 1980; Hairer, Nørsett & Wanner, Table 5.2).
const C: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Fifth-order weights minus the embedded fourth-order ones (the error estimate), for
/// `k1..k7`.
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// One Dormand–Prince step of size `h` (negative: backward) from `(t, y)` with
/// `k1 = v(t, y)`: the fifth-order solution, the error estimate `y5 - y4`, and
/// `k7 = v(t + h, y5)` (first-same-as-last).
pub fn dopri_step(
    sys: &dyn OdeSystem,
    t: f64,
    y: &[f64],
    k1: &[f64],
    h: f64,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut ks: Vec<Vec<f64>> = vec![k1.to_vec()];
    let mut y5 = Vec::new();
    for (stage, a) in A.iter().enumerate() {
        let yi: Vec<f64> = (0..y.len())
            .map(|i| y[i] + h * a.iter().zip(&ks).map(|(a, k)| a * k[i]).sum::<f64>())
            .collect();
        let k = sys.eval(t + C[stage] * h, &yi)?;
        if stage == 5 {
            y5 = yi;
        }
        ks.push(k);
    }
    let err: Vec<f64> = (0..y.len())
        .map(|i| h * E.iter().zip(&ks).map(|(e, k)| e * k[i]).sum::<f64>())
        .collect();
    let k7 = ks.pop().expect("seven stages");
    Ok((y5, err, k7))
}

/// Integrates `sys` from `t0` to `t1` (either direction) in place with error control: a step
/// is accepted when the RMS of `err_i / (atol + rtol max(|y_i|, |y_i'|))` is at most 1, and
/// the next step is the last one times `0.9 err^(-1/5)` within `[0.2, 5]`. Errors: more than
/// `max_steps` steps, or a step size that underflows ([`Error::Numerical`]).
pub fn solve_adaptive(
    sys: &dyn OdeSystem,
    y: &mut Vec<f64>,
    t0: f64,
    t1: f64,
    rtol: f64,
    atol: f64,
    max_steps: usize,
) -> Result<OdeStats> {
    let span = (t1 - t0).abs();
    let dir = (t1 - t0).signum();
    let scale = |a: &[f64], b: &[f64], i: usize| atol + rtol * a[i].abs().max(b[i].abs());
    let rms = |v: &[f64], a: &[f64], b: &[f64]| -> f64 {
        (v.iter()
            .enumerate()
            .map(|(i, e)| (e / scale(a, b, i)).powi(2))
            .sum::<f64>()
            / v.len().max(1) as f64)
            .sqrt()
    };
    let mut k1 = sys.eval(t0, y)?;
    let mut stats = OdeStats {
        evaluations: 1,
        ..Default::default()
    };
    // Initial step (Hairer, Nørsett & Wanner, §II.4): |h| = 0.01 |y| / |y'|.
    let (n0, n1) = (rms(y, y, y), rms(&k1, y, y));
    let mut h = if n0 < 1e-5 || n1 < 1e-5 { 1e-6 } else { 0.01 * n0 / n1 };
    h = h.min(span);
    let mut done = 0.0;
    while done < span {
        if stats.accepted + stats.rejected >= max_steps {
            return Err(Error::Numerical(format!(
                "ODE solver: {max_steps} steps reached t = {:.3e} of {t1}; loosen the tolerances or use fixed steps",
                t0 + dir * done
            )));
        }
        let last = done + h >= span * (1.0 - 1e-12);
        let step = if last { span - done } else { h };
        let t = t0 + dir * done;
        let (y5, err, k7) = dopri_step(sys, t, y, &k1, dir * step)?;
        stats.evaluations += 6;
        let e = rms(&err, y, &y5);
        if e <= 1.0 {
            done = if last { span } else { done + step };
            *y = y5;
            k1 = k7;
            stats.accepted += 1;
        } else {
            stats.rejected += 1;
        }
        let factor = if e == 0.0 {
            5.0
        } else {
            (0.9 * e.powf(-0.2)).clamp(0.2, 5.0)
        };
        h = step * if e <= 1.0 { factor } else { factor.min(1.0) };
        if h.is_nan() || h < 1e-14 * span.max(t0.abs()).max(t1.abs()) {
            return Err(Error::Numerical(format!(
                "ODE solver: the step size underflowed at t = {:.3e}",
                t0 + dir * done
            )));
        }
    }
    Ok(stats)
}

/// Fifth-order Dormand–Prince steps over the given times (increasing or decreasing), without
/// error control.
pub fn solve_fixed(sys: &dyn OdeSystem, y: &mut Vec<f64>, times: &[f64]) -> Result<OdeStats> {
    let mut k1 = sys.eval(times[0], y)?;
    let mut stats = OdeStats {
        evaluations: 1,
        ..Default::default()
    };
    for w in times.windows(2) {
        let (y5, _, k7) = dopri_step(sys, w[0], y, &k1, w[1] - w[0])?;
        stats.evaluations += 6;
        stats.accepted += 1;
        *y = y5;
        k1 = k7;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dy/dt = lambda y` (and a rotation), exact solutions known.
    struct Linear(f64);
    impl OdeSystem for Linear {
        fn eval(&self, _t: f64, y: &[f64]) -> Result<Vec<f64>> {
            Ok(vec![self.0 * y[0], -y[2], y[1]])
        }
    }

    #[test]
    fn matches_exact_solutions_both_ways_and_converges_at_fifth_order() {
        for (t0, t1) in [(0.0, 2.0), (2.0, 0.0)] {
            let mut y = vec![1.0, 1.0, 0.0];
            let st = solve_adaptive(&Linear(-0.7), &mut y, t0, t1, 1e-10, 1e-10, 10_000).unwrap();
            let dt: f64 = t1 - t0;
            assert!((y[0] - (-0.7 * dt).exp()).abs() < 1e-8, "{y:?}");
            assert!(
                (y[1] - dt.cos()).abs() < 1e-8 && (y[2] - dt.sin()).abs() < 1e-8,
                "{y:?}"
            );
            assert!(st.accepted > 0);
        }
        // Fixed steps on dy/dt = -3 y: halving h divides the error by about 2^5.
        let err = |n: usize| {
            let times: Vec<f64> = (0..=n).map(|i| 2.0 * i as f64 / n as f64).collect();
            let mut y = vec![1.0, 1.0, 0.0];
            solve_fixed(&Linear(-3.0), &mut y, &times).unwrap();
            (y[0] - (-6f64).exp()).abs()
        };
        for n in [32, 64] {
            let ratio = err(n) / err(2 * n);
            assert!(
                ratio > 24.0 && ratio < 40.0,
                "error ratio {ratio} from {n} to {} steps",
                2 * n
            );
        }
    }

    #[test]
    fn too_many_steps_is_an_error() {
        let mut y = vec![1.0, 1.0, 0.0];
        assert!(solve_adaptive(&Linear(-50.0), &mut y, 0.0, 10.0, 1e-12, 1e-12, 5).is_err());
    }
}
