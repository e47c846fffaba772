"""Seeded augmentations: every random draw takes an explicit ``torch.Generator``.

Datasets seed the generator from ``(seed, epoch, index)``
(:func:`~speechssl.data.base.item_generator`), so an augmented item never depends on global
RNG, on the worker that loads it or on what was loaded before. Draws happen in a fixed order
documented per function, so the same generator state always gives the same result.

Images are ``(C, H, W)`` float tensors, video clips ``(C, T, H, W)``, point sets ``(N, 3)``.
A crop box is ``(top, left, height, width)`` in pixels.
"""
from __future__ import annotations

import math
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "uniform", "randint", "coin", "random_resized_crop_box", "box_intersection", "overlapping_crop_box",
    "center_crop_box", "resized_crop", "hflip", "crop_and_flip", "IMAGENET_STATS", "pixel_statistics", "normalize", "clip_indices", "subsample_indices",
    "rotation_matrix", "normalize_points",
]

Box = tuple[int, int, int, int]


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from ``U(low, high)`` (one float32 draw of ``generator``)."""
    return float(torch.empty(()).uniform_(low, high, generator=generator))


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer in ``[low, high)`` (``high > low``)."""
    return int(torch.randint(low, high, (), generator=generator))


def coin(generator: torch.Generator, p: float) -> bool:
    """True with probability ``p``; always draws once, so the draws that follow don't depend on ``p``."""
    return float(torch.rand((), generator=generator)) < p


def _check_crop_range(scale: Sequence[float], ratio: Sequence[float]) -> None:
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be 0 < min <= max <= 1, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be 0 < min <= max, got {tuple(ratio)}")


def _crop_candidates(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                     generator: torch.Generator, attempts: int) -> Iterator[tuple[Box, float]]:
    """The Inception-style tries: each draws an area fraction ``U(scale)`` and a log-uniform aspect
    ratio and, when the box fits, its top and left; yields ``(box, drawn target area)`` of each
    fitting try. Lazily, so a caller that stops early draws no more than it used."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * uniform(generator, scale[0], scale[1])
        aspect = math.exp(uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = randint(generator, 0, height - h + 1)
            left = randint(generator, 0, width - w + 1)
            yield (top, left, h, w), target


def random_resized_crop_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                            generator: torch.Generator, attempts: int = 10) -> Box:
    """A random crop box covering a fraction in ``scale`` of the area, aspect (w/h) in ``ratio``.

    The Inception-style crop (as torchvision's ``RandomResizedCrop``): up to ``attempts``
    tries, each drawing an area fraction ``U(scale)``, a log-uniform aspect ratio and, if the box
    fits, its top and left; when no try fits, the largest central box whose aspect ratio is
    clamped to ``ratio``.
    """
    _check_crop_range(scale, ratio)
    for box, _ in _crop_candidates(height, width, scale, ratio, generator, attempts):
        return box
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def box_intersection(a: Box, b: Box) -> int:
    """Pixels shared by two ``(top, left, height, width)`` boxes (0 when they do not overlap)."""
    rows = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    cols = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return rows * cols


def overlapping_crop_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                         generator: torch.Generator, constraint: Box, *, min_overlap: float = 0.01,
                         attempts: int = 10) -> Box:
    """A :func:`random_resized_crop_box` that shares at least ``min_overlap`` of its area with ``constraint``.

    SlotCon's conditioned second crop (``CustomTwoCrop.get_params_conditioned`` of its code): up
    to ``attempts`` tries, each drawing an area fraction ``U(scale)``, a log-uniform aspect
    ratio and, if the box fits, its top and left; a try is kept when its intersection with
    ``constraint`` is at least ``min_overlap`` times the drawn target area. When no try is
    kept, a fresh unconditioned :func:`random_resized_crop_box` (which may not overlap).
    """
    if not 0 <= min_overlap <= 1:
        raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
    _check_crop_range(scale, ratio)
    for box, target in _crop_candidates(height, width, scale, ratio, generator, attempts):
        if box_intersection(box, constraint) >= min_overlap * target:
            return box
    return random_resized_crop_box(height, width, scale, ratio, generator, attempts)


def center_crop_box(height: int, width: int, fraction: float = 1.0) -> Box:
    """The central square whose side is ``fraction`` of the shorter side (at least 1 pixel)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side, side


def resized_crop(x: torch.Tensor, box: Box, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop ``box`` out of the last two dims of ``x`` and resize it to ``size`` (bilinear, antialiased).

    Args:
        x: ``(C, H, W)`` image or ``(C, T, H, W)`` clip, float.
        box: ``(top, left, height, width)``.
        size: output ``(height, width)``, or one int for a square.

    Returns:
        ``(C, size_h, size_w)`` or ``(C, T, size_h, size_w)``, the dtype of ``x``.
    """
    top, left, h, w = box
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    crop = x[..., top:top + h, left:left + w]
    if crop.shape[-2:] == out_size:
        return crop.contiguous()
    if x.dim() == 3:
        return F.interpolate(crop[None], size=out_size, mode="bilinear", align_corners=False, antialias=True)[0]
    if x.dim() == 4:  # (C, T, h, w): the frames are the batch
        frames = crop.permute(1, 0, 2, 3)  # (T, C, h, w)
        out = F.interpolate(frames, size=out_size, mode="bilinear", align_corners=False, antialias=True)
        return out.permute(1, 0, 2, 3).contiguous()  # (C, T, H', W')
    raise ValueError(f"resized_crop takes (C, H, W) or (C, T, H, W), got shape {tuple(x.shape)}")


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror the last dim (width) of an image or clip."""
    return x.flip(-1)


def crop_and_flip(x: torch.Tensor, size: int, generator: torch.Generator | None, *,
                  scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                  flip: float = 0.5, crop_fraction: float = 0.875) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The standard spatial augmentation of an image ``(C, H, W)`` or clip ``(C, T, H, W)``.

    With a generator (training): :func:`random_resized_crop_box` with ``scale``/``ratio``, then
    a horizontal flip with probability ``flip`` (one :func:`coin` draw after the box's draws),
    the same for every frame of a clip. Without one (evaluation): the central square of
    ``crop_fraction`` of the shorter side (:func:`center_crop_box`), no flip. Either way the crop
    is resized to ``size x size``.

    Returns:
        the ``(C, size, size)`` / ``(C, T, size, size)`` result and ``(top, left, height, width,
        flipped)`` of the crop in the input's pixels.
    """
    height, width = x.shape[-2:]
    if generator is None:
        box, flipped = center_crop_box(height, width, crop_fraction), False
    else:
        box = random_resized_crop_box(height, width, scale, ratio, generator)
        flipped = coin(generator, flip)
    out = resized_crop(x, box, size)
    if flipped:
        out = hflip(out)
    return out, (*box, int(flipped))


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # per-channel RGB mean and std


def pixel_statistics(name: str, channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The ``(mean, std)`` a ``task.normalize`` setting names: ``"none"`` → ``(None, None)``,
    ``"imagenet"`` → :data:`IMAGENET_STATS` (3 channels only); ValueError naming the field otherwise."""
    if name not in ("none", "imagenet"):
        raise ValueError(f"task.normalize must be 'none' or 'imagenet', got {name!r}")
    if name == "none":
        return None, None
    if channels != 3:
        raise ValueError(f"task.normalize=imagenet needs 3 channels, model.channels is {channels}")
    return IMAGENET_STATS


def normalize(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dim 0) of an image or clip; unchanged when both are None."""
    if mean is None and std is None:
        return x
    channels = x.shape[0]
    m = torch.as_tensor(mean if mean is not None else [0.0] * channels, dtype=x.dtype)
    s = torch.as_tensor(std if std is not None else [1.0] * channels, dtype=x.dtype)
    if m.numel() != channels or s.numel() != channels:
        raise ValueError(f"mean and std need {channels} values (one per channel), got {m.numel()} and {s.numel()}")
    shape = (channels,) + (1,) * (x.dim() - 1)
    return (x - m.view(shape)) / s.view(shape)


def clip_indices(total: int, num_frames: int, stride: int, generator: torch.Generator | None) -> torch.Tensor:
    """Frame indices ``(num_frames,)`` of a clip: ``start + stride * arange(num_frames)``.

    With a generator the start is uniform over every clip that fits (one draw); without one
    (evaluation) the clip is centred. A video shorter than the clip's span starts at 0 and
    repeats its last frame.
    """
    if total <= 0 or num_frames <= 0 or stride <= 0:
        raise ValueError(f"need total, num_frames and stride > 0, got {total}, {num_frames}, {stride}")
    span = (num_frames - 1) * stride + 1
    room = total - span
    if room <= 0:
        start = 0
    elif generator is not None:
        start = randint(generator, 0, room + 1)
    else:
        start = room // 2
    return (start + stride * torch.arange(num_frames)).clamp_(max=total - 1)


def subsample_indices(total: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``k`` point indices out of ``total``.

    With a generator: ``k`` distinct random points (a permutation's first ``k``), or, when
    ``total < k``, every point plus ``k - total`` drawn with replacement. Without one
    (evaluation): evenly spaced ``floor(i * total / k)``, or ``i mod total`` when ``total < k``.
    """
    if total <= 0 or k <= 0:
        raise ValueError(f"need total and k > 0, got {total} and {k}")
    if generator is None:
        if total >= k:
            return torch.arange(k) * total // k
        return torch.arange(k) % total
    if total >= k:
        return torch.randperm(total, generator=generator)[:k]
    extra = torch.randint(0, total, (k - total,), generator=generator)
    return torch.cat([torch.randperm(total, generator=generator), extra])


def rotation_matrix(generator: torch.Generator, kind: Literal["z", "so3"]) -> torch.Tensor:
    """A random rotation ``(3, 3)`` float32: about the z axis (angle ``U(0, 2 pi)``) or uniform on SO(3).

    ``"so3"`` normalises four standard normal draws into a unit quaternion, which is uniform
    over rotations.
    """
    if kind == "z":
        angle = uniform(generator, 0.0, 2 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    if kind == "so3":
        q = torch.randn(4, generator=generator, dtype=torch.float64)
        w, x, y, z = (q / q.norm()).tolist()
        return torch.tensor([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ], dtype=torch.float32)
    raise ValueError(f"rotation must be 'z' or 'so3', got {kind!r}")


def normalize_points(points: torch.Tensor) -> torch.Tensor:
    """Centre ``(N, 3)`` points on their centroid and scale them into the unit ball."""
    centred = points - points.mean(dim=0, keepdim=True)
    radius = centred.norm(dim=1).max()
    return centred / radius if radius > 0 else centred
