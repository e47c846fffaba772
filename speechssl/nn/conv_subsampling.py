"""Convolution subsampling of log-mel frames (Conformer / w2v-BERT feature encoder).

w2v-BERT's paper (Chung et al., 2021, §3.1) feeds 80-bin log-mel features through "a
convolution subsampling block consisting of two 2D-convolution layers, both with strides
(2, 2)", which cuts the frame rate by 4 (10 ms → 40 ms), as the Conformer does (Gulati et al.,
2020; ESPnet's ``Conv2dSubsampling``)::

    (B, T, F) ─ unsqueeze ─▶ (B, 1, T, F) ─ Conv2d(1, C, 3, stride 2) ─ ReLU
              ─ Conv2d(C, C, 3, stride 2) ─ ReLU ─▶ (B, C, T', F') ─ (B, T', C·F') ─ Linear ─▶ (B, T', D)

with ``T' = ((T - 1) // 2 - 1) // 2`` and ``F' = ((F - 1) // 2 - 1) // 2`` (kernels 3, no padding).
An output frame ``t`` reads input frames ``4t .. 4t + 6`` only, so the valid outputs of a
padded row never read its padding: a padded row equals the same utterance alone.
"""
from __future__ import annotations

import torch
from torch import nn

from speechssl.nn.fbank_stack import StackedFbank
from speechssl.nn.lengths import padding_mask

__all__ = ["Conv2dSubsampling", "SubsampledFbank", "subsampled_frames"]


def subsampled_frames(frames: torch.Tensor | int) -> torch.Tensor | int:
    """Output frames of :class:`Conv2dSubsampling` for ``frames`` input frames (clamped at 0)."""
    if isinstance(frames, torch.Tensor):
        return torch.div(torch.div(frames - 1, 2, rounding_mode="floor") - 1, 2, rounding_mode="floor").clamp(min=0)
    return max(0, ((frames - 1) // 2 - 1) // 2)


class Conv2dSubsampling(nn.Module):
    """Two stride-2 ``3 × 3`` convolutions over (time, frequency) and a projection.

    Args:
        in_features: ``F`` bins per input frame (80 log-mel bins).
        channels: ``C`` channels of both convolutions.
        out_features: ``D`` of the output frames.
    """

    def __init__(self, in_features: int, channels: int, out_features: int) -> None:
        super().__init__()
        freq = subsampled_frames(in_features)
        if freq < 1:
            raise ValueError(f"in_features must be >= 7 for two stride-2 3x3 convolutions, got {in_features}")
        if channels < 1 or out_features < 1:
            raise ValueError(f"need channels >= 1 and out_features >= 1, got {channels}, {out_features}")
        self.in_features, self.channels, self.out_features = in_features, channels, out_features
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU())
        self.out = nn.Linear(channels * int(freq), out_features)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsample.

        Args:
            x: ``(B, T, F)`` frames (right-padded).
            lengths: ``(B,)`` valid frames.

        Returns:
            ``(B, T', D)`` (padded frames 0) and ``(B,)`` valid output frames.

        Raises:
            ValueError: ``x`` is not ``(B, T, in_features)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected frames (B, T, {self.in_features}), got {tuple(x.shape)}")
        out_lengths = subsampled_frames(lengths)
        T_out = int(subsampled_frames(x.shape[1]))
        if T_out == 0:
            return x.new_zeros(x.shape[0], 0, self.out_features), out_lengths
        y = self.conv(x.unsqueeze(1))                                  # (B, C, T', F')
        y = self.out(y.permute(0, 2, 1, 3).flatten(2))                 # (B, T', D)
        return y.masked_fill(padding_mask(out_lengths, T_out).unsqueeze(-1), 0.0), out_lengths


class SubsampledFbank(nn.Module):
    """Waveforms → normalised log-mel fbank → :class:`Conv2dSubsampling` (40 ms frames).

    The fbank is :class:`~speechssl.nn.fbank_stack.StackedFbank` with ``stack=1`` (per-utterance
    normalised Kaldi log-mel, 10 ms); the subsampling takes it to one frame per 640 samples.

    Args:
        num_mel_bins: ``M`` (80).
        channels: ``C`` of the two convolutions.
        out_features: ``D`` of the output frames.
        normalize: per-utterance, per-bin mean/variance normalisation of the fbank.
    """

    def __init__(self, num_mel_bins: int, channels: int, out_features: int, *, normalize: bool = True) -> None:
        super().__init__()
        self.fbank = StackedFbank(num_mel_bins, 1, normalize=normalize)
        self.subsampling = Conv2dSubsampling(num_mel_bins, channels, out_features)

    @property
    def output_dim(self) -> int:
        """``D``."""
        return self.subsampling.out_features

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame (4 fbank shifts: 640 at 16 kHz)."""
        return 4 * self.fbank.downsample_rate

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S)`` 16 kHz samples, ``(B,)`` lengths → ``(B, T', D)`` (padded frames 0), ``(B,)`` frames."""
        feats, n = self.fbank(wav, lengths)
        return self.subsampling(feats, n)
