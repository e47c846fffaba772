"""Normalisation layers that respect padding and low-precision training.

* :class:`MaskedGroupNorm` — GroupNorm over time whose statistics come from the valid
  frames only, so a padded batch row equals the same utterance run alone.
* :class:`Fp32LayerNorm` — LayerNorm computed in float32 whatever the input dtype.
* :class:`Transpose` — swaps two dimensions (lets channel-first tensors pass through
  a LayerNorm inside an ``nn.Sequential``; keeps fairseq's parameter names).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


__all__ = ["MaskedGroupNorm", "Fp32LayerNorm", "Transpose"]


class MaskedGroupNorm(nn.Module):
    """GroupNorm over ``(channels in group, valid frames)``, computed in float32.

    With ``lengths=None`` it equals ``torch.nn.GroupNorm`` (in float32). With lengths, mean
    and variance of each (utterance, group) use frames ``t < lengths[b]`` only; padded
    output frames are set to 0.

    Args:
        num_groups: groups ``G``; ``num_channels`` must be divisible by it.
        num_channels: channels ``C``.
        eps: added to the variance.
        affine: learn a per-channel scale ``weight`` and shift ``bias``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: ``(B, C, T)``.
            lengths: ``(B,)`` valid frames per row, or None when nothing is padded.

        Returns:
            ``(B, C, T)`` in the dtype of ``x``.
        """
        if x.dim() != 3 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected (B, {self.num_channels}, T), got {tuple(x.shape)}")
        dtype = x.dtype
        xf = x.float()
        w = self.weight.float() if self.affine else None
        b = self.bias.float() if self.affine else None
        T = xf.shape[-1]
        if lengths is None or bool((lengths >= T).all()):
            return F.group_norm(xf, self.num_groups, w, b, self.eps).to(dtype)
        # Statistics are per (utterance, group), so each padded row is normalised on its own
        # valid frames by the native kernel: one pass, and exactly what the row gives alone.
        y = xf.new_zeros(xf.shape)
        for i, n in enumerate(lengths.clamp(min=0, max=T).tolist()):
            if n > 0:
                y[i, :, :n] = F.group_norm(xf[i:i + 1, :, :n], self.num_groups, w, b, self.eps)[0]
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class Fp32LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` evaluated in float32 and cast back (stable under fp16/bf16 autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., D)`` → ``(..., D)``."""
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class Transpose(nn.Module):
    """Swap dimensions ``dim0`` and ``dim1`` (no parameters)."""

    def __init__(self, dim0: int = -2, dim1: int = -1) -> None:
        super().__init__()
        self.dim0 = dim0
        self.dim1 = dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)

    def extra_repr(self) -> str:
        return f"{self.dim0}, {self.dim1}"
