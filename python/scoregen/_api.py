"""The parts of the public API written in Python over the native module."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from ._scoregen import GaussianMixture, Model, ScoregenError, _posterior


@dataclass
class PosteriorResult:
    """Posterior samples and the method's diagnostics.

    Attributes:
        samples: ``[n, d]`` posterior samples, in the prior's (data) units.
        method: the method's name.
        runs: independent particle systems run (SMC methods; 0 otherwise).
        ess_min: smallest ESS / N over steps and runs (SMC methods; ``None`` otherwise).
        ess_mean: mean ESS / N over steps and runs (SMC methods; ``None`` otherwise).
        resamplings: mean number of resampling events per run.
        log_evidence: mean over runs of the estimate of ``log p(y)``, where the method
            gives one (``smc-impute``, ``mcgdiff``, ``tds``), else ``None``.
        log_evidence_runs: the per-run estimates.
    """

    samples: np.ndarray
    method: str
    runs: int = 0
    ess_min: Optional[float] = None
    ess_mean: Optional[float] = None
    resamplings: float = 0.0
    log_evidence: Optional[float] = None
    log_evidence_runs: List[float] = field(default_factory=list)


def _operator_json(dim: int, A: Any, mask: Any, operator: Any) -> str:
    given = [v is not None for v in (A, mask, operator)]
    if sum(given) != 1:
        raise ScoregenError("give exactly one of A (a matrix), mask (observed coordinates) or operator (a dict)")
    if A is not None:
        a = np.asarray(A, dtype=np.float64)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ScoregenError(f"A: expected a matrix [dy, dx], got shape {list(a.shape)}")
        if not np.all(np.isfinite(a)):
            raise ScoregenError("A contains NaN or infinite values")
        return json.dumps({"kind": "dense", "matrix": a.tolist()})
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == bool:
            if m.shape != (dim,):
                raise ScoregenError(f"mask: a boolean mask needs {dim} entries (the prior's dimension), got shape {list(m.shape)}")
            observed = np.flatnonzero(m)
        else:
            observed = m.reshape(-1)
            if observed.size and not np.all(np.equal(np.mod(observed, 1), 0)):
                raise ScoregenError("mask: expected a boolean mask or integer indices")
        return json.dumps({"kind": "mask", "observed": [int(i) for i in observed], "dim": int(dim)})
    if not isinstance(operator, dict):
        raise ScoregenError("operator: expected a dict as in a problem file, e.g. {'kind': 'inpaint_box', 'box': [2, 2, 4, 4]}")
    return json.dumps(operator)


def posterior(
    prior: Union[GaussianMixture, Model],
    y: Any,
    A: Any = None,
    *,
    mask: Any = None,
    operator: Optional[dict] = None,
    sigma_y: float = 0.0,
    method: str = "mcgdiff",
    n: int = 2000,
    particles: int = 2000,
    steps: int = 1000,
    seed: int = 0,
    grid: str = "quadratic",
    t_min: float = 1e-3,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    progress: bool = True,
    **method_options: Any,
) -> PosteriorResult:
    """Samples ``p(x | y) ∝ N(y; A x, sigma_y^2 I) p(x)``, as ``scoregen posterior`` does.

    Args:
        prior: a :class:`GaussianMixture` (exact score; ``method="exact"`` draws the
            closed-form posterior) or a trained :class:`Model` (the observation is moved
            into the model's normalised coordinates and the samples back).
        y: the observation, ``dy`` values (for a mask: the observed values in the order of
            the observed indices).
        A: a dense ``[dy, dx]`` matrix; or ``mask``: a boolean array of ``dx`` entries or
            the observed indices; or ``operator``: a dict as in a problem file's
            ``operator`` (``inpaint_box``, ``outpaint_half``, ``superres``, ``blur``, ``svd``;
            docs/formats.md). Exactly one of the three.
        sigma_y: the observation noise ``>= 0``.
        method: ``exact``, ``replacement``, ``smc-impute``, ``mcgdiff`` (Cardoso et al.
            2024), ``tds`` (Wu et al. 2023), ``dps`` (Chung et al. 2023), ``pigdm``,
            ``pigdm-score``, ``tmpd``, ``ddrm``, ``dcps`` (= ``dcps500``), ``dcps50``
            (docs/methods.md).
        n: posterior samples; particles: particles per SMC run (``ceil(n / particles)``
            independent runs); steps: reverse steps; seed: the seed.
        grid, t_min, resampling, ess_threshold: as the CLI's options.
        progress: show a progress bar (tqdm), ``False`` for none.
        **method_options: ``zeta`` (dps), ``pigdm_update``, ``eta``, ``eta_b``, ``eta_c``
            (ddrm), ``jumps`` (replacement), ``blocks``, ``langevin``, ``langevin_step``,
            ``grad_steps``, ``lr`` (dcps).

    Returns:
        A :class:`PosteriorResult`.

    Raises:
        ScoregenError: (a ``ValueError``) bad shapes, NaN in ``y``, an unknown method, ...,
            with the library's message.
    """
    if not isinstance(prior, (GaussianMixture, Model)):
        raise ScoregenError("prior: expected a GaussianMixture or a Model")
    known = {"zeta", "pigdm_update", "eta", "eta_b", "eta_c", "jumps", "blocks", "langevin", "langevin_step", "grad_steps", "lr"}
    unknown = set(method_options) - known
    if unknown:
        raise TypeError(f"posterior() got unexpected keyword arguments {sorted(unknown)}")
    op = _operator_json(prior.dim, A, mask, operator)
    d = _posterior(
        prior,
        y,
        op,
        sigma_y=float(sigma_y),
        method=method,
        n=n,
        particles=particles,
        steps=steps,
        grid=grid,
        t_min=t_min,
        resampling=resampling,
        ess_threshold=ess_threshold,
        seed=seed,
        progress=progress,
        **method_options,
    )
    return PosteriorResult(**d)


def load(path: Union[str, "PathLike[str]"]) -> Model:
    """Reads a checkpoint directory written by ``scoregen train`` or :meth:`Model.save`."""
    return Model.load(path)
