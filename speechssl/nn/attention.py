"""Multi-head self-attention with key padding masks and an optional additive score bias.

Parameter names follow fairseq's ``MultiheadAttention`` (separate ``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``); the kernel is ``torch.nn.functional.scaled_dot_product_attention``,
which picks a fused implementation where one exists. :func:`attend` is that kernel with the
padding convention, shared by every attention layer (also the conformer's).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MultiheadSelfAttention", "attend", "ScoreBias"]

#: queries ``(B, H, T, Dh)`` (projected, unscaled) → additive bias ``(B, H, T, T)`` on the
#: scaled scores (e.g. :class:`speechssl.nn.position.RelativePositionalEncoding`).
ScoreBias = Callable[[torch.Tensor], torch.Tensor]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
           bias: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(Dh) + bias) v`` over the keys that are not padding.

    Args:
        q, k, v: ``(B, H, T, Dh)``.
        key_padding_mask: ``(B, T)``, True on padded frames, which no query attends to.
            A row with every frame padded attends to all of them instead (its output is
            meaningless and must be masked by the caller) so that no NaN appears.
        bias: additive score bias broadcastable to ``(B, H, T, T)``, or None.
        dropout_p: dropout on the attention probabilities (pass 0 in eval).

    Returns:
        ``(B, H, T, Dh)``.
    """
    attn_mask = None
    if key_padding_mask is not None and bool(key_padding_mask.any()):
        keep = ~key_padding_mask
        keep = keep | ~keep.any(dim=1, keepdim=True)  # fully padded rows: avoid softmax over nothing
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, T), True = attend
    if bias is not None:
        bias = bias.to(q.dtype)
        attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


class MultiheadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over ``H`` heads.

    Args:
        dim: model width ``D`` (divisible by ``num_heads``).
        num_heads: ``H``.
        dropout: dropout on the attention probabilities (training only).
        bias: biases on the four projections.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                score_bias: ScoreBias | None = None) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: ``(B, T)``, True on padded frames (see :func:`attend`).
            score_bias: relative position information: called with the queries
                ``(B, H, T, Dh)``, returns a bias ``(B, H, T, T)`` added to the scaled scores.

        Returns:
            ``(B, T, D)``.
        """
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D/H)
        k = self.k_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        bias = None if score_bias is None else score_bias(q)
        y = attend(q, k, v, key_padding_mask, bias, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out_proj(y)
