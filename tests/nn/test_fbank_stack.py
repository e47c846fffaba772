"""Stacked fbank front end: against transformers' SeamlessM4TFeatureExtractor, and padding invariance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechssl.features import fbank
from speechssl.nn.fbank_stack import StackedFbank, stacked_frames
from speechssl.nn.lengths import pad_waveforms

# Seamless computes its fbank in float64 numpy; ours is speechssl.features.fbank (float64 FFT,
# float32 mel/log) — after per-bin normalisation the difference is ~1e-4 on values up to ~5.
TOL = 5e-4


def _wavs(lengths=(16000, 12345, 7001), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        t = np.arange(n) / 16000
        out.append((0.3 * np.sin(2 * np.pi * 180 * (i + 1) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return out


def test_matches_seamless_m4t_feature_extractor() -> None:
    transformers = pytest.importorskip("transformers")
    fe = transformers.SeamlessM4TFeatureExtractor()  # defaults: 80 bins, stride 2; nothing downloaded
    wavs = _wavs()
    x, lengths = pad_waveforms([torch.from_numpy(w) for w in wavs])
    ours, out_lengths = StackedFbank()(x, lengths)
    ref = fe(wavs, sampling_rate=16000, return_tensors="pt", padding=True)
    feats, mask = ref["input_features"], ref["attention_mask"]
    assert out_lengths.tolist() == mask.sum(1).tolist()
    for i in range(len(wavs)):
        t = int(out_lengths[i])
        diff = float((feats[i, :t] - ours[i, :t]).abs().max())
        assert diff < TOL, f"utterance {i}: max diff {diff}"
        assert float(ours[i, t:].abs().sum()) == 0.0


def test_padding_invariance_and_lengths() -> None:
    wavs = [torch.from_numpy(w) for w in _wavs((12800, 8801, 720, 500))]
    fe = StackedFbank()
    x, lengths = pad_waveforms(wavs)
    batch, out_lengths = fe(x, lengths)
    assert out_lengths.tolist() == [int(stacked_frames(len(w))) for w in wavs] == [39, 26, 1, 0]
    assert fe.downsample_rate == 320 and fe.output_dim == 160
    for i, w in enumerate(wavs):
        alone, n = fe(w[None], torch.tensor([len(w)]))
        assert int(n) == int(out_lengths[i])
        torch.testing.assert_close(alone[0], batch[i, :alone.shape[1]], atol=1e-6, rtol=1e-6)


def test_unnormalised_is_the_kaldi_fbank_stacked() -> None:
    w = torch.from_numpy(_wavs((8000,))[0])
    raw = fbank(w * 32768.0, num_mel_bins=80)  # (N, 80)
    ours, n = StackedFbank(normalize=False)(w[None], torch.tensor([len(w)]))
    T = raw.shape[0] // 2
    assert int(n) == T
    torch.testing.assert_close(ours[0], raw[:2 * T].reshape(T, 160))
    # frame t holds fbank frames 2t and 2t+1 side by side
    torch.testing.assert_close(ours[0, 3, 80:], raw[7])
