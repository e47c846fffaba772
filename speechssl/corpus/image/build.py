"""Build the embedded image corpus: scenes, road scenes and digits, as PNG files + manifests + labels.

Each image is rendered from its own generator ``numpy.random.default_rng([seed, subset,
split, index])``, so the bytes depend only on the preset and the seed (and on no other image).
Files are written atomically; ``corpus.json`` is written last and marks the corpus complete:
a rerun with the same preset and seed over a complete corpus does nothing, any other rerun
rebuilds every file. The layout is :data:`speechssl.corpus.image.card.LAYOUT`.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechssl.corpus.image.card import CARD, write_card
from speechssl.corpus.image.digits import load_digits_uint8, split_indices
from speechssl.corpus.image.render import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, TEXTURES, render_scene
from speechssl.corpus.image.roads import ROAD_CLASSES, render_road_scene
from speechssl.corpus.labels import class_dict
from speechssl.data.manifest import Dictionary, write_dict, write_labels, write_manifest

__all__ = ["ImagePreset", "PRESETS", "SPLITS", "build_image_corpus", "is_complete", "write_png", "read_mask"]

_log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_SUBSET_CODE = {"scenes": 1, "roads": 2}


@dataclass(frozen=True)
class ImagePreset:
    """Sizes of one build: image sides in pixels, images per split ``(train, valid, test)``."""

    name: str
    size: int  # side of the scenes, pixels
    max_objects: int  # objects per scene: 1..max_objects
    scenes: tuple[int, int, int]
    road_size: int  # side of the road scenes, pixels
    roads: tuple[int, int, int]


PRESETS = {
    "tiny": ImagePreset("tiny", size=32, max_objects=3, scenes=(96, 32, 32), road_size=32, roads=(24, 8, 8)),
    "small": ImagePreset("small", size=64, max_objects=4, scenes=(4000, 500, 500), road_size=64,
                         roads=(800, 100, 100)),
}


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a ``(H, W, 3)`` (RGB) or ``(H, W)`` (8-bit grey) uint8 array as a PNG.

    Atomic for readers (a temporary file renamed into place) but not synced one by one, which
    would cost milliseconds per tiny file: :func:`build_image_corpus` syncs once before it
    writes the card.
    """
    from PIL import Image

    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a uint8 (H, W) or (H, W, 3) array, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB").save(buf, format="PNG", optimize=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def read_mask(path: str | Path) -> "Any":
    """A mask PNG (8-bit grey, pixel = class or instance id) as an ``(H, W)`` int64 tensor."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "L":
            raise ValueError(f"{path}: a mask is an 8-bit grey PNG (mode L), got mode {im.mode}")
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.astype(np.int64))


def is_complete(out: str | Path, preset: str, seed: int) -> bool:
    """Whether ``out`` holds a complete corpus of this preset and seed."""
    card = Path(out) / CARD
    if not card.is_file():
        return False
    try:
        meta = json.loads(card.read_text())
    except json.JSONDecodeError:
        return False
    return meta.get("name") == "speechssl-images" and meta.get("preset") == preset and meta.get("seed") == seed


def _fixed_dict(rows: list[str], symbols: tuple[str, ...] | list[str]) -> Dictionary:
    return class_dict(rows, order=symbols)


def _write_scenes(out: Path, preset: ImagePreset, seed: int) -> dict[str, int]:
    root = out / "scenes"
    counts = [str(n) for n in range(1, preset.max_objects + 1)]
    all_rows: dict[str, list[str]] = {k: [] for k in ("shape", "colour", "texture", "size", "position",
                                                      "background", "count")}
    sizes = {}
    for split_code, (split, n) in enumerate(zip(SPLITS, preset.scenes)):
        rows, sem_rows, inst_rows = [], [], []
        labels: dict[str, list[str]] = {k: [] for k in all_rows}
        shapes, colours, objects = [], [], []
        for i in range(n):
            uid = f"scene_{split}_{i:05d}"
            scene = render_scene(np.random.default_rng([seed, _SUBSET_CODE["scenes"], split_code, i]),
                                 preset.size, preset.max_objects)
            write_png(root / "png" / f"{uid}.png", scene.image)
            write_png(root / "mask" / f"{uid}.sem.png", scene.semantic)
            write_png(root / "mask" / f"{uid}.inst.png", scene.instance)
            pixels = preset.size * preset.size
            rows.append((f"{uid}.png", pixels))
            sem_rows.append((f"{uid}.sem.png", pixels))
            inst_rows.append((f"{uid}.inst.png", pixels))
            m = scene.main
            for key, value in (("shape", m.shape), ("colour", m.colour), ("texture", m.texture), ("size", m.size),
                               ("position", m.position), ("background", scene.background),
                               ("count", str(len(scene.objects)))):
                labels[key].append(value)
            shapes.append(" ".join(o.shape for o in scene.objects))
            colours.append(" ".join(o.colour for o in scene.objects))
            objects.append(json.dumps([o.to_dict() for o in scene.objects], separators=(",", ":")))
        write_manifest(root / f"{split}.tsv", "png", rows)
        write_manifest(root / f"{split}.sem.tsv", "mask", sem_rows)
        write_manifest(root / f"{split}.inst.tsv", "mask", inst_rows)
        for key, values in labels.items():
            write_labels(root / f"{split}.{key}", values)
            all_rows[key] += values
        write_labels(root / f"{split}.shapes", shapes)
        write_labels(root / f"{split}.colours", colours)
        write_labels(root / f"{split}.objects.jsonl", objects)
        sizes[split] = n
    vocab = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES, "size": SIZES, "position": POSITIONS,
             "background": BACKGROUNDS, "count": tuple(counts)}
    for key, symbols in vocab.items():
        write_dict(root / f"dict.{key}.txt", _fixed_dict(all_rows[key], symbols))
    write_dict(root / "dict.sem.txt", Dictionary(["background", *SHAPES], [0] * (1 + len(SHAPES))))
    return sizes


def _write_roads(out: Path, preset: ImagePreset, seed: int) -> dict[str, int]:
    root = out / "roads"
    sizes = {}
    for split_code, (split, n) in enumerate(zip(SPLITS, preset.roads)):
        rows, sem_rows, infos = [], [], []
        for i in range(n):
            uid = f"road_{split}_{i:05d}"
            scene = render_road_scene(np.random.default_rng([seed, _SUBSET_CODE["roads"], split_code, i]),
                                      preset.road_size)
            write_png(root / "png" / f"{uid}.png", scene.image)
            write_png(root / "mask" / f"{uid}.sem.png", scene.semantic)
            pixels = preset.road_size * preset.road_size
            rows.append((f"{uid}.png", pixels))
            sem_rows.append((f"{uid}.sem.png", pixels))
            infos.append(json.dumps(scene.info, separators=(",", ":")))
        write_manifest(root / f"{split}.tsv", "png", rows)
        write_manifest(root / f"{split}.sem.tsv", "mask", sem_rows)
        write_labels(root / f"{split}.info.jsonl", infos)
        sizes[split] = n
    write_dict(root / "dict.sem.txt", Dictionary(list(ROAD_CLASSES), [0] * len(ROAD_CLASSES)))
    return sizes


def _write_digits(out: Path, seed: int) -> dict[str, int]:
    root = out / "digits"
    images, labels = load_digits_uint8()
    splits = split_indices(labels, seed)
    for i, image in enumerate(images):
        write_png(root / "png" / f"digit_{i:04d}.png", image)
    all_rows = []
    for split in SPLITS:
        idx = splits[split]
        write_manifest(root / f"{split}.tsv", "png", [(f"digit_{i:04d}.png", 64) for i in idx])
        rows = [str(int(labels[i])) for i in idx]
        write_labels(root / f"{split}.digit", rows)
        all_rows += rows
    write_dict(root / "dict.digit.txt", _fixed_dict(all_rows, tuple(str(d) for d in range(10))))
    return {split: len(splits[split]) for split in SPLITS}


def build_image_corpus(out: str | Path, preset: str = "tiny", seed: int = 0, *, digits: bool = True) -> Path:
    """Build (or find complete) the image corpus under ``out``; returns ``out``.

    Args:
        out: output directory (created).
        preset: a key of :data:`PRESETS`.
        seed: seed of every rendered image and of the digits split.
        digits: also export scikit-learn's digits (``digits/``).
    """
    from speechssl.version import __version__

    if preset not in PRESETS:
        raise ValueError(f"unknown image corpus preset {preset!r}; choose from {', '.join(PRESETS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if is_complete(out, preset, seed):
        _log.info("%s: image corpus %s (seed %d) is complete, nothing to do", out, preset, seed)
        return out
    (out / CARD).unlink(missing_ok=True)
    p = PRESETS[preset]
    subsets = {"scenes": _write_scenes(out, p, seed), "roads": _write_roads(out, p, seed)}
    sklearn_version = None
    if digits:
        import sklearn

        subsets["digits"] = _write_digits(out, seed)
        sklearn_version = sklearn.__version__
    card = {
        "name": "speechssl-images",
        "preset": preset,
        "seed": seed,
        "preset_parameters": asdict(p),
        "speechssl_version": __version__,
        "sklearn_version": sklearn_version,
        "factors": {"shape": list(SHAPES), "colour": list(COLOURS), "texture": list(TEXTURES), "size": list(SIZES),
                    "position": list(POSITIONS), "background": list(BACKGROUNDS),
                    "count": [str(n) for n in range(1, p.max_objects + 1)]},
        "scene_mask_classes": ["background", *SHAPES],
        "road_classes": list(ROAD_CLASSES),
        "subsets": subsets,
    }
    os.sync()  # the images were not synced one by one; the card says the corpus is complete
    write_card(out, card)
    _log.info("%s: image corpus %s (seed %d) written: %s", out, preset, seed, subsets)
    return out
