"""``ScoreImputer``: a scikit-learn imputer over ``scoregen impute``.

Fits a score model on the incomplete table itself (masked denoising score matching,
MissDiff, then DiffPuter's EM rounds) and imputes each row's missing cells by posterior
sampling given its observed cells (SMCDiff's particle filter by default), exactly as
``scoregen impute`` does. Observed cells are returned unchanged.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._scoregen import TableModel

try:  # pandas is optional: arrays work without it.
    import pandas as pd
except ImportError:  # pragma: no cover
    pd = None


def _is_frame(X: Any) -> bool:
    return pd is not None and isinstance(X, pd.DataFrame)


def _is_label_dtype(s: Any) -> bool:
    return not (pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype))


class ScoreImputer(TransformerMixin, BaseEstimator):
    """Imputes missing values (NaN) with a score-based generative model of the table.

    Like :class:`sklearn.impute.IterativeImputer`: ``fit`` learns the table (with its
    missing cells), ``transform`` fills the missing cells of a table with the same
    columns. NumPy arrays (numbers, NaN missing) and pandas DataFrames are accepted; a
    DataFrame's text, categorical and boolean columns (and those named in
    ``categorical``) are label columns, one-hot encoded inside and decoded back to their
    labels, and a DataFrame comes back as a DataFrame with the same index and columns.

    Parameters:
        method: posterior method (``smc-impute``, SMCDiff's particle filter, Trippe et al.
            2023; or ``mcgdiff``, ``tds``, ``replacement``, ... as ``scoregen posterior``).
        particles: posterior samples per row.
        runs: independent particle systems per row, pooled.
        steps: reverse steps of the posterior sampler.
        train_steps: training steps of the first (masked DSM) round.
        em_rounds: EM rounds after it (impute, retrain on the completed table).
        em_steps: training steps per EM round.
        hidden: hidden width of the MLP (default: 8 x the encoded dimension, in 64..256).
        sample_posterior: ``transform`` returns one posterior draw per missing cell instead
            of the posterior mean (numbers) / mode (labels).
        n_imputations: posterior draws computed by :meth:`transform_multiple` (multiple
            imputation); at least 1.
        categorical: DataFrame columns to treat as labels even if numeric.
        random_state: seed (int), ``None`` or a ``RandomState``; the fit and the
            imputations are reproducible for an int.
        progress: show progress bars (tqdm).

    Attributes:
        model_: the fitted :class:`scoregen.TableModel` (weights and encoding; pickles).
        n_features_in_, feature_names_in_: as in scikit-learn.
    """

    def __init__(
        self,
        *,
        method: str = "smc-impute",
        particles: int = 64,
        runs: int = 1,
        steps: int = 100,
        train_steps: int = 3000,
        em_rounds: int = 4,
        em_steps: int = 1500,
        hidden: Optional[int] = None,
        sample_posterior: bool = False,
        n_imputations: int = 1,
        categorical: Optional[Sequence[str]] = None,
        random_state: Any = None,
        progress: bool = False,
    ):
        self.method = method
        self.particles = particles
        self.runs = runs
        self.steps = steps
        self.train_steps = train_steps
        self.em_rounds = em_rounds
        self.em_steps = em_steps
        self.hidden = hidden
        self.sample_posterior = sample_posterior
        self.n_imputations = n_imputations
        self.categorical = categorical
        self.random_state = random_state
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

    # -- the table <-> columns of the native model ------------------------------------

    def _columns(self, X: Any, fitting: bool):
        """``(header, columns, frame_info)``: the native columns of ``X``."""
        if _is_frame(X):
            if fitting:
                cats = set(self.categorical or [])
                unknown = cats - set(map(str, X.columns))
                if unknown:
                    raise ValueError(f"categorical: no column named {sorted(unknown)}")
                self._label_cols_ = [
                    str(c) in cats or _is_label_dtype(X[c]) for c in X.columns
                ]
                self.n_features_in_ = X.shape[1]
                self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
                if X.shape[0] < 2:
                    raise ValueError(f"Found array with {X.shape[0]} sample(s) (shape={X.shape}) while a minimum of 2 is required.")
            else:
                names = [str(c) for c in X.columns]
                if names != list(self.feature_names_in_):
                    raise ValueError(
                        f"The feature names should match those that were passed during fit: got {names}, "
                        f"expected {list(self.feature_names_in_)}"
                    )
            header = [str(c) for c in X.columns]
            cols: List[Any] = []
            originals = []
            for c, is_label in zip(X.columns, self._label_cols_):
                s = X[c]
                if is_label:
                    miss = s.isna().to_numpy()
                    vals = s.to_numpy(dtype=object)
                    cols.append([None if m else str(v) for v, m in zip(vals, miss)])
                    originals.append({str(v): v for v, m in zip(vals, miss) if not m})
                else:
                    cols.append(np.ascontiguousarray(pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)))
                    originals.append(None)
            if fitting:
                merged = [dict(o) if o is not None else None for o in originals]
                self._label_values_ = merged
            return header, cols, originals
        if fitting:
            self._label_cols_ = None
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=True, ensure_min_samples=2)
        else:
            if self._label_cols_ is not None:
                raise ValueError("this imputer was fitted on a DataFrame: transform a DataFrame with the same columns")
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        X = np.asarray(X, dtype=np.float64)
        names = getattr(self, "feature_names_in_", None)
        header = [str(c) for c in names] if names is not None else [f"x{j}" for j in range(X.shape[1])]
        return header, [np.ascontiguousarray(X[:, j]) for j in range(X.shape[1])], X

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    # -- the estimator ----------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> "ScoreImputer":
        """Trains the table model on ``X`` (NaN or ``None`` where missing)."""
        header, cols, _ = self._columns(X, fitting=True)
        self._seed_ = self._seed()
        self.model_ = TableModel.fit(
            header,
            cols,
            train_steps=self.train_steps,
            em_rounds=self.em_rounds,
            em_steps=self.em_steps,
            hidden=self.hidden,
            seed=self._seed_,
            progress=self.progress,
        )
        return self

    def _impute(self, X: Any, draws: int):
        check_is_fitted(self, "model_")
        if draws < 0 or int(draws) != draws:
            raise ValueError(f"n_imputations must be a non-negative integer, got {draws}")
        header, cols, info = self._columns(X, fitting=False)
        completed, draw_list, _unc, _ess = self.model_.transform(
            header,
            cols,
            method=self.method,
            particles=self.particles,
            runs=self.runs,
            steps=self.steps,
            n_imputations=int(draws),
            seed=self._seed_,
            progress=self.progress,
        )
        return X, info, completed, draw_list

    def _out(self, X: Any, info: Any, table: np.ndarray):
        """``X`` with its missing cells taken from ``table`` (observed cells untouched)."""
        if not _is_frame(X):
            out = np.array(info, dtype=np.float64, copy=True)
            miss = np.isnan(out)
            out[miss] = table[miss]
            return out
        out = X.copy()
        levels = self.model_.levels
        for j, c in enumerate(X.columns):
            miss = X[c].isna().to_numpy()
            if not miss.any():
                continue
            if levels[j] is None:
                col = X[c].to_numpy(dtype=np.float64, na_value=np.nan).copy()
                col[miss] = table[miss, j]
                out[c] = pd.Series(col, index=X.index, name=c)
            else:
                back = self._label_values_[j] or {}
                vals = X[c].astype(object).to_numpy().copy()
                for i in np.flatnonzero(miss):
                    lab = levels[j][int(table[i, j])]
                    vals[i] = back.get(lab, lab)
                if isinstance(X[c].dtype, pd.CategoricalDtype):
                    out[c] = pd.Categorical(vals, categories=X[c].cat.categories)
                else:
                    out[c] = pd.Series(vals, index=X.index, name=c)
                    try:
                        out[c] = out[c].astype(X[c].dtype)
                    except (TypeError, ValueError):
                        pass
        return out

    def transform(self, X: Any) -> Any:
        """``X`` with its missing cells imputed: the posterior mean of each missing number
        and mode of each missing label, or one posterior draw with
        ``sample_posterior=True``. Observed cells are returned exactly as given."""
        if self.sample_posterior:
            X, info, _, draws = self._impute(X, 1)
            return self._out(X, info, draws[0])
        X, info, completed, _ = self._impute(X, 0)
        return self._out(X, info, completed)

    def transform_multiple(self, X: Any) -> List[Any]:
        """``n_imputations`` completed copies of ``X``, each with one posterior draw per
        missing cell (multiple imputation, Rubin 1987)."""
        if self.n_imputations < 1:
            raise ValueError(f"n_imputations must be at least 1, got {self.n_imputations}")
        X, info, _, draws = self._impute(X, self.n_imputations)
        return [self._out(X, info, d) for d in draws]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output column names: the input's."""
        check_is_fitted(self, "model_")
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = np.asarray([f"x{j}" for j in range(self.n_features_in_)], dtype=object)
        if input_features is not None:
            input_features = np.asarray(input_features, dtype=object)
            if len(input_features) != len(names) or (
                getattr(self, "feature_names_in_", None) is not None and not np.array_equal(input_features, names)
            ):
                raise ValueError("input_features is not equal to feature_names_in_")
            return input_features
        return np.asarray(names, dtype=object)
