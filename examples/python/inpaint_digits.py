#!/usr/bin/env python3
"""Inpaint 8x8 digits: a U-Net prior trained on the built-in digits, a 4x4 hole in real
digits filled by posterior sampling (MCGdiff, Cardoso et al. 2024; or --method).

    python3 examples/python/inpaint_digits.py [--steps 1500] [--method mcgdiff] [--out inpaint.png]

Training the U-Net (1500 steps) takes minutes on two cores; `--steps 300` for a quick look.
Needs the scoregen package; the figure needs matplotlib.
"""
import argparse

import numpy as np

import scoregen as sg

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--method", default="mcgdiff")
ap.add_argument("--digits", type=int, default=6)
ap.add_argument("--out", default="inpaint.png")
a = ap.parse_args()

x, labels, shape = sg.builtin_data("digits")  # 1797 images of 8x8, pixels in [0, 1]
model = sg.train(x, model="unet", image_shape=shape, steps=a.steps, seed=0)
rng = np.random.default_rng(0)
rows = rng.choice(len(x), a.digits, replace=False)
hole = {"kind": "inpaint_box", "box": [2, 2, 4, 4], "image": list(shape)}  # top, left, height, width
mask = np.ones(shape, bool)
mask[2:6, 2:6] = False
filled = []
for i in rows:
    y = x[i][mask.ravel()]  # the observed pixels, in row-major order
    r = sg.posterior(model, y, operator=hole, sigma_y=0.0, method=a.method, n=1, particles=16, steps=200, seed=int(i))
    filled.append(r.samples[0])
    print(f"digit {labels[i]}: ESS/N min {r.ess_min}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    np.save("inpainted.npy", np.array(filled))
    print("matplotlib not installed: inpainted digits written to inpainted.npy")
else:
    fig, axes = plt.subplots(3, a.digits, figsize=(1.4 * a.digits, 4.4))
    for k, i in enumerate(rows):
        masked = np.where(mask, x[i].reshape(shape), np.nan)
        for r, img in enumerate([x[i].reshape(shape), masked, filled[k].reshape(shape)]):
            axes[r, k].imshow(img, cmap="gray_r", vmin=0, vmax=1)
            axes[r, k].axis("off")
    for r, t in enumerate(["real", "observed", a.method]):
        axes[r, 0].set_title(t, fontsize=8, loc="left")
    fig.savefig(a.out, dpi=120, bbox_inches="tight")
    print(f"figure written to {a.out}")
