"""Type stubs of the native module (python/src/*.rs); docstrings are on the objects."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

__version__: str

_Path = Union[str, "PathLike[str]"]
_F64 = NDArray[np.float64]

class ScoregenError(ValueError):
    """An input the library refused, or a numerical failure it detected."""

class Process:
    """A forward noising process ``x_t = m(t) x_0 + s(t) eps``."""

    @staticmethod
    def ou(beta: float = 2.0, t_max: float = 6.0) -> Process: ...
    @staticmethod
    def vp() -> Process: ...
    @staticmethod
    def vp_cosine() -> Process: ...
    @staticmethod
    def sub_vp(beta: Optional[float] = None, t_max: Optional[float] = None) -> Process: ...
    @staticmethod
    def ve(sigma_min: float = 0.01, sigma_max: float = 50.0) -> Process: ...
    @staticmethod
    def for_data(kind: str, dim: int) -> Process: ...
    @staticmethod
    def from_json(text: str) -> Process: ...
    @property
    def t_max(self) -> float: ...
    def m(self, t: float) -> float: ...
    def s(self, t: float) -> float: ...
    def sigma(self, t: float) -> float: ...
    def log_snr(self, t: float) -> float: ...
    def to_json(self) -> str: ...

class GaussianMixture:
    """A Gaussian mixture with exact scores and log densities at every noise level."""

    def __init__(self, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike) -> None: ...
    @staticmethod
    def gaussian(mean: ArrayLike, covariance: ArrayLike) -> GaussianMixture: ...
    @staticmethod
    def grid25(dim: int = 2, seed: int = 0) -> GaussianMixture: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_components(self) -> int: ...
    @property
    def weights(self) -> _F64: ...
    @property
    def means(self) -> _F64: ...
    @property
    def covariances(self) -> _F64: ...
    @property
    def radius(self) -> float: ...
    def default_process(self) -> Process: ...
    def log_prob(self, x: ArrayLike) -> _F64: ...
    def log_density(self, t: float, x: ArrayLike, process: Optional[Process] = None) -> _F64: ...
    def score(self, t: float, x: ArrayLike, process: Optional[Process] = None) -> _F64: ...
    def sample_exact(self, n: int, seed: int = 0) -> _F64: ...
    def sample(
        self,
        n: int = 2000,
        sampler: str = "em",
        steps: int = 1000,
        seed: int = 0,
        b: float = 1.0,
        eta: float = 0.0,
        snr: float = 0.16,
        predictor: str = "em",
        corrector_steps: int = 1,
        grid: Optional[str] = None,
        t_min: float = 1e-3,
        denoise: bool = True,
        progress: bool = True,
    ) -> _F64: ...

class Model:
    """A trained score network with its normalisation (a checkpoint in memory)."""

    @staticmethod
    def load(path: _Path) -> Model: ...
    def save(self, path: _Path, overwrite: bool = False) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def image_shape(self) -> Optional[Tuple[int, int]]: ...
    @property
    def step(self) -> int: ...
    @property
    def val_loss(self) -> Optional[float]: ...
    @property
    def process(self) -> Process: ...
    @property
    def class_weights(self) -> Optional[List[float]]: ...
    @property
    def meta_json(self) -> str: ...
    def score(self, t: float, x: ArrayLike, class_: Optional[int] = None, guidance: float = 0.0) -> _F64: ...
    def sample(
        self,
        n: int = 2000,
        sampler: str = "em",
        steps: int = 1000,
        class_: Optional[int] = None,
        guidance: float = 0.0,
        seed: int = 0,
        each_class: bool = False,
        null_class: bool = False,
        b: float = 1.0,
        eta: float = 0.0,
        snr: float = 0.16,
        predictor: str = "em",
        corrector_steps: int = 1,
        grid: Optional[str] = None,
        t_min: float = 1e-3,
        denoise: bool = True,
        progress: bool = True,
    ) -> _F64: ...
    def to_files(self) -> Dict[str, bytes]: ...
    @staticmethod
    def from_files_dict(files: Dict[str, bytes]) -> Model: ...

class TableModel:
    """A score model of a table with its encoding (what ScoreImputer.fit learns)."""

    @staticmethod
    def fit(
        header: Sequence[str],
        columns: List[Any],
        train_steps: int = 3000,
        em_rounds: int = 4,
        em_steps: int = 1500,
        hidden: Optional[int] = None,
        seed: int = 0,
        progress: bool = True,
    ) -> TableModel: ...
    def transform(
        self,
        header: Sequence[str],
        columns: List[Any],
        method: str = "smc-impute",
        particles: int = 64,
        runs: int = 1,
        steps: int = 100,
        grid: str = "quadratic",
        resampling: str = "systematic",
        n_imputations: int = 0,
        seed: int = 0,
        progress: bool = True,
    ) -> Tuple[_F64, List[_F64], _F64, _F64]: ...
    @property
    def header(self) -> List[str]: ...
    @property
    def levels(self) -> List[Optional[List[str]]]: ...
    def save(self, path: _Path) -> None: ...
    @staticmethod
    def load(path: _Path) -> TableModel: ...
    def to_files(self) -> Dict[str, bytes]: ...
    @staticmethod
    def from_files_dict(files: Dict[str, bytes]) -> TableModel: ...

def train(
    data: ArrayLike,
    labels: Optional[ArrayLike] = None,
    model: Optional[str] = None,
    steps: Optional[int] = None,
    batch: Optional[int] = None,
    lr: Optional[float] = None,
    hidden: Optional[int] = None,
    depth: Optional[int] = None,
    channels: Optional[Sequence[int]] = None,
    blocks: Optional[int] = None,
    image_shape: Optional[Tuple[int, int]] = None,
    param: Optional[str] = None,
    process: str = "ou",
    time_sampling: Optional[str] = None,
    loss: str = "dsm",
    seed: int = 0,
    progress: bool = True,
) -> Model: ...
def builtin_data(name: str, n: int = 10000, seed: int = 0) -> Tuple[_F64, Optional[NDArray[np.int64]], Optional[Tuple[int, int]]]: ...
def builtin_table(name: str) -> Tuple[List[str], List[Any]]: ...
def sliced_wasserstein(x: ArrayLike, y: ArrayLike, directions: int = 100, p: int = 1, seed: int = 0) -> float: ...
def energy_distance(x: ArrayLike, y: ArrayLike) -> float: ...
def mmd(x: ArrayLike, y: ArrayLike, bandwidth: Optional[float] = None) -> Tuple[float, float]: ...
def gaussian_w2(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike) -> float: ...
def compare(
    samples: ArrayLike,
    reference: ArrayLike,
    law: Optional[GaussianMixture] = None,
    directions: int = 100,
    seed: int = 0,
) -> Dict[str, float]: ...
def _posterior(prior: Union[GaussianMixture, Model], y: ArrayLike, operator_json: str, **kwargs: Any) -> Dict[str, Any]: ...
