"""A tiny HuBERTopic training set (``Method.example``): synthetic audio, random 50 Hz units and topics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechssl.data.example import write_example_audio
from speechssl.data.manifest import Dictionary, write_dict, write_labels
from speechssl.nn.lengths import stack_out_lengths
from speechssl.upstream.hubertopic.config import tiny
from speechssl.upstream.hubertopic.task import HubertopicTaskConfig

__all__ = ["write_example"]

_CLASSES = 8


def write_example(directory: Path, seed: int = 0) -> HubertopicTaskConfig:
    """Write audio, ``<split>.km`` (one unit per ``tiny`` frame), ``<split>.topic`` (one of ``tiny``'s
    ``num_topics`` per row), ``dict.km.txt`` and ``dict.topic.txt`` under ``directory``.

    Returns:
        the task config that pretrains on it (short crops, both splits).
    """
    directory = Path(directory)
    sizes = write_example_audio(directory, seed=seed)
    rng = np.random.default_rng(seed + 1)
    cfg = tiny()
    for split, lengths in sizes.items():
        rows, topics = [], []
        for n in lengths:
            frames = int(stack_out_lengths(n, cfg.conv_feature_layers))
            rows.append(" ".join(str(v) for v in rng.integers(0, _CLASSES, frames)))
            topics.append(str(int(rng.integers(0, cfg.num_topics))))
        write_labels(directory / f"{split}.km", rows)
        write_labels(directory / f"{split}.topic", topics)
    write_dict(directory / "dict.km.txt", Dictionary([str(i) for i in range(_CLASSES)], [1] * _CLASSES))
    write_dict(directory / "dict.topic.txt",
               Dictionary([str(i) for i in range(cfg.num_topics)], [1] * cfg.num_topics))
    return HubertopicTaskConfig(data=str(directory), max_sample_size=16000, pad_audio=True)
