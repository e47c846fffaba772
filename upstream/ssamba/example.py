"""A tiny SSAMBA training set (``Method.example``): synthetic audio, no labels."""
from __future__ import annotations

from pathlib import Path

from speechssl.data.example import write_example_audio
from speechssl.upstream.ssamba.task import SsambaTaskConfig

__all__ = ["write_example"]


def write_example(directory: Path, seed: int = 0) -> SsambaTaskConfig:
    """Write audio manifests under ``directory``; returns the task config that pretrains on it."""
    write_example_audio(directory, seed=seed)
    return SsambaTaskConfig(data=str(directory), max_sample_size=16000)
