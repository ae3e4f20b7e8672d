"""scoregen: score-based generative models and posterior sampling, from Python.

A native package over the scoregen Rust library (no reimplementation, no subprocess):
NumPy arrays in and out, the GIL released during compute, a tqdm progress bar
(``progress=False`` turns it off), Ctrl-C between steps, and the library's errors as
:class:`ScoregenError` (a ``ValueError``).

* priors and processes: :class:`GaussianMixture` (exact ``score`` and ``log_density`` at
  ``(t, x)``, exact and reverse-time samples), :class:`Process` (VP/OU, VE, sub-VP);
* :func:`train` -> :class:`Model` (``score``, ``sample``, ``save`` / :func:`load` in the
  CLI's checkpoint format; pickles as its weights);
* :func:`posterior` -> :class:`PosteriorResult` (samples, ESS, log-evidence);
* metrics: :func:`sliced_wasserstein`, :func:`mmd`, :func:`energy_distance`,
  :func:`gaussian_w2`, :func:`compare`;
* :class:`ScoreImputer`, a scikit-learn imputer (needs scikit-learn; pandas optional).
"""

import os as _os

# candle's element-wise thread pool spins 25,000 rounds after every op, taking the cores
# from the library's own threads (digits U-Net training on 2 busy cores: 3.8 steps/s with
# the spinning, 12.3 without; BENCHMARKS.md). The CLI turns it off the same way. Set before
# the extension loads, and only when the user has not chosen a value.
_os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")

from ._scoregen import (  # noqa: E402
    GaussianMixture,
    Model,
    Process,
    ScoregenError,
    TableModel,
    __version__,
    builtin_data,
    builtin_table,
    compare,
    energy_distance,
    gaussian_w2,
    mmd,
    sliced_wasserstein,
    train,
)
from ._api import PosteriorResult, load, posterior

__all__ = [
    "GaussianMixture",
    "Model",
    "PosteriorResult",
    "Process",
    "ScoreImputer",
    "ScoregenError",
    "TableModel",
    "__version__",
    "builtin_data",
    "builtin_table",
    "compare",
    "energy_distance",
    "gaussian_w2",
    "load",
    "mmd",
    "posterior",
    "sliced_wasserstein",
    "train",
]


def __getattr__(name):
    # scikit-learn is imported only when the imputer is asked for.
    if name == "ScoreImputer":
        from .sklearn import ScoreImputer

        return ScoreImputer
    raise AttributeError(f"module 'scoregen' has no attribute {name!r}")
