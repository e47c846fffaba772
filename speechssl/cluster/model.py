"""A fitted k-means model: centroids, nearest-centroid assignment, a pickle-free file format.

The model file is a safetensors file holding one tensor, ``centroids`` ``(K, D)`` float32,
and string metadata (``n_clusters``, ``dim``, ``inertia``, ``seed``, ``feature``, ...). It is
read with :meth:`KMeansModel.load`, which never unpickles anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speechssl.atomic import atomic_write_bytes
from speechssl.cluster.rows import Rows

__all__ = ["KMeansModel", "default_chunk_rows", "nearest_centroid", "col_min", "squared_distances"]

_FORMAT = "speechssl-kmeans"
_FORMAT_VERSION = "1"
# (rows, K) float32 distance blocks of about 8 MiB: single-threaded speed is flat from 1 to
# 8 MiB once the argmin is vectorised, and fewer, larger blocks mean fewer OpenMP parallel
# regions, each of which can stall for a scheduler slice when the cores are shared. The
# N x K distance matrix is never materialised.
_BLOCK_ELEMENTS = 1 << 21
# Unit roundoff of float32; bounds the error of the GEMM distance expansion in `predict`.
_U32 = 2.0 ** -24
# Largest K for which index sums in `col_min` stay exact in float32 (K^2 / 2 < 2^24).
_ROW_MIN_MAX_K = 4096


def default_chunk_rows(n_clusters: int) -> int:
    """Rows per chunk so that a ``(rows, K)`` float32 distance block is about 8 MiB."""
    return int(min(1 << 16, max(256, _BLOCK_ELEMENTS // max(n_clusters, 1))))


def col_min(d: torch.Tensor, *, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum of each column of a ``(K, N)`` float matrix and its first index: ``d.min(dim=0)``.

    On CPU, ``Tensor.min(dim)`` tracks indices in a scalar loop while ``amin`` is vectorised
    (about 10x faster). So take ``amin``, then locate it: ``z = sign(d - min)`` is 0 at the
    minimum and 1 elsewhere, and one ``(2, K) @ (K, N)`` product gives each column's sum of the
    other indices and their count; columns with a tied minimum take the first zero of ``z``. In
    this layout (rather than ``(N, K)`` rows) every step runs along contiguous columns and
    vectorises across ``N``: about half the time at K=50-100. Other devices use ``min``.

    Args:
        d: ``(K, N)`` distances.
        inplace: allowed to overwrite ``d``.

    Returns:
        ``(values (N,), indices (N,) int64)``.
    """
    k, n = d.shape
    if d.device.type != "cpu" or k > _ROW_MIN_MAX_K or n == 0 or d.dtype != torch.float32:
        return d.min(dim=0)
    v = d.amin(dim=0)
    z = (d.sub_(v) if inplace else d - v).sign_()  # (K, N): 0 at the minimum, else 1
    weights = torch.stack([torch.arange(k, dtype=d.dtype), torch.ones(k, dtype=d.dtype)])  # (2, K)
    sums = weights @ z  # (2, N): sum of the non-minimum indices, number of non-minima
    idx = (k * (k - 1) / 2 - sums[0]).round_().long()
    ties = (sums[1] < k - 1.5).nonzero().squeeze(1)
    if ties.numel():
        idx[ties] = z[:, ties].argmin(dim=0)
    return v, idx


def nearest_centroid(
    x: torch.Tensor, centroids: torch.Tensor, bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row, through one float32 GEMM and a minimum.

    The ``(K, N)`` block ``bias - 2 c.x`` is formed as ``(-2 c) @ x.T`` plus ``bias`` (the
    factor is exact in floating point) and reduced over ``K`` by :func:`col_min`; on other
    devices the ``(N, K)`` block and ``min``.

    Args:
        x: ``(N, D)`` float32 rows.
        centroids: ``(K, D)`` float32.
        bias: ``(K,)`` added to ``-2 x.c``; default ``||c||^2``, which makes the minimum
            ``||x - c||^2 - ||x||^2``.

    Returns:
        ``(shifted, labels)``: ``shifted`` ``(N,)`` is ``bias - 2 x.c`` of the nearest
        centroid; ``labels`` ``(N,)`` int64.
    """
    if bias is None:
        bias = centroids.pow(2).sum(dim=1)
    if x.device.type != "cpu":
        return torch.addmm(bias, x, centroids.T, alpha=-2.0).min(dim=1)  # (N, K) -> (N,), (N,)
    d = torch.mm(centroids.mul(-2.0), x.T).add_(bias[:, None])  # (K, N)
    return col_min(d, inplace=True)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Exact squared Euclidean distances ``(N, K)`` computed from differences (the slow reference)."""
    return torch.cdist(x, centroids, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


@dataclass
class KMeansModel:
    """k-means centroids and how they were fitted.

    Attributes:
        centroids: ``(K, D)`` float32.
        inertia: sum over the fitting rows of the squared distance to the nearest centroid.
        n_samples: number of rows it was fitted on.
        n_iter: Lloyd updates on the full data (after the initialisation phase).
        converged: whether the relative inertia change fell below ``tol`` before ``max_iter``.
        seed: the random seed of the fit, if any.
        feature: free-text description of the features (e.g. ``"mfcc 39-d 100 Hz"``).
        extra: further string metadata stored in the file.
    """

    centroids: torch.Tensor
    inertia: float = math.nan
    n_samples: int = 0
    n_iter: int = 0
    converged: bool = False
    seed: int | None = None
    feature: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.centroids.ndim != 2 or self.centroids.shape[0] < 1:
            raise ValueError(f"centroids must be (K, D) with K >= 1, got shape {tuple(self.centroids.shape)}")
        if not torch.isfinite(self.centroids).all():
            raise ValueError("centroids hold NaN or inf")
        self.centroids = self.centroids.detach().to(torch.float32).contiguous()

    @property
    def n_clusters(self) -> int:
        """K, the number of centroids."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """D, the feature dimension."""
        return int(self.centroids.shape[1])

    def to(self, device: torch.device | str) -> "KMeansModel":
        """This model with its centroids on ``device``."""
        self.centroids = self.centroids.to(device)
        return self

    # ------------------------------------------------------------------ assignment
    def predict(
        self, x: torch.Tensor | np.ndarray | Rows, *, chunk_rows: int | None = None, exact: bool = True,
    ) -> torch.Tensor:
        """Index of the nearest centroid of every row.

        Distances come from chunked float32 GEMMs (``||c||^2 - 2 x.c``); with ``exact`` the rows
        whose best and second-best distances are closer than the float32 error bound are
        recomputed from differences in float64, so the labels equal a float64 brute-force
        argmin (up to exact ties).

        Args:
            x: ``(N, D)`` rows (tensor, numpy array or :class:`Rows`).
            chunk_rows: rows per chunk (default: a ``(rows, K)`` block of ~8 MiB).
            exact: refine near-ties in float64 (costs one extra pass over each distance block).

        Returns:
            ``(N,)`` int64 labels, on the device of ``x`` (CPU for numpy / :class:`Rows`).

        Raises:
            ValueError: ``x`` is not ``(N, D)`` with this model's ``D``; a row holds NaN/inf.
        """
        rows = self._rows(x)
        device = x.device if isinstance(x, torch.Tensor) else self.centroids.device
        c = self.centroids.to(device)
        c_sq = c.pow(2).sum(dim=1)
        c2 = c.mul(-2.0)  # exact: d = c_sq - 2 c.x without addmm's broadcast copy of the bias
        c_sq_max = float(c_sq.max())
        out = torch.empty(rows.num_rows, dtype=torch.int64, device=device)
        for start, xb in rows.chunks(chunk_rows or default_chunk_rows(self.n_clusters), device, check_finite=True):
            d = torch.mm(c2, xb.T).add_(c_sq[:, None])  # (K, n)
            best, labels = col_min(d)
            if exact and self.n_clusters > 1:
                d.scatter_(0, labels[None, :], math.inf)
                gap = d.amin(dim=0) - best
                # Worst-case error of a length-D float32 dot product is ~D*u*|x||c|, and
                # |x||c| <= (|x|^2 + |c|^2) / 2; a gap below twice that may be a rounding artefact.
                bound = 2.0 * self.dim * _U32 * (xb.pow(2).sum(dim=1) + c_sq_max) + 1e-30
                near = (gap <= bound).nonzero().squeeze(1)
                if near.numel():
                    labels[near] = self._exact_labels(xb[near], c)
            out[start:start + labels.numel()] = labels
        return out

    def inertia_of(self, x: torch.Tensor | np.ndarray | Rows, *, chunk_rows: int | None = None) -> float:
        """Sum over the rows of ``x`` of the squared distance to the nearest centroid (float64 sum)."""
        rows = self._rows(x)
        device = x.device if isinstance(x, torch.Tensor) else self.centroids.device
        c = self.centroids.to(device)
        c_sq = c.pow(2).sum(dim=1)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for _, xb in rows.chunks(chunk_rows or default_chunk_rows(self.n_clusters), device, check_finite=True):
            shifted, _ = nearest_centroid(xb, c, c_sq)
            total += (xb.pow(2).sum(dim=1) + shifted).clamp_min(0).sum(dtype=torch.float64)
        return float(total)

    @staticmethod
    def _exact_labels(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x64, c64 = x.double(), c.double()
        step = max(1, (1 << 22) // max(c.numel(), 1))
        return torch.cat([squared_distances(x64[i:i + step], c64).argmin(dim=1) for i in range(0, len(x64), step)])

    def _rows(self, x: torch.Tensor | np.ndarray | Rows) -> Rows:
        rows = x if isinstance(x, Rows) else Rows([x], names=["input"])
        if rows.dim != self.dim:
            raise ValueError(
                f"features have dimension {rows.dim} but the k-means model was fitted on dimension "
                f"{self.dim} ({self.feature or 'unknown features'}); use the same feature type/layer "
                "for fitting and labelling")
        return rows

    # ------------------------------------------------------------------ file format
    def save(self, path: str | Path) -> None:
        """Write the model as a safetensors file (atomically)."""
        from safetensors.torch import save

        meta = {
            **{str(k): str(v) for k, v in self.extra.items()},
            "format": _FORMAT, "format_version": _FORMAT_VERSION,
            "n_clusters": str(self.n_clusters), "dim": str(self.dim),
            "inertia": repr(float(self.inertia)), "n_samples": str(int(self.n_samples)),
            "n_iter": str(int(self.n_iter)), "converged": str(bool(self.converged)).lower(),
            "seed": "" if self.seed is None else str(int(self.seed)), "feature": self.feature,
        }
        atomic_write_bytes(path, save({"centroids": self.centroids.cpu().contiguous()}, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "KMeansModel":
        """Read a model written by :meth:`save` (no pickle involved).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a speechssl k-means file, or its metadata disagrees with its tensor.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"k-means model not found: {path}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                if "centroids" not in f.keys():
                    raise ValueError(f"{path}: no 'centroids' tensor; not a speechssl k-means model")
                centroids = f.get_tensor("centroids")
        except SafetensorError as exc:  # names what the file holds (text, garbage, truncated)
            from speechssl.safe_io import safetensors_refusal

            raise safetensors_refusal(path, exc, "a k-means model written by `speechssl kmeans fit`") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected {_FORMAT!r}")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: format version {meta.get('format_version')!r} is not supported "
                             f"(this speechssl reads version {_FORMAT_VERSION})")
        if centroids.ndim != 2 or [str(s) for s in centroids.shape] != [meta.get("n_clusters"), meta.get("dim")]:
            raise ValueError(f"{path}: centroids have shape {tuple(centroids.shape)} but the metadata says "
                             f"n_clusters={meta.get('n_clusters')}, dim={meta.get('dim')}")
        known = {"format", "format_version", "n_clusters", "dim", "inertia", "n_samples", "n_iter",
                 "converged", "seed", "feature"}
        return cls(
            centroids=centroids.to(device),
            inertia=float(meta.get("inertia", "nan")),
            n_samples=int(meta.get("n_samples", "0")),
            n_iter=int(meta.get("n_iter", "0")),
            converged=meta.get("converged") == "true",
            seed=int(meta["seed"]) if meta.get("seed") else None,
            feature=meta.get("feature", ""),
            extra={k: v for k, v in meta.items() if k not in known},
        )
