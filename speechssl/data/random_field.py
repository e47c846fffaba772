"""Random field augmentations (Mansfield et al., 2023): affine and colour transforms whose
parameters vary from pixel to pixel as smooth Gaussian random fields.

"Random Field Augmentations for Self-Supervised Representation Learning" (arXiv 2311.03629)
generalises the global affine transform (rotation, scale, shear, translation) and colour
jitter (hue, saturation, brightness) by letting every parameter be a function of the pixel
coordinates, drawn as an independent Gaussian random field. A stationary field ``g`` over an
``H x W`` grid is made here as white noise filtered by a Gaussian kernel:

* ``w ~ N(0, 1)`` i.i.d. on an ``(H + 2r) x (W + 2r)`` grid, ``r = ceil(3 σ)``;
* ``g = (G_σ * w) / ||G_σ||₂`` with ``G_σ`` the separable, normalised Gaussian kernel of standard
  deviation ``σ`` pixels (:func:`~speechssl.data.image_augment.gaussian_kernel1d`) and ``*`` the
  "valid" 2-D convolution, so every pixel of the ``H x W`` output sees a full kernel: the field is
  exactly stationary, ``Var g(p) = 1`` and ``Cov(g(p), g(p + δ)) = ρ(δ_y) ρ(δ_x)`` with
  ``ρ(d) = Σ_k G_k G_{k+d} / Σ_k G_k²`` (:func:`field_correlation`), ≈ ``exp(-d² / 4σ²)``.

*Smoothness* is ``σ`` (given as a fraction of the image side, so a setting means the same at 32
and 64 px) and *strength* is the amplitude ``s`` the unit field is multiplied by; each field is
clipped to ``±clip · s``. The paper's finding is that mild fields help and strong ones destroy
image structure (and with it downstream accuracy); :func:`mild` and :func:`strong` are the two
named settings here (their numbers are ours, chosen for 32-64 px images, not the paper's
ImageNet values).

Affine field (output pixel ``p = (x, y)`` in pixels, ``c`` the image centre, ``L`` the side):
``q(p) = c + R(θ(p)) · e^{σ_s(p)} · [[1, h(p)], [0, 1]] · (p - c) + L · t(p)``; the output at
``p`` is the input bilinearly sampled at ``q(p)`` with border replication (:func:`warp`), so
``θ ≡ σ_s ≡ h ≡ t ≡ 0`` is the identity exactly and a constant integer ``L·t`` is a pixel shift.
Colour fields act per pixel in the order brightness ``clamp(e^{b(p)} x)``, contrast (blend with
the image's mean luma by ``e^{c(p)}``), saturation (blend with the pixel's luma by ``e^{a(p)}``),
hue (``h ← h + δ(p) mod 1`` turns, ``|δ| ≤ 0.5``) — the formulas of
:mod:`speechssl.data.image_augment` with a per-pixel factor, so a constant field equals the
global operation. Contrast is an addition of ours (the paper lists hue, saturation and
brightness); the named settings leave it at 0.

Images are ``(C, H, W)`` float in ``[0, 1]`` (``C`` = 1 or 3); every draw takes an explicit
``torch.Generator``, and :class:`RandomFieldAugment` always makes the same draws in the same
order whatever its probabilities and strengths, so a view is a function of the generator state.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from speechssl.data.augment import coin
from speechssl.data.image_augment import LUMA, ViewAugment, gaussian_kernel1d, hsv_to_rgb, rgb_to_hsv

__all__ = [
    "RandomFieldConfig", "mild", "strong", "SETTINGS", "random_field_setting", "gaussian_random_field",
    "field_correlation", "affine_coordinates", "warp", "apply_color_fields", "RandomFieldAugment",
    "RandomFieldViewAugment", "config_from_overrides",
]

_AFFINE = ("rotation", "scale", "shear", "translation_x", "translation_y")
_COLOUR = ("brightness", "contrast", "saturation", "hue")


@dataclass
class RandomFieldConfig:
    """Smoothness, strength and probability of each transform family (defaults: all off)."""

    affine_prob: float = 0.0  # probability of the affine field per view
    affine_smoothness: float = 0.125  # σ of the Gaussian kernel of the affine fields, fraction of the side
    rotation: float = 0.0  # amplitude of the rotation field, radians
    scale: float = 0.0  # amplitude of the log-scale field (e^{field} is the local zoom)
    shear: float = 0.0  # amplitude of the shear field (x += shear · y about the centre)
    translation: float = 0.0  # amplitude of each translation field component, fraction of the side
    color_prob: float = 0.0  # probability of the colour fields per view
    color_smoothness: float = 0.125  # σ of the Gaussian kernel of the colour fields, fraction of the side
    brightness: float = 0.0  # amplitude of the log brightness factor field
    contrast: float = 0.0  # amplitude of the log contrast factor field (not in the paper; 0 in the settings)
    saturation: float = 0.0  # amplitude of the log saturation factor field
    hue: float = 0.0  # amplitude of the hue shift field, turns (clipped to ±0.5)
    clip: float = 3.0  # each field is clipped to ±clip · amplitude (inf: no clipping)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        for name in ("affine_prob", "color_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"random_field.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("affine_smoothness", "color_smoothness", "clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"random_field.{name} must be > 0, got {getattr(self, name)}")
        for name in ("rotation", "scale", "shear", "translation", "brightness", "contrast", "saturation", "hue"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"random_field.{name} is an amplitude and must be >= 0, got {getattr(self, name)}")

    @property
    def affine_on(self) -> bool:
        return any(getattr(self, n) > 0 for n in ("rotation", "scale", "shear", "translation"))

    @property
    def color_on(self) -> bool:
        return any(getattr(self, n) > 0 for n in _COLOUR)


def mild() -> RandomFieldConfig:
    """Smooth, small fields (σ = 1/4 of the side): rotation 0.1 rad (≈ 6°), 5 % zoom and shear,
    2 % translation; brightness and saturation factors e^{±0.1}, hue ±0.02 turns; each family on
    half of the views."""
    return RandomFieldConfig(affine_prob=0.5, affine_smoothness=0.25, rotation=0.1, scale=0.05, shear=0.05,
                             translation=0.02, color_prob=0.5, color_smoothness=0.25, brightness=0.1,
                             saturation=0.1, hue=0.02)


def strong() -> RandomFieldConfig:
    """Rough, large fields (σ = 1/16 of the side): rotation 0.5 rad (≈ 29°), 25 % zoom and shear,
    6 % translation; brightness and saturation factors e^{±0.5}, hue ±0.1 turns; each family on
    80 % of the views."""
    return RandomFieldConfig(affine_prob=0.8, affine_smoothness=0.0625, rotation=0.5, scale=0.25, shear=0.25,
                             translation=0.06, color_prob=0.8, color_smoothness=0.0625, brightness=0.5,
                             saturation=0.5, hue=0.1)


#: the named settings; ``none`` leaves every view unchanged
SETTINGS = {"none": RandomFieldConfig, "mild": mild, "strong": strong}


def random_field_setting(name: str) -> RandomFieldConfig:
    """The named setting ``none``, ``mild`` or ``strong``."""
    if name not in SETTINGS:
        raise ValueError(f"unknown random field setting {name!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[name]()


def _radius(sigma: float) -> int:
    return max(1, int(math.ceil(3.0 * sigma)))


def gaussian_random_field(height: int, width: int, sigma: float, generator: torch.Generator,
                          count: int = 1) -> torch.Tensor:
    """``count`` independent unit-variance stationary Gaussian fields, ``(count, H, W)`` float32.

    White noise on ``(H + 2r, W + 2r)`` (``r = ceil(3σ)``; one ``torch.randn`` draw of that shape
    per call) filtered by the separable Gaussian kernel of ``σ`` pixels, "valid" convolution,
    divided by the kernel's L2 norm (see the module docstring).
    """
    if height < 1 or width < 1 or count < 1:
        raise ValueError(f"field shape must be positive, got count={count}, {height}x{width}")
    if not sigma > 0:
        raise ValueError(f"field sigma must be > 0 pixels, got {sigma}")
    r = _radius(sigma)
    noise = torch.randn(count, height + 2 * r, width + 2 * r, generator=generator)
    # the valid convolution along each axis as one banded (Toeplitz) matrix product: a few small
    # matmuls are much cheaper than conv2d with a long thin kernel; the 2-D kernel is k kᵀ, whose
    # squared L2 norm (Σ k²)² is folded into the matrices
    return _band(height, sigma) @ noise @ _band(width, sigma).T  # (count, H, W)


@functools.lru_cache(maxsize=64)
def _band(n: int, sigma: float) -> torch.Tensor:
    """``(n, n + 2r)`` float32: row ``i`` holds the kernel at columns ``i .. i + 2r``, divided by ``Σ k²``^{1/2}."""
    r = _radius(sigma)
    k = gaussian_kernel1d(2 * r + 1, sigma).double()
    k = k / (k ** 2).sum().sqrt()
    band = torch.zeros(n, n + 2 * r, dtype=torch.float64)
    for i in range(n):
        band[i, i:i + 2 * r + 1] = k
    return band.float()


def field_correlation(sigma: float, dy: int, dx: int) -> float:
    """Exact ``Corr(g(p), g(p + (dy, dx)))`` of :func:`gaussian_random_field`: ``ρ(dy) ρ(dx)``,
    ``ρ(d) = Σ_k G_k G_{k+d} / Σ_k G_k²`` over the truncated kernel (0 beyond ``2r``)."""
    r = _radius(sigma)
    k = gaussian_kernel1d(2 * r + 1, sigma).double()

    def rho(d: int) -> float:
        d = abs(d)
        if d > 2 * r:
            return 0.0
        return float((k[: len(k) - d] * k[d:]).sum() / (k ** 2).sum())

    return rho(dy) * rho(dx)


def affine_coordinates(rotation: torch.Tensor, log_scale: torch.Tensor, shear: torch.Tensor,
                       translation_x: torch.Tensor, translation_y: torch.Tensor) -> torch.Tensor:
    """Source coordinates ``q(p)`` of the per-pixel affine map, ``(2, H, W)``: ``q[0]`` = x (column),
    ``q[1]`` = y (row), in pixels.

    Args:
        rotation: ``(H, W)`` angle θ(p), radians (``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]`` on
            ``(x, y)`` with y pointing down).
        log_scale: ``(H, W)`` ``σ_s(p)``; the local matrix is scaled by ``e^{σ_s}``.
        shear: ``(H, W)`` ``h(p)``; the local matrix includes ``[[1, h], [0, 1]]``.
        translation_x, translation_y: ``(H, W)`` in pixels.
    """
    H, W = rotation.shape
    dtype = rotation.dtype
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    ys = torch.arange(H, dtype=dtype).view(H, 1).expand(H, W) - cy  # (H, W)
    xs = torch.arange(W, dtype=dtype).view(1, W).expand(H, W) - cx  # (H, W)
    u = xs + shear * ys  # shear, then zoom, then rotate (p - c)
    v = ys
    z = torch.exp(log_scale)
    u, v = z * u, z * v
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    qx = cos * u - sin * v + cx + translation_x
    qy = sin * u + cos * v + cy + translation_y
    return torch.stack([qx, qy])


def warp(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x (C, H, W)`` at ``coords (2, H', W')`` (x, y in pixels) with
    border replication; ``(C, H', W')``. Integer coordinates copy pixels exactly."""
    C, H, W = x.shape
    qx = coords[0].clamp(0, W - 1)
    qy = coords[1].clamp(0, H - 1)
    x0, y0 = qx.floor(), qy.floor()
    fx, fy = qx - x0, qy - y0  # (H', W') in [0, 1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    flat = x.reshape(C, H * W)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[:, (yy * W + xx).reshape(-1)].reshape(C, *yy.shape)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] == 1:
        return x
    return (LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]).unsqueeze(0)  # (1, H, W)


def apply_color_fields(x: torch.Tensor, brightness: torch.Tensor | None = None, contrast: torch.Tensor | None = None,
                       saturation: torch.Tensor | None = None, hue: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel colour transforms of ``x (C, H, W)`` in ``[0, 1]``, in this order (None: skipped).

    Args:
        brightness, contrast, saturation: ``(H, W)`` positive factor maps ``f`` (1: no change):
            ``clamp(f x)``, ``clamp(f x + (1 - f) mean(luma))``, ``clamp(f x + (1 - f) luma)``.
        hue: ``(H, W)`` hue shift in turns, ``[-0.5, 0.5]``.

    Saturation and hue leave grey (``C = 1``) images unchanged, as their global forms do.
    """
    if brightness is not None:
        x = (brightness * x).clamp(0.0, 1.0)
    if contrast is not None:
        m = _luma(x).mean()
        x = (contrast * x + (1.0 - contrast) * m).clamp(0.0, 1.0)
    if x.shape[0] == 3:
        if saturation is not None:
            x = (saturation * x + (1.0 - saturation) * _luma(x)).clamp(0.0, 1.0)
        if hue is not None:
            hsv = rgb_to_hsv(x)
            x = hsv_to_rgb(torch.stack([torch.remainder(hsv[0] + hue, 1.0), hsv[1], hsv[2]]))
    return x


def _scaled(unit: torch.Tensor, amplitude: float, clip: float) -> torch.Tensor:
    """``amplitude · unit`` clipped to ``±clip · amplitude`` (exact zeros at amplitude 0)."""
    if amplitude == 0:
        return torch.zeros_like(unit)
    f = amplitude * unit
    return f if math.isinf(clip) else f.clamp(-clip * amplitude, clip * amplitude)


@dataclass
class RandomFieldAugment:
    """Draws and applies random fields to one image (see the module docstring).

    Draw order per call (every draw always happens): the affine coin, the 5 affine unit fields
    (rotation, log-scale, shear, x and y translation; one :func:`gaussian_random_field` call),
    the colour coin, the 4 colour unit fields (brightness, contrast, saturation, hue; one call).
    A family is applied when its coin comes up and one of its amplitudes is > 0; an amplitude of
    0 leaves its transform out.
    """

    config: RandomFieldConfig

    def validate(self) -> None:
        self.config.validate()

    def draw(self, height: int, width: int, generator: torch.Generator
             ) -> tuple[bool, dict[str, torch.Tensor], bool, dict[str, torch.Tensor]]:
        """The coins and the scaled, clipped fields for an ``H x W`` image (each ``(H, W)``).

        Returns ``(affine applied, affine fields, colour applied, colour fields)``; the affine
        fields are ``rotation`` (radians), ``scale`` (log factor), ``shear``, ``translation_x``
        and ``translation_y`` (pixels); the colour fields ``brightness``, ``contrast`` and
        ``saturation`` (factors ``e^{field}``) and ``hue`` (turns).
        """
        c = self.config
        side = float(max(height, width))
        affine_coin = coin(generator, c.affine_prob)
        unit_a = gaussian_random_field(height, width, c.affine_smoothness * side, generator, count=5)
        color_coin = coin(generator, c.color_prob)
        unit_c = gaussian_random_field(height, width, c.color_smoothness * side, generator, count=4)
        amp_a = (c.rotation, c.scale, c.shear, c.translation, c.translation)
        affine = {}
        for name, amp, g in zip(_AFFINE, amp_a, unit_a):
            f = _scaled(g, amp, c.clip)
            affine[name] = f * side if name.startswith("translation") else f
        color = {}
        for name, g in zip(_COLOUR, unit_c):
            f = _scaled(g, getattr(c, name), c.clip)
            color[name] = f.clamp(-0.5, 0.5) if name == "hue" else torch.exp(f)
        return affine_coin and c.affine_on, affine, color_coin and c.color_on, color

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
        """The transformed ``(C, H, W)`` image and its record ``[affine applied, colour applied]``."""
        if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] not in (1, 3) \
                or not image.is_floating_point():
            got = f"{image.dtype} {tuple(image.shape)}" if torch.is_tensor(image) else type(image).__name__
            raise ValueError(f"RandomFieldAugment: expected a float image (C, H, W) with C = 1 or 3, got {got}")
        H, W = image.shape[1:]
        do_affine, affine, do_color, color = self.draw(H, W, generator)
        x = image
        if do_affine:
            x = warp(x, affine_coordinates(affine["rotation"], affine["scale"], affine["shear"],
                                           affine["translation_x"], affine["translation_y"]))
        if do_color:
            c = self.config
            x = apply_color_fields(x, **{n: (color[n] if getattr(c, n) > 0 else None) for n in _COLOUR})
        return x, [float(do_affine), float(do_color)]


@dataclass
class RandomFieldViewAugment:
    """A view pipeline (e.g. SimCLR's :class:`~speechssl.data.image_augment.ViewAugment`) followed by
    random fields, with the view pipeline's interface (``size``, ``validate``, ``__call__``), so
    any :class:`~speechssl.data.image_augment.MultiViewImageDataset` takes it.

    The view's draws come first, then the fields' from the same generator, so the first view of
    an item has the crop, flip and jitter the view pipeline alone would give it (later views draw
    after the earlier views' fields: the same distribution, other values). Records are the
    view's followed by ``[affine applied, colour applied]``.
    """

    view: ViewAugment
    field: RandomFieldAugment

    @property
    def size(self) -> int:
        return self.view.size

    def validate(self) -> None:
        self.view.validate()
        self.field.validate()

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
        x, record = self.view(image, generator)
        x, extra = self.field(x, generator)
        return x, [*record, *extra]


def config_from_overrides(base: RandomFieldConfig, overrides: Sequence[str]) -> RandomFieldConfig:
    """``base`` with ``name=value`` overrides (floats), e.g. ``("rotation=0.2", "affine_prob=1")``."""
    names = {f.name for f in fields(RandomFieldConfig)}
    values = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise ValueError(f"random field override {item!r}: expected NAME=VALUE with NAME one of {sorted(names)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"random field override {item!r}: {value!r} is not a number") from None
    cfg = replace(base, **values)
    cfg.validate()
    return cfg
