"""The augmentation kernel, its spectrum and the augmentation complexity on a finite sample
(Zhai et al., ICLR 2024, "Understanding Augmentation-based Self-Supervised Representation
Learning via RKHS Approximation and Regression").

An augmentation is a joint distribution of a natural input ``x`` and its augmented view ``a``.
It defines the operator ``Γ: L²(P_A) → L²(P_X)``, ``(Γ z)(x) = E[z(A) | x]``, and the kernel

    k_X(x, x') = ∫ p(a | x) p(a | x') / p(a) da,

the kernel of ``T = Γ Γ*`` on ``L²(P_X)``: ``(T f)(x) = E_{x'}[k_X(x, x') f(x')]``. ``T`` is
positive, its top eigenvalue is 1 with the constant eigenfunction, and the optimal ``d``-dim
encoder of the paper's pretraining objectives spans ``T``'s top-``d`` eigenspace. The
*augmentation complexity* is ``κ = sup_x k_X(x, x)^{1/2}`` (``κ²`` multiplies ``d / n`` in the
paper's estimation error); a weak augmentation (few inputs share views) has a large ``κ``, a
strong one a small ``κ`` but a larger approximation error, since the target must then be
nearly invariant to it. ``Σ_i λ_i = E_x k_X(x, x)`` is the trace.

On a finite sample the view space is discretised so that ``p(a | x)`` is a matrix:
``N`` inputs ``x_i``, ``K`` cells, ``P[i, c] = P(a ∈ c | x_i)`` (rows sum to 1), ``P_A(c) =
(1/N) Σ_i P[i, c]`` and ``k_X(x_i, x_j) = Σ_c P[i, c] P[j, c] / P_A(c)``
(:func:`augmentation_kernel`). ``T`` is the ``N x N`` matrix ``k_X / N`` (``P_X`` uniform on the
sample). For images, :func:`estimate_assignments` draws ``M`` views of each image and assigns
each softly to ``K`` anchor cells in a pixel feature space (:func:`soft_assign`: a Gaussian of
width ``h`` around each anchor, normalised over the anchors; the anchors are the un-augmented
images), so ``P[i]`` is the Monte-Carlo mean over the views; this converges as ``M`` grows.

A downstream target ``f`` (a centred one-hot label) is scored by its invariance
``⟨f, T f⟩ / ⟨f, f⟩`` (the isometry property: 1 for a target the augmentation never changes),
the fraction ``A_d`` of its energy in ``T``'s top-``d`` eigenspace (``1 - A_d`` is the
approximation error of a linear probe on the optimal ``d``-dim encoder) and the estimation term
``κ² d / n`` (``n`` labelled samples); :func:`predict` ranks augmentations by the sum
``(1 - A_d) + κ² d / n``, a proxy of the paper's bound with its constants set to 1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch.nn import functional as F

from speechssl.data.base import item_generator

__all__ = [
    "augmentation_kernel", "AugmentationSpectrum", "augmentation_spectrum", "LabelFit", "label_fit",
    "view_features", "median_bandwidth", "soft_assign", "estimate_assignments", "AugmentationReport", "analyse",
    "predict",
]

_log = logging.getLogger(__name__)


def augmentation_kernel(assign: torch.Tensor) -> torch.Tensor:
    """``k_X`` on the sample, ``(N, N)`` float64, from ``assign (N, K)``: ``P(a ∈ cell c | x_i)``.

    Cells no input reaches (``P_A(c) = 0``) are dropped. Raises ValueError when a row is not a
    distribution.
    """
    if assign.dim() != 2 or assign.shape[0] < 1:
        raise ValueError(f"assign must be (N, K) with N >= 1, got {tuple(assign.shape)}")
    p = assign.double()
    if float(p.min()) < 0 or not torch.allclose(p.sum(1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-6):
        raise ValueError("assign rows must be probability distributions over the cells (>= 0, summing to 1)")
    pa = p.mean(0)  # (K,)
    keep = pa > 0
    p, pa = p[:, keep], pa[keep]
    return (p / pa) @ p.T


@dataclass
class AugmentationSpectrum:
    """The spectrum of ``T = k_X / N``.

    Attributes:
        eigenvalues: ``(N,)`` descending, in ``[0, 1]`` (the first is 1).
        eigenvectors: ``(N, N)`` columns orthonormal in ``R^N`` (eigenfunction ``f_i(x_j) = √N U[j, i]``).
        kappa: the augmentation complexity ``max_i k_X(x_i, x_i)^{1/2}``.
        trace: ``Σ λ_i = mean_i k_X(x_i, x_i)``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    kappa: float
    trace: float

    @property
    def effective_dim(self) -> float:
        """``(Σ λ)² / Σ λ²``: how many eigenfunctions carry the spectrum."""
        lam = self.eigenvalues.clamp(min=0)
        return float(lam.sum() ** 2 / (lam ** 2).sum())


def augmentation_spectrum(kernel: torch.Tensor) -> AugmentationSpectrum:
    """Eigen-decomposition of ``T = kernel / N`` for a symmetric ``(N, N)`` ``k_X``."""
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be square (N, N), got {tuple(kernel.shape)}")
    k = kernel.double()
    n = k.shape[0]
    t = (k + k.T) / (2 * n)  # symmetric by construction; averaging removes rounding asymmetry
    lam, u = torch.linalg.eigh(t)
    lam, u = lam.flip(0), u.flip(1)
    diag = torch.diagonal(k)
    return AugmentationSpectrum(lam, u, float(diag.max().clamp(min=0).sqrt()), float(diag.mean()))


@dataclass
class LabelFit:
    """How a labelled target sits in the augmentation's spectrum (see the module docstring)."""

    invariance: float  # ⟨f, T f⟩ / ⟨f, f⟩ of the centred one-hot target, in [0, 1]
    captured: float  # A_d: fraction of the target's energy in the top-d eigenspace
    approximation_error: float  # 1 - A_d
    estimation_term: float  # κ² d / n
    bound: float  # approximation_error + estimation_term


def label_fit(spectrum: AugmentationSpectrum, labels: torch.Tensor, dim: int, num_labelled: int) -> LabelFit:
    """Score the target ``one_hot(labels)`` (``labels (N,)`` class ids) against ``spectrum``.

    Args:
        dim: ``d``, the encoder's dimension (top-``d`` eigenspace, the constant included).
        num_labelled: ``n``, the number of labelled samples of the linear probe.
    """
    n = spectrum.eigenvalues.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must be ({n},) for this spectrum, got {tuple(labels.shape)}")
    if not 1 <= dim <= n:
        raise ValueError(f"dim must be in [1, {n}] (the number of samples), got {dim}")
    if num_labelled < 1:
        raise ValueError(f"num_labelled must be >= 1, got {num_labelled}")
    y = F.one_hot(labels.long()).double()  # (N, C)
    y = y - y.mean(0)  # the constant eigenfunction carries no class information
    energy = float((y ** 2).sum())
    if energy == 0:
        raise ValueError("labels have a single class: nothing to predict")
    u, lam = spectrum.eigenvectors, spectrum.eigenvalues
    coef = u.T @ y  # (N, C) coordinates in the eigenbasis
    invariance = float((lam[:, None] * coef ** 2).sum()) / energy
    captured = float((coef[:dim] ** 2).sum()) / energy
    est = spectrum.kappa ** 2 * dim / num_labelled
    return LabelFit(invariance, captured, 1.0 - captured, est, 1.0 - captured + est)


def view_features(views: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel features of ``views (V, C, S, S)``: area-averaged to ``size x size``, flattened; ``(V, C·size²)``."""
    if views.dim() != 4:
        raise ValueError(f"views must be (V, C, S, S), got {tuple(views.shape)}")
    return F.adaptive_avg_pool2d(views.double(), size).flatten(1)


def median_bandwidth(anchors: torch.Tensor, scale: float = 1.0) -> float:
    """``scale`` times the median distance between distinct anchors ``(K, D)``."""
    if anchors.shape[0] < 2:
        raise ValueError("median_bandwidth needs at least 2 anchors")
    d = torch.cdist(anchors.double(), anchors.double())
    off = d[~torch.eye(d.shape[0], dtype=torch.bool)]
    h = float(off.median()) * scale
    if not h > 0:
        raise ValueError("the anchors coincide: the median distance is 0")
    return h


def soft_assign(features: torch.Tensor, anchors: torch.Tensor, bandwidth: float,
                background: float | None = 2.0) -> torch.Tensor:
    """``P(cell c | view) ∝ ρ_c = exp(-||φ - μ_c||² / 2h²)`` over the ``K`` anchor cells plus, unless
    ``background`` is None, a background cell of weight ``exp(-background² / 2)``: ``(V, K + 1)``
    (or ``(V, K)``) rows summing to 1.

    The background cell is where a view goes that is farther than about ``background · h`` from
    every anchor; without it such a view would still be given (by the normalisation) to its
    nearest anchor, however far, and a view-destroying augmentation would look weak.
    """
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    logits = -torch.cdist(features.double(), anchors.double()) ** 2 / (2.0 * bandwidth ** 2)  # (V, K)
    if background is not None:
        if not background > 0:
            raise ValueError(f"background must be > 0 (in units of the bandwidth) or None, got {background}")
        logits = torch.cat([logits, torch.full_like(logits[:, :1], -background ** 2 / 2.0)], dim=1)  # (V, K + 1)
    return torch.softmax(logits, dim=1)


def estimate_assignments(images: Sequence[torch.Tensor], augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                         views: int, anchors: torch.Tensor, bandwidth: float, feature_size: int,
                         seed: int = 0, background: float | None = 2.0) -> torch.Tensor:
    """Monte-Carlo ``P[i, c]``: the mean over ``views`` augmented views of image ``i`` of :func:`soft_assign`.

    Args:
        images: ``N`` images ``(C, H, W)``.
        augment: ``(image, generator) -> (C, S, S)`` view; image ``i``'s views draw from
            ``item_generator(seed, 1, i)`` in turn, so the estimate is a function of ``seed``.
        anchors: ``(K, D)`` features (:func:`view_features`) of the cells' centres.

    Returns:
        ``(N, K + 1)`` float64 (``(N, K)`` with ``background=None``).
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    rows = []
    for i, image in enumerate(images):
        gen = item_generator(seed, 1, i)
        vs = torch.stack([augment(image, gen) for _ in range(views)])  # (M, C, S, S)
        rows.append(soft_assign(view_features(vs, feature_size), anchors, bandwidth, background).mean(0))
    return torch.stack(rows)


@dataclass
class AugmentationReport:
    """One augmentation's spectrum summary and label fits (JSON-ready through :meth:`as_dict`)."""

    name: str
    kappa: float
    trace: float
    effective_dim: float
    eigenvalues: list[float]  # the top ones
    labels: dict[str, LabelFit] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "kappa": self.kappa, "kappa2": self.kappa ** 2, "trace": self.trace,
                "effective_dim": self.effective_dim, "eigenvalues": self.eigenvalues,
                "labels": {k: vars(v) for k, v in self.labels.items()}}


def analyse(name: str, assign: torch.Tensor, labels: Mapping[str, torch.Tensor], dim: int, num_labelled: int,
            top: int = 10) -> AugmentationReport:
    """Kernel, spectrum and :func:`label_fit` of every target of one augmentation's ``assign (N, K)``."""
    spec = augmentation_spectrum(augmentation_kernel(assign))
    report = AugmentationReport(name, spec.kappa, spec.trace, spec.effective_dim,
                                [float(v) for v in spec.eigenvalues[:top]])
    for key, y in labels.items():
        report.labels[key] = label_fit(spec, y, dim, num_labelled)
    _log.info("%s: kappa^2 %.3f, trace %.3f, effective dim %.2f", name, spec.kappa ** 2, spec.trace,
              spec.effective_dim)
    return report


def predict(reports: Sequence[AugmentationReport], label: str) -> str:
    """The augmentation whose target ``label`` has the smallest bound proxy (ties: the first)."""
    if not reports:
        raise ValueError("predict needs at least one report")
    return min(reports, key=lambda r: r.labels[label].bound).name
