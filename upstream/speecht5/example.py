"""A tiny SpeechT5 training set (``Method.example``): synthetic speech with 50 Hz units, text, a sentencepiece model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechssl.data.example import write_example_audio, write_example_text
from speechssl.data.manifest import Dictionary, write_dict, write_labels
from speechssl.data.text import train_sentencepiece
from speechssl.nn.lengths import stack_out_lengths
from speechssl.upstream.speecht5.config import tiny
from speechssl.upstream.speecht5.task import SpeechT5TaskConfig

__all__ = ["write_example"]

_CLASSES = 8
_VOCAB = 40


def write_example(directory: Path, seed: int = 0) -> SpeechT5TaskConfig:
    """Write audio + ``<split>.km`` + ``dict.km.txt``, ``<split>.txt`` and ``spm.model`` (with ``<mask>``).

    Returns:
        the task config that pretrains ``tiny`` on it (short crops, both splits).
    """
    directory = Path(directory)
    sizes = write_example_audio(directory, seed=seed)
    rng = np.random.default_rng(seed + 1)
    layers = tiny().conv_feature_layers
    for split, lengths in sizes.items():
        rows = [" ".join(str(v) for v in rng.integers(0, _CLASSES, int(stack_out_lengths(n, layers))))
                for n in lengths]
        write_labels(directory / f"{split}.km", rows)
    write_dict(directory / "dict.km.txt", Dictionary([str(i) for i in range(_CLASSES)], [1] * _CLASSES))
    write_example_text(directory / "train.txt", lines=16, seed=seed)
    write_example_text(directory / "valid.txt", lines=8, seed=seed + 1)
    train_sentencepiece(directory / "train.txt", directory / "spm.model", _VOCAB, user_defined_symbols=["<mask>"])
    return SpeechT5TaskConfig(data=str(directory), max_sample_size=16000, pad_audio=True, text_max_tokens=256,
                              speech_proportion=2.0)
