"""Scoring an unsupervised segmentation: match clusters to classes, then mIoU.

An unsupervised segmenter labels pixels with cluster ids ``0..K-1`` (prototypes, k-means
centroids) that have no class names. It is scored against reference class masks ``0..C-1``
after mapping clusters to classes, from the ``(C, K)`` pixel counts ``N_ck`` (reference class
``c``, cluster ``k``; :func:`cluster_confusion`):

* ``"hungarian"`` — one-to-one: the assignment of distinct clusters to classes that maximises
  the matched pixels ``Σ_c N_{c, π(c)}`` (``scipy.optimize.linear_sum_assignment``; PiCIE and
  STEGO's evaluation). With ``K > C`` the clusters left unmatched predict no class, so their
  pixels count against their reference class; with ``K < C`` some classes get no cluster.
* ``"majority"`` — many-to-one: every cluster takes the class it overlaps most,
  ``argmax_c N_ck`` (the over-clustering evaluation; it rewards large ``K`` and is an upper
  bound of ``"hungarian"``'s pixel accuracy).

Then, with ``TP_c`` the pixels of class ``c`` whose cluster maps to ``c``, ``P_c`` all pixels
whose cluster maps to ``c`` and ``R_c`` all pixels of class ``c``: ``IoU_c = TP_c / (R_c + P_c -
TP_c)``, ``miou`` the mean over classes with a non-empty union, ``pixel_accuracy = Σ_c TP_c /
Σ N``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["MATCHINGS", "cluster_confusion", "match_clusters", "matched_segmentation_scores"]

#: the cluster-to-class matchings :func:`match_clusters` knows
MATCHINGS = ("hungarian", "majority")


def cluster_confusion(clusters: torch.Tensor, target: torch.Tensor, num_clusters: int, num_classes: int,
                      ignore_index: int | None = None) -> torch.Tensor:
    """``(C, K)`` int64 pixel counts: row = reference class, column = cluster.

    Args:
        clusters, target: integer maps of one shape (any, e.g. ``(B, H, W)``).
        num_clusters, num_classes: ``K``, ``C``; ids outside ``[0, K)`` / ``[0, C)`` are an error.
        ignore_index: reference id whose pixels are not counted.
    """
    if clusters.shape != target.shape:
        raise ValueError(f"cluster map {tuple(clusters.shape)} and reference {tuple(target.shape)} differ in shape")
    if num_clusters < 1 or num_classes < 1:
        raise ValueError(f"need num_clusters and num_classes >= 1, got {num_clusters} and {num_classes}")
    k, t = clusters.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
    if ignore_index is not None:
        keep = t != ignore_index
        k, t = k[keep], t[keep]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"reference ids must be in [0, {num_classes}), found {int(t.min())}..{int(t.max())}")
    if k.numel() and (int(k.min()) < 0 or int(k.max()) >= num_clusters):
        raise ValueError(f"cluster ids must be in [0, {num_clusters}), found {int(k.min())}..{int(k.max())}")
    return torch.bincount(t * num_clusters + k, minlength=num_classes * num_clusters).reshape(num_classes,
                                                                                               num_clusters)


def match_clusters(conf: torch.Tensor | np.ndarray, mode: Literal["hungarian", "majority"] = "hungarian") -> np.ndarray:
    """``(K,)`` int64: the class each cluster predicts, -1 for a cluster matched to none (module docstring)."""
    counts = np.asarray(conf.cpu() if torch.is_tensor(conf) else conf, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"expected a (classes, clusters) count matrix, got shape {counts.shape}")
    C, K = counts.shape
    mapping = np.full(K, -1, dtype=np.int64)
    if mode == "hungarian":
        rows, cols = linear_sum_assignment(-counts)  # maximise the matched pixels
        mapping[cols] = rows
    elif mode == "majority":
        mapping[:] = counts.argmax(axis=0)
    else:
        raise ValueError(f"mode must be one of {', '.join(MATCHINGS)}, got {mode!r}")
    return mapping


def matched_segmentation_scores(conf: torch.Tensor | np.ndarray, mode: Literal["hungarian", "majority"] = "hungarian",
                                class_names: Sequence[str] | None = None,
                                mapping: np.ndarray | None = None) -> dict[str, float]:
    """mIoU, pixel accuracy and per-class IoU of a cluster labelling after :func:`match_clusters`.

    ``mapping`` (``(K,)`` class ids, ``-1`` for none) applies a matching found elsewhere (e.g. on
    a training split) instead of matching on ``conf`` itself; ``mode`` is then unused.

    Returns:
        ``{"miou", "pixel_accuracy", "iou_<name>" ..., "clusters_used", "clusters_matched"}``:
        ``iou_<name>`` is NaN for a class with an empty union; ``clusters_used`` counts the
        clusters with any pixel, ``clusters_matched`` those mapped to a class.
    """
    counts = np.asarray(conf.cpu() if torch.is_tensor(conf) else conf, dtype=np.float64)
    C, K = counts.shape
    if mapping is None:
        mapping = match_clusters(counts.astype(np.int64), mode)
    else:
        mapping = np.asarray(mapping, dtype=np.int64)
        if mapping.shape != (K,) or mapping.max(initial=-1) >= C or mapping.min(initial=0) < -1:
            raise ValueError(f"mapping must be ({K},) class ids in [-1, {C}), got {mapping.tolist()}")
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    if len(names) != C:
        raise ValueError(f"{len(names)} class names for {C} classes")
    pred = np.zeros((C, C))  # reference class x predicted class
    for k in range(K):
        if mapping[k] >= 0:
            pred[:, mapping[k]] += counts[:, k]
    tp = np.diag(pred)
    union = counts.sum(1) + pred.sum(0) - tp  # R_c + P_c - TP_c
    iou = np.where(union > 0, tp / np.maximum(union, 1e-300), np.nan)
    total = counts.sum()
    out = {"miou": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
           "pixel_accuracy": float(tp.sum() / total) if total else float("nan")}
    out.update({f"iou_{n}": float(v) for n, v in zip(names, iou)})
    out["clusters_used"] = float((counts.sum(0) > 0).sum())
    out["clusters_matched"] = float((mapping >= 0).sum())
    return out
