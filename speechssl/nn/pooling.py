"""Pooling of frame sequences into one vector per sequence, padding-aware.

Both poolings read only the valid frames ``t < lengths[b]``: appending padding (any values)
never changes a sequence's pooled vector. A sequence without valid frames pools to zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from speechssl.nn.lengths import padding_mask

__all__ = ["masked_mean", "AttentionPooling"]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames.

    Args:
        x: ``(B, T, D)``.
        lengths: ``(B,)`` valid frames.

    Returns:
        ``(B, D)``; zeros for a sequence with no valid frames.
    """
    valid = (~padding_mask(lengths.to(x.device), x.shape[1])).unsqueeze(-1)  # (B, T, 1)
    total = torch.where(valid, x, x.new_zeros(())).sum(1)  # (B, D)
    return total / valid.sum(1).clamp(min=1).to(x.dtype)


class AttentionPooling(nn.Module):
    """Self-attentive pooling: ``Σ_t softmax_t(w · h_t + b) h_t`` over the valid frames.

    Args:
        dim: ``D``, the frame width.

    Attributes:
        score: ``Linear(D, 1)``, one attention logit per frame.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` frames and ``(B,)`` valid lengths → ``(B, D)`` (zeros without valid frames)."""
        pad = padding_mask(lengths.to(x.device), x.shape[1])  # (B, T) True = padded
        x = torch.where(pad.unsqueeze(-1), x.new_zeros(()), x)  # padding cannot reach the scores as NaN/inf
        logits = self.score(x).squeeze(-1).float().masked_fill(pad, float("-inf"))  # (B, T)
        empty = pad.all(dim=1, keepdim=True)  # (B, 1)
        weights = torch.softmax(logits.masked_fill(empty, 0.0), dim=1).masked_fill(pad, 0.0)  # (B, T)
        return (weights.to(x.dtype).unsqueeze(-1) * x).sum(1)  # (B, D)
