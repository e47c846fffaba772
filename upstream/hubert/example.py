"""A tiny HuBERT training set (``Method.example``): synthetic audio with random 50 Hz unit labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechssl.data.example import write_example_audio
from speechssl.data.manifest import Dictionary, write_dict, write_labels
from speechssl.nn.lengths import stack_out_lengths
from speechssl.upstream.hubert.config import tiny
from speechssl.upstream.hubert.task import HubertTaskConfig

__all__ = ["write_example"]

_CLASSES = 8


def write_example(directory: Path, seed: int = 0) -> HubertTaskConfig:
    """Write audio, ``<split>.km`` labels (one per ``tiny`` frame) and ``dict.km.txt`` under ``directory``.

    Returns:
        the task config that pretrains on it (short crops, both splits).
    """
    sizes = write_example_audio(directory, seed=seed)
    rng = np.random.default_rng(seed + 1)
    layers = tiny().conv_feature_layers
    for split, lengths in sizes.items():
        rows = []
        for n in lengths:
            frames = int(stack_out_lengths(n, layers))
            rows.append(" ".join(str(v) for v in rng.integers(0, _CLASSES, frames)))
        write_labels(Path(directory) / f"{split}.km", rows)
    write_dict(Path(directory) / "dict.km.txt", Dictionary([str(i) for i in range(_CLASSES)], [1] * _CLASSES))
    return HubertTaskConfig(data=str(directory), max_sample_size=16000, pad_audio=True)
