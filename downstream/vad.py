"""Energy voice-activity detection at 10 ms frames, shared by the downstream tasks.

sd uses it to say who speaks when in its mixtures, qbe to trim silence off its queries. The
frames are the fbank's (25 ms windows every 10 ms, Kaldi ``snip_edges=True``), counted by
:func:`speechssl.nn.lengths.window_frames`, so activity frame ``t`` is feature frame ``t``.
"""
from __future__ import annotations

import numpy as np

from speechssl.nn.lengths import window_frames

__all__ = ["FRAME_LENGTH", "FRAME_SHIFT", "voice_activity"]

FRAME_LENGTH = 400  # samples at 16 kHz (25 ms)
FRAME_SHIFT = 160  # samples at 16 kHz (10 ms activity resolution)


def voice_activity(wav: np.ndarray, phn_ali: str | None = None) -> np.ndarray:
    """``(T,)`` bool speech activity at 10 ms frames, ``T = max(1, window_frames(S, 400, 160))``.

    Args:
        wav: ``(S,)`` samples at 16 kHz.
        phn_ali: a ``.phn_ali`` row given as phone *symbols* (one per 10 ms frame, ``sil`` =
            silence; the files hold ids, which the sd task maps through ``dict.phn.txt``); it is
            cut or padded with silence to ``T`` frames. None: from frame energy: a frame
            (25 ms window) is speech when its RMS is within 35 dB of the utterance's loudest
            frame (and above 1e-4).
    """
    n = max(1, window_frames(len(wav), FRAME_LENGTH, FRAME_SHIFT))
    if phn_ali is not None:
        labels = phn_ali.split()
        act = np.array([p != "sil" for p in labels], dtype=bool)
        return np.pad(act, (0, max(0, n - len(act))))[:n]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wav, (0, FRAME_LENGTH)), FRAME_LENGTH)
    frames = frames[::FRAME_SHIFT][:n]
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(1) + 1e-12)
    return rms > max(rms.max() * 10 ** (-35 / 20), 1e-4)
