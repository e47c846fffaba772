"""Position information for encoders: absolute embeddings added to the input, and relative
positions used inside attention.

The convolutional embedding of wav2vec 2.0 / HuBERT lives in :mod:`speechssl.nn.pos_conv`;
this module holds the others. Which ones an encoder uses is chosen by name
(:data:`POSITION_KINDS`, see :class:`speechssl.nn.transformer.TransformerEncoder`).

Absolute (added to the frames ``(B, T, D)`` before the first layer):

* :class:`SinusoidalPositionalEmbedding` — fixed sines and cosines of the frame index ``t``.
  ``layout="interleaved"`` (Vaswani et al. 2017; SpeechT5's text prenet,
  transformers' ``SpeechT5ScaledPositionalEncoding``)::

      pe[t, 2k]     = sin((t + offset) * w_k)      w_k = exp(-2k * ln(10000) / D),  k = 0 .. D/2 - 1
      pe[t, 2k + 1] = cos((t + offset) * w_k)

  ``layout="concat"`` (tensor2tensor / fairseq ``SinusoidalPositionalEmbedding``; SpeechT5's
  speech prenet, transformers' ``SpeechT5SinusoidalPositionalEmbedding``, whose positions
  start at ``padding_idx + 1``, i.e. ``offset = padding_idx + 1``)::

      pe[t, k]         = sin((t + offset) * w_k)   w_k = exp(-k * ln(10000) / (D/2 - 1)),  k = 0 .. D/2 - 1
      pe[t, D/2 + k]   = cos((t + offset) * w_k)   (a zero column appended when D is odd)

  With ``learnt_scale=True`` the embedding is ``alpha * pe`` with a learnt scalar ``alpha``
  initialised to 1 (SpeechT5's "scaled positional encoding", Li et al. 2019 §3.2).
  Padded frames get a zero embedding.

Relative (inside attention; never depend on the padded length, so padding cannot change a
sequence's outputs):

* :class:`RelativePositionalEncoding` — Shaw et al. (2018) relative keys as SpeechT5 uses them:
  the distance ``i - j`` between query ``i`` and key ``j`` is clamped to ``[-K, K - 1]``
  and looked up in a learnt table ``pe_k`` of ``2K`` rows of width ``Dh`` (the head width,
  shared by all heads and layers). The attention score becomes
  ``(q_i · k_j + q_i · pe_k[clamp(i - j) + K]) / sqrt(Dh)``, i.e. the embedding is added to
  the keys. It is called with the queries and returns that additive score bias.
* :func:`transformer_xl_table` — the sinusoidal table of relative distances ``T-1 .. -(T-1)``
  that Transformer-XL-style ("rel_pos") attention projects per layer (wav2vec2-conformer,
  ESPnet); the learnt projection and the ``u``/``v`` biases belong to the attention layer
  (:class:`speechssl.nn.conformer.ConformerSelfAttention`).
* :func:`rotary_tables` / :func:`apply_rotary` — rotary position embedding (Su et al. 2021)
  in the rotate-half convention.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["POSITION_KINDS", "PositionKind", "SinusoidalPositionalEmbedding", "sinusoidal_table",
           "RelativePositionalEncoding", "transformer_xl_table", "rotary_tables", "apply_rotary"]

PositionKind = Literal["conv", "relative", "sinusoidal", "none"]
#: the position kinds a :class:`~speechssl.nn.transformer.TransformerEncoder` can be built with.
POSITION_KINDS: tuple[str, ...] = ("conv", "relative", "sinusoidal", "none")


def sinusoidal_table(positions: torch.Tensor, dim: int, layout: str = "interleaved") -> torch.Tensor:
    """Sinusoidal embeddings of ``positions`` (any shape ``S``) → ``(*S, dim)`` float32.

    ``layout`` is ``"interleaved"`` (sin at even, cos at odd channels; ``dim`` must be even) or
    ``"concat"`` (all sines, then all cosines; a zero channel appended for odd ``dim``); the
    formulas are in the module docstring.
    """
    p = positions.to(torch.float32).unsqueeze(-1)
    if layout == "interleaved":
        if dim % 2:
            raise ValueError(f"the interleaved sinusoidal layout needs an even dim, got {dim}; use layout='concat'")
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.int64, device=positions.device).float()
                        * -(math.log(10000.0) / dim))
        angle = p * div  # (*S, D/2)
        return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)
    if layout == "concat":
        half = dim // 2
        if half < 2:
            raise ValueError(f"the concat sinusoidal layout needs dim >= 4, got {dim}")
        step = math.log(10000.0) / (half - 1)
        div = torch.exp(torch.arange(half, dtype=torch.int64, device=positions.device).float() * -step)
        angle = p * div  # (*S, D/2)
        out = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
        if dim % 2:
            out = torch.cat([out, out.new_zeros(*out.shape[:-1], 1)], dim=-1)
        return out
    raise ValueError(f"unknown sinusoidal layout {layout!r}; choose 'interleaved' or 'concat'")


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal absolute position embedding (optionally scaled by a learnt ``alpha``).

    Args:
        dim: ``D``.
        layout: ``"interleaved"`` or ``"concat"`` (see the module docstring).
        offset: the position of frame 0 (0; SpeechT5's speech prenet uses ``padding_idx + 1 = 2``).
        learnt_scale: multiply by a learnt scalar ``alpha`` (parameter ``alpha``, initialised to 1).

    Nothing is stored but ``alpha``: the table is computed for the length at hand, so any
    length works and state dicts carry no buffer.
    """

    def __init__(self, dim: int, *, layout: str = "interleaved", offset: int = 0,
                 learnt_scale: bool = False) -> None:
        super().__init__()
        sinusoidal_table(torch.zeros(1), dim, layout)  # validate dim / layout now
        self.dim, self.layout, self.offset = dim, layout, offset
        self.alpha = nn.Parameter(torch.tensor(1.0)) if learnt_scale else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embedding to add to ``x``.

        Args:
            x: ``(B, T, D)`` frames (only the shape, dtype and device are read).
            padding_mask: ``(B, T)``, True on padded frames (their embedding is 0), or None.

        Returns:
            ``(1, T, D)`` without a padding mask, else ``(B, T, D)``, in the dtype of ``x``.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected frames (B, T, {self.dim}), got {tuple(x.shape)}")
        positions = torch.arange(x.shape[1], device=x.device) + self.offset
        pe = sinusoidal_table(positions, self.dim, self.layout).to(x.dtype).unsqueeze(0)  # (1, T, D)
        if self.alpha is not None:
            pe = self.alpha.to(x.dtype) * pe
        if padding_mask is not None:
            pe = pe.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # (B, T, D)
        return pe

    def extra_repr(self) -> str:
        return (f"{self.dim}, layout={self.layout!r}, offset={self.offset}, "
                f"learnt_scale={self.alpha is not None}")


class RelativePositionalEncoding(nn.Module):
    """Learnt embeddings of clamped relative distances, added to the keys (SpeechT5, Shaw et al.).

    Parameter ``pe_k.weight``: ``(2 * max_distance, Dh)``; row ``clamp(i - j, -K, K - 1) + K``
    serves query ``i`` and key ``j`` (``K = max_distance``; SpeechT5 uses 160). Initialised
    as ``torch.nn.Embedding`` (N(0, 1)).

    Args:
        head_dim: ``Dh``, the width of one attention head.
        max_distance: ``K``.
    """

    def __init__(self, head_dim: int, max_distance: int = 160) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.head_dim = head_dim
        self.max_distance = max_distance
        self.pe_k = nn.Embedding(2 * max_distance, head_dim)

    def indices(self, length: int, device: torch.device | None = None) -> torch.Tensor:
        """``(T, T)`` int64 table rows: ``clamp(i - j, -K, K - 1) + K`` for query ``i``, key ``j``."""
        pos = torch.arange(length, device=device)
        rel = pos[:, None] - pos[None, :]
        return rel.clamp(-self.max_distance, self.max_distance - 1) + self.max_distance

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Score bias for queries ``q``.

        Args:
            q: ``(B, H, T, Dh)`` projected queries (not yet scaled).

        Returns:
            ``(B, H, T, T)``: ``(q_i · pe_k[idx(i, j)]) / sqrt(Dh)``, to add to the scaled
            scores ``q_i · k_j / sqrt(Dh)`` (see :class:`speechssl.nn.attention.MultiheadSelfAttention`).
        """
        B, H, T, Dh = q.shape
        if Dh != self.head_dim:
            raise ValueError(f"expected queries (B, H, T, {self.head_dim}), got {tuple(q.shape)}")
        K = self.max_distance
        lo, hi = max(0, K - (T - 1)), min(2 * K, K + T)  # the rows distances in this length can reach
        table = self.pe_k.weight[lo:hi].to(q.dtype)  # (R, Dh)
        scores = torch.matmul(q * Dh ** -0.5, table.t())  # (B, H, T, R)
        idx = (self.indices(T, q.device) - lo).expand(B, H, T, T)
        return scores.gather(-1, idx)  # (B, H, T, T)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_distance={self.max_distance}"


def transformer_xl_table(length: int, dim: int, *, device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embeddings of the relative distances ``T-1, T-2, ..., 0, -1, ..., -(T-1)``.

    Row ``r`` (of ``2T - 1``) embeds distance ``d = T - 1 - r`` (``d = i - j``: positive when the
    key is left of the query) with the interleaved layout, ``[sin(d w_k), cos(d w_k)]`` (as
    transformers' ``Wav2Vec2ConformerRelPositionalEmbedding`` and ESPnet's ``RelPositionalEncoding``).

    Returns:
        ``(2T - 1, D)``.
    """
    pos = torch.arange(length, dtype=torch.int64, device=device)
    positive = sinusoidal_table(pos, dim).flip(0)  # distances T-1 .. 0
    negative = sinusoidal_table(-pos[1:], dim)  # distances -1 .. -(T-1)
    return torch.cat([positive, negative], dim=0).to(dtype)


def rotary_tables(length: int, head_dim: int, *, base: float = 10000.0, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of rotary position embedding, each ``(T, Dh)``.

    ``theta[t, k] = t * base^(-2k / Dh)`` for ``k < Dh/2``, repeated for the second half
    (``[theta, theta]``: the rotate-half convention of transformers / GPT-NeoX).
    """
    if head_dim % 2:
        raise ValueError(f"rotary position embedding needs an even head width, got {head_dim}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    theta = torch.arange(length, device=device).float()[:, None] * inv_freq  # (T, Dh/2)
    theta = torch.cat([theta, theta], dim=-1)  # (T, Dh)
    return theta.cos().to(dtype), theta.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x``: ``(B, T, H, Dh)`` with ``cos``/``sin`` ``(T, Dh)`` → ``(B, T, H, Dh)``.

    ``x * cos + rotate_half(x) * sin`` with ``rotate_half([a, b]) = [-b, a]`` over the last dim.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]
