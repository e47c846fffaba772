"""Frame and patch counts against independent oracles: real torch convolutions, Kaldi
(kaldi-native-fbank) and explicit loops over window positions; ints and tensors agree."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from speechssl.nn.lengths import (conv_out_lengths, num_patches, patch_count, patch_grid, stack_out_lengths,
                                  stack_receptive_field, stack_stride, window_frames)

SIZES = [0, 1, 2, 9, 10, 11, 159, 160, 199, 200, 201, 399, 400, 401, 559, 560, 1000, 16000, 12345]


def _conv_oracle(length: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> int:
    """Frames a real ``F.conv1d`` produces (0 where torch refuses a too-short input)."""
    if length + 2 * padding < dilation * (kernel - 1) + 1:
        return 0
    x = torch.zeros(1, 1, length)
    w = torch.zeros(1, 1, kernel)
    return F.conv1d(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1]


@pytest.mark.parametrize("kernel,stride,padding,dilation", [(10, 5, 0, 1), (3, 2, 0, 1), (2, 2, 0, 1),
                                                            (400, 160, 0, 1), (3, 1, 1, 1), (5, 3, 2, 2),
                                                            (1, 1, 0, 1), (7, 4, 3, 3)])
def test_conv_out_lengths_matches_torch_conv(kernel, stride, padding, dilation):
    expected = [_conv_oracle(s, kernel, stride, padding, dilation) for s in SIZES]
    assert [conv_out_lengths(s, kernel, stride, padding, dilation) for s in SIZES] == expected
    out = conv_out_lengths(torch.tensor(SIZES, dtype=torch.int32), kernel, stride, padding, dilation)
    assert out.dtype == torch.int64 and out.tolist() == expected


def test_stack_matches_torch_and_clamps():
    from speechssl.nn.conv_extractor import FAIRSEQ_CONV_LAYERS

    def oracle(length: int) -> int:
        for _, kernel, stride in FAIRSEQ_CONV_LAYERS:
            length = _conv_oracle(length, kernel, stride)
        return length

    expected = [oracle(s) for s in SIZES]
    assert [stack_out_lengths(s, FAIRSEQ_CONV_LAYERS) for s in SIZES] == expected
    assert stack_out_lengths(torch.tensor(SIZES), FAIRSEQ_CONV_LAYERS).tolist() == expected
    assert stack_out_lengths(399, FAIRSEQ_CONV_LAYERS) == 0 and stack_out_lengths(400, FAIRSEQ_CONV_LAYERS) == 1
    assert stack_receptive_field(FAIRSEQ_CONV_LAYERS) == 400 and stack_stride(FAIRSEQ_CONV_LAYERS) == 320
    # (kernel, stride) pairs read the same as (channels, kernel, stride)
    pairs = [(k, s) for _, k, s in FAIRSEQ_CONV_LAYERS]
    assert stack_out_lengths(16000, pairs) == stack_out_lengths(16000, FAIRSEQ_CONV_LAYERS) == 49


def test_stack_with_padding_and_dilation_matches_torch():
    layers, paddings, dilations = [(3, 1), (5, 2), (3, 2)], [1, 2, 0], [1, 2, 3]

    def oracle(length: int) -> int:
        for (k, s), p, d in zip(layers, paddings, dilations):
            length = _conv_oracle(length, k, s, p, d)
        return length

    expected = [oracle(s) for s in SIZES]
    assert stack_out_lengths(torch.tensor(SIZES), layers, paddings, dilations).tolist() == expected
    with pytest.raises(ValueError, match="paddings has 1 entries but there are 3 layers"):
        stack_out_lengths(10, layers, paddings=[0])


def _kaldi_frames(num_samples: int, frame_length_ms: float, frame_shift_ms: float, snip_edges: bool) -> int:
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.frame_opts.frame_shift_ms = frame_shift_ms
    opts.frame_opts.snip_edges = snip_edges
    comp = knf.OnlineFbank(opts)
    comp.accept_waveform(16000.0, np.zeros(num_samples, dtype=np.float32).tolist())
    comp.input_finished()
    return comp.num_frames_ready


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("length_ms,shift_ms", [(25.0, 10.0), (20.0, 10.0), (25.0, 12.5)])
def test_window_frames_matches_kaldi(snip_edges, length_ms, shift_ms):
    pytest.importorskip("kaldi_native_fbank")
    frame_length, frame_shift = int(16 * length_ms), int(16 * shift_ms)
    sizes = [s for s in SIZES if s > 0]  # Kaldi needs at least one sample
    expected = [_kaldi_frames(s, length_ms, shift_ms, snip_edges) for s in sizes]
    assert [window_frames(s, frame_length, frame_shift, snip_edges) for s in sizes] == expected
    assert window_frames(torch.tensor(sizes), frame_length, frame_shift, snip_edges).tolist() == expected


def test_window_frames_loop_oracle_and_clamping():
    # snip_edges=True: count start positions 0, shift, ... whose whole window fits
    for s in SIZES:
        fits = sum(1 for start in range(0, max(s, 1), 160) if start + 400 <= s)
        assert window_frames(s, 400, 160) == fits
        # snip_edges=False: frames centred at shift/2 + t*shift... Kaldi: round(S / shift) half up
        assert window_frames(s, 400, 160, snip_edges=False) == int(np.floor(s / 160 + 0.5))
    assert window_frames(-5, 400, 160) == 0 and window_frames(-500, 400, 160, snip_edges=False) == 0
    assert window_frames(torch.tensor([-3, 0, 399]), 400, 160).tolist() == [0, 0, 0]


def _patch_loop(length: int, patch: int, stride: int, partial: str) -> int:
    """Count complete patches by hand, after zero-padding the end for ``"pad"`` (one zero at a time
    until the patches tile the axis exactly)."""
    if length <= 0:
        return 0
    if partial == "pad":
        while length < patch or (length - patch) % stride:
            length += 1
    return sum(1 for start in range(0, length, stride) if start + patch <= length)


@pytest.mark.parametrize("partial", ["drop", "pad"])
@pytest.mark.parametrize("patch,stride", [(16, 16), (2, 2), (16, 10), (4, 1), (1, 1), (3, 5)])
def test_patch_count_matches_loop(partial, patch, stride):
    sizes = list(range(0, 70)) + [100, 1024, 1025]
    expected = [_patch_loop(s, patch, stride, partial) for s in sizes]
    assert [patch_count(s, patch, stride, partial) for s in sizes] == expected
    assert patch_count(torch.tensor(sizes), patch, stride, partial).tolist() == expected
    assert patch_count(-4, patch, stride, partial) == 0


def test_patch_count_pad_is_ceil_for_non_overlapping():
    frames = torch.arange(0, 300)
    assert torch.equal(patch_count(frames, 16, partial="pad"), torch.div(frames + 15, 16, rounding_mode="floor"))
    # the "drop" arithmetic is that of a Conv2d with stride = kernel
    x = torch.zeros(1, 1, 37, 50)
    out = torch.nn.Conv2d(1, 1, (16, 10), stride=(16, 10))(x)
    assert patch_grid((37, 50), (16, 10)) == tuple(out.shape[-2:]) == (2, 5)


def test_grid_and_num_patches_1d_2d_3d():
    # 1-D
    assert patch_grid((100,), 16) == (6,) and num_patches((100,), 16, partial="pad") == 7
    # 2-D image patches
    assert patch_grid((224, 224), 16) == (14, 14) and num_patches((224, 224), 16) == 196
    # 3-D video tubelets, checked against a Conv3d
    x = torch.zeros(1, 1, 9, 33, 40)
    out = torch.nn.Conv3d(1, 1, (2, 16, 16), stride=(2, 16, 16))(x)
    assert patch_grid((9, 33, 40), (2, 16, 16)) == tuple(out.shape[-3:])
    assert num_patches((9, 33, 40), (2, 16, 16)) == out[0, 0].numel()
    # spectrogram: time padded per utterance, frequency fixed -> tensor tokens per utterance
    frames = torch.tensor([0, 1, 16, 17, 100])
    tp, fp = patch_grid((frames, 128), (16, 16), partial=("pad", "drop"))
    assert tp.tolist() == [0, 1, 1, 2, 7] and fp == 8
    assert num_patches((frames, 128), (16, 16), partial=("pad", "drop")).tolist() == [0, 8, 8, 16, 56]


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="integer tensor"):
        conv_out_lengths(torch.tensor([1.0]), 3, 1)
    with pytest.raises(TypeError, match="lengths: expected an int"):
        conv_out_lengths(3.5, 3, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        conv_out_lengths(10, 3, 0)
    with pytest.raises(ValueError, match="partial must be 'drop' or 'pad'"):
        patch_count(10, 3, partial="ceil")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch has 2 entries but sizes has 3 axes"):
        patch_grid((1, 2, 3), (1, 2))


def test_tensor_keeps_shape_and_device():
    x = torch.tensor([[400, 800], [0, 1600]])
    out = window_frames(x, 400, 160)
    assert out.shape == (2, 2) and out.dtype == torch.int64 and out.device == x.device
    assert out.tolist() == [[1, 3], [0, 8]]


def test_pad_waveforms_pads_and_names_the_bad_item():
    from speechssl.nn.lengths import pad_waveforms

    x, lengths = pad_waveforms([torch.ones(3), torch.ones(5)])
    assert lengths.tolist() == [3, 5] and x.shape == (2, 5) and float(x[0, 3:].abs().sum()) == 0.0
    with pytest.raises(TypeError, match="got a tensor"):
        pad_waveforms(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"wavs\[1\]: expected a 1-D float tensor \(S,\) at 16 kHz, got torch.int64"):
        pad_waveforms([torch.ones(3), torch.ones(4, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"wavs\[0\]: .* got torch.float32 \(2, 3\)"):
        pad_waveforms([torch.ones(2, 3)])
