"""Cepstral mean and variance normalization: per utterance, or global over a dataset.

Statistics follow Kaldi's layout (``compute-cmvn-stats``): a float64 matrix ``(2, D + 1)``
whose row 0 holds the per-dimension sums and the frame count (last column) and row 1 the
sums of squares. Normalization is Kaldi's ``apply-cmvn``: subtract the mean and, with
``norm_vars``, divide by the standard deviation ``sqrt(E[x^2] - mean^2)`` (variance floored
at 1e-20).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from speechssl.atomic import atomic_write_bytes
from speechssl.features._batch import as_batch

__all__ = ["cmvn", "CmvnStats"]

_log = logging.getLogger(__name__)
_VAR_FLOOR = 1e-20  # Kaldi's floor on the variance in apply-cmvn


def _valid_mask(feats: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    feats, lengths, single = as_batch(feats, lengths)
    frames = feats.shape[1]
    mask = torch.arange(frames, device=feats.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    return feats, mask, single


def _normalize(feats: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None
               ) -> torch.Tensor:
    out = feats.double() - mean
    if std is not None:
        out = out / std
    return (out * mask.unsqueeze(-1)).to(feats.dtype)


def cmvn(feats: torch.Tensor, lengths: torch.Tensor | None = None, norm_vars: bool = False) -> torch.Tensor:
    """Per-utterance mean (and variance) normalization.

    Args:
        feats: ``(T, D)`` or a padded batch ``(B, T, D)``.
        lengths: ``(B,)`` valid frames per row; statistics use only those frames and padded
            frames come back as zeros.
        norm_vars: also scale each dimension to unit variance.

    Returns:
        Normalized features, same shape and dtype. A row with no frames stays zero.
    """
    batch, mask, single = _valid_mask(feats, lengths)
    x = batch.double() * mask.unsqueeze(-1)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).unsqueeze(-1).double()  # (B, 1, 1)
    mean = x.sum(dim=1, keepdim=True) / count
    std = None
    if norm_vars:
        var = x.pow(2).sum(dim=1, keepdim=True) / count - mean.pow(2)
        std = var.clamp(min=_VAR_FLOOR).sqrt()
    out = _normalize(batch, mask, mean, std)
    return out[0] if single else out


class CmvnStats:
    """Global CMVN statistics accumulated over a dataset (Kaldi ``(2, D + 1)`` layout).

    Example::

        stats = CmvnStats(80)
        for feats in dataset:                 # (T, 80) each, or batches with lengths
            stats.accumulate(feats)
        stats.save("cmvn.npy")
        ...
        normed = CmvnStats.load("cmvn.npy").apply(feats, norm_vars=True)

    Attributes:
        stats: ``(2, D + 1)`` float64 CPU tensor (sums and count; sums of squares).
    """

    def __init__(self, dim: int):
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.stats = torch.zeros(2, dim + 1, dtype=torch.float64)

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return self.stats.shape[1] - 1

    @property
    def count(self) -> float:
        """Number of frames accumulated."""
        return float(self.stats[0, -1])

    @property
    def mean(self) -> torch.Tensor:
        """``(D,)`` float64 mean."""
        self._check_nonempty()
        return self.stats[0, :-1] / self.count

    @property
    def std(self) -> torch.Tensor:
        """``(D,)`` float64 standard deviation (variance floored at 1e-20)."""
        self._check_nonempty()
        var = self.stats[1, :-1] / self.count - self.mean.pow(2)
        return var.clamp(min=_VAR_FLOOR).sqrt()

    def _check_nonempty(self) -> None:
        if self.count <= 0:
            raise ValueError("CMVN statistics are empty: accumulate features before using them")

    def accumulate(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Add ``(T, D)`` features, or a padded batch ``(B, T, D)`` with ``lengths``."""
        batch, mask, _ = _valid_mask(feats, lengths)
        if batch.shape[-1] != self.dim:
            raise ValueError(f"features have dimension {batch.shape[-1]}, these CMVN stats {self.dim}")
        x = batch[mask].double().cpu()  # (N, D) valid frames only
        self.stats[0, :-1] += x.sum(dim=0)
        self.stats[1, :-1] += x.pow(2).sum(dim=0)
        self.stats[0, -1] += x.shape[0]

    def merge(self, other: "CmvnStats") -> None:
        """Add the statistics of ``other`` (e.g. another shard)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge CMVN stats of dimension {other.dim} into {self.dim}")
        self.stats += other.stats

    def apply(self, feats: torch.Tensor, lengths: torch.Tensor | None = None,
              norm_vars: bool = True) -> torch.Tensor:
        """Normalize ``(T, D)`` or ``(B, T, D)`` features with these statistics.

        Args:
            feats: features of dimension ``D``.
            lengths: ``(B,)`` valid frames of a batch; padded frames come back as zeros.
            norm_vars: divide by the global standard deviation as well.
        """
        batch, mask, single = _valid_mask(feats, lengths)
        if batch.shape[-1] != self.dim:
            raise ValueError(f"features have dimension {batch.shape[-1]}, these CMVN stats {self.dim}")
        mean = self.mean.to(batch.device)
        std = self.std.to(batch.device) if norm_vars else None
        out = _normalize(batch, mask, mean, std)
        return out[0] if single else out

    def save(self, path: str | Path) -> None:
        """Write the ``(2, D + 1)`` float64 matrix as a ``.npy`` file (atomically)."""
        buf = io.BytesIO()
        np.save(buf, self.stats.numpy(), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
        _log.info("wrote CMVN stats of %d frames, dim %d to %s", int(self.count), self.dim, path)

    @classmethod
    def load(cls, path: str | Path) -> "CmvnStats":
        """Read statistics written by :meth:`save` (or any ``(2, D + 1)`` Kaldi stats in ``.npy``)."""
        from speechssl.safe_io import check_finite, load_npy

        path = Path(path)
        try:  # names truncated, non-.npy and object files in one line
            array = load_npy(path, mmap_mode=None, expected="CMVN stats (a (2, D + 1) .npy)")
        except FileNotFoundError:
            raise FileNotFoundError(f"CMVN stats not found: {path}") from None
        if array.ndim != 2 or array.shape[0] != 2 or array.shape[1] < 2:
            raise ValueError(f"{path}: expected CMVN stats of shape (2, D + 1), got {array.shape}")
        check_finite(array, str(path))
        out = cls(array.shape[1] - 1)
        out.stats = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        out._check_nonempty()
        return out

    @classmethod
    def from_kaldi(cls, stats: torch.Tensor | np.ndarray) -> "CmvnStats":
        """Wrap a ``(2, D + 1)`` Kaldi stats matrix."""
        array = torch.as_tensor(np.asarray(stats), dtype=torch.float64)
        if array.dim() != 2 or array.shape[0] != 2:
            raise ValueError(f"expected Kaldi CMVN stats (2, D + 1), got {tuple(array.shape)}")
        out = cls(array.shape[1] - 1)
        out.stats = array.clone()
        return out

    def __repr__(self) -> str:
        return f"CmvnStats(dim={self.dim}, frames={int(self.count)})"
