"""JAX-CPU peer of scoregen's score MLP (crates/scoregen/src/nn/mlp.rs, nn/train.rs).

The same model and training step as `scoregen train` with the MLP:
  features [x, sin(w_k tau), cos(w_k tau)], w_k = pi 2^(k-1), k = 0..7, tau = t / T;
  3 x 256 SiLU layers; linear output (last layer initialised x 0.1); eps parametrisation;
  DSM loss mean |f(x_t, t) - eps|^2 with x_t = m(t) x0 + s(t) eps on the OU process beta = 2
  (m = exp(-t), s^2 = 1 - m^2), t uniform on [1e-3, T];
  global-norm clipping at 1, AdamW (lr 1e-3, linear warm-up 100 steps then cosine decay to
  0.1 lr), EMA of the weights (decay min(0.999, (1 + k) / (10 + k))); batch rows drawn
  uniformly from the data. All in f32, one `jax.jit` step.

Usage:
  python jax_mlp.py train --dim D --steps N [--data FILE.npy] [--batch 512]
      Times N steps after a compile + 20 warm-up steps; prints "steps/s X".
  python jax_mlp.py cli --data FILE.npy --steps N [--batch 512]
      What `scoregen train --data FILE --steps N` does, start to end (imports, data
      loading, compile, N steps); the caller times the process (two lengths cancel start-up).
  python jax_mlp.py infer [--batch 4096] [--dim 64]
      Evaluations/s of the network at one time, median of 5 x 30 calls.
"""
import argparse
import time

import numpy as np

HID, NF, DEPTH, T_MAX, T_MIN = 256, 16, 3, 5.0, 1e-3


def init(key, d):
    import jax

    dims = [d + NF] + [HID] * DEPTH + [d]
    ps = []
    for i in range(len(dims) - 1):
        key, k1, k2 = jax.random.split(key, 3)
        lim = 1.0 / np.sqrt(dims[i])
        scale = 0.1 if i == len(dims) - 2 else 1.0
        ps.append(
            (
                scale * jax.random.uniform(k1, (dims[i], dims[i + 1]), minval=-lim, maxval=lim),
                scale * jax.random.uniform(k2, (dims[i + 1],), minval=-lim, maxval=lim),
            )
        )
    return ps


def make(d, data, batch, steps):
    import jax
    import jax.numpy as jnp
    import optax

    freqs = jnp.asarray(np.pi * 2.0 ** (np.arange(NF // 2) - 1.0), jnp.float32)[None, :]

    def net(ps, tau, x):
        a = tau * freqs
        h = jnp.concatenate([x, jnp.sin(a), jnp.cos(a)], 1)
        for i, (w, b) in enumerate(ps):
            h = h @ w + b
            if i < len(ps) - 1:
                h = jax.nn.silu(h)
        return h

    def loss(ps, x0, key):
        k1, k2 = jax.random.split(key)
        t = jax.random.uniform(k1, (x0.shape[0], 1), minval=T_MIN, maxval=T_MAX)
        eps = jax.random.normal(k2, x0.shape)
        m = jnp.exp(-t)
        s = jnp.sqrt(1.0 - m * m)
        return jnp.mean((net(ps, t / T_MAX, m * x0 + s * eps) - eps) ** 2)

    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, max(steps, 101), end_value=1e-4)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.0))
    n = data.shape[0]

    @jax.jit
    def step(ps, ema, st, k, key):
        kb, kl = jax.random.split(key)
        idx = jax.random.randint(kb, (batch,), 0, n)
        l, g = jax.value_and_grad(loss)(ps, data[idx], kl)
        up, st = opt.update(g, st, ps)
        ps = optax.apply_updates(ps, up)
        decay = jnp.minimum(0.999, (1.0 + k) / (10.0 + k))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, ps)
        return ps, ema, st, l

    ps = init(jax.random.PRNGKey(0), d)
    return net, step, ps, opt.init(ps)


def load(path, d):
    if path:
        x = np.load(path).astype(np.float32)
        return (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    return np.random.default_rng(0).standard_normal((10_000, d)).astype(np.float32)


def run(step, ps, st, key, steps, k0=0):
    import jax

    ema = ps
    l = None
    for k in range(k0, k0 + steps):
        key, sk = jax.random.split(key)
        ps, ema, st, l = step(ps, ema, st, k, sk)
    l.block_until_ready()
    return ps, st, key, l


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "cli", "infer"])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp

    if a.mode == "infer":
        b = a.batch or 4096
        d = a.dim
        data = jnp.zeros((2, d), jnp.float32)
        net, _, ps, _ = make(d, data, 2, 10)
        f = jax.jit(net)
        x = jax.random.normal(jax.random.PRNGKey(2), (b, d))
        tau = jnp.full((b, 1), 0.5, jnp.float32)
        for _ in range(5):
            f(ps, tau, x).block_until_ready()
        per = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(30):
                f(ps, tau, x).block_until_ready()
            per.append((time.perf_counter() - t0) / 30)
        p = float(np.median(per))
        print(f"jax {jax.__version__} infer batch {b} x d = {d}: evals/s {b / p:.0f} ({p * 1e3:.2f} ms per batch)")
        return
    data = load(a.data, a.dim)
    d = data.shape[1]
    batch = a.batch or 512
    dj = jnp.asarray(data)
    _, step, ps, st = make(d, dj, batch, a.steps)
    key = jax.random.PRNGKey(1)
    if a.mode == "cli":
        ps, st, key, l = run(step, ps, st, key, a.steps)
        print(f"jax {jax.__version__} trained {a.steps} steps on {data.shape[0]} x {d}: loss {float(l):.4f}")
        return
    ps, st, key, l = run(step, ps, st, key, 20)
    t0 = time.perf_counter()
    ps, st, key, l = run(step, ps, st, key, a.steps, 20)
    s = time.perf_counter() - t0
    print(f"jax {jax.__version__} train d = {d} batch {batch}: steps/s {a.steps / s:.1f} loss {float(l):.4f}")


if __name__ == "__main__":
    main()
