"""A small labelled corpus whose contents reveal positions: ramps of audio, frame-index labels.

Sample ``i`` of every file is ``(i + 1) * 2**-16`` (exact in float32), so a crop's start can be
read off its first sample; the ``.km`` label of frame ``j`` (50 Hz, 320 samples) is ``j``, so a
label crop's first frame can be read off its first id.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.data.manifest import Dictionary, write_dict, write_labels, write_manifest

SIZES = [4800, 16000, 9600, 3200, 12800, 960]
SPEAKERS = ["bob", "amy", "bob", "cat", "amy", "cat"]
TEXTS = ["a b", "b c a", "c", "a a", "b", "c b"]
STEP = 2.0 ** -16


def ramp(size: int) -> np.ndarray:
    return ((np.arange(size) + 1) * STEP).astype(np.float32)


def start_of(wav) -> int:
    """Sample position (in its file) of the first sample of a ramp crop."""
    return int(round(float(wav[0]) / STEP)) - 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, size in enumerate(SIZES):
        rel = f"wav/u{i}.wav"
        (root / "wav").mkdir(exist_ok=True)
        sf.write(root / rel, ramp(size), 16000, subtype="FLOAT")
        rows.append((rel, size))
    write_manifest(root / "train.tsv", root, rows)
    write_labels(root / "train.km", [" ".join(str(j) for j in range(size // 320)) for size in SIZES])
    write_labels(root / "train.ltr", TEXTS)
    write_labels(root / "train.spk", SPEAKERS)
    write_dict(root / "dict.ltr.txt", Dictionary(["a", "b", "c"], [1, 1, 1]))
    return root


