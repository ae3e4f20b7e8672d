#!/usr/bin/env python3
"""The Python package's overhead against the same work in Rust (issue 14).

Times, interleaved, each of three jobs with 10,000 particles done (a) by the `scoregen`
CLI (Rust end to end: process start, problem/checkpoint read, the library call, writing
the samples) and (b) by the Python package in this process (argument conversion, the same
library call with the GIL released, the NumPy result):

    mixture   sample the 2-D mixture of examples/mixture2d.json, Euler–Maruyama, 1000 steps
    model     sample a small trained MLP (2-D moons), Euler–Maruyama, 200 steps
    posterior smc-impute on the bivariate Gaussian of the README, 10k particles, 500 steps

Both sides check that they produced the same samples (bit for bit), so the work is the
same. Prints the median of `--repeats` runs of each and the ratio Python / CLI.

Usage (after `pip install ./python` and `cargo build --release -p scoregen-cli`), holding
the benchmark lock so that no two benchmarks overlap:

    flock /tmp/scoregen-bench.lock python3 bench/python_overhead.py [--repeats 5] [--bin target/release/scoregen]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import scoregen as sg

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "scoregen"))
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    n = a.n
    work = Path(tempfile.mkdtemp(prefix="scoregen-overhead-"))

    def cli(*args):
        subprocess.run([a.bin, "--quiet", *map(str, args)], check=True, capture_output=True)

    # The jobs: (name, CLI args, Python callable, output file).
    mix_file = ROOT / "examples" / "mixture2d.json"
    spec = json.loads(mix_file.read_text())["prior"]
    law = sg.GaussianMixture(spec["weights"], spec["means"], spec["covariances"])

    x, _, _ = sg.builtin_data("moons", 4000, 0)
    model = sg.train(x, steps=300, hidden=128, depth=3, seed=0, progress=False)
    model.save(work / "model")

    gauss = {
        "prior": {"kind": "gaussian", "mean": [0, 0], "covariance": [[1, 1.5], [1.5, 5]]},
        "operator": {"kind": "mask", "observed": [0]},
        "y": [0.5],
        "sigma_y": 0,
    }
    (work / "gauss.json").write_text(json.dumps(gauss))
    glaw = sg.GaussianMixture.gaussian([0, 0], [[1, 1.5], [1.5, 5]])

    jobs = [
        (
            "mixture (em, 1000 steps)",
            ["sample", "--problem", mix_file, "--n", n, "--steps", 1000, "--seed", 1],
            lambda: law.sample(n, steps=1000, seed=1, progress=False),
        ),
        (
            "model MLP 3x128 (em, 200 steps)",
            ["sample", "--model", work / "model", "--n", n, "--steps", 200, "--seed", 1],
            lambda: model.sample(n, steps=200, seed=1, progress=False),
        ),
        (
            "posterior smc-impute (500 steps)",
            ["posterior", "--problem", work / "gauss.json", "--method", "smc-impute", "--n", n,
             "--particles", n, "--steps", 500, "--seed", 1],
            lambda: sg.posterior(glaw, [0.5], mask=[0], method="smc-impute", n=n, particles=n, steps=500,
                                 seed=1, progress=False).samples,
        ),
    ]
    print(f"n = {n} particles, {a.repeats} interleaved repeats, median wall seconds")
    print(f"{'job':34} {'CLI':>8} {'Python':>8} {'ratio':>7}")
    for name, args, py in jobs:
        out = work / "out.npy"
        t_cli, t_py = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            cli(*args, "--out", out)
            t_cli.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = py()
            t_py.append(time.perf_counter() - t0)
        assert np.array_equal(got, np.load(out)), f"{name}: Python and CLI samples differ"
        c, p = statistics.median(t_cli), statistics.median(t_py)
        print(f"{name:34} {c:8.3f} {p:8.3f} {p / c:7.3f}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
