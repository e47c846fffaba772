"""Tiny synthetic training sets for smoke runs and the contract tests (``Method.example``).

Waveforms are sums of a few harmonic tones with a slow amplitude envelope plus a little noise,
drawn from ``numpy.random.default_rng(seed)``: the same seed writes the same bytes. Nothing
is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from speechssl.audio import save as save_audio
from speechssl.data.manifest import write_manifest

__all__ = ["synthetic_waveform", "write_example_audio"]


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
