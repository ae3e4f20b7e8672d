#!/usr/bin/env python3
"""DDRM on the Gaussian-mixture posterior benchmark, as the DCPS authors' script runs it,
side by side with `scoregen posterior --method ddrm` on the same problems (paired).

Optional tooling, not run in CI. Needs python3 with numpy and a built `scoregen` binary.

Usage: python3 bench/peers/ddrm_gmm_reference.py --scoregen target/release/scoregen
       [--dx 10] [--problems 40] [--n 2000] [--seed 5000] [--work DIR]
       python3 bench/peers/ddrm_gmm_reference.py --eta-sweep [--problems 30 --n 1000 --seed 1000]
       (the reference with other (eta, eta_b, eta_c); no scoregen runs)

What the reference does (written from reading the DDRM authors' `efficient_generalized_steps`
and the DCPS repository's `gmm.py`, Kawar et al. 2022 and Janati et al. 2024; no code copied):
* the problem recipe of Cardoso et al. 2024: 25 unit-variance components at
  `(8i, 8j, 8i, 8j, ...)`, weights `g^2 / sum g^2`, `A = U diag(s) V_1^T` with the singular
  values replaced by sorted `U(0, 1)`, `sigma_y = U(0, 1) max(s)`, `y = A x* + sigma_y z`;
* the DDPM discretisation of that script: `betas = linspace(0.02, 1e-4, 999)` (descending,
  as written there), `alphas_cumprod = cumprod([1, 1 - betas])`, and its 100-step grid
  (`get_optimal_timesteps_from_singular_values`: even steps in `sqrt(alpha_bar)` down to
  0.01, plus the steps where `sigma_y^2 alpha_bar = (1 - alpha_bar) s_i^2`, then linear to
  the end);
* the exact noise predictor of the mixture evaluated, as there, at `alphas_cumprod[t]`
  while the update uses `alphas_cumprod[t + 1]`;
* DDRM's spectral update with `eta = 0.85`, `eta_b = 1`, `eta_c = 1` and its `p(x_T | y)`
  start.
Each problem also writes a problem file (JSON, `svd` operator) that `scoregen posterior
--method ddrm` reads, at its defaults (1000 steps, quadratic grid) and with `--steps 100`.
Both are scored by SW1 (100 random directions) against the same exact posterior samples; a
second exact set gives the noise floor. The summary has medians with 95% bootstrap
intervals and the paired share of problems where scoregen's SW is the smaller.
"""
import argparse
import json
import os
import subprocess

import numpy as np


def grid_means(dx):
    return np.array([[-8.0 * i, -8.0 * j] * (dx // 2) for i in range(-2, 3) for j in range(-2, 3)])


def mixture_eps(x, alpha_bar, means, log_w):
    """Noise predictor -sqrt(1 - a) grad log p_a(x) of the diffused mixture (unit covariances)."""
    centred = np.sqrt(alpha_bar) * means
    d2 = ((x[:, None, :] - centred[None]) ** 2).sum(-1)
    lr = log_w[None] - 0.5 * d2
    lr -= lr.max(1, keepdims=True)
    r = np.exp(lr)
    r /= r.sum(1, keepdims=True)
    return -np.sqrt(1 - alpha_bar) * (r @ centred - x)


def reference_grid(alphas_cumprod, s, n_steps, var):
    dist = var * alphas_cumprod[None, :] - (1 - alphas_cumprod)[None, :] * s[:, None] ** 2
    crossings = sorted(set(np.abs(dist).argmin(-1).tolist()))
    if crossings and crossings[0] == 0:
        crossings = crossings[1:]
    m = np.sqrt(alphas_cumprod)
    end = np.where(m < 1e-2)[0][0]
    target = (m[0] - m[end]) / (n_steps - 1 - len(crossings))
    steps, last = [0], m[0]
    for i in range(1, end):
        if last - m[i] >= target or i in crossings:
            steps.append(i)
            last = m[i]
    steps += np.ceil(np.linspace(steps[-1], len(alphas_cumprod) - 1, n_steps - len(steps) + 1)).tolist()[1:]
    return np.array(steps, dtype=int)


def ddrm_reference(n, seq, betas, alphas_cumprod, means, log_w, u, s, vt, y, sigma_y, rng,
                   eta=0.85, eta_b=1.0, eta_c=1.0):
    d, dy = vt.shape[0], len(s)
    cum = np.cumprod(1 - np.concatenate([[0.0], betas]))

    def alpha(t):
        return cum[min(t + 1, len(cum) - 1)]

    uty = u.T @ y
    ybar = uty / s
    a_last = alpha(seq[-1])
    sig_last = np.sqrt(1 - a_last) / np.sqrt(a_last)
    big = s * sig_last > sigma_y
    inv = np.zeros(d)
    inv[:dy][big] = sigma_y / s[big]
    init = np.zeros((n, d))
    init[:, :dy][:, big] = ybar[big]
    init = (init + np.sqrt(np.clip(sig_last ** 2 - inv ** 2, 0, None)) * rng.normal(size=(n, d))) / sig_last
    x = init @ vt
    for t, t_next in zip(reversed(seq), reversed([-1] + list(seq[:-1]))):
        a, a_next = alpha(t), alpha(t_next)
        eps = mixture_eps(x, alphas_cumprod[t], means, log_w)
        x0 = (x - eps * np.sqrt(1 - a)) / np.sqrt(a)
        sn = np.sqrt(1 - a_next) / np.sqrt(a_next)
        vx0, veps = x0 @ vt.T, eps @ vt.T
        out = vx0 + np.sqrt(sn ** 2 - (sn * eta_c) ** 2) * veps + sn * eta_c * rng.normal(size=vx0.shape)
        for k in range(dy):
            if s[k] * sn < sigma_y:
                out[:, k] = (vx0[:, k] + np.sqrt(sn ** 2 - (sn * eta) ** 2) * (uty[k] - s[k] * vx0[:, k]) / sigma_y
                             + sn * eta * rng.normal(size=n))
            elif s[k] * sn > sigma_y:
                out[:, k] = (ybar[k] * eta_b + (1 - eta_b) * vx0[:, k]
                             + np.sqrt(sn ** 2 - sigma_y ** 2 / s[k] ** 2 * eta_b ** 2) * rng.normal(size=n))
        x = np.sqrt(a_next) * (out @ vt)
    return x


def problem(dx, dy, rng):
    means = grid_means(dx)
    w = rng.normal(size=25) ** 2
    w /= w.sum()
    u, _, vt = np.linalg.svd(rng.normal(size=(dy, dx)), full_matrices=True)
    s = np.sort(rng.uniform(size=dy))[::-1]
    sigma_y = rng.uniform() * s[0]
    a = u @ np.diag(s) @ vt[:dy]
    x_star = means[rng.choice(25, p=w)] + rng.normal(size=dx)
    y = a @ x_star + sigma_y * rng.normal(size=dy)
    return means, w, a, u, s, vt, sigma_y, y


def posterior_samples(n, means, w, a, sigma_y, y, rng):
    dx = a.shape[1]
    cov = np.linalg.inv(np.eye(dx) + a.T @ a / sigma_y ** 2)
    post_means = (means + (a.T @ y / sigma_y ** 2)[None]) @ cov.T
    c_inv = np.linalg.inv(a @ a.T + sigma_y ** 2 * np.eye(a.shape[0]))
    r = y[None] - means @ a.T
    lw = np.log(w) - 0.5 * np.einsum("ki,ij,kj->k", r, c_inv, r)
    pw = np.exp(lw - lw.max())
    pw /= pw.sum()
    k = rng.choice(25, size=n, p=pw)
    return post_means[k] + rng.normal(size=(n, dx)) @ np.linalg.cholesky(cov).T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scoregen")
    ap.add_argument("--eta-sweep", action="store_true")
    ap.add_argument("--dx", type=int, default=10)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--work", default="ddrm-reference")
    args = ap.parse_args()
    if not args.eta_sweep and not args.scoregen:
        ap.error("--scoregen is needed unless --eta-sweep")
    sweep = [("eta_0.85_b1_c1", 0.85, 1.0, 1.0), ("eta_c_0.85", 0.85, 1.0, 0.85), ("eta_c_0.5", 0.85, 1.0, 0.5),
             ("eta_c_0", 0.85, 1.0, 0.0), ("eta_0.5", 0.5, 1.0, 1.0), ("eta_0.5_c_0.5", 0.5, 1.0, 0.5),
             ("eta_b_0.5", 0.85, 0.5, 1.0)]
    os.makedirs(args.work, exist_ok=True)
    rows = {}
    for p in range(args.problems):
        rng = np.random.default_rng(args.seed + p)
        means, w, a, u, s, vt, sigma_y, y = problem(args.dx, 1, rng)
        ref = posterior_samples(args.n, means, w, a, sigma_y, y, rng)
        ref2 = posterior_samples(args.n, means, w, a, sigma_y, y, rng)
        path = os.path.join(args.work, f"problem{p}.json")
        with open(path, "w") as f:
            json.dump({"prior": {"kind": "gaussian_mixture", "weights": w.tolist(), "means": means.tolist(),
                                 "variance": 1.0},
                       "operator": {"kind": "svd", "u": u.tolist(), "s": s.tolist(), "v": vt[:1].T.tolist()},
                       "y": y.tolist(), "sigma_y": float(sigma_y)}, f)
        dirs = rng.normal(size=(100, args.dx))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

        def sw(x):
            return float(np.abs(np.sort(x @ dirs.T, 0) - np.sort(ref @ dirs.T, 0)).mean())

        row = {"floor": sw(ref2)}
        betas = np.linspace(0.02, 1e-4, 999)
        ac = np.cumprod(np.concatenate([[1.0], 1 - betas]))
        seq = reference_grid(ac, s, 100, sigma_y ** 2)[:-1].tolist()
        if args.eta_sweep:
            for name, eta, eta_b, eta_c in sweep:
                row[name] = sw(ddrm_reference(args.n, seq, betas, ac, means, np.log(w), u, s, vt, y, sigma_y, rng,
                                              eta=eta, eta_b=eta_b, eta_c=eta_c))
        else:
            row["authors_script"] = sw(ddrm_reference(args.n, seq, betas, ac, means, np.log(w), u, s, vt, y,
                                                      sigma_y, rng))
        for name, extra in [] if args.eta_sweep else [("scoregen", []), ("scoregen_100_steps", ["--steps", "100"])]:
            out = os.path.join(args.work, f"out{p}.npy")
            subprocess.run([args.scoregen, "posterior", "--problem", path, "--method", "ddrm", "--n", str(args.n),
                            "--seed", str(p), "--out", out, "--quiet"] + extra, check=True)
            row[name] = sw(np.load(out))
        for k, v in row.items():
            rows.setdefault(k, []).append(v)
        print(p, {k: round(v, 3) for k, v in row.items()}, flush=True)
    boot = np.random.default_rng(0)
    print(f"dx = {args.dx}, {args.problems} problems, n = {args.n}; medians with 95% percentile-bootstrap intervals")
    for k, v in rows.items():
        v = np.array(v)
        meds = [np.median(v[boot.integers(0, len(v), len(v))]) for _ in range(2000)]
        lo, hi = np.percentile(meds, [2.5, 97.5])
        print(f"  {k:20s} median {np.median(v):.3f} [{lo:.3f}, {hi:.3f}]  mean {v.mean():.3f}")
    if args.eta_sweep:
        return
    ours, theirs = np.array(rows["scoregen"]), np.array(rows["authors_script"])
    k, m = int((ours < theirs).sum()), len(ours)
    z, ph = 1.96, k / m
    centre = (ph + z * z / (2 * m)) / (1 + z * z / m)
    half = z * np.sqrt(ph * (1 - ph) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    print(f"  scoregen below the authors' script on {k}/{m} problems (95% Wilson [{centre - half:.3f}, {centre + half:.3f}]);"
          f" median paired difference {np.median(ours - theirs):.3f}")


if __name__ == "__main__":
    main()
