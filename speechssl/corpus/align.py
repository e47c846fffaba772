"""Phone alignments from espeak's phoneme events: time segments and 10 ms frame labels.

espeak reports the sample at which each phoneme starts; a phoneme lasts until the next event.
Here those events become segments on the corpus's 16 kHz time line (after resampling and
padding) and then one label per frame.

Frames follow Kaldi's ``snip_edges=True`` convention that the fbank/MFCC features use:
``T = 1 + (S - 400) // 160`` frames of 25 ms every 10 ms, frame ``t`` covering samples
``[160 t, 160 t + 400)``; a frame gets the phone under its centre, sample ``160 t + 200``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from speechssl.corpus.espeak import PhoneEvent
from speechssl.nn.lengths import window_frames

__all__ = ["SILENCE", "Segment", "normalize_phone", "phone_segments", "speech_bounds", "num_frames",
           "frame_labels"]

#: The label of pauses, leading/trailing silence and padding.
SILENCE = "sil"
FRAME_LENGTH = 400  # samples at 16 kHz (25 ms)
FRAME_SHIFT = 160  # samples at 16 kHz (10 ms)


@dataclass(frozen=True)
class Segment:
    """``phone`` from sample ``start`` (inclusive) to ``end`` (exclusive)."""

    phone: str
    start: int
    end: int


def normalize_phone(name: str) -> str:
    """espeak mnemonic -> corpus phone: stress marks dropped, every pause -> :data:`SILENCE`.

    >>> normalize_phone("'oU"), normalize_phone(",i@3"), normalize_phone("_:")
    ('oU', 'i@3', 'sil')
    """
    if not name or name.startswith("_") or name == "||":
        return SILENCE
    stripped = name.lstrip("',%=")
    return stripped or SILENCE


def phone_segments(phones: Sequence[PhoneEvent], *, src_rate: int, dst_rate: int, src_length: int,
                   offset: int, total_length: int) -> list[Segment]:
    """Segments covering ``[0, total_length)`` samples at ``dst_rate``.

    Args:
        phones: espeak phoneme events (positions at ``src_rate``).
        src_rate: espeak's sample rate.
        dst_rate: the corpus's rate.
        src_length: samples of espeak's audio (at ``src_rate``); the last phone ends there.
        offset: samples of padding put before espeak's audio (at ``dst_rate``).
        total_length: samples of the final waveform (at ``dst_rate``).

    Returns:
        consecutive segments, silence merged, zero-length ones dropped.
    """
    def to_dst(sample: int) -> int:
        return min(total_length, offset + int(round(sample * dst_rate / src_rate)))

    events = sorted(phones, key=lambda p: p.sample)
    bounds = [(normalize_phone(p.phone), to_dst(p.sample)) for p in events]
    speech_end = to_dst(src_length)
    raw: list[Segment] = [Segment(SILENCE, 0, bounds[0][1] if bounds else speech_end)]
    for i, (phone, start) in enumerate(bounds):
        end = bounds[i + 1][1] if i + 1 < len(bounds) else speech_end
        raw.append(Segment(phone, start, max(start, end)))
    raw.append(Segment(SILENCE, speech_end, total_length))
    out: list[Segment] = []
    for seg in raw:
        if seg.end <= seg.start:
            continue
        if out and seg.phone == SILENCE and out[-1].phone == SILENCE:
            out[-1] = Segment(SILENCE, out[-1].start, seg.end)
        else:
            out.append(seg)
    return out


def speech_bounds(segments: Sequence[Segment]) -> tuple[int, int]:
    """``(start, end)`` samples from the first to the end of the last non-silence segment."""
    speech = [s for s in segments if s.phone != SILENCE]
    if not speech:
        raise ValueError("no speech segment: espeak produced only pauses")
    return speech[0].start, speech[-1].end


def num_frames(num_samples: int, frame_length: int = FRAME_LENGTH, frame_shift: int = FRAME_SHIFT) -> int:
    """Kaldi ``snip_edges`` frame count: ``1 + (S - frame_length) // frame_shift`` (0 if shorter).

    :func:`speechssl.nn.lengths.window_frames` for an ``int``, so the labels always have the
    features' frame count.
    """
    return window_frames(int(num_samples), frame_length, frame_shift, snip_edges=True)


def frame_labels(segments: Sequence[Segment], num_samples: int, frame_length: int = FRAME_LENGTH,
                 frame_shift: int = FRAME_SHIFT) -> list[str]:
    """The phone under the centre of each of the :func:`num_frames` frames."""
    n = num_frames(num_samples, frame_length, frame_shift)
    centres = np.arange(n) * frame_shift + frame_length // 2
    starts = np.asarray([s.start for s in segments])
    idx = np.searchsorted(starts, centres, side="right") - 1
    return [segments[int(i)].phone for i in idx]
