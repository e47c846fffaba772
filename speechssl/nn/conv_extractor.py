"""The wav2vec 2.0 / HuBERT convolutional waveform encoder.

A stack of strided 1-D convolutions turns 16 kHz samples into frames (fairseq's default
stack has stride 320: 50 frames per second). Each block is ``Conv1d → Dropout → [norm] →
GELU``; in ``"default"`` mode only the first block has a norm (a GroupNorm with one group
per channel), in ``"layer_norm"`` mode every block has a LayerNorm over channels.

Parameter names equal fairseq's ``ConvFeatureExtractionModel``:
``conv_layers.{i}.0.weight`` (conv), ``conv_layers.0.2.{weight,bias}`` (group norm),
``conv_layers.{i}.2.1.{weight,bias}`` (layer norm).

Padding invariance: a valid output frame only reads valid input samples, so the only
place where padding could leak is the GroupNorm's statistics, which :class:`MaskedGroupNorm`
computes over valid frames.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from speechssl.nn.lengths import (conv_out_lengths, padding_mask, stack_out_lengths, stack_receptive_field,
                                  stack_stride)
from speechssl.nn.norm import Fp32LayerNorm, MaskedGroupNorm, Transpose

__all__ = ["ConvLayerSpec", "FAIRSEQ_CONV_LAYERS", "ConvBlock", "ConvFeatureExtractor", "receptive_field"]

#: ``(out_channels, kernel, stride)`` of one convolution.
ConvLayerSpec = tuple[int, int, int]

#: fairseq's ``[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2``: 400-sample receptive field, stride 320.
FAIRSEQ_CONV_LAYERS: tuple[ConvLayerSpec, ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

ExtractorMode = Literal["default", "layer_norm"]


def receptive_field(layers: Sequence[ConvLayerSpec]) -> int:
    """Samples one output frame sees (the shortest input that yields one frame)."""
    return stack_receptive_field(layers)


class ConvBlock(nn.Sequential):
    """``Conv1d → Dropout → [norm] → GELU`` with fairseq's child indices (0, 1, 2, 3)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *,
                 norm: Literal["none", "group", "layer"], conv_bias: bool, dropout: float) -> None:
        conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=conv_bias)
        nn.init.kaiming_normal_(conv.weight)
        modules: list[nn.Module] = [conv, nn.Dropout(dropout)]
        if norm == "group":
            modules.append(MaskedGroupNorm(out_channels, out_channels, affine=True))
        elif norm == "layer":
            modules.append(nn.Sequential(Transpose(), Fp32LayerNorm(out_channels, elementwise_affine=True),
                                         Transpose()))
        modules.append(nn.GELU())
        super().__init__(*modules)
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None  # type: ignore[override]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``(B, C_in, S)``, lengths ``(B,)`` → ``(B, C_out, T)``, ``(B,)`` (or None)."""
        x = self[0](x)
        x = self[1](x)
        out_lengths = None if lengths is None else conv_out_lengths(lengths, self.kernel, self.stride)
        for module in list(self)[2:]:
            x = module(x, out_lengths) if isinstance(module, MaskedGroupNorm) else module(x)
        return x, out_lengths


class ConvFeatureExtractor(nn.Module):
    """Waveform → frames through a stack of strided convolutions.

    Args:
        conv_layers: ``(channels, kernel, stride)`` per layer, e.g. :data:`FAIRSEQ_CONV_LAYERS`.
        mode: ``"default"`` (GroupNorm in the first block) or ``"layer_norm"`` (LayerNorm in all).
        conv_bias: add a bias to every convolution.
        dropout: dropout after each convolution (fairseq uses 0).
    """

    def __init__(self, conv_layers: Sequence[ConvLayerSpec], mode: ExtractorMode = "default",
                 conv_bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor mode must be 'default' or 'layer_norm', got {mode!r}")
        if len(conv_layers) == 0:
            raise ValueError("conv_layers is empty; give at least one (channels, kernel, stride)")
        self.layer_specs: tuple[ConvLayerSpec, ...] = tuple(tuple(int(v) for v in layer)  # type: ignore[misc]
                                                              for layer in conv_layers)
        for i, spec in enumerate(self.layer_specs):
            if len(spec) != 3 or min(spec) < 1:
                raise ValueError(f"conv_layers[{i}]: expected (channels, kernel, stride) of positive ints, "
                                 f"got {spec}")
        self.mode = mode
        self.conv_layers = nn.ModuleList()
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(self.layer_specs):
            norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else "none")
            self.conv_layers.append(ConvBlock(in_channels, channels, kernel, stride, norm=norm,
                                              conv_bias=conv_bias, dropout=dropout))
            in_channels = channels
        self.out_channels = in_channels
        self.stride = stack_stride(self.layer_specs)
        self.receptive_field = receptive_field(self.layer_specs)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced from ``lengths`` samples (``(B,)`` → ``(B,)``, clamped at 0)."""
        return stack_out_lengths(lengths, self.layer_specs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode waveforms.

        Args:
            x: ``(B, S)`` samples (16 kHz), right-padded.
            lengths: ``(B,)`` valid samples per row; None means no padding.

        Returns:
            features: ``(B, T, C)`` with ``C = conv_layers[-1][0]``; frames ``t >= out_lengths[b]``
                are zero.
            out_lengths: ``(B,)`` int64 valid frames.

        Raises:
            ValueError: ``x`` is not 2-D, or shorter than the receptive field (then no frame exists;
                callers that accept such input check :attr:`receptive_field` first).
        """
        if x.dim() != 2:
            raise ValueError(f"expected waveforms (B, S), got shape {tuple(x.shape)}")
        if x.shape[1] < self.receptive_field:
            raise ValueError(f"input has {x.shape[1]} samples, fewer than the receptive field of "
                             f"{self.receptive_field} samples; no output frame can be computed")
        y = x.unsqueeze(1)  # (B, 1, S)
        cur = lengths
        for block in self.conv_layers:
            y, cur = block(y, cur)
        y = y.transpose(1, 2)  # (B, T, C)
        if lengths is None:
            out_lengths = torch.full((x.shape[0],), y.shape[1], dtype=torch.long, device=x.device)
        else:
            out_lengths = cur
            pad = padding_mask(out_lengths, y.shape[1])
            if bool(pad.any()):
                y = y.masked_fill(pad.unsqueeze(-1), 0.0)
        return y, out_lengths
