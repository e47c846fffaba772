"""Phone segments and 10 ms frame labels from espeak events (hand-worked cases)."""
from __future__ import annotations

import pytest
import torch

from speechssl.corpus.align import (SILENCE, Segment, frame_labels, normalize_phone, num_frames, phone_segments,
                                    speech_bounds)
from speechssl.corpus.espeak import PhoneEvent
from speechssl.nn.lengths import conv_out_lengths, window_frames


def test_normalize_phone():
    assert normalize_phone("'oU") == "oU"
    assert normalize_phone(",i@3") == "i@3"
    assert normalize_phone("@2") == "@2"
    assert [normalize_phone(p) for p in ("_", "_:", "_!", "||", "")] == [SILENCE] * 5


def test_phone_segments_hand_worked():
    # espeak at 22050 Hz: h@0.1 s, @ 0.2 s, pause 0.3 s, audio 0.4 s long; 0.05 s padding at 16 kHz
    ev = [PhoneEvent("h", 2205, 1), PhoneEvent("'@", 4410, 1), PhoneEvent("_:", 6615, 3), PhoneEvent("_", 8820, 3)]
    segs = phone_segments(ev, src_rate=22050, dst_rate=16000, src_length=8820, offset=800, total_length=8000)
    assert segs == [Segment(SILENCE, 0, 2400), Segment("h", 2400, 4000), Segment("@", 4000, 5600),
                    Segment(SILENCE, 5600, 8000)]
    assert speech_bounds(segs) == (2400, 5600)


def test_num_frames_matches_conv_arithmetic():
    sizes = torch.tensor([0, 399, 400, 401, 559, 560, 16000, 12345])
    expected = conv_out_lengths(sizes, kernel=400, stride=160)
    assert [num_frames(int(s)) for s in sizes] == expected.tolist()


def test_num_frames_is_the_shared_kaldi_count_and_clamps():
    for s in (-1, 0, 1, 399, 400, 560, 16000):
        # an independent loop: window starts 0, 160, ... whose 400 samples fit in the signal
        fits = sum(1 for start in range(0, max(s, 0), 160) if start + 400 <= s)
        assert num_frames(s) == fits == window_frames(s, 400, 160)
    assert num_frames(1000, frame_length=200, frame_shift=100) == 9


def test_frame_labels_use_frame_centres():
    segs = [Segment(SILENCE, 0, 300), Segment("a", 300, 520), Segment("b", 520, 1000)]
    # frames: centres at 200, 360, 520, 680 -> sil, a, b (520 starts b), b
    assert frame_labels(segs, 1000) == [SILENCE, "a", "b", "b"]
    assert num_frames(1000) == 4


def test_speech_bounds_requires_speech():
    with pytest.raises(ValueError, match="no speech"):
        speech_bounds([Segment(SILENCE, 0, 10)])
