"""A tiny LightHuBERT training set (``Method.example``): synthetic audio and a random tiny HuBERT teacher."""
from __future__ import annotations

from pathlib import Path

import torch

from speechssl import hub
from speechssl.data.example import write_example_audio
from speechssl.registry import get_method
from speechssl.upstream.lighthubert.task import LightHubertTaskConfig

__all__ = ["write_example", "write_teacher"]


def write_teacher(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised ``hubert`` ``tiny`` model (through the registry), saved as a model directory."""
    method = get_method("hubert")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        teacher = method.build(method.preset("tiny")).eval()
    return hub.save(teacher, Path(directory))


def write_example(directory: Path, seed: int = 0) -> LightHubertTaskConfig:
    """Write audio (``<split>.tsv``) and a tiny teacher (``teacher/``) under ``directory``.

    Returns:
        the stage-1 task config that distils the teacher into the ``tiny`` supernet.
    """
    write_example_audio(directory, seed=seed)
    teacher = write_teacher(Path(directory) / "teacher", seed=seed)
    return LightHubertTaskConfig(data=str(directory), teacher=str(teacher), max_sample_size=16000, pad_audio=True)
