"""JAX-CPU peer of `scoregen bench sample` (Euler-Maruyama, exact score of `grid25(d)`).

The same computation as crates/scoregen-cli/src/cmd/bench/sample.rs -> sample.rs -> score/mixture.rs:

* law: GaussianMixture::grid25(d): 25 components, means (8i, 8j, 8i, 8j, ...) for i, j in -2..2,
  identity covariances, weights w_k = g_k^2 / sum g^2 (g ~ N(0, 1); the project draws g from its
  own stream, so the weights differ, the cost does not);
* process: OU with beta = 2, m(t) = exp(-t), s(t)^2 = 1 - exp(-2t), horizon
  T = clamp(ln(max(radius, 1) / 0.01), 5, 12) (sample.rs `default_process`);
* grid: quadratic from T down to t_min = 1e-3 (process.rs `TimeGrid::Quadratic`);
* step (b = 1): x <- x + (x + 2 score(t0, x)) h + sqrt(2 h) z, h = t0 - t1;
* score of the diffused isotropic mixture, with log-sum-exp responsibilities:
  v = m^2 + s^2, log p_k(x) = log w_k - |x - m mu_k|^2 / (2 v) + const,
  score(x) = sum_k r_k(x) (m mu_k - x) / v;
* a final Tweedie step x0 = (x + s^2 score) / m at t_min; f64 throughout.

`jit` + `lax.fori_loop`; the noise of each step is drawn inside the loop. Prints
particle-steps/s, the median of `runs` timed runs after one compile-and-warm-up run.

Usage: python jax_gmm_sampler.py [--dims 10,100] [--particles 10000] [--steps 50] [--runs 5]
"""
import argparse
import time

import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

T_MIN = 1e-3


def grid25(d):
    g = np.random.default_rng(0).standard_normal(25)
    idx = [(i, j) for i in range(-2, 3) for j in range(-2, 3)]
    mu = np.array([[8.0 * (i if c % 2 == 0 else j) for c in range(d)] for i, j in idx])
    return np.log(g * g / np.sum(g * g)), mu


def make_sampler(d, n, steps):
    logw, mu = grid25(d)
    radius = np.max(np.linalg.norm(mu, axis=1)) + 1.0
    horizon = float(np.clip(np.log(max(radius, 1.0) / 0.01), 5.0, 12.0))
    u = np.arange(steps + 1) / steps
    ts = T_MIN + (horizon - T_MIN) * (1.0 - u) ** 2
    ts[0], ts[-1] = horizon, T_MIN
    logw_j, mu_j, ts_j = jnp.asarray(logw), jnp.asarray(mu), jnp.asarray(ts)
    mu2 = jnp.sum(mu_j * mu_j, axis=1)

    def score(t, x):
        m = jnp.exp(-t)
        v = m * m - jnp.expm1(-2.0 * t)  # m^2 + s^2
        # |x - m mu_k|^2 = |x|^2 - 2 m x.mu_k + m^2 |mu_k|^2; |x|^2 is common to all k
        # (equal variances) and cancels in the responsibilities.
        logits = logw_j + (m * (x @ mu_j.T) - 0.5 * m * m * mu2) / v
        r = jax.nn.softmax(logits, axis=1)
        return (m * (r @ mu_j) - x) / v

    @jax.jit
    def run(key):
        key0, key1 = jax.random.split(key)
        x = jnp.sqrt(-jnp.expm1(-2.0 * horizon)) * jax.random.normal(key0, (n, d), dtype=jnp.float64)

        def body(k, x):
            t0, t1 = ts_j[k], ts_j[k + 1]
            h = t0 - t1
            z = jax.random.normal(jax.random.fold_in(key1, k), (n, d), dtype=jnp.float64)
            return x + (x + 2.0 * score(t0, x)) * h + jnp.sqrt(2.0 * h) * z

        x = jax.lax.fori_loop(0, steps, body, x)
        s2 = -jnp.expm1(-2.0 * T_MIN)
        return (x + s2 * score(T_MIN, x)) / jnp.exp(-T_MIN)

    return run, mu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="10,100")
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    for d in [int(v) for v in a.dims.split(",")]:
        run, mu = make_sampler(d, a.particles, a.steps)
        x = np.asarray(run(jax.random.PRNGKey(0)))  # compile and warm up
        rates = []
        for r in range(a.runs):
            t0 = time.perf_counter()
            x = np.asarray(run(jax.random.PRNGKey(r + 1)))
            rates.append(a.particles * a.steps / (time.perf_counter() - t0))
        # Sanity: share of samples within 2 sqrt(d) of some mean (close to 1 when right).
        d2 = np.sum(x * x, 1)[:, None] - 2.0 * x @ mu.T + np.sum(mu * mu, 1)[None]
        near = float(np.mean(d2.min(1) < 4.0 * d))
        print(f"jax d={d}: {np.median(rates):.0f} particle-steps/s (median of {a.runs}; "
              f"runs {', '.join(f'{v:.0f}' for v in rates)}) near-mode {near:.3f}", flush=True)


if __name__ == "__main__":
    main()
