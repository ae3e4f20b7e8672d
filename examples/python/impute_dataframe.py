#!/usr/bin/env python3
"""Impute a pandas DataFrame with label columns (the penguins table) with ScoreImputer,
and compare with scikit-learn's IterativeImputer on cells masked for the purpose.

    python3 examples/python/impute_dataframe.py [--rate 0.2] [--train-steps 3000]

Needs the scoregen package, scikit-learn and pandas.
"""
import argparse

import numpy as np
import pandas as pd
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer

import scoregen as sg

ap = argparse.ArgumentParser()
ap.add_argument("--rate", type=float, default=0.2)
ap.add_argument("--train-steps", type=int, default=3000)
a = ap.parse_args()

header, cols = sg.builtin_table("penguins")  # 344 rows; species, island, sex are labels
df = pd.DataFrame(dict(zip(header, cols)))
print(df.head(), "\n")

# Mask a share of the cells that are present, to score the imputations against the truth.
rng = np.random.default_rng(0)
mask = (rng.random(df.shape) < a.rate) & df.notna().to_numpy()
masked = df.mask(mask)

imputer = sg.ScoreImputer(train_steps=a.train_steps, random_state=0, progress=True)
ours = imputer.fit_transform(masked)  # a DataFrame: same columns, labels decoded

numeric = df.select_dtypes("number").columns
num_mask = pd.DataFrame(mask, columns=df.columns)[numeric].to_numpy()
truth = df[numeric].to_numpy()
sd = np.nanstd(truth, axis=0)


def rmse(filled):
    err = ((filled - truth) / sd)[num_mask & ~np.isnan(truth)]
    return np.sqrt(np.mean(err**2))


# scikit-learn's imputers see the numeric columns only.
iterative = IterativeImputer(max_iter=10, random_state=0).fit_transform(masked[numeric])
mean = SimpleImputer().fit_transform(masked[numeric])
print(f"standardised RMSE on {num_mask.sum()} masked numeric cells:")
print(f"  ScoreImputer      {rmse(ours[numeric].to_numpy()):.3f}")
print(f"  IterativeImputer  {rmse(iterative):.3f}")
print(f"  mean              {rmse(mean):.3f}")
for c in ["species", "island", "sex"]:
    m = mask[:, df.columns.get_loc(c)]
    acc = (ours.loc[m, c] == df.loc[m, c]).mean()
    print(f"  {c}: {acc:.0%} of {m.sum()} masked labels recovered")
