"""Stacked log-mel fbank front end (w2v-BERT 2.0 / SeamlessM4T; fairseq2's w2v-BERT reproduction).

::

    wav (B, S) at 16 kHz ─ × 2^15 ─ Kaldi fbank (M mel bins, 25 ms / 10 ms) ─▶ (B, N, M)
        ─ per-utterance, per-bin (x - mean) / sqrt(var + 1e-7) over the N valid frames ─▶ (B, N, M)
        ─ frames 2t, 2t+1 concatenated (``stack`` frames per step) ─▶ (B, N // stack, stack · M)

This is what transformers' ``SeamlessM4TFeatureExtractor`` computes (its defaults: 80 bins,
stride 2): Kaldi fbank of the waveform scaled to the 16-bit range (povey window, pre-emphasis
0.97, DC removal, 512-point FFT, power spectrum, mel bins 20 Hz – Nyquist, log floored at
float32 epsilon, no dither, ``snip_edges``), then **per-utterance** mean and variance
normalisation of each mel bin — variance with Bessel's correction (``ddof=1``) plus ``1e-7``
— over all ``N`` frames of the utterance, before the trailing odd frame is dropped by the
stacking. The fbank itself is :func:`speechssl.features.fbank` (tested against
kaldi-native-fbank); the normalisation can be turned off (``normalize=False``).

Lengths: ``N = window_frames(S, 400, 160)`` fbank frames, ``N // stack`` stacked frames (the
extractor's attention mask marks the last, half-padded step of an odd ``N`` as padding), so one
stacked frame per ``160 · stack`` samples (320 = 20 ms at 16 kHz for ``stack=2``). Statistics and
frames use each row's valid samples only, so padding never changes a row's output; padded
frames are 0. No parameters; the fbank runs without gradient, in float32.
"""
from __future__ import annotations

import torch
from torch import nn

from speechssl.features.kaldi import fbank
from speechssl.nn.lengths import padding_mask, window_frames

__all__ = ["StackedFbank", "stacked_frames", "FBANK_WINDOW", "FBANK_SHIFT"]

FBANK_WINDOW = 400  # samples per fbank frame (25 ms at 16 kHz)
FBANK_SHIFT = 160  # samples between fbank frames (10 ms)
_VAR_EPS = 1e-7  # SeamlessM4TFeatureExtractor's epsilon under the square root


def stacked_frames(num_samples: torch.Tensor | int, stack: int = 2) -> torch.Tensor | int:
    """Stacked frames of ``num_samples`` samples: ``window_frames(S, 400, 160) // stack`` (clamped at 0)."""
    n = window_frames(num_samples, FBANK_WINDOW, FBANK_SHIFT)
    return n // stack


class StackedFbank(nn.Module):
    """Waveforms → normalised log-mel fbank, ``stack`` frames concatenated per step.

    Args:
        num_mel_bins: ``M`` (80).
        stack: fbank frames per output frame (2: 50 Hz).
        normalize: per-utterance, per-bin mean/variance normalisation (SeamlessM4T); False: raw log-mel.
        scale: the waveform is multiplied by this before the fbank (``2 ** 15``: Kaldi's 16-bit range,
            as SeamlessM4T does).
    """

    def __init__(self, num_mel_bins: int = 80, stack: int = 2, *, normalize: bool = True,
                 scale: float = 32768.0) -> None:
        super().__init__()
        if num_mel_bins < 3 or stack < 1:
            raise ValueError(f"need num_mel_bins >= 3 and stack >= 1, got {num_mel_bins}, {stack}")
        self.num_mel_bins, self.stack, self.normalize, self.scale = num_mel_bins, stack, normalize, scale

    @property
    def output_dim(self) -> int:
        """``stack · M``."""
        return self.num_mel_bins * self.stack

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame."""
        return FBANK_SHIFT * self.stack

    def fbank(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S)`` samples, ``(B,)`` lengths → normalised fbank ``(B, N, M)`` (padded frames 0), ``(B,)`` N."""
        with torch.no_grad():
            feats, n = fbank(wav.float() * self.scale, num_mel_bins=self.num_mel_bins, lengths=lengths)
            feats = feats.float()
            n = n.to(feats.device)
            if self.normalize and feats.shape[1] > 0:
                valid = (~padding_mask(n, feats.shape[1])).unsqueeze(-1).float()  # (B, N, 1)
                count = n.clamp(min=1).float()[:, None, None]
                mean = (feats * valid).sum(1, keepdim=True) / count  # (B, 1, M)
                var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / (count - 1).clamp(min=1)
                feats = (feats - mean) / torch.sqrt(var + _VAR_EPS) * valid
        return feats, n

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked features.

        Args:
            wav: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples.

        Returns:
            ``(B, T, stack · M)`` float32 with ``T = N_max // stack`` (padded frames 0) and ``(B,)``
            int64 valid frames ``N_b // stack``.
        """
        if wav.dim() != 2 or tuple(lengths.shape) != (wav.shape[0],):
            raise ValueError(f"expected samples (B, S) and lengths (B,), got {tuple(wav.shape)} and "
                             f"{tuple(lengths.shape)}")
        feats, n = self.fbank(wav, lengths)
        B, N, M = feats.shape
        T = N // self.stack
        out = feats[:, :T * self.stack].reshape(B, T, self.stack * M)  # (B, T, stack·M)
        out_lengths = torch.div(n, self.stack, rounding_mode="floor")
        out = out.masked_fill(padding_mask(out_lengths, T).unsqueeze(-1), 0.0)
        return out, out_lengths

    def extra_repr(self) -> str:
        return f"num_mel_bins={self.num_mel_bins}, stack={self.stack}, normalize={self.normalize}"
