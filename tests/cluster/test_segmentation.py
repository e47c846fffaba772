"""Unsupervised segmentation scoring: Hungarian matching + mIoU against a brute-force search over assignments,
scored from the pixels themselves; majority matching likewise."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from speechssl.cluster.segmentation import cluster_confusion, match_clusters, matched_segmentation_scores


def _pixel_scores(target: np.ndarray, pred_class: np.ndarray, C: int) -> tuple[float, float]:
    """mIoU (classes with a non-empty union) and pixel accuracy from pixel maps; pred -1 = no class."""
    ious = []
    for c in range(C):
        inter = np.sum((target == c) & (pred_class == c))
        union = np.sum((target == c) | (pred_class == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)), float(np.mean(target == pred_class))


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_miou_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    C, K = 3, 5
    while True:  # data whose best assignment is unique (ties may differ in mIoU)
        target = rng.integers(0, C, size=(4, 9, 9))
        clusters = (target * 2 + rng.integers(0, 3, size=target.shape)) % K  # correlated, not a permutation
        clusters = np.where(rng.random(target.shape) < 0.3, rng.integers(0, K, size=target.shape), clusters)
        scored = sorted(((sum(int(np.sum((target == c) & (clusters == k))) for c, k in enumerate(chosen)), chosen)
                         for chosen in itertools.permutations(range(K), C)), reverse=True)  # class c -> cluster
        if scored[0][0] > scored[1][0]:
            break
    conf = cluster_confusion(torch.from_numpy(clusters), torch.from_numpy(target), K, C)
    best = scored[0]
    lut = np.full(K, -1)
    for c, k in enumerate(best[1]):
        lut[k] = c
    miou, acc = _pixel_scores(target, lut[clusters], C)
    got = matched_segmentation_scores(conf, "hungarian")
    assert got["miou"] == pytest.approx(miou, abs=1e-12)
    assert got["pixel_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert match_clusters(conf, "hungarian").tolist() == lut.tolist()
    assert got["clusters_matched"] == C


def test_majority_matching_from_pixels():
    rng = np.random.default_rng(7)
    C, K = 4, 6
    target = rng.integers(0, C, size=(3, 10, 10))
    clusters = np.where(rng.random(target.shape) < 0.6, target + 2, rng.integers(0, K, size=target.shape))
    conf = cluster_confusion(torch.from_numpy(clusters), torch.from_numpy(target), K, C)
    lut = np.array([np.bincount(target[clusters == k], minlength=C).argmax() for k in range(K)])
    miou, acc = _pixel_scores(target, lut[clusters], C)
    got = matched_segmentation_scores(conf, "majority")
    assert got["miou"] == pytest.approx(miou, abs=1e-12) and got["pixel_accuracy"] == pytest.approx(acc, abs=1e-12)


def test_fewer_clusters_than_classes_and_errors():
    conf = torch.tensor([[5, 0], [0, 3], [2, 2]])  # 3 classes, 2 clusters
    got = matched_segmentation_scores(conf, "hungarian", ["a", "b", "c"])
    assert got["iou_a"] == pytest.approx(5 / 7) and got["iou_b"] == pytest.approx(3 / 5) and got["iou_c"] == 0.0
    assert got["miou"] == pytest.approx((5 / 7 + 3 / 5) / 3)
    with pytest.raises(ValueError, match="mode"):
        match_clusters(conf, "best")
    with pytest.raises(ValueError, match="cluster ids"):
        cluster_confusion(torch.tensor([0, 3]), torch.tensor([0, 1]), 3, 2)
