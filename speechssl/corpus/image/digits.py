"""scikit-learn's handwritten digits (1797 grey 8 x 8 images, 10 classes) as the corpus's real-image probe set.

The images ship inside scikit-learn (``sklearn.datasets.load_digits``, the UCI optical
recognition test set), so nothing is downloaded. Pixel values 0..16 become ``round(v * 255 / 16)``
in 8-bit grey PNGs. The split is stratified by class and drawn from ``seed``: per class, a
permutation puts :data:`SPLIT_FRACTIONS` of the images into train / valid / test.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SPLIT_FRACTIONS", "load_digits_uint8", "split_indices"]

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) uint8, labels (1797,) int64)`` from the copy inside scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Stratified ``{"train", "valid", "test"}`` → sorted row indices (every class in every split)."""
    rng = np.random.default_rng([seed, 8])
    out: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        n_train = int(round(SPLIT_FRACTIONS[0] * len(rows)))
        n_valid = int(round(SPLIT_FRACTIONS[1] * len(rows)))
        out["train"] += rows[:n_train].tolist()
        out["valid"] += rows[n_train:n_train + n_valid].tolist()
        out["test"] += rows[n_train + n_valid:].tolist()
    return {k: sorted(v) for k, v in out.items()}
