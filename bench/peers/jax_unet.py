"""Peer of scoregen's digits U-Net (crates/scoregen/src/nn/unet.rs, UnetConfig::for_image(8, 8), 10 classes):
one DSM training step as nn/train.rs takes it (OU beta = 2, T = ln 2400, times half uniform / half log-SNR,
eps loss, label dropout 0.1, clip 1 + Adam 2e-3 with warm-up/cosine, EMA), batch 64, f32, JAX jit on the CPU.
Run: python bench/peers/jax_unet.py [steps_per_run=30] [infer_calls=3] [infer_batch=512]
(uses the built-in digits, crates/scoregen/data/digits.csv.gz).
Prints training steps/s (median of 5 runs after 10 warm-up steps) with the parameter count, then evals/s.
"""
import gzip, os, sys, time, numpy as np, jax, jax.numpy as jnp, optax
CH, BLOCKS, G, NF, E, NC, B, LR = (32, 64), 1, 8, 16, 128, 10, 64, 2e-3
TMIN, T = 1e-3, float(np.clip(np.log(3 * 8 / 0.01), 5, 12))  # default_process(3 sqrt(d)), d = 64
FREQS = (np.pi * 2.0 ** (np.arange(NF // 2) - 1.0)).astype(np.float32)[None, :]

def init(key):
    ps, keys = {}, iter(jax.random.split(key, 256))
    u = lambda shape, b: jax.random.uniform(next(keys), shape, jnp.float32, -b, b)
    def lin(n, i, o): b = 1 / np.sqrt(i); ps[n] = (u((i, o), b), u((o,), b))
    def conv(n, i, o, k=3, sc=1.0): b = sc / np.sqrt(i * k * k); ps[n] = (u((k, k, i, o), b), u((o,), b))
    def gn(n, c): ps[n] = (jnp.ones(c), jnp.zeros(c))
    def res(n, i, o):
        gn(n + ".gn1", i); conv(n + ".conv1", i, o); lin(n + ".temb", E, o); gn(n + ".gn2", o); conv(n + ".conv2", o, o)
        if i != o: conv(n + ".skip", i, o, 1)
    lin("time.l1", NF, E); lin("time.l2", E, E); ps["class.emb"] = u((NC + 1, E), 0.5)
    conv("in", 1, CH[0]); c = CH[0]
    for l in range(len(CH)):
        for j in range(BLOCKS): res(f"enc{l}.res{j}", c, CH[l]); c = CH[l]
        if l + 1 < len(CH): conv(f"enc{l}.down", c, c)
    res("mid.res0", c, c)
    for l in reversed(range(len(CH))):
        for j in range(BLOCKS): res(f"dec{l}.res{j}", c + CH[l] if j == 0 else CH[l], CH[l]); c = CH[l]
        if l > 0: conv(f"dec{l}.up", c, CH[l - 1]); c = CH[l - 1]
    gn("out.gn", c); conv("out", c, 1, 3, 0.1)
    return ps

def conv(p, x, stride=1):  # NHWC / HWIO, padding k // 2, like candle's conv2d(w, k / 2, stride)
    w, b = p; k = w.shape[0]
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(k // 2, k // 2)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
def gn(p, x):  # GroupNorm over each group of channels and all pixels
    n, h, w, c = x.shape; xg = x.reshape(n, h, w, G, c // G)
    xc = xg - xg.mean((1, 2, 4), keepdims=True); var = (xc * xc).mean((1, 2, 4), keepdims=True)
    return (xc / jnp.sqrt(var + 1e-5)).reshape(n, h, w, c) * p[0] + p[1]
def upsample(x):  # nearest-neighbour x2 by broadcast + reshape, as unet.rs does
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)
def res(ps, n, x, e):
    h = conv(ps[n + ".conv1"], jax.nn.silu(gn(ps[n + ".gn1"], x)))
    h = h + (e @ ps[n + ".temb"][0] + ps[n + ".temb"][1])[:, None, None, :]
    h = conv(ps[n + ".conv2"], jax.nn.silu(gn(ps[n + ".gn2"], h)))
    return h + (conv(ps[n + ".skip"], x) if n + ".skip" in ps else x)
def net(ps, x, tau, c):  # x [n, 64] row-major, tau = t / T [n, 1], c in 0..=NC (NC: null class)
    n = x.shape[0]; a = tau * FREQS
    e = jax.nn.silu(jnp.concatenate([jnp.sin(a), jnp.cos(a)], 1) @ ps["time.l1"][0] + ps["time.l1"][1])
    e = jax.nn.silu(e @ ps["time.l2"][0] + ps["time.l2"][1] + ps["class.emb"][c])
    h = conv(ps["in"], x.reshape(n, 8, 8, 1)); skips = []
    for l in range(len(CH)):
        for j in range(BLOCKS): h = res(ps, f"enc{l}.res{j}", h, e)
        skips.append(h)
        if l + 1 < len(CH): h = conv(ps[f"enc{l}.down"], h, 2)
    h = res(ps, "mid.res0", h, e)
    for l in reversed(range(len(CH))):
        h = jnp.concatenate([h, skips.pop()], -1)
        for j in range(BLOCKS): h = res(ps, f"dec{l}.res{j}", h, e)
        if l > 0: h = conv(ps[f"dec{l}.up"], upsample(h))
    return conv(ps["out"], jax.nn.silu(gn(ps["out.gn"], h))).reshape(n, 64)

def times(u):  # train.rs t_of, Mixed: even rows uniform in t on [TMIN, T], odd rows uniform in log-SNR
    l0, l1 = -np.log(np.expm1(2 * T)), -np.log(np.expm1(2 * TMIN))
    tl = jnp.clip(0.5 * jnp.log1p(jnp.exp(-(l0 + u * (l1 - l0)))), TMIN, T)
    return jnp.where(jnp.arange(u.shape[0])[:, None] % 2 == 0, TMIN + (T - TMIN) * u, tl)
def loss(ps, x0, lab, key):
    k1, k2, k3 = jax.random.split(key, 3)
    t = times(jax.random.uniform(k1, (x0.shape[0], 1)))
    eps = jax.random.normal(k2, x0.shape)
    c = jnp.where(jax.random.uniform(k3, lab.shape) <= 0.1, NC, lab)
    xt = jnp.exp(-t) * x0 + jnp.sqrt(-jnp.expm1(-2 * t)) * eps
    return jnp.mean((net(ps, xt, t / T, c) - eps) ** 2)
def lr_at(k):  # lr_at: 100 warm-up steps, cosine to 0.1 lr at step 1500
    p = jnp.clip((k - 100) / 1400, 0.0, 1.0)
    return jnp.where(k < 100, LR * (k + 1) / 100, 0.1 * LR + 0.45 * LR * (1 + jnp.cos(jnp.pi * p)))
opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr_at, b1=0.9, b2=0.999, eps=1e-8))
@jax.jit
def step(ps, st, ema, k, data, labels, key):
    kb, kl = jax.random.split(jax.random.fold_in(key, k))
    idx = jax.random.randint(kb, (B,), 0, data.shape[0])
    l, g = jax.value_and_grad(loss)(ps, data[idx], labels[idx], kl)
    up, st = opt.update(g, st, ps); ps = optax.apply_updates(ps, up)
    dec = jnp.minimum(0.999, (1.0 + k) / (10.0 + k))
    return ps, st, jax.tree.map(lambda e, p: dec * e + (1 - dec) * p, ema, ps), k + 1, l

def load():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "scoregen", "data", "digits.csv.gz")
    if os.path.exists(path):
        a = np.loadtxt(gzip.open(path, "rt"), delimiter=","); x, y = a[:, :64] / 16, a[:, 64].astype(np.int32)
    else:  # random 8x8 images: the cost is the same
        rng = np.random.default_rng(0); x, y = rng.random((1797, 64)), rng.integers(0, NC, 1797).astype(np.int32)
    x = (x - x.mean()) / x.std()  # pooled normalisation, as for images in the project
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)

def train(steps):
    data, labels = load(); ps = init(jax.random.PRNGKey(0)); st = opt.init(ps); ema = ps
    n_params = sum(int(v.size) for v in jax.tree.leaves(ps)); key = jax.random.PRNGKey(1); k = jnp.int32(0)
    for _ in range(10): ps, st, ema, k, l = step(ps, st, ema, k, data, labels, key)
    l.block_until_ready(); rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(steps): ps, st, ema, k, l = step(ps, st, ema, k, data, labels, key)
        l.block_until_ready(); rates.append(steps / (time.perf_counter() - t0))
    print(f"jax {jax.__version__} unet8x8 batch {B}: median {np.median(rates):.2f} steps/s "
          f"runs {[round(r, 2) for r in rates]} params {n_params} loss {float(l):.4f}")
    return ps

def infer(ps, calls, b):
    f = jax.jit(net); x = jax.random.normal(jax.random.PRNGKey(2), (b, 64))
    tau, c = jnp.full((b, 1), 0.5), jnp.full((b,), NC, jnp.int32)  # forward(x, tau, None): the null class
    for _ in range(2): np.asarray(f(ps, x, tau, c))
    per = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls): np.asarray(f(ps, x, tau, c))
        per.append((time.perf_counter() - t0) / calls)
    p = np.median(per)
    print(f"jax {jax.__version__} unet8x8 infer batch {b}: {p * 1e3:.1f} ms/call, {b / p:.0f} evals/s (median of 5)")

args = [int(a) for a in sys.argv[1:]] + [30, 3, 512][len(sys.argv) - 1:]
infer(train(args[0]), args[1], args[2])
