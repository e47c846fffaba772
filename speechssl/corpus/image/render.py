"""Procedural scenes: shapes x colours x textures x sizes x positions on textured backgrounds.

Everything here is numpy on a pixel grid, drawn from an explicit ``numpy.random.Generator``
(so an image depends only on its seed). A scene of side ``S`` pixels holds 1 to
``max_objects`` objects; object 0 is the *main* object, drawn last (never occluded), and its
factors are the per-image labels. The others are drawn first, placed so that each keeps most
of its pixels visible.

Factors (symbols, in dictionary order):

* shape: :data:`SHAPES` (rotated by at most ``±MAX_TILT`` degrees, so square and diamond stay apart)
* colour: :data:`COLOURS` (a base RGB plus a small jitter)
* texture: :data:`TEXTURES` (stripes/checker/dots alternate the colour with a darker shade)
* size: :data:`SIZES` (radius as a fraction of ``S``: :data:`SIZE_RANGES`)
* position: :data:`POSITIONS`, the cell of a 3 x 3 grid holding the main object's centre
* background: :data:`BACKGROUNDS`
* count: the number of objects, ``1..max_objects``

Masks: ``semantic`` ``(S, S)`` uint8, 0 = background, ``1 + SHAPES.index(shape)`` on an
object's visible pixels; ``instance`` ``(S, S)`` uint8, 0 = background, ``1 + i`` on object
``i``'s visible pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["SHAPES", "COLOURS", "TEXTURES", "SIZES", "SIZE_RANGES", "POSITIONS", "BACKGROUNDS", "MAX_TILT",
           "SceneObject", "Scene", "shape_mask", "texture_pattern", "background", "render_scene", "pixel_grid"]

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS = {
    "red": (0.90, 0.15, 0.15), "green": (0.15, 0.80, 0.20), "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.90, 0.15), "cyan": (0.15, 0.85, 0.90), "magenta": (0.90, 0.20, 0.85),
    "orange": (0.98, 0.55, 0.10), "white": (0.95, 0.95, 0.95),
}
TEXTURES = ("solid", "stripes", "checker", "dots")
SIZES = ("small", "medium", "large")
SIZE_RANGES = {"small": (0.09, 0.13), "medium": (0.15, 0.20), "large": (0.23, 0.29)}  # radius / S
POSITIONS = tuple(f"{v}-{h}" for v in ("top", "middle", "bottom") for h in ("left", "centre", "right"))
BACKGROUNDS = ("flat", "gradient", "noise", "grid")
MAX_TILT = 12.0  # degrees
_COLOUR_JITTER = 0.05  # per channel, uniform
_PIXEL_NOISE = 0.015  # std of the Gaussian noise added to the whole image
_MIN_VISIBLE = 0.6  # fraction of a distractor's pixels the objects drawn over it may not cover


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene; ``x, y, radius`` in pixels, ``angle`` in degrees."""

    shape: str
    colour: str
    texture: str
    size: str
    position: str
    x: float
    y: float
    radius: float
    angle: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Scene:
    """A rendered scene: ``image (S, S, 3) uint8``, ``semantic``/``instance (S, S) uint8``, objects (main first)."""

    image: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    objects: list[SceneObject]
    background: str

    @property
    def main(self) -> SceneObject:
        return self.objects[0]


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(yy, xx)``, each ``(S, S)`` float64: the coordinates of the pixel centres."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c, indexing="ij")


def _local(yy: np.ndarray, xx: np.ndarray, x: float, y: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the object's frame: ``(u, v)`` rotated by ``-angle`` about ``(x, y)``."""
    t = math.radians(angle)
    dx, dy = xx - x, yy - y
    return dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` (pixels) in local coordinates ``(u, v)`` (v points down)."""
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.1 * r
    if shape == "triangle":  # equilateral, apex up, circumradius r
        out = np.ones(u.shape, dtype=bool)
        for k in range(3):
            phi = math.pi / 2 + 2 * math.pi * k / 3 + math.pi / 3  # outward normal of each edge
            out &= u * math.cos(phi) - v * math.sin(phi) <= 0.5 * r
        return out
    if shape == "cross":
        arm = 0.32 * r
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    if shape == "star":  # five points, inner radius 0.45 r
        rho = np.hypot(u, v)
        phi = np.arctan2(-v, u) - math.pi / 2
        frac = np.abs(((phi / (2 * math.pi / 5)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between
        return rho <= r * (0.45 + 0.55 * frac ** 1.5)
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def texture_pattern(texture: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Boolean pattern (True = base colour, False = darker shade) of ``texture`` in local coordinates."""
    if texture == "solid":
        return np.ones(u.shape, dtype=bool)
    if texture == "stripes":
        return np.floor((u + v) / period) % 2 == 0
    if texture == "checker":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    if texture == "dots":
        cu, cv = (u / period) % 2 - 1, (v / period) % 2 - 1
        return cu * cu + cv * cv > 0.45
    raise ValueError(f"unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")


def background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A low-saturation background ``(S, S, 3)`` float64 in ``[0, 1]`` (draws: tone, then the kind's own)."""
    tone = rng.uniform(0.08, 0.40) + rng.uniform(-0.05, 0.05, size=3)
    yy, xx = pixel_grid(size)
    if kind == "flat":
        field = np.zeros((size, size))
    elif kind == "gradient":
        t = rng.uniform(0, 2 * math.pi)
        field = 0.18 * ((xx * math.cos(t) + yy * math.sin(t)) / size - 0.5)
    elif kind == "noise":
        coarse = rng.normal(0, 0.08, size=(5, 5))
        idx = np.minimum((np.arange(size) * 5) // size, 4)
        field = coarse[idx][:, idx]
        field = field + rng.normal(0, 0.03, size=(size, size))
    elif kind == "grid":
        step = max(4, size // int(rng.integers(4, 7)))
        field = 0.10 * (((yy.astype(int) % step) == 0) | ((xx.astype(int) % step) == 0))
    else:
        raise ValueError(f"unknown background {kind!r}; choose from {', '.join(BACKGROUNDS)}")
    return np.clip(tone[None, None, :] + field[..., None], 0.0, 1.0)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _position_cell(x: float, y: float, size: int) -> str:
    col = min(2, int(3 * x / size))
    row = min(2, int(3 * y / size))
    return POSITIONS[3 * row + col]


def _draw_object(rng: np.random.Generator, size: int, sizes: tuple[str, ...], cell: int | None) -> SceneObject:
    """Draw one object's factors (order: shape, colour, texture, size, radius, centre, angle)."""
    shape = _pick(rng, SHAPES)
    colour = _pick(rng, list(COLOURS))
    texture = _pick(rng, TEXTURES)
    size_name = _pick(rng, sizes)
    lo, hi = SIZE_RANGES[size_name]
    radius = rng.uniform(lo, hi) * size
    if cell is None:  # anywhere, keeping the centre a little inside the image
        x, y = rng.uniform(0.1, 0.9, size=2) * size
    else:  # inside the cell's central part, so the position label is unambiguous
        row, col = divmod(cell, 3)
        x = (col + rng.uniform(0.2, 0.8)) * size / 3
        y = (row + rng.uniform(0.2, 0.8)) * size / 3
    angle = rng.uniform(-MAX_TILT, MAX_TILT)
    return SceneObject(shape, colour, texture, size_name, _position_cell(x, y, size), float(x), float(y),
                       float(radius), float(angle))


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> Scene:
    """Render one scene of ``size`` x ``size`` pixels with ``1..max_objects`` objects.

    Draw order: background kind, object count, the main object (any size, a 3 x 3 cell),
    the distractors (small or medium, anywhere; each retried up to 20 times until the objects
    drawn after it leave ``_MIN_VISIBLE`` of it), the background, then per object its colour
    jitter, and last the pixel noise.
    """
    if size < 8:
        raise ValueError(f"image size must be >= 8 pixels, got {size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    yy, xx = pixel_grid(size)
    bg_kind = _pick(rng, BACKGROUNDS)
    count = int(rng.integers(1, max_objects + 1))
    main = _draw_object(rng, size, SIZES, int(rng.integers(9)))
    masks = [shape_mask(main.shape, *_local(yy, xx, main.x, main.y, main.angle), main.radius)]
    objects = [main]
    for _ in range(count - 1):  # distractors are drawn under everything placed before them
        for attempt in range(20):
            obj = _draw_object(rng, size, SIZES[:2], None)
            m = shape_mask(obj.shape, *_local(yy, xx, obj.x, obj.y, obj.angle), obj.radius)
            covered = np.zeros_like(m)
            for other in masks:
                covered |= other
            area = int(m.sum())
            if area and (m & ~covered).sum() >= _MIN_VISIBLE * area:
                break
        objects.append(obj)
        masks.append(m)
    image = background(bg_kind, size, rng)
    semantic = np.zeros((size, size), dtype=np.uint8)
    instance = np.zeros((size, size), dtype=np.uint8)
    period = max(2.0, size / 10)
    for i in reversed(range(len(objects))):  # distractors first, the main object last (on top)
        obj, m = objects[i], masks[i]
        base = np.clip(np.array(COLOURS[obj.colour]) + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=3), 0, 1)
        u, v = _local(yy, xx, obj.x, obj.y, obj.angle)
        pattern = texture_pattern(obj.texture, u, v, period)
        pixels = np.where(pattern[..., None], base[None, None, :], 0.45 * base[None, None, :])
        image = np.where(m[..., None], pixels, image)
        semantic[m] = 1 + SHAPES.index(obj.shape)
        instance[m] = 1 + i
    image = image + rng.normal(0, _PIXEL_NOISE, size=image.shape)
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return Scene(image, semantic, instance, objects, bg_kind)
