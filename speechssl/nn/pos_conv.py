"""Convolutional relative position embedding (wav2vec 2.0 / HuBERT).

A wide grouped convolution over time (fairseq: kernel 128, 16 groups) with weight
normalisation, followed by :class:`SamePad` and GELU; its output is *added* to the frames.

Weight-norm storage: :class:`WeightNormConv1d` keeps the two tensors as plain parameters
named ``weight_g`` (magnitude, ``(1, 1, K)``) and ``weight_v`` (direction,
``(C_out, C_in / groups, K)``), the names fairseq checkpoints and old transformers
checkpoints use, so ``encoder.pos_conv.0.weight_g`` / ``encoder.pos_conv.0.weight_v`` load
unchanged. (``torch.nn.utils.parametrizations.weight_norm`` would name them
``parametrizations.weight.original0`` / ``original1``; the converters map that naming too.)
The effective weight is ``weight_g * weight_v / ||weight_v||`` with the norm taken over
every dimension except the kernel dimension (``dim=2``), as fairseq's ``weight_norm(dim=2)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.activations import get_activation

__all__ = ["WeightNormConv1d", "SamePad", "ConvPositionalEmbedding"]


class WeightNormConv1d(nn.Module):
    """``Conv1d`` whose weight is ``g * v / ||v||`` (norm over all dims but ``dim``).

    Args:
        in_channels, out_channels, kernel_size, padding, groups: as ``nn.Conv1d``.
        dim: the dimension the magnitude ``g`` is kept per (2 = per kernel tap, fairseq's choice).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0,
                 groups: int = 1, dim: int = 2, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels} → {out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding, self.groups, self.dim = kernel_size, padding, groups, dim
        v = torch.empty(out_channels, in_channels // groups, kernel_size)
        g_shape = [1, 1, 1]
        g_shape[dim] = v.shape[dim]
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(g_shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cached_key: tuple | None = None
        self._cached_weight: torch.Tensor | None = None

    def _norm_dims(self) -> list[int]:
        return [d for d in range(3) if d != self.dim]

    @torch.no_grad()
    def reset_magnitude(self) -> None:
        """Set ``g = ||v||`` so the effective weight equals ``v`` (done after initialising ``v``)."""
        self.weight_g.copy_(self.weight_v.norm(dim=self._norm_dims(), keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``(C_out, C_in / groups, K)`` weight.

        Computed with torch's fused weight-norm kernel (what ``nn.utils.parametrizations.weight_norm``
        runs). Under ``no_grad``/``inference_mode`` (feature extraction) it is computed once and
        reused until ``weight_v`` or ``weight_g`` change (their version counters, storage and dtype
        are the key), so a frozen upstream does not renormalise a 4.7M-number kernel per batch.
        """
        v, g = self.weight_v, self.weight_g
        if torch.is_grad_enabled():
            return torch._weight_norm(v, g, self.dim)
        key = (v._version, g._version, v.data_ptr(), g.data_ptr(), v.dtype, v.device)
        if self._cached_key != key:
            with torch.no_grad():
                self._cached_weight = torch._weight_norm(v, g, self.dim)
            self._cached_key = key
        return self._cached_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, T)`` → ``(B, C_out, T + 2 * padding - K + 1)``."""
        return F.conv1d(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                        padding=self.padding, groups=self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, groups={self.groups}, dim={self.dim}")


class SamePad(nn.Module):
    """Drop the extra last frame a ``padding = K // 2`` convolution makes when ``K`` is even."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, T + remove)`` → ``(B, C, T)``."""
        return x[:, :, : x.shape[2] - self.remove] if self.remove else x


class ConvPositionalEmbedding(nn.Sequential):
    """``WeightNormConv1d → SamePad → GELU`` over ``(B, T, D)`` frames (fairseq ``pos_conv``).

    Children are indexed 0, 1, 2 like fairseq's ``nn.Sequential``, so parameters are
    ``0.weight_g``, ``0.weight_v``, ``0.bias``.

    Args:
        dim: ``D``.
        kernel_size: width in frames (fairseq ``conv_pos``, 128).
        groups: convolution groups (fairseq ``conv_pos_groups``, 16).
        activation: applied to the convolution output (GELU in fairseq and transformers).
    """

    def __init__(self, dim: int, kernel_size: int = 128, groups: int = 16, activation: str = "gelu") -> None:
        conv = WeightNormConv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups, dim=2)
        # fairseq's init: variance-scaled normal, zero bias, then g = ||v||.
        nn.init.normal_(conv.weight_v, mean=0.0, std=math.sqrt(4.0 / (kernel_size * dim)))
        conv.reset_magnitude()
        super().__init__(conv, SamePad(kernel_size), get_activation(activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x``: ``(B, T, D)`` (padded frames already zero) → position embedding ``(B, T, D)``."""
        y = x.transpose(1, 2)  # (B, D, T)
        for module in self:
            y = module(y)
        return y.transpose(1, 2)
