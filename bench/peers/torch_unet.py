"""PyTorch peer of scoregen's digits U-Net (crates/scoregen/src/nn/unet.rs, UnetConfig::for_image(8, 8),
10 classes), for GPUs: the same network and DSM training step as `scoregen train --data builtin:digits
--model unet` (OU beta = 2, T = ln 2400, times half uniform / half log-SNR, eps loss, label dropout 0.1,
clip 1 + Adam 2e-3 with warm-up, EMA), batch 64, f32, NCHW.
Run: python torch_unet.py [--steps 30] [--infer-batch 512] [--device cuda] [--compile]
Prints training steps/s (median of 5 runs after 10 warm-up steps) with the parameter count, then evals/s.
Random 8x8 images stand in for the digits (the cost is the same).
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

CH, BLOCKS, G, NF, E, NC, B, LR = (32, 64), 1, 8, 16, 128, 10, 64, 2e-3
TMIN, T = 1e-3, min(max(math.log(3 * 8 / 0.01), 5.0), 12.0)


class Res(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.gn1, self.conv1 = torch.nn.GroupNorm(G, i), torch.nn.Conv2d(i, o, 3, padding=1)
        self.temb = torch.nn.Linear(E, o)
        self.gn2, self.conv2 = torch.nn.GroupNorm(G, o), torch.nn.Conv2d(o, o, 3, padding=1)
        self.skip = torch.nn.Conv2d(i, o, 1) if i != o else None

    def forward(self, x, e):
        h = self.conv1(F.silu(self.gn1(x))) + self.temb(e)[:, :, None, None]
        h = self.conv2(F.silu(self.gn2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Unet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(NF, E), torch.nn.Linear(E, E)
        self.cls = torch.nn.Embedding(NC + 1, E)
        self.inp = torch.nn.Conv2d(1, CH[0], 3, padding=1)
        c, self.enc, self.down = CH[0], torch.nn.ModuleList(), torch.nn.ModuleList()
        for lv in range(len(CH)):
            self.enc.append(torch.nn.ModuleList([Res(c if j == 0 else CH[lv], CH[lv]) for j in range(BLOCKS)]))
            c = CH[lv]
            if lv + 1 < len(CH):
                self.down.append(torch.nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = Res(c, c)
        self.dec, self.up = torch.nn.ModuleList(), torch.nn.ModuleList()
        for lv in reversed(range(len(CH))):
            self.dec.append(torch.nn.ModuleList([Res(c + CH[lv] if j == 0 else CH[lv], CH[lv]) for j in range(BLOCKS)]))
            c = CH[lv]
            if lv > 0:
                self.up.append(torch.nn.Conv2d(c, CH[lv - 1], 3, padding=1))
                c = CH[lv - 1]
        self.out_gn, self.out = torch.nn.GroupNorm(G, c), torch.nn.Conv2d(c, 1, 3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.mul_(0.1)
        self.register_buffer("freqs", math.pi * 2.0 ** (torch.arange(NF // 2, dtype=torch.float32) - 1.0))

    def forward(self, x, tau, c):
        n = x.shape[0]
        a = tau * self.freqs[None, :]
        e = F.silu(self.l1(torch.cat([torch.sin(a), torch.cos(a)], 1)))
        e = F.silu(self.l2(e) + self.cls(c))
        h, skips = self.inp(x.reshape(n, 1, 8, 8)), []
        for lv in range(len(CH)):
            for r in self.enc[lv]:
                h = r(h, e)
            skips.append(h)
            if lv + 1 < len(CH):
                h = self.down[lv](h)
        h = self.mid(h, e)
        for i, lv in enumerate(reversed(range(len(CH)))):
            h = torch.cat([h, skips.pop()], 1)
            for r in self.dec[i]:
                h = r(h, e)
            if lv > 0:
                h = self.up[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(F.silu(self.out_gn(h))).reshape(n, 64)


def times(u):
    l0, l1 = -math.log(math.expm1(2 * T)), -math.log(math.expm1(2 * TMIN))
    tl = torch.clamp(0.5 * torch.log1p(torch.exp(-(l0 + u * (l1 - l0)))), TMIN, T)
    even = (torch.arange(u.shape[0], device=u.device)[:, None] % 2) == 0
    return torch.where(even, TMIN + (T - TMIN) * u, tl)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--infer-batch", type=int, default=512)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    net = Unet().to(dev)
    f = torch.compile(net) if a.compile else net
    n_params = sum(p.numel() for p in net.parameters())
    data = torch.randn(1797, 64, device=dev)
    labels = torch.randint(0, NC, (1797,), device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    ema = [p.detach().clone() for p in net.parameters()]

    def step(k):
        idx = torch.randint(0, data.shape[0], (B,), device=dev)
        x0, lab = data[idx], labels[idx]
        t = times(torch.rand(B, 1, device=dev))
        eps = torch.randn_like(x0)
        c = torch.where(torch.rand(B, device=dev) <= 0.1, torch.full_like(lab, NC), lab)
        xt = torch.exp(-t) * x0 + torch.sqrt(-torch.expm1(-2 * t)) * eps
        loss = ((f(xt, t / T, c) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        dec = min(0.999, (1.0 + k) / (10.0 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - dec)
        return loss

    k = 0
    for _ in range(10):
        step(k)
        k += 1
    sync()
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step(k)
            k += 1
        sync()
        rates.append(a.steps / (time.perf_counter() - t0))
    tag = f"torch {torch.__version__} {dev.type}{' compiled' if a.compile else ' eager'}"
    rates.sort()
    print(f"{tag} unet8x8 batch {B}: median {rates[2]:.2f} steps/s params {n_params} loss {float(loss):.4f}")
    b = a.infer_batch
    x, tau, c = torch.randn(b, 64, device=dev), torch.full((b, 1), 0.5, device=dev), torch.full((b,), NC, device=dev)
    with torch.no_grad():
        for _ in range(3):
            f(x, tau, c)
        sync()
        per = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                f(x, tau, c)
            sync()
            per.append((time.perf_counter() - t0) / 10)
    p = sorted(per)[2]
    print(f"{tag} unet8x8 infer batch {b}: {p * 1e3:.2f} ms/call, {b / p:.0f} evals/s")


if __name__ == "__main__":
    main()
