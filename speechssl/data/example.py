"""Tiny synthetic training sets for smoke runs and the contract tests (``Method.example``).

Waveforms are sums of a few harmonic tones with a slow amplitude envelope plus a little noise;
images are a few coloured rectangles and discs on a gradient; text is sentences of a small
vocabulary. Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed writes
the same bytes. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from speechssl.audio import save as save_audio
from speechssl.data.manifest import write_manifest

__all__ = ["synthetic_waveform", "write_example_audio", "synthetic_image", "write_example_images",
           "write_example_text"]


def synthetic_waveform(num_samples: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """``(num_samples,)`` float32 in ``[-1, 1]``: 1-3 harmonic tones (80-400 Hz), enveloped, with noise."""
    t = np.arange(num_samples) / sample_rate
    wav = np.zeros(num_samples)
    for _ in range(int(rng.integers(1, 4))):
        f0 = rng.uniform(80.0, 400.0)
        for h in range(1, 4):
            wav += rng.uniform(0.1, 0.4) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 2 * np.pi))
    wav = wav * envelope + 0.01 * rng.standard_normal(num_samples)
    return (0.9 * wav / max(float(np.abs(wav).max()), 1e-6)).astype(np.float32)


def write_example_audio(directory: str | Path, *, splits: Sequence[str] = ("train", "valid"), per_split: int = 4,
                        min_samples: int = 8000, max_samples: int = 16000, seed: int = 0,
                        sample_rate: int = 16000) -> dict[str, list[int]]:
    """Write ``<split>.tsv`` manifests and 16-bit WAVs under ``directory``.

    Args:
        directory: created if missing; files are written atomically.
        splits: the manifests to write.
        per_split: utterances per split.
        min_samples, max_samples: utterance lengths are drawn uniformly in this range (samples).
        seed: everything written depends only on it.
        sample_rate: of the WAV files (Hz).

    Returns:
        split → the number of samples of each utterance, in manifest order.
    """
    if not 0 < min_samples <= max_samples:
        raise ValueError(f"need 0 < min_samples <= max_samples, got {min_samples}, {max_samples}")
    root = Path(directory)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes: dict[str, list[int]] = {}
    for split in splits:
        rows = []
        for i in range(per_split):
            n = int(rng.integers(min_samples, max_samples + 1))
            rel = f"wav/{split}{i}.wav"
            save_audio(root / rel, synthetic_waveform(n, rng, sample_rate), sample_rate)
            rows.append((rel, n))
        write_manifest(root / f"{split}.tsv", root, rows)
        sizes[split] = [n for _, n in rows]
    return sizes


def synthetic_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``(height, width, 3)`` uint8: a colour gradient with 2-4 filled rectangles and discs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = c0 + (c1 - c0) * (x / max(width - 1, 1))[..., None]
    for _ in range(int(rng.integers(2, 5))):
        colour = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.1, 0.35) * min(height, width)
        if rng.random() < 0.5:
            inside = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
        else:
            inside = (np.abs(y - cy) <= r) & (np.abs(x - cx) <= r * rng.uniform(0.5, 1.5))
        image[inside] = colour
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_example_images(directory: str | Path, *, splits: Sequence[str] = ("train", "valid"), per_split: int = 8,
                         min_side: int = 24, max_side: int = 40, seed: int = 0) -> dict[str, list[tuple[int, int]]]:
    """Write ``<split>.tsv`` image manifests (:mod:`speechssl.data.files` format) and PNGs under ``directory``.

    Returns:
        split → ``(height, width)`` of each image, in manifest order.
    """
    from PIL import Image

    from speechssl.atomic import atomic_open
    from speechssl.data.files import write_file_manifest

    if not 0 < min_side <= max_side:
        raise ValueError(f"need 0 < min_side <= max_side, got {min_side}, {max_side}")
    root = Path(directory)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes: dict[str, list[tuple[int, int]]] = {}
    for split in splits:
        rels = []
        shapes[split] = []
        for i in range(per_split):
            h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
            rel = f"img/{split}{i}.png"
            with atomic_open(root / rel, "wb") as f:
                Image.fromarray(synthetic_image(h, w, rng)).save(f, format="PNG")
            rels.append(rel)
            shapes[split].append((h, w))
        write_file_manifest(root / f"{split}.tsv", root, rels, "image")
    return shapes


_WORDS = ("the a one red blue small big cat dog bird fish sees likes finds eats near under over "
          "old new tree house river hill stone light").split()


def write_example_text(path: str | Path, *, lines: int = 200, seed: int = 0) -> Path:
    """Write ``lines`` sentences of 3-12 words of a small vocabulary to ``path`` (UTF-8, atomically)."""
    from speechssl.atomic import atomic_write_text

    rng = np.random.default_rng(seed)
    text = "".join(" ".join(rng.choice(_WORDS, size=int(rng.integers(3, 13)))) + "\n" for _ in range(lines))
    atomic_write_text(path, text)
    return Path(path)
