"""framing.num_frames is Kaldi's NumFrames (kaldi-native-fbank as the oracle), clamped at 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechssl.features.framing import FrameOptions, num_frames
from speechssl.nn.lengths import window_frames

SIZES = [1, 80, 159, 160, 199, 200, 399, 400, 401, 559, 560, 4000, 16001]


def _kaldi(num_samples: int, opts: FrameOptions) -> int:
    knf = pytest.importorskip("kaldi_native_fbank")
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.frame_opts.samp_freq = opts.sample_rate
    o.frame_opts.frame_length_ms = opts.frame_length_ms
    o.frame_opts.frame_shift_ms = opts.frame_shift_ms
    o.frame_opts.snip_edges = opts.snip_edges
    comp = knf.OnlineFbank(o)
    comp.accept_waveform(opts.sample_rate, np.zeros(num_samples, dtype=np.float32).tolist())
    comp.input_finished()
    return comp.num_frames_ready


@pytest.mark.parametrize("options", [{}, {"snip_edges": False}, {"frame_length_ms": 20.0, "frame_shift_ms": 12.5},
                                     {"sample_rate": 8000.0, "snip_edges": False}])
def test_num_frames_is_kaldis(options):
    opts = FrameOptions(**options)
    expected = [_kaldi(s, opts) for s in SIZES]
    got = num_frames(torch.tensor(SIZES), opts)
    assert got.dtype == torch.int64 and got.tolist() == expected
    assert got.tolist() == [window_frames(s, opts.frame_length, opts.frame_shift, opts.snip_edges) for s in SIZES]


def test_num_frames_of_empty_and_short_input_is_zero():
    assert num_frames(torch.tensor([0, 399]), FrameOptions()).tolist() == [0, 0]
    assert num_frames(torch.tensor([0, 79]), FrameOptions(snip_edges=False)).tolist() == [0, 0]
