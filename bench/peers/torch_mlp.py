"""PyTorch peer of scoregen's score MLP (crates/scoregen/src/nn/mlp.rs, nn/train.rs), for GPUs.

The same model and training step as `jax_mlp.py` (and `scoregen train` with the MLP):
  features [x, sin(w_k tau), cos(w_k tau)], w_k = pi 2^(k-1), k = 0..7, tau = t / T;
  3 x 256 SiLU layers; linear output (last layer initialised x 0.1); eps parametrisation;
  DSM loss mean |f(x_t, t) - eps|^2 with x_t = m(t) x0 + s(t) eps on the OU process beta = 2;
  global-norm clipping at 1, AdamW (lr 1e-3, warm-up then cosine), EMA of the weights;
  batch 512 rows drawn uniformly from the data. f32.

Usage:
  python torch_mlp.py train --dim D --steps N [--device cuda] [--compile]
  python torch_mlp.py infer [--batch 4096] [--dim 64] [--device cuda] [--compile]
Prints "steps/s X" or "evals/s X". Eager by default (as candle runs); --compile uses
torch.compile on the model (the fused peer, like JAX's jit).
"""
import argparse
import math
import time

import torch

HID, NF, DEPTH, T_MAX, T_MIN = 256, 16, 3, 5.0, 1e-3


class Mlp(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        dims = [d + NF] + [HID] * DEPTH + [d]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        with torch.no_grad():
            self.layers[-1].weight.mul_(0.1)
            self.layers[-1].bias.mul_(0.1)
        self.register_buffer("freqs", math.pi * 2.0 ** (torch.arange(NF // 2, dtype=torch.float32) - 1.0))

    def forward(self, x, tau):
        a = tau * self.freqs[None, :]
        h = torch.cat([x, torch.sin(a), torch.cos(a)], 1)
        for i, lin in enumerate(self.layers):
            h = lin(h)
            if i < len(self.layers) - 1:
                h = torch.nn.functional.silu(h)
        return h


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "infer"])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    d = a.dim
    net = Mlp(d).to(dev)
    f = torch.compile(net) if a.compile else net
    tag = f"torch {torch.__version__} {dev.type}{' compiled' if a.compile else ' eager'}"
    if a.mode == "infer":
        b = a.batch or 4096
        x = torch.randn(b, d, device=dev)
        tau = torch.full((b, 1), 0.5, device=dev)
        with torch.no_grad():
            for _ in range(5):
                f(x, tau)
            sync(dev)
            per = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(30):
                    f(x, tau)
                sync(dev)
                per.append((time.perf_counter() - t0) / 30)
        p = sorted(per)[2]
        print(f"{tag} infer batch {b} x d = {d}: evals/s {b / p:.0f} ({p * 1e3:.3f} ms per batch)")
        return
    batch = a.batch or 512
    data = torch.randn(10_000, d, device=dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    ema = [p.detach().clone() for p in net.parameters()]

    def step(k):
        idx = torch.randint(0, data.shape[0], (batch,), device=dev)
        x0 = data[idx]
        t = T_MIN + (T_MAX - T_MIN) * torch.rand(batch, 1, device=dev)
        eps = torch.randn_like(x0)
        m = torch.exp(-t)
        s = torch.sqrt(1.0 - m * m)
        loss = ((f(m * x0 + s * eps, t / T_MAX) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (k + 1) / 100)
        opt.step()
        dec = min(0.999, (1.0 + k) / (10.0 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - dec)
        return loss

    for k in range(20):
        step(k)
    sync(dev)
    t0 = time.perf_counter()
    for k in range(20, 20 + a.steps):
        loss = step(k)
    sync(dev)
    s = time.perf_counter() - t0
    print(f"{tag} train d = {d} batch {batch}: steps/s {a.steps / s:.1f} loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
