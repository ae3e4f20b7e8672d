#!/usr/bin/env python3
"""Train a score model on the 2-D two moons and sample it; compare with fresh data.

    python3 examples/python/train_sample_2d.py [--steps 1500] [--out moons.png]

Needs the scoregen package (`pip install ./python`); the figure needs matplotlib.
"""
import argparse

import numpy as np

import scoregen as sg

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--out", default="moons.png")
a = ap.parse_args()

# 4000 points of the built-in two moons (what `scoregen train --data builtin:moons` reads).
x, _, _ = sg.builtin_data("moons", 4000, seed=0)
model = sg.train(x, steps=a.steps, hidden=128, seed=0)  # a tqdm bar; progress=False for none
samples = model.sample(2000, steps=500, seed=1)
fresh, _, _ = sg.builtin_data("moons", 2000, seed=1)
floor, _, _ = sg.builtin_data("moons", 2000, seed=2)
print(f"sliced W1 to fresh data: {sg.sliced_wasserstein(samples, fresh):.4f} "
      f"(two fresh data sets: {sg.sliced_wasserstein(floor, fresh):.4f})")
model.save("moons-model", overwrite=True)  # `scoregen sample --model moons-model` reads it
print("model saved to moons-model/")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    np.save("moons_samples.npy", samples)
    print("matplotlib not installed: samples written to moons_samples.npy")
else:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(*fresh.T, s=2, alpha=0.4, label="data")
    ax.scatter(*samples.T, s=2, alpha=0.4, label="samples")
    ax.legend(markerscale=5)
    ax.set_title(f"learned score, {a.steps} training steps")
    fig.savefig(a.out, dpi=120, bbox_inches="tight")
    print(f"figure written to {a.out}")
