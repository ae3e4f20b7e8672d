#!/usr/bin/env python3
"""scikit-learn reference imputers on the masks written by `scoregen bench impute`.

Optional tooling, not run in CI. Needs python3 with numpy and scikit-learn.

`scoregen bench impute --data builtin:NAME --mechanism M --rate R --repeats K
--save-masks DIR` writes, for each data set,

    DIR/NAME/complete.npy              float64 [n, d], the complete table, already
                                       standardised per column (the units of the RMSE)
    DIR/NAME/mask_MECH_rRATE_K.npy     bool [n, d], True = missing (e.g. mask_mcar_r0.3_0.npy)

For every data set folder and every mask file, this script sets the masked cells to NaN,
imputes them with

    iterative  sklearn.impute.IterativeImputer(max_iter=10, random_state=0)
    knn        sklearn.impute.KNNImputer(n_neighbors=5)
    mean       sklearn.impute.SimpleImputer(strategy="mean")

and reports the RMSE and MAE over the masked cells (in the standardised units of
complete.npy) and the wall time of `fit_transform`. It prints a table of mean ± sd over the
repeats per (data set, mechanism, rate, method) and writes a CSV with one row per
(data set, mask file, method).

Usage:

    python3 bench/impute_sklearn.py DIR [--out results.csv] [--methods iterative,knn,mean]

Example:

    scoregen bench impute --data builtin:digits --mechanism mar --rate 0.3 --repeats 5 \\
        --save-masks /tmp/masks
    python3 bench/impute_sklearn.py /tmp/masks --out /tmp/masks/sklearn.csv
"""

import argparse
import csv
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (enables IterativeImputer)
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

MASK_RE = re.compile(r"^mask_(?P<mech>[A-Za-z]+)_r(?P<rate>[0-9.eE+-]+)_(?P<rep>\d+)\.npy$")

METHODS = ("iterative", "knn", "mean")

CSV_FIELDS = (
    "dataset",
    "mask_file",
    "mechanism",
    "rate",
    "repeat",
    "method",
    "n",
    "d",
    "missing_cells",
    "missing_share",
    "rmse",
    "mae",
    "seconds",
)


def make_imputer(method):
    """A fresh imputer for `method`; keeps all-missing columns (imputed as 0, the
    standardised mean) where the installed scikit-learn supports it, so shapes match."""
    if method == "iterative":
        cls, kwargs = IterativeImputer, {"max_iter": 10, "random_state": 0}
    elif method == "knn":
        cls, kwargs = KNNImputer, {"n_neighbors": 5}
    elif method == "mean":
        cls, kwargs = SimpleImputer, {"strategy": "mean"}
    else:
        raise ValueError(f"unknown method {method!r}")
    try:
        return cls(keep_empty_features=True, **kwargs)
    except TypeError:  # scikit-learn < 1.2
        return cls(**kwargs)


def errors(imputed, complete, mask):
    """RMSE and MAE over the masked cells."""
    diff = imputed[mask] - complete[mask]
    if diff.size == 0:
        return float("nan"), float("nan")
    return float(np.sqrt(np.mean(diff * diff))), float(np.mean(np.abs(diff)))


def run_one(method, complete, mask):
    """Imputes `complete` with `mask` set to NaN; returns (rmse, mae, seconds)."""
    x = complete.copy()
    x[mask] = np.nan
    imputer = make_imputer(method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        imputed = imputer.fit_transform(x)
        seconds = time.perf_counter() - t0
    if imputed.shape != complete.shape:
        raise RuntimeError(
            f"{method}: imputed shape {imputed.shape} != {complete.shape} "
            "(a column entirely missing with an old scikit-learn?)"
        )
    rmse, mae = errors(imputed, complete, mask)
    return rmse, mae, seconds


def mask_files(folder):
    """The mask files of a data set folder, as (path, mechanism, rate string, repeat)."""
    out = []
    for p in sorted(folder.iterdir()):
        m = MASK_RE.match(p.name)
        if m and p.is_file():
            out.append((p, m.group("mech").lower(), m.group("rate"), int(m.group("rep"))))
    out.sort(key=lambda t: (t[1], float(t[2]), t[3]))
    return out


def mean_sd(values):
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    mean = sum(v) / len(v)
    if len(v) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))


def print_table(rows, file=sys.stdout):
    """Mean ± sd over repeats per (data set, mechanism, rate, method)."""
    groups = {}
    for r in rows:
        key = (r["dataset"], r["mechanism"], r["rate"], r["method"])
        groups.setdefault(key, []).append(r)
    header = f"{'dataset':<16} {'mech':<5} {'rate':>6} {'method':<10} {'reps':>4} " \
        f"{'RMSE':>17} {'MAE':>17} {'time (s)':>17}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for key in sorted(groups, key=lambda k: (k[0], k[1], float(k[2]), METHODS.index(k[3]))):
        g = groups[key]
        cells = []
        for field, fmt in (("rmse", "{:.4f}"), ("mae", "{:.4f}"), ("seconds", "{:.3f}")):
            m, s = mean_sd([r[field] for r in g])
            cells.append(f"{fmt.format(m)} ± {fmt.format(s)}")
        print(
            f"{key[0]:<16} {key[1]:<5} {key[2]:>6} {key[3]:<10} {len(g):>4} "
            f"{cells[0]:>17} {cells[1]:>17} {cells[2]:>17}",
            file=file,
        )


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run scikit-learn's IterativeImputer, KNNImputer and SimpleImputer(mean) "
        "on the masks saved by `scoregen bench impute --save-masks DIR`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage:", 1)[1] if "Usage:" in __doc__ else None,
    )
    ap.add_argument("dir", type=Path, help="the --save-masks folder (one sub-folder per data set)")
    ap.add_argument("--out", type=Path, default=None, help="write one CSV row per (data set, mask file, method)")
    ap.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default: all)",
    )
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        ap.error(f"--methods: unknown {bad}; choose from {','.join(METHODS)}")
    if not args.dir.is_dir():
        ap.error(f"{args.dir}: not a folder")

    folders = sorted(p for p in args.dir.iterdir() if p.is_dir() and (p / "complete.npy").is_file())
    if not folders:
        ap.error(f"{args.dir}: no data set folder with a complete.npy")

    rows = []
    for folder in folders:
        complete = np.load(folder / "complete.npy").astype(np.float64, copy=False)
        if complete.ndim != 2:
            print(f"{folder.name}: complete.npy is not 2-D, skipped", file=sys.stderr)
            continue
        n, d = complete.shape
        masks = mask_files(folder)
        if not masks:
            print(f"{folder.name}: no mask_*.npy file, skipped", file=sys.stderr)
            continue
        for path, mech, rate, rep in masks:
            mask = np.load(path).astype(bool, copy=False)
            if mask.shape != complete.shape:
                print(f"{path}: shape {mask.shape} != {complete.shape}, skipped", file=sys.stderr)
                continue
            for method in methods:
                rmse, mae, seconds = run_one(method, complete, mask)
                rows.append(
                    {
                        "dataset": folder.name,
                        "mask_file": path.name,
                        "mechanism": mech,
                        "rate": rate,
                        "repeat": rep,
                        "method": method,
                        "n": n,
                        "d": d,
                        "missing_cells": int(mask.sum()),
                        "missing_share": float(mask.mean()),
                        "rmse": rmse,
                        "mae": mae,
                        "seconds": seconds,
                    }
                )
                print(
                    f"{folder.name} {path.name} {method}: RMSE {rmse:.4f} MAE {mae:.4f} ({seconds:.2f} s)",
                    file=sys.stderr,
                )

    if not rows:
        print("nothing was run", file=sys.stderr)
        return 1
    print_table(rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow(r)
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
