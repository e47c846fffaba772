"""Seeded image augmentations of contrastive methods (SimCLR's view pipeline) and a multi-view dataset.

Images are ``(C, H, W)`` float tensors in ``[0, 1]`` (``C`` = 3 RGB or 1 grey); every random
draw takes an explicit ``torch.Generator`` and happens in the documented order, whatever the
outcome of earlier draws, so a view is a function of the generator state alone.

Colour operations follow torchvision's tensor definitions (so the numbers agree with its
``ColorJitter``, ``RandomGrayscale`` and ``GaussianBlur``), written here from their formulas:

* :func:`grayscale` — luma ``0.2989 R + 0.587 G + 0.114 B`` (ITU-R 601-2), repeated to ``C``.
* :func:`adjust_brightness` — ``clamp(f * x, 0, 1)``.
* :func:`adjust_contrast` — ``clamp(f * x + (1 - f) * m, 0, 1)``, ``m`` the mean luma of the image.
* :func:`adjust_saturation` — ``clamp(f * x + (1 - f) * grayscale(x), 0, 1)``.
* :func:`adjust_hue` — RGB → HSV (:func:`rgb_to_hsv`), ``h ← (h + δ) mod 1``, HSV → RGB; ``δ`` in
  ``[-0.5, 0.5]`` turns.
* :func:`gaussian_blur` — separable kernel ``exp(-x² / 2σ²)`` normalised to sum 1 over
  ``x = -(k-1)/2 .. (k-1)/2``, reflect padding.
* :func:`color_jitter` — the four adjustments in a random order with factors drawn as
  torchvision's ``ColorJitter(brightness, contrast, saturation, hue)``.

:class:`ViewAugment` is SimCLR's augmentation of one view (Chen et al., 2020, appendix A):
random resized crop → horizontal flip → colour jitter (strength ``s``: ``0.8s, 0.8s, 0.8s,
0.2s``, probability 0.8) → greyscale (probability 0.2) → Gaussian blur (probability 0.5 on
ImageNet, off for CIFAR-size images; kernel 10% of the side, ``σ ~ U(0.1, 2.0)``).
:class:`MultiViewImageDataset` gives ``V`` such views of each image, seeded by
``(seed, epoch, index)``; :class:`OverlappingViewsDataset` gives two views, each with its own
augmentation, the second's crop drawn to overlap the first's (SlotCon), with the crop records
that align them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.nn import functional as F

from speechssl.data.augment import (
    Box, coin, hflip, normalize, overlapping_crop_box, random_resized_crop_box, resized_crop, uniform,
)
from speechssl.data.image import ImageDataset
from speechssl.data.manifest import Manifest

__all__ = [
    "LUMA", "grayscale", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue", "rgb_to_hsv",
    "hsv_to_rgb", "gaussian_kernel1d", "gaussian_blur", "blur_kernel_size", "jitter_params", "color_jitter", "apply_jitter",
    "ViewAugment", "MultiViewImageDataset", "OverlappingViewsDataset",
]

#: ITU-R 601-2 luma weights of R, G, B (torchvision's ``rgb_to_grayscale``)
LUMA = (0.2989, 0.587, 0.114)


def _check(x: torch.Tensor, what: str) -> None:
    if not torch.is_tensor(x) or x.dim() != 3 or x.shape[0] not in (1, 3) or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{what}: expected a float image (C, H, W) with C = 1 or 3, got {got}")


def _luma(x: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` → ``(1, H, W)`` luma (a grey image is its own luma)."""
    if x.shape[0] == 1:
        return x
    return (LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]).unsqueeze(0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """The luma of ``x (C, H, W)`` repeated to ``C`` channels."""
    _check(x, "grayscale")
    return _luma(x).expand_as(x).clone()


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``clamp(factor * x, 0, 1)`` (``factor`` >= 0; 1 keeps the image)."""
    _check(x, "adjust_brightness")
    return _blend(x, 0.0, factor)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the image's mean luma: ``clamp(factor * x + (1 - factor) * mean(luma), 0, 1)``."""
    _check(x, "adjust_contrast")
    return _blend(x, _luma(x).mean(), factor)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the grey image: ``clamp(factor * x + (1 - factor) * luma, 0, 1)``; grey images are unchanged."""
    _check(x, "adjust_saturation")
    if x.shape[0] == 1:
        return x
    return _blend(x, _luma(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB in ``[0, 1]`` → HSV, hue in turns ``[0, 1)`` (grey pixels: hue 0, saturation 0)."""
    r, g, b = x.unbind(0)
    v, _ = x.max(0)
    c = v - x.min(0).values  # chroma
    grey = c == 0
    s = torch.where(v > 0, c / torch.where(v > 0, v, 1.0), 0.0)
    safe = torch.where(grey, 1.0, c)
    rc, gc, bc = (v - r) / safe, (v - g) / safe, (v - b) / safe
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, 0.0, torch.remainder(h / 6.0, 1.0))
    return torch.stack([h, s, v])


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``(3, H, W)`` HSV (hue in turns) → RGB."""
    h, s, v = x.unbind(0)
    h6 = torch.remainder(h, 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # (r, g, b) per sector i = 0..5
    table = torch.stack([torch.stack([v, t, p]), torch.stack([q, v, p]), torch.stack([p, v, t]),
                         torch.stack([p, q, v]), torch.stack([t, p, v]), torch.stack([v, p, q])])  # (6, 3, H, W)
    return table.gather(0, i.expand(1, 3, *i.shape)).squeeze(0).clamp(0.0, 1.0)


def adjust_hue(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Rotate the hue by ``delta`` turns (``-0.5 <= delta <= 0.5``); grey images are unchanged."""
    _check(x, "adjust_hue")
    if not -0.5 <= delta <= 0.5:
        raise ValueError(f"hue delta must be in [-0.5, 0.5] turns, got {delta}")
    if x.shape[0] == 1:
        return x
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([torch.remainder(hsv[0] + delta, 1.0), hsv[1], hsv[2]])
    return hsv_to_rgb(hsv)


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """``(k,)`` float32: ``exp(-x² / (2σ²))`` over ``x = -(k-1)/2 .. (k-1)/2``, normalised to sum 1."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    half = (kernel_size - 1) / 2
    xs = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    pdf = torch.exp(-0.5 * (xs / sigma) ** 2)
    return (pdf / pdf.sum()).float()


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x (C, H, W)`` (:func:`gaussian_kernel1d`), reflect padding; same shape."""
    _check(x, "gaussian_blur")
    k = gaussian_kernel1d(kernel_size, sigma).to(x)
    pad = kernel_size // 2
    if pad >= min(x.shape[1:]):
        raise ValueError(f"kernel_size {kernel_size} too large for a {x.shape[1]}x{x.shape[2]} image (reflect padding)")
    C = x.shape[0]
    y = F.pad(x[None], (pad, pad, pad, pad), mode="reflect")  # (1, C, H + 2p, W + 2p)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(C, 1, 1, kernel_size), groups=C)  # along W
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(C, 1, kernel_size, 1), groups=C)  # along H
    return y[0]


def blur_kernel_size(side: int, fraction: float = 0.1) -> int:
    """SimCLR's kernel: ``fraction`` of the image side, rounded to the nearest odd size, at least 3."""
    k = max(3, int(round(side * fraction)))
    return k if k % 2 else k + 1


def jitter_params(generator: torch.Generator, brightness: float, contrast: float, saturation: float,
                  hue: float) -> tuple[list[int], tuple[float, float, float, float]]:
    """Draw ``ColorJitter``'s order and factors: a permutation of the 4 operations (0 brightness,
    1 contrast, 2 saturation, 3 hue), then ``U(max(0, 1 - b), 1 + b)``, the same for contrast
    and saturation, and ``U(-hue, hue)``; all five draws always happen (a 0 strength draws from
    ``U(1, 1)`` = 1, or ``U(0, 0)`` = 0 for the hue).
    """
    order = torch.randperm(4, generator=generator).tolist()
    b, c, s = (uniform(generator, max(0.0, 1.0 - v), 1.0 + v) for v in (brightness, contrast, saturation))
    delta = uniform(generator, -hue, hue)
    return order, (b, c, s, delta)


def color_jitter(x: torch.Tensor, generator: torch.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue changes in a random order (:func:`jitter_params`)."""
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if v < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {v}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
    order, factors = jitter_params(generator, brightness, contrast, saturation, hue)
    return apply_jitter(x, order, factors)


def apply_jitter(x: torch.Tensor, order: Sequence[int], factors: Sequence[float]) -> torch.Tensor:
    """Apply drawn jitter: operations ``order`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with
    ``factors = (brightness, contrast, saturation, hue delta)``."""
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for i in order:
        x = ops[i](x, factors[i])
    return x


@dataclass
class ViewAugment:
    """SimCLR's augmentation of one view (see the module docstring); defaults: SimCLR on CIFAR-10.

    Draw order per call (every draw always happens): the crop box
    (:func:`~speechssl.data.augment.random_resized_crop_box`), the flip coin, the jitter coin,
    the jitter order and factors (:func:`jitter_params`), the greyscale coin, the blur coin and
    ``σ``.
    """

    size: int = 32  # output side in pixels
    scale: tuple[float, float] = (0.08, 1.0)  # crop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect (w / h) range
    flip: float = 0.5  # horizontal flip probability
    jitter_strength: float = 0.5  # colour distortion strength s (SimCLR: 0.5 on CIFAR-10, 1.0 on ImageNet)
    jitter_prob: float = 0.8  # probability of applying colour jitter
    grey_prob: float = 0.2  # probability of converting to greyscale
    blur_prob: float = 0.0  # probability of a Gaussian blur (SimCLR: 0.5 on ImageNet, 0 on CIFAR)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # σ range of the blur, pixels
    blur_fraction: float = 0.1  # blur kernel side as a fraction of ``size``

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        for name in ("flip", "jitter_prob", "grey_prob", "blur_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.jitter_strength < 0 or 0.2 * self.jitter_strength > 0.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5] (hue jitter 0.2 s <= 0.5), got {self.jitter_strength}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be 0 < min <= max, got {tuple(self.blur_sigma)}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must be 0 < min <= max <= 1, got {tuple(self.scale)}")

    def __call__(self, image: torch.Tensor, generator: torch.Generator, *, constraint: Box | None = None,
                 min_overlap: float = 0.01) -> tuple[torch.Tensor, list[float]]:
        """One view of ``image (C, H, W)`` in ``[0, 1]``.

        With ``constraint`` (a ``(top, left, height, width)`` box, e.g. another view's crop) the
        crop box is drawn by :func:`~speechssl.data.augment.overlapping_crop_box` so that it
        shares at least ``min_overlap`` of its area with that box (SlotCon's second view); the
        draws after it are the same.

        Returns:
            the ``(C, size, size)`` view and its record ``[top, left, height, width, flipped,
            jittered, greyed, blur σ (0: none)]``.
        """
        _check(image, "ViewAugment")
        if constraint is None:
            box = random_resized_crop_box(image.shape[1], image.shape[2], self.scale, self.ratio, generator)
        else:
            box = overlapping_crop_box(image.shape[1], image.shape[2], self.scale, self.ratio, generator,
                                       tuple(int(v) for v in constraint), min_overlap=min_overlap)
        flipped = coin(generator, self.flip)
        jittered = coin(generator, self.jitter_prob)
        s = self.jitter_strength
        order, factors = jitter_params(generator, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        greyed = coin(generator, self.grey_prob)
        blurred = coin(generator, self.blur_prob)
        sigma = uniform(generator, *self.blur_sigma)
        x = resized_crop(image, box, self.size).clamp(0.0, 1.0)  # antialiased bilinear can overshoot slightly
        if flipped:
            x = hflip(x)
        if jittered:
            x = apply_jitter(x, order, factors)
        if greyed:
            x = grayscale(x)
        if blurred:
            x = gaussian_blur(x, blur_kernel_size(self.size, self.blur_fraction), sigma)
        return x, [*map(float, box), float(flipped), float(jittered), float(greyed), sigma if blurred else 0.0]


class MultiViewImageDataset(ImageDataset):
    """``V`` views of each image through a :class:`ViewAugment`, seeded by ``(seed, epoch, index)``.

    Items: ``{"id", "index", "views": [V x (C, S, S)], "crops": (V, 8) float32 records}`` plus
    labels; in evaluation (``augment=False``) one centre-cropped ``"image"`` as
    :class:`~speechssl.data.image.ImageDataset` gives it. Views are normalised by ``mean``/``std``
    after augmentation.

    Args:
        manifest: a ``Manifest`` or ``<split>.tsv`` path.
        view_augment: the augmentation of every view (its ``size`` is the output side).
        views: views per item (SimCLR: 2).
        kwargs: the rest of :class:`~speechssl.data.image.ImageDataset` (labels, mean, std,
            channels, seed, crop_fraction, augment, check_files).
    """

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[Any] = (), *, view_augment: ViewAugment,
                 views: int = 2, **kwargs: Any) -> None:
        view_augment.validate()
        self.view_augment = view_augment
        super().__init__(manifest, labels, size=view_augment.size, views=views, **kwargs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.augment:
            item = super().__getitem__(index)
            if "views" in item:  # evaluation: one centred view (the same for every V)
                item["image"] = item.pop("views")[0]
            return item
        image = self.load(index)
        generator = self.generator(index)
        outs, records = [], []
        for _ in range(self.views):
            view, record = self.view_augment(image, generator)
            outs.append(normalize(view, self.mean, self.std))
            records.append(record)
        item = self.item_base(index)
        item["views"] = outs
        item["crops"] = torch.tensor(records, dtype=torch.float32)
        return item


class OverlappingViewsDataset(ImageDataset):
    """Two views of each image whose crops overlap, each through its own :class:`ViewAugment`.

    The views of dense and slot-level methods (SlotCon's ``CustomDataAugmentation``): view 1
    through ``view_augments[0]``; view 2 through ``view_augments[1]`` with its crop box drawn to
    share at least ``min_overlap`` of its area with view 1's
    (:func:`~speechssl.data.augment.overlapping_crop_box`) when ``condition_overlap``. Both
    draw from the item's generator ``(seed, epoch, index)``, view 1 first. The crop records
    (``[top, left, height, width, flipped, ...]`` in the original image's pixels) give the
    geometric correspondence of the two views
    (:func:`speechssl.nn.view_align.overlap_boxes`).

    Items: ``{"id", "index", "views": [2 x (C, S, S)], "crops": (2, 8) float32 records}`` plus
    labels, as :class:`MultiViewImageDataset`; in evaluation (``augment=False``) one
    centre-cropped ``"image"``.

    Args:
        manifest: a ``Manifest`` or ``<split>.tsv`` path.
        view_augments: the two views' augmentations (the same ``size``).
        condition_overlap: draw view 2's crop to overlap view 1's.
        min_overlap: the least shared fraction of view 2's drawn area.
        kwargs: the rest of :class:`~speechssl.data.image.ImageDataset`.
    """

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[Any] = (), *,
                 view_augments: Sequence[ViewAugment], condition_overlap: bool = True, min_overlap: float = 0.01,
                 **kwargs: Any) -> None:
        if len(view_augments) != 2:
            raise ValueError(f"OverlappingViewsDataset takes 2 view augmentations, got {len(view_augments)}")
        for v in view_augments:
            v.validate()
        if view_augments[0].size != view_augments[1].size:
            raise ValueError(f"both views need one size, got {view_augments[0].size} and {view_augments[1].size}")
        if not 0 <= min_overlap <= 1:
            raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
        self.view_augments = tuple(view_augments)
        self.condition_overlap, self.min_overlap = bool(condition_overlap), float(min_overlap)
        super().__init__(manifest, labels, size=view_augments[0].size, views=2, **kwargs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.augment:
            item = super().__getitem__(index)
            if "views" in item:  # evaluation: one centred view
                item["image"] = item.pop("views")[0]
            return item
        image = self.load(index)
        generator = self.generator(index)
        first, rec1 = self.view_augments[0](image, generator)
        constraint = tuple(int(v) for v in rec1[:4]) if self.condition_overlap else None
        second, rec2 = self.view_augments[1](image, generator, constraint=constraint, min_overlap=self.min_overlap)
        item = self.item_base(index)
        item["views"] = [normalize(first, self.mean, self.std), normalize(second, self.mean, self.std)]
        item["crops"] = torch.tensor([rec1, rec2], dtype=torch.float32)
        return item
