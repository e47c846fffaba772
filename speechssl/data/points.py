"""Point-set dataset over a manifest of ``.npy`` ``(N, 3)`` arrays, and its padding collater.

Items::

    {"id": str, "index": int, "points": Tensor (K, 3) float32, "choice": Tensor (K,) int64
     (rows of the file used), "rotation": Tensor (3, 3) float32 (the rotation applied),
     <label key>: int | Tensor (T,), ...}

Per item, in this order: subsample ``K = num_points`` rows (:func:`~speechssl.data.augment.subsample_indices`;
``num_points=None`` keeps all ``N``), centre and scale into the unit ball (``normalize``), then
with ``augment`` rotate (``x @ R.T``), scale by ``U(scale)`` and add Gaussian jitter of std
``jitter`` clipped to ``±jitter_clip``. Every draw comes from the item's generator seeded by
``(seed, epoch, index)``, in that order. ``sizes`` is 1 per set with a fixed ``num_points``
(``max_tokens`` counts sets per batch), else the set's ``N``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from speechssl.data.augment import normalize_points, rotation_matrix, subsample_indices, uniform
from speechssl.data.files import FileDataset
from speechssl.data.labels import LabelledCollater, LabelSpec
from speechssl.data.manifest import Manifest
from speechssl.nn.lengths import pad_list, padding_mask

__all__ = ["PointDataset", "PointCollater"]


class PointDataset(FileDataset):
    """Point sets of a manifest, subsampled to a fixed size and augmented per item.

    Args:
        manifest: a ``Manifest`` or the path of a ``<split>.tsv`` (size column: points ``N``).
        labels: ``utterance`` (class) or ``sequence`` label files, one line per row.
        num_points: points per item (None: all of the file's, variable per item).
        augment: True (training): random subset, rotation, scale and jitter. False: evenly
            spaced points, no augmentation.
        normalize: centre each set on its centroid and scale it into the unit ball.
        rotation: ``"z"`` (about the up axis), ``"so3"`` (uniform) or None.
        scale: range of the random isotropic scale, or None.
        jitter: std of the per-coordinate Gaussian noise (0: none); ``jitter_clip`` bounds it.
        seed: base seed of the augmentations.
        check_files: read every file's header now (shape, dtype, N against the manifest).
    """

    kind = "points"
    reserved = frozenset({"id", "index", "points", "choice", "rotation", "lengths", "padding_mask"})

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[LabelSpec] = (), *,
                 num_points: int | None = 1024, augment: bool = True, normalize: bool = True,
                 rotation: Literal["z", "so3"] | None = "z", scale: Sequence[float] | None = (0.8, 1.25),
                 jitter: float = 0.01, jitter_clip: float = 0.05, seed: int = 0, check_files: bool = True) -> None:
        if num_points is not None and num_points <= 0:
            raise ValueError(f"num_points must be positive or None, got {num_points}")
        if rotation not in ("z", "so3", None):
            raise ValueError(f"rotation must be 'z', 'so3' or None, got {rotation!r}")
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be 0 < min <= max, got {tuple(scale)}")
        if jitter < 0 or jitter_clip < 0:
            raise ValueError(f"jitter and jitter_clip must be >= 0, got {jitter} and {jitter_clip}")
        self.num_points, self.augment, self.normalize = num_points, augment, normalize
        self.rotation, self.scale, self.jitter, self.jitter_clip = rotation, scale, jitter, jitter_clip
        super().__init__(manifest, labels, seed=seed, check_files=check_files)
        if num_points is None:
            self.sizes = np.asarray(self.manifest.sizes, dtype=np.int64)

    def load(self, index: int) -> torch.Tensor:
        """The points of item ``index`` as ``(N, 3)`` float32, as stored."""
        path = self.path(index)
        if not path.is_file():
            raise FileNotFoundError(f"{self.where(index)}: points file not found: {path}")
        from speechssl.safe_io import load_npy

        try:  # truncated, non-.npy and object files named in one line
            arr = load_npy(path, mmap_mode=None, expected="an (N, 3) float point array")
        except ValueError as exc:
            raise self.fail(index, str(exc).removeprefix(f"{path}: ")) from None
        if arr.ndim != 2 or arr.shape[1] != 3 or arr.dtype.kind != "f" or arr.shape[0] != self.manifest.sizes[index]:
            raise self.fail(index, f"expected a ({self.manifest.sizes[index]}, 3) float array, "
                                   f"got {arr.shape} {arr.dtype}")
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise self.fail(index, f"point {row} is not finite: {arr[row].tolist()}")
        return torch.from_numpy(arr.astype(np.float32, copy=False).copy())

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = self.load(index)
        generator = self.generator(index) if self.augment else None
        total = points.shape[0]
        choice = subsample_indices(total, self.num_points, generator) if self.num_points else torch.arange(total)
        x = points[choice]  # (K, 3)
        if self.normalize:
            x = normalize_points(x)
        rot = torch.eye(3)
        if generator is not None:
            if self.rotation is not None:
                rot = rotation_matrix(generator, self.rotation)
                x = x @ rot.T
            if self.scale is not None:
                x = x * uniform(generator, self.scale[0], self.scale[1])
            if self.jitter > 0:
                noise = torch.randn(x.shape, generator=generator) * self.jitter
                x = x + noise.clamp_(-self.jitter_clip, self.jitter_clip)
        item = self.item_base(index)
        item.update({"points": x.contiguous(), "choice": choice, "rotation": rot})
        return item

    def collater(self, *, label_pad: int = -100) -> PointCollater:
        """A :class:`PointCollater` for this dataset's labels."""
        return PointCollater(self.label_kinds, label_pad=label_pad)


class PointCollater(LabelledCollater):
    """Pad point-set items to the largest (a plain stack when all have ``num_points``).

    Batch: ``{"id": list[str], "index": (B,) int64, "points": (B, K_max, 3) float32 zero-padded,
    "lengths": (B,) int64, "padding_mask": (B, K_max) bool (True = padded)``, labels as
    :func:`~speechssl.data.labels.collate_labels`\\ ``}``.

    Args:
        label_kinds: label key → ``"utterance"`` or ``"sequence"``.
        label_pad: id written into sequence-label padding.
    """

    def collate_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        points, lengths = pad_list([it["points"] for it in items], 0.0)
        return {"points": points, "lengths": lengths, "padding_mask": padding_mask(lengths, points.shape[1])}
