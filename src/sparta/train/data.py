"""Embedded data sets (nothing is downloaded): scikit-learn's digits, Madelon-style and teacher–student.

Every loader returns a :class:`Dataset` of float32 features and int64 labels (or float32 targets for
regression-style losses), already split into train and test parts and standardised with the
training part's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Dataset:
    """Train/test tensors. ``x_*``: ``(n, features)`` float32; ``y_*``: ``(n,)`` int64 class labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x_train) == 0:  # nothing to standardise by: the caller refuses an empty side of the split
        return x_train, x_test
    mu = x_train.mean(0)
    sd = x_train.std(0)
    sd[sd == 0] = 1.0
    return (x_train - mu) / sd, (x_test - mu) / sd


def _split(name, x, y, n_test, n_classes, seed) -> Dataset:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    xtr, xte = _standardise(x[n_test:], x[:n_test])
    return Dataset(name, torch.from_numpy(xtr.astype(np.float32)), torch.from_numpy(y[n_test:].astype(np.int64)),
                   torch.from_numpy(xte.astype(np.float32)), torch.from_numpy(y[:n_test].astype(np.int64)), n_classes)


def digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images, 64 features, 10 classes), shipped with sklearn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split("digits", d.data, d.target, int(round(test_fraction * len(d.target))), 10, seed)


def madelon(seed: int = 0, n_train: int = 2000, n_test: int = 600) -> Dataset:
    """A Madelon-style problem (Guyon, NIPS 2003 feature-selection challenge) made with scikit-learn's
    ``make_classification``: 500 features of which 20 are relevant (5 informative on the vertices of a
    5-cube with 16 clusters per class, 15 linear combinations of them), 480 noise probes, 2 classes,
    1 % label noise; 2000 training and 600 test samples like the challenge's train/valid sets."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_train + n_test, n_features=500, n_informative=5, n_redundant=15,
                               n_repeated=0, n_classes=2, n_clusters_per_class=16, class_sep=2.0, hypercube=True,
                               flip_y=0.01, shuffle=True, random_state=seed)
    return _split("madelon", x, y, n_test, 2, seed)


def teacher_student(n_train: int = 60000, n_test: int = 10000, n_features: int = 784, n_classes: int = 10,
                    hidden: int = 256, seed: int = 0) -> Dataset:
    """Synthetic labels from a random one-hidden-layer teacher network: any size, for speed and scale tests.

    ``x ~ N(0, 1)``, ``y = argmax(tanh(x W₁) W₂)``. Generated in chunks straight into the final tensors, so
    the peak memory is the data set itself (``(n_train + n_test) · n_features · 4`` bytes), whatever its size.
    """
    g = torch.Generator().manual_seed(seed)
    x_train, x_test = torch.empty(n_train, n_features), torch.empty(n_test, n_features)
    rows = max(1, _CHUNK_ELEMS // max(1, n_features))
    for part in (x_train, x_test):  # one random stream, train rows first: the same numbers as one big draw
        for s in range(0, len(part), rows):
            part[s:s + rows] = torch.randn(min(rows, len(part) - s), n_features, generator=g)
    w1 = torch.randn(n_features, hidden, generator=g) / n_features**0.5
    w2 = torch.randn(hidden, n_classes, generator=g) / hidden**0.5

    def labels(x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(len(x), dtype=torch.int64)
        for s in range(0, len(x), rows):
            y[s:s + rows] = (torch.tanh(x[s:s + rows] @ w1) @ w2).argmax(1)
        return y

    return Dataset("teacher_student", x_train, labels(x_train), x_test, labels(x_test), n_classes)


_CHUNK_ELEMS = 1 << 24  # values generated at once (64 MB in float32)


def classification(seed: int = 0, n_train: int = 8192, n_test: int = 2048, n_features: int = 1000,
                   n_informative: int = 20, n_classes: int = 10, class_sep: float = 2.0) -> Dataset:
    """Gaussian clusters, one per class, on the vertices of a hypercube in ``n_informative`` dimensions,
    among ``n_features`` (the rest pure noise): scikit-learn's ``make_classification`` (the generator behind
    Madelon) with no redundant features and 1 % label noise, standardised. Memory while generating:
    ``(n_train + n_test) · n_features · 12`` bytes (float64 draw, float32 copy)."""
    from sklearn.datasets import make_classification

    if not 1 <= n_informative <= n_features or n_classes > 2**n_informative:
        raise ValueError(f"n_informative must be in [1, n_features] with 2**n_informative ≥ n_classes, got "
                         f"n_informative={n_informative}, n_features={n_features}, n_classes={n_classes}")
    x, y = make_classification(n_samples=n_train + n_test, n_features=n_features, n_informative=n_informative,
                               n_redundant=0, n_repeated=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=class_sep, flip_y=0.01, shuffle=True, random_state=seed)
    return _split("classification", x, y, n_test, n_classes, seed)


EMBEDDED = {"digits": digits, "madelon": madelon, "teacher_student": teacher_student,
            "classification": classification}
