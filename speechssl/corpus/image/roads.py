"""Road-like aerial scenes for unsupervised segmentation: terrain, road bands, markings and clutter.

A scene of side ``S`` pixels, seen from above (a UAV view): textured terrain; one road band
(straight or gently curved, any direction), with probability :data:`CROSSING_P` a second,
straight road crossing it; a dashed centre line and solid edge lines on each road; vehicles
(small rectangles aligned with the road) on the roads; trees (dark green discs) and buildings
(grey or brown rectangles) on the terrain. Drawn from an explicit ``numpy.random.Generator``.

``semantic (S, S) uint8`` ids are the index in :data:`ROAD_CLASSES`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechssl.corpus.image.render import pixel_grid

__all__ = ["ROAD_CLASSES", "CROSSING_P", "RoadScene", "render_road_scene"]

ROAD_CLASSES = ("terrain", "road", "marking", "vehicle", "tree", "building")
CROSSING_P = 0.35
_VEHICLE_COLOURS = ((0.85, 0.1, 0.1), (0.1, 0.2, 0.8), (0.9, 0.9, 0.9), (0.1, 0.1, 0.1), (0.9, 0.8, 0.1))


@dataclass
class RoadScene:
    """``image (S, S, 3) uint8``, ``semantic (S, S) uint8`` (ids of :data:`ROAD_CLASSES`) and the drawn parameters."""

    image: np.ndarray
    semantic: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _road_geometry(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, curved: bool
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Signed distance across the road ``d`` and distance along it ``s`` (pixels), and its parameters.

    The centre line, in a frame rotated by ``angle``, is ``a = offset + bend * (b / S)^2 * S``.
    """
    angle = rng.uniform(0, math.pi)
    offset = rng.uniform(-0.25, 0.25) * size
    bend = rng.uniform(-0.25, 0.25) if curved else 0.0
    cx = cy = size / 2
    a = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)  # across
    b = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)  # along
    centre = offset + bend * (b / size) ** 2 * size
    slope = 2 * bend * b / size
    d = (a - centre) / np.sqrt(1 + slope ** 2)
    return d, b, {"angle_deg": round(math.degrees(angle), 2), "offset": round(offset / size, 4), "bend": round(bend, 4)}


def render_road_scene(rng: np.random.Generator, size: int) -> RoadScene:
    """Render one road scene (draw order: terrain, roads, vehicles, trees, buildings, noise)."""
    if size < 16:
        raise ValueError(f"road scenes need >= 16 pixels, got {size}")
    yy, xx = pixel_grid(size)
    # terrain: green-brown, blotchy
    base = np.array([0.30, 0.45, 0.20]) + rng.uniform(-0.06, 0.06, size=3)
    coarse = rng.normal(0, 0.06, size=(6, 6, 3))
    idx = np.minimum((np.arange(size) * 6) // size, 5)
    image = np.clip(base + coarse[idx][:, idx] + rng.normal(0, 0.025, size=(size, size, 3)), 0, 1)
    semantic = np.zeros((size, size), dtype=np.uint8)
    roads = []
    n_roads = 2 if rng.uniform() < CROSSING_P else 1
    for k in range(n_roads):
        d, s, params = _road_geometry(rng, yy, xx, size, curved=(k == 0))
        half = rng.uniform(0.09, 0.14) * size
        params["half_width"] = round(half / size, 4)
        roads.append((d, s, half, params))
        grey = rng.uniform(0.28, 0.42)
        road = np.abs(d) <= half
        image[road] = grey + rng.normal(0, 0.02, size=(int(road.sum()), 3))
        semantic[road] = 1
    line = max(0.5, size / 64)  # half width of a marking line, pixels
    for d, s, half, _ in roads:  # markings after every road, so a crossing keeps both roads' lines
        dash = max(4.0, size / 8)
        centre_line = (np.abs(d) <= line) & ((s / dash) % 2 < 1)
        edge = (np.abs(np.abs(d) - (half - 1.5 * line)) <= line / 2 + 0.25)
        mark = (centre_line | edge) & (np.abs(d) <= half)
        image[mark] = 0.92
        semantic[mark] = 2
    vehicles = 0
    for d, s, half, params in roads:
        for _ in range(int(rng.integers(0, 4))):
            lane = rng.choice([-1.0, 1.0]) * half / 2
            at = rng.uniform(-0.45, 0.45) * size
            length, width = rng.uniform(0.08, 0.12) * size, rng.uniform(0.04, 0.06) * size
            car = (np.abs(d - lane) <= width / 2) & (np.abs(s - at) <= length / 2)
            colour = np.array(_VEHICLE_COLOURS[int(rng.integers(len(_VEHICLE_COLOURS)))])
            if car.any():
                image[car] = colour
                semantic[car] = 3
                vehicles += 1
    free = semantic == 0
    trees = 0
    for _ in range(int(rng.integers(1, 6))):
        x, y = rng.uniform(0, size, size=2)
        r = rng.uniform(0.04, 0.08) * size
        disc = ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) & free
        if disc.any():
            image[disc] = np.array([0.08, 0.28, 0.08]) + rng.uniform(-0.03, 0.03)
            semantic[disc] = 4
            trees += 1
    buildings = 0
    for _ in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(0, size, size=2)
        w, h = rng.uniform(0.08, 0.16, size=2) * size
        box = (np.abs(xx - x) <= w / 2) & (np.abs(yy - y) <= h / 2)
        if (box & ~free).any():  # buildings stand beside the roads, never on them
            continue
        roof = np.array([0.55, 0.52, 0.50]) if rng.uniform() < 0.5 else np.array([0.55, 0.30, 0.20])
        image[box] = roof + rng.uniform(-0.05, 0.05)
        semantic[box] = 5
        buildings += 1
    image = np.clip(np.round((image + rng.normal(0, 0.01, size=image.shape)) * 255), 0, 255).astype(np.uint8)
    info = {"roads": [r[3] for r in roads], "vehicles": vehicles, "trees": trees, "buildings": buildings}
    return RoadScene(image, semantic, info)
