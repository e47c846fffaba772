"""Semantic masks of the image corpus, for segmentation tasks: the class list and a split's masks.

The embedded corpus (``speechssl corpus images``) keeps, beside ``<subset>/<split>.tsv``, the
mask manifest ``<subset>/<split>.<masks>.tsv`` (one 8-bit PNG of class ids per image, the image's
stem + ``.<masks>.png``) and the class list ``<subset>/dict.<masks>.txt``.

* :func:`read_classes` — the class names of ``dict.<masks>.txt``, in id order.
* :func:`read_masks` — a split's images manifest and its masks ``(N, H, W)`` uint8, checked
  row by row (mask of the same image, one size per split, ids within the class list), each
  error naming the manifest line.
"""
from __future__ import annotations

from pathlib import Path

import torch

from speechssl.corpus.image import read_mask
from speechssl.data.manifest import FormatError, Manifest, read_dict
from speechssl.downstream.task import subset_split

__all__ = ["read_classes", "read_masks"]


def read_classes(data_dir: str | Path, subset: str, masks: str) -> list[str]:
    """Class names of ``<data_dir>/<subset>/dict.<masks>.txt`` (id order)."""
    path = Path(data_dir) / subset / f"dict.{masks}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: subset {subset} with masks {masks} needs <split>.{masks}.tsv masks "
                                f"and dict.{masks}.txt (build the corpus with 'speechssl corpus images')")
    return read_dict(path).symbols


def read_masks(data_dir: str | Path, subset: str, split: str, masks: str, num_classes: int
               ) -> tuple[Manifest, torch.Tensor]:
    """The images manifest of ``<subset>/<split>.tsv`` and its masks.

    Args:
        data_dir: corpus root.
        subset: its folder (``roads``, ``scenes``).
        split: ``train``, ``valid``, ``test``.
        masks: the mask manifests' extension (``sem``: ``<split>.sem.tsv``).
        num_classes: ``K``; mask ids must be in ``[0, K)``.

    Returns:
        ``(manifest, masks (N, H, W) uint8)`` in manifest order.

    Raises:
        FormatError: a mask count, pairing, size or class id that does not fit, naming the line.
    """
    manifest = subset_split(Path(data_dir), subset, split)
    masks_manifest = subset_split(Path(data_dir), subset, f"{split}.{masks}")
    if len(masks_manifest) != len(manifest):
        raise FormatError(f"{masks_manifest.source}: {len(masks_manifest)} masks for the {len(manifest)} images of "
                          f"{manifest.source}")
    out, shape = [], None
    for i, (image, mask) in enumerate(zip(manifest.paths, masks_manifest.paths)):
        where = f"{masks_manifest.source}:{i + 2}"
        if Path(mask).name.split(".")[0] != Path(image).stem:
            raise FormatError(f"{where}: mask {mask} is not the mask of image {image} ({manifest.source}:{i + 2})")
        m = read_mask(masks_manifest.root / mask)
        if shape is None:
            shape = tuple(m.shape)
        elif tuple(m.shape) != shape:
            raise FormatError(f"{where}: mask {mask} is {tuple(m.shape)} pixels, the split's first is {shape}")
        if int(m.max()) >= num_classes:
            raise FormatError(f"{where}: mask {mask} has class id {int(m.max())}; dict.{masks}.txt lists "
                              f"{num_classes} classes (0..{num_classes - 1})")
        out.append(m.to(torch.uint8))
    stacked = torch.stack(out) if out else torch.zeros(0, 1, 1, dtype=torch.uint8)  # (N, H, W)
    return manifest, stacked
