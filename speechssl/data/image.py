"""Image dataset over a manifest of image files, with seeded crops and flips, and its collater.

Items (one view)::

    {"id": str, "index": int, "image": Tensor (C, S, S) float32, "crops": Tensor (1, 5) int64,
     <label key>: int | Tensor (T,), ...}

With ``views=V > 1`` (two-view contrastive methods: SimCLR, MoCo, BYOL) ``"image"`` is replaced
by ``"views"``: a list of ``V`` independently augmented ``(C, S, S)`` tensors of the same
image, and ``"crops"`` is ``(V, 5)``. Each row of ``crops`` is ``(top, left, height, width,
flipped)`` of that view's crop in the original image's pixels.

Pixels are in ``[0, 1]``, or ``(x - mean) / std`` per channel when ``mean``/``std`` are given
(ImageNet: ``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``). ``sizes`` is 1 per
image: ``max_tokens`` counts images per batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from speechssl.data.augment import crop_and_flip, normalize
from speechssl.data.files import FileDataset, read_image
from speechssl.data.labels import LabelledCollater, LabelSpec
from speechssl.data.manifest import FormatError, Manifest

__all__ = ["ImageDataset", "ImageCollater"]


class ImageDataset(FileDataset):
    """Images of a manifest (:mod:`speechssl.data.files` format), cropped and flipped per item.

    Args:
        manifest: a ``Manifest`` or the path of a ``<split>.tsv``.
        labels: ``utterance`` (class) or ``sequence`` label files, one line per row.
        size: side of the square output in pixels.
        augment: True (training): random resized crop (``scale``, ``ratio``) and a flip with
            probability ``flip``, drawn from ``(seed, epoch, index)``. False (evaluation): the
            central square of ``crop_fraction`` of the shorter side.
        views: augmented views per item (2 for two-view contrastive methods); each view draws
            its crop and flip from the item's generator in turn.
        scale, ratio, flip, crop_fraction: see :func:`~speechssl.data.augment.crop_and_flip`.
        mean, std: per-channel normalisation (None: keep ``[0, 1]``).
        channels: 3 (RGB) or 1 (grey).
        seed: base seed of the augmentations.
        check_files: read every image's header now (a missing file, a file Pillow cannot read or a
            pixel count other than the manifest's fails naming the manifest line).
    """

    kind = "image"
    reserved = frozenset({"id", "index", "image", "views", "crops"})

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[LabelSpec] = (), *, size: int = 224,
                 augment: bool = True, views: int = 1, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), flip: float = 0.5, crop_fraction: float = 0.875,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, channels: int = 3,
                 seed: int = 0, check_files: bool = True) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not 0 <= flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {flip}")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) != channels:
                raise ValueError(f"{name} needs {channels} values (one per channel), got {len(value)}")
        if std is not None and any(v <= 0 for v in std):
            raise ValueError(f"std values must be positive, got {tuple(std)}")
        self.size, self.augment, self.views, self.channels = int(size), augment, int(views), channels
        self.scale, self.ratio, self.flip, self.crop_fraction = tuple(scale), tuple(ratio), flip, crop_fraction
        self.mean, self.std = mean, std
        super().__init__(manifest, labels, seed=seed, check_files=check_files)

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as ``(C, H, W)`` float32 in ``[0, 1]``, unaugmented."""
        path = self.path(index)
        if not path.is_file():
            raise FileNotFoundError(f"{self.where(index)}: image file not found: {path}")
        try:
            return read_image(path, self.channels)
        except FormatError as exc:
            raise FormatError(f"{self.where(index)}: {exc}") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.load(index)
        generator = self.generator(index) if self.augment else None
        outs, crops = [], []
        for _ in range(self.views):
            out, crop = crop_and_flip(image, self.size, generator, scale=self.scale, ratio=self.ratio,
                                      flip=self.flip, crop_fraction=self.crop_fraction)
            outs.append(normalize(out, self.mean, self.std))
            crops.append(crop)
        item = self.item_base(index)
        if self.views == 1:
            item["image"] = outs[0]
        else:
            item["views"] = outs
        item["crops"] = torch.tensor(crops, dtype=torch.long)
        return item

    def collater(self, *, label_pad: int = -100) -> ImageCollater:
        """An :class:`ImageCollater` for this dataset's labels."""
        return ImageCollater(self.label_kinds, label_pad=label_pad)


class ImageCollater(LabelledCollater):
    """Stack image items.

    Batch: ``{"id": list[str], "index": (B,) int64, "image": (B, C, S, S)`` or ``"views": list of
    V (B, C, S, S)``, ``"crops": (B, V, 5) int64``, labels as
    :func:`~speechssl.data.labels.collate_labels`\\ ``}``.

    Args:
        label_kinds: label key → ``"utterance"`` or ``"sequence"``.
        label_pad: id written into sequence-label padding.
    """

    def collate_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        if "views" in items[0]:
            n = len(items[0]["views"])
            batch["views"] = [stack_same([it["views"][v] for it in items], f"view {v}") for v in range(n)]
        else:
            batch["image"] = stack_same([it["image"] for it in items], "image")
        if "crops" in items[0]:
            batch["crops"] = torch.stack([it["crops"] for it in items])
        return batch


def stack_same(tensors: list[torch.Tensor], what: str) -> torch.Tensor:
    """``torch.stack`` with a clear error when shapes differ."""
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"cannot stack {what}s of different shapes {sorted(shapes)}; give the dataset a fixed size")
    return torch.stack(tensors)
