"""Energy voice activity (downstream/vad.py) against a frame-by-frame loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from speechssl.downstream.vad import voice_activity


def _loop_vad(wav: np.ndarray) -> np.ndarray:
    """One frame at a time: Kaldi snip_edges frames (at least one), RMS within 35 dB of the loudest."""
    n = max(1, 1 + (len(wav) - 400) // 160 if len(wav) >= 400 else 0)
    rms = []
    for t in range(n):
        frame = np.zeros(400)
        piece = wav[t * 160: t * 160 + 400]
        frame[: len(piece)] = piece
        rms.append(math.sqrt(float(np.mean(frame ** 2)) + 1e-12))
    top = max(rms)
    return np.array([r > max(top * 10 ** (-35 / 20), 1e-4) for r in rms])


@pytest.mark.parametrize("num_samples", [0, 1, 399, 400, 559, 560, 4321])
def test_energy_vad_matches_loop(num_samples):
    rng = np.random.default_rng(num_samples)
    wav = np.zeros(num_samples, dtype=np.float32)
    wav[num_samples // 3: 2 * num_samples // 3] = 0.3 * rng.standard_normal(2 * num_samples // 3 - num_samples // 3)
    act = voice_activity(wav)
    assert act.dtype == bool
    np.testing.assert_array_equal(act, _loop_vad(wav))


def test_alignment_vad_pads_and_cuts_to_frames():
    wav = np.zeros(400 + 160 * 4, dtype=np.float32)  # 5 frames
    assert voice_activity(wav, "sil a b").tolist() == [False, True, True, False, False]
    assert voice_activity(wav, "a a a a a a a sil").tolist() == [True] * 5


def test_sd_still_exports_it():
    from speechssl.downstream.sd import mixtures

    assert mixtures.voice_activity is voice_activity
