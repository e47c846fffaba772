"""A tiny w2v-BERT training set (``Method.example``): synthetic audio, no labels."""
from __future__ import annotations

from pathlib import Path

from speechssl.data.example import write_example_audio
from speechssl.upstream.w2v_bert.task import W2vBertTaskConfig

__all__ = ["write_example"]


def write_example(directory: Path, seed: int = 0) -> W2vBertTaskConfig:
    """Write audio manifests under ``directory``; returns the task config that pretrains ``tiny`` on it."""
    write_example_audio(directory, seed=seed)
    return W2vBertTaskConfig(data=str(directory), max_sample_size=16000)
