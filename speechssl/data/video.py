"""Video-clip dataset over a manifest of ``.npy`` clips or frame directories, and its collater.

A video is a ``.npy`` array ``(T, H, W, C)`` uint8 (C = 1 or 3) or a directory of frame images
(sorted by name, read as RGB); the manifest's size column is ``T`` (:mod:`speechssl.data.files`). An item
is a clip of ``num_frames`` frames, ``frame_stride`` apart::

    {"id": str, "index": int, "video": Tensor (C, num_frames, S, S) float32,
     "frames": Tensor (num_frames,) int64 (frame indices used), "crops": Tensor (1, 5) int64,
     <label key>: int | Tensor (T,), ...}

With ``augment`` the clip's start, crop box and flip are drawn from ``(seed, epoch, index)``
(in that order) and shared by all its frames; without it the clip and crop are centred. A
video shorter than the clip's span repeats its last frame. Only the frames used are read (a
``.npy`` is memory-mapped). ``sizes`` is 1 per clip: ``max_tokens`` counts clips per batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechssl.data.augment import clip_indices, crop_and_flip, normalize
from speechssl.data.files import FileDataset, frame_files, read_image
from speechssl.data.image import stack_same
from speechssl.data.labels import LabelledCollater, LabelSpec
from speechssl.data.manifest import FormatError, Manifest

__all__ = ["VideoDataset", "VideoCollater"]


class VideoDataset(FileDataset):
    """Clips of the videos of a manifest, temporally and spatially cropped per item.

    Args:
        manifest: a ``Manifest`` or the path of a ``<split>.tsv``.
        labels: ``utterance`` (class) or ``sequence`` label files, one line per row.
        num_frames: frames per clip.
        frame_stride: distance between the clip's frames (sampling rate).
        size: side of the square output frames in pixels; None keeps the videos' own
            resolution (no spatial crop; every video of a batch must then share it).
        augment: True (training): random clip start, random resized crop and flip. False: centred.
        scale, ratio, flip, crop_fraction: see :func:`~speechssl.data.augment.crop_and_flip`.
        mean, std: per-channel normalisation (None: keep ``[0, 1]``).
        seed: base seed of the augmentations.
        check_files: probe every video now (shape, dtype, frame count against the manifest).
    """

    kind = "video"
    reserved = frozenset({"id", "index", "video", "frames", "crops"})

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[LabelSpec] = (), *, num_frames: int = 16,
                 frame_stride: int = 4, size: int | None = 224, augment: bool = True,
                 scale: Sequence[float] = (0.25, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3), flip: float = 0.5,
                 crop_fraction: float = 1.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 seed: int = 0, check_files: bool = True) -> None:
        if num_frames <= 0 or frame_stride <= 0:
            raise ValueError(f"num_frames and frame_stride must be positive, got {num_frames} and {frame_stride}")
        if size is not None and size <= 0:
            raise ValueError(f"size must be positive or None, got {size}")
        if not 0 <= flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {flip}")
        self.num_frames, self.frame_stride, self.size, self.augment = int(num_frames), int(frame_stride), size, augment
        self.scale, self.ratio, self.flip, self.crop_fraction = tuple(scale), tuple(ratio), flip, crop_fraction
        self.mean, self.std = mean, std
        super().__init__(manifest, labels, seed=seed, check_files=check_files)

    def load(self, index: int, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``frames`` of video ``index`` as ``(C, len(frames), H, W)`` float32 in ``[0, 1]``."""
        path = self.path(index)
        if not path.exists():
            raise FileNotFoundError(f"{self.where(index)}: video file not found: {path}")
        total = self.manifest.sizes[index]
        if path.is_dir():
            files = frame_files(path)
            if len(files) != total:
                raise self.fail(index, f"has {len(files)} frames but the manifest says {total}")
            try:
                images = [read_image(files[i], channels=3) for i in frames.tolist()]
            except FormatError as exc:
                raise FormatError(f"{self.where(index)}: {exc}") from None
            for image, i in zip(images, frames.tolist()):
                if image.shape != images[0].shape:
                    raise self.fail(index, f"frame {files[i].name} is {tuple(image.shape)} but frame "
                                           f"{files[int(frames[0])].name} is {tuple(images[0].shape)}")
            return torch.stack(images, dim=1)  # (C, T, H, W)
        from speechssl.safe_io import load_npy

        try:  # a truncated file is named as such, not "mmap length is greater than file size"
            arr = load_npy(path, expected="a (T, H, W, C) uint8 video array")
        except ValueError as exc:
            raise self.fail(index, str(exc).removeprefix(f"{path}: ")) from None
        if arr.ndim != 4 or arr.dtype != np.uint8 or arr.shape[3] not in (1, 3) or arr.shape[0] != total:
            raise self.fail(index, f"expected a ({total}, H, W, C) uint8 array with C = 1 or 3, "
                                   f"got {arr.shape} {arr.dtype}")
        clip = torch.from_numpy(np.ascontiguousarray(arr[frames.numpy()]))  # (T, H, W, C) uint8
        return clip.permute(3, 0, 1, 2).float().div_(255.0)  # (C, T, H, W)

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = self.generator(index) if self.augment else None
        frames = clip_indices(self.manifest.sizes[index], self.num_frames, self.frame_stride, generator)
        clip = self.load(index, frames)
        height, width = clip.shape[-2:]
        if self.size is None:
            crop = (0, 0, height, width, 0)
        else:
            clip, crop = crop_and_flip(clip, self.size, generator, scale=self.scale, ratio=self.ratio,
                                       flip=self.flip, crop_fraction=self.crop_fraction)
        item = self.item_base(index)
        item["video"] = normalize(clip, self.mean, self.std)
        item["frames"] = frames
        item["crops"] = torch.tensor([crop], dtype=torch.long)
        return item

    def collater(self, *, label_pad: int = -100) -> VideoCollater:
        """A :class:`VideoCollater` for this dataset's labels."""
        return VideoCollater(self.label_kinds, label_pad=label_pad)


class VideoCollater(LabelledCollater):
    """Stack clip items.

    Batch: ``{"id": list[str], "index": (B,) int64, "video": (B, C, T, S, S) float32,
    "frames": (B, T) int64, "crops": (B, 1, 5) int64``, labels as
    :func:`~speechssl.data.labels.collate_labels`\\ ``}``.

    Args:
        label_kinds: label key → ``"utterance"`` or ``"sequence"``.
        label_pad: id written into sequence-label padding.
    """

    def collate_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "video": stack_same([it["video"] for it in items], "clip"),
            "frames": torch.stack([it["frames"] for it in items]),
            "crops": torch.stack([it["crops"] for it in items]),
        }
