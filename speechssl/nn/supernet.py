"""Weight-sharing transformer supernet (LightHuBERT's once-for-all encoder).

A supernet is a wav2vec 2.0 / HuBERT transformer (:mod:`speechssl.nn.transformer` layout and
parameter names) whose every layer can run on a *slice* of its weights. A :class:`Subnet`
names the slice: one embedding width ``E`` for the whole encoder and, for each kept layer, a
number of attention heads ``H_l`` (``head_dim`` = 64 dims each) and an FFN width ``F_l``.
:class:`SearchSpace` lists the allowed values and samples subnets uniformly from an explicit
``torch.Generator``.

Slicing rules (those of the official LightHuBERT code, mechanicalsea/lighthubert):

* every ``E``-sized dimension (inputs of q/k/v and fc1, outputs of out_proj and fc2, the
  LayerNorms, the mask embedding, the input projection) is the prefix ``[:E]``;
* attention uses the first ``H_l`` heads: q/k/v output rows and out_proj input columns
  ``[:64 * H_l]``; scores are scaled by ``64 ** -0.5`` whatever ``H_l``;
* the FFN's hidden units are split into ``F_full / D`` chunks of ``D`` units (``D`` the supernet
  width); a subnet of width ``E`` and ratio ``r = F_l / E`` takes the first ``E`` units of
  each of the first ``ceil(r)`` chunks, the last chunk cut to ``F_l - i E`` units
  (:func:`ffn_units`); the full width ``F_l = F_full`` is the plain prefix;
* the convolutional position embedding is computed from the full weight-normalised kernel,
  then sliced to ``[:E, :E / G]`` and run with the same ``G`` groups;
* depth: a subnet of ``L' < L`` layers runs the layers of :func:`depth_map` (for the 12-layer
  supernet: the official table, dropping the last layer of each block of four first, the
  last block's first; e.g. 10 layers drop layers 8 and 12, 1-based).

A subnet's config ``Subnet.heads[i]`` / ``ffn_dims[i]`` apply to the ``i``-th *kept* layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import attend
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.pos_conv import ConvPositionalEmbedding
from speechssl.nn.transformer import init_bert_params

__all__ = ["Subnet", "SearchSpace", "depth_map", "ffn_units", "SupernetLayer", "SupernetEncoder"]


@dataclass(frozen=True)
class Subnet:
    """One sub-network of a supernet.

    Attributes:
        embed_dim: ``E``, the width of every hidden state.
        heads: attention heads of each kept layer (``len`` = number of layers ``L'``).
        ffn_dims: FFN inner width of each kept layer.
    """

    embed_dim: int
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        object.__setattr__(self, "ffn_dims", tuple(int(f) for f in self.ffn_dims))
        if len(self.heads) != len(self.ffn_dims) or not self.heads:
            raise ValueError(f"subnet: heads ({len(self.heads)}) and ffn_dims ({len(self.ffn_dims)}) must name "
                             "the same number (>= 1) of layers")

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "heads": list(self.heads), "ffn_dims": list(self.ffn_dims)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subnet":
        unknown = set(d) - {"embed_dim", "heads", "ffn_dims"}
        if unknown:
            raise ValueError(f"subnet: unknown field(s) {sorted(unknown)}; expected embed_dim, heads, ffn_dims")
        return cls(int(d["embed_dim"]), tuple(d["heads"]), tuple(d["ffn_dims"]))

    @classmethod
    def uniform(cls, embed_dim: int, heads: int, ffn_ratio: float, num_layers: int) -> "Subnet":
        """Every layer alike: ``heads`` heads and an FFN of ``int(ffn_ratio * embed_dim)``."""
        return cls(embed_dim, (heads,) * num_layers, (int(ffn_ratio * embed_dim),) * num_layers)


@dataclass(frozen=True)
class SearchSpace:
    """The values a subnet may take (LightHuBERT's search spaces).

    Attributes:
        embed_dims: allowed ``E``.
        heads: allowed heads per layer.
        ffn_ratios: allowed ``F_l / E`` per layer.
        layers: allowed numbers of layers.
        head_dim: dims per head (64 in LightHuBERT).
    """

    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_ratios: tuple[float, ...]
    layers: tuple[int, ...]
    head_dim: int = 64

    def validate(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, conv_pos_groups: int) -> None:
        """Raise ValueError naming the field when the space does not fit the supernet's sizes."""
        for name in ("embed_dims", "heads", "ffn_ratios", "layers"):
            if not getattr(self, name):
                raise ValueError(f"search space: {name} is empty")
        if num_heads * self.head_dim != dim:
            raise ValueError(f"supernet: encoder_attention_heads ({num_heads}) x head_dim ({self.head_dim}) must equal "
                             f"encoder_embed_dim ({dim})")
        if ffn_dim % dim:
            raise ValueError(f"supernet: encoder_ffn_embed_dim ({ffn_dim}) must be a multiple of encoder_embed_dim ({dim})")
        if max(self.embed_dims) > dim or any(e % conv_pos_groups for e in self.embed_dims):
            raise ValueError(f"search space: embed_dims {self.embed_dims} must be <= {dim} and divisible by "
                             f"conv_pos_groups ({conv_pos_groups})")
        if max(self.heads) > num_heads or min(self.heads) < 1:
            raise ValueError(f"search space: heads {self.heads} must be in 1..{num_heads}")
        if max(self.layers) > num_layers or min(self.layers) < 1:
            raise ValueError(f"search space: layers {self.layers} must be in 1..{num_layers}")
        for e in self.embed_dims:
            for r in self.ffn_ratios:
                if not 0 < int(r * e) <= ffn_dim or r > ffn_dim // dim:
                    raise ValueError(f"search space: ffn_ratio {r} x embed_dim {e} does not fit encoder_ffn_embed_dim "
                                     f"{ffn_dim} (at most {ffn_dim // dim} chunks of {dim})")

    def max(self) -> Subnet:
        """The largest subnet (every dimension at its maximum)."""
        return Subnet.uniform(max(self.embed_dims), max(self.heads), max(self.ffn_ratios), max(self.layers))

    def min(self) -> Subnet:
        """The smallest subnet."""
        return Subnet.uniform(min(self.embed_dims), min(self.heads), min(self.ffn_ratios), min(self.layers))

    def sample(self, generator: torch.Generator) -> Subnet:
        """A subnet drawn uniformly: depth, width, then heads and FFN ratio of each layer."""

        def pick(values: Sequence[Any]) -> Any:
            return values[int(torch.randint(len(values), (), generator=generator))]

        num_layers = pick(self.layers)
        e = pick(self.embed_dims)
        ffn = tuple(int(pick(self.ffn_ratios) * e) for _ in range(num_layers))
        heads = tuple(pick(self.heads) for _ in range(num_layers))
        return Subnet(e, heads, ffn)

    def contains(self, subnet: Subnet) -> bool:
        """Whether ``subnet`` is one of this space's subnets."""
        ratios = {int(r * subnet.embed_dim) for r in self.ffn_ratios}
        return (subnet.embed_dim in self.embed_dims and subnet.num_layers in self.layers
                and all(h in self.heads for h in subnet.heads) and all(f in ratios for f in subnet.ffn_dims))


def depth_map(total: int, keep: int) -> list[int]:
    """Indices (0-based) of the layers a ``keep``-layer subnet of a ``total``-layer supernet runs.

    With ``total`` divisible by 3 the layers form three equal blocks and layers are dropped from
    the end of each block, last block first (for 12 layers: the official LightHuBERT table,
    11 → drop 12; 10 → drop 8, 12; 9 → drop 4, 8, 12; ...). Otherwise the last layers are dropped.
    """
    if not 1 <= keep <= total:
        raise ValueError(f"subnet: {keep} layers is not in 1..{total}")
    blocks = 3 if total % 3 == 0 else 1
    size = total // blocks
    order = [b * size + size - 1 - j for j in range(size) for b in reversed(range(blocks))]
    dropped = set(order[: total - keep])
    return [i for i in range(total) if i not in dropped]


def ffn_units(dim: int, ffn_dim: int, embed_dim: int, sub_ffn: int) -> torch.Tensor:
    """Indices of the FFN hidden units a layer of width ``embed_dim`` and FFN ``sub_ffn`` uses.

    Args:
        dim, ffn_dim: the supernet's width ``D`` and FFN width ``F_full`` (``F_full / D`` chunks).
        embed_dim, sub_ffn: the subnet's ``E`` and ``F_l``.

    Returns:
        ``(F_l,)`` int64 indices into the ``F_full`` hidden units (see the module docstring).
    """
    if sub_ffn == ffn_dim:
        return torch.arange(ffn_dim)
    chunks = math.ceil(sub_ffn / embed_dim)
    if chunks > ffn_dim // dim:
        raise ValueError(f"subnet: FFN {sub_ffn} at width {embed_dim} needs {chunks} chunks, the supernet has "
                         f"{ffn_dim // dim}")
    parts = [i * dim + torch.arange(min(embed_dim, sub_ffn - i * embed_dim)) for i in range(chunks)]
    return torch.cat(parts)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, e: int) -> torch.Tensor:
    return F.layer_norm(x, (e,), norm.weight[:e], norm.bias[:e], norm.eps)


class _SlicedSelfAttention(nn.Module):
    """fairseq-named q/k/v/out projections, run on their first ``H`` heads and ``E`` input dims."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, heads: int, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(B, T, E)`` → ``(B, T, E)`` through ``heads`` heads."""
        B, T, E = x.shape
        A = heads * self.head_dim

        def proj(lin: nn.Linear) -> torch.Tensor:
            y = F.linear(x, lin.weight[:A, :E], lin.bias[:A])
            return y.view(B, T, heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

        y = attend(proj(self.q_proj), proj(self.k_proj), proj(self.v_proj), key_padding_mask,
                   dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, A)  # (B, T, A)
        return F.linear(y, self.out_proj.weight[:E, :A], self.out_proj.bias[:E])


class SupernetLayer(nn.Module):
    """A post-LN or pre-LN transformer layer that runs on a slice of its weights.

    Parameter names equal :class:`speechssl.nn.transformer.TransformerEncoderLayer`'s (fairseq's).

    Args:
        dim, ffn_dim, num_heads: the supernet's ``D``, ``F_full`` and heads.
        dropout, attention_dropout, activation_dropout, activation_fn, layer_norm_first,
        layer_norm_eps: as :class:`~speechssl.nn.transformer.TransformerEncoderLayer`.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.ffn_dim = dim, ffn_dim
        self.layer_norm_first = layer_norm_first
        self.self_attn = _SlicedSelfAttention(dim, num_heads, attention_dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = get_activation(activation_fn)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)

    def _ffn(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        E = x.shape[-1]
        if units.numel() == self.ffn_dim:
            w1, b1, w2 = self.fc1.weight[:, :E], self.fc1.bias, self.fc2.weight[:E]
        else:
            units = units.to(x.device)
            w1, b1, w2 = self.fc1.weight[units, :E], self.fc1.bias[units], self.fc2.weight[:E, units]
        h = self.dropout2(self.activation(F.linear(x, w1, b1)))
        return self.dropout3(F.linear(h, w2, self.fc2.bias[:E]))

    def forward(self, x: torch.Tensor, heads: int, sub_ffn: int,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, E)``, ``heads`` / ``sub_ffn`` of this layer, ``key_padding_mask`` ``(B, T)`` → ``(B, T, E)``."""
        E = x.shape[-1]
        units = ffn_units(self.dim, self.ffn_dim, E, sub_ffn)
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(_layer_norm(x, self.self_attn_layer_norm, E), heads, key_padding_mask))
            x = x + self._ffn(_layer_norm(x, self.final_layer_norm, E), units)
        else:
            x = _layer_norm(x + self.dropout1(self.self_attn(x, heads, key_padding_mask)), self.self_attn_layer_norm, E)
            x = _layer_norm(x + self._ffn(x, units), self.final_layer_norm, E)
        return x


class SupernetEncoder(nn.Module):
    """Convolutional position embedding + ``num_layers`` :class:`SupernetLayer` s, run as a :class:`Subnet`.

    Parameter names equal :class:`speechssl.nn.transformer.TransformerEncoder`'s with
    ``position="conv"`` (``pos_conv.0.weight_g``, ``layers.{i}.fc1``, ``layer_norm``).

    Args:
        dim, ffn_dim, num_layers, num_heads: the supernet's sizes.
        dropout, attention_dropout, activation_dropout, activation_fn, layer_norm_first,
        layer_norm_eps, conv_pos, conv_pos_groups: as :class:`~speechssl.nn.transformer.TransformerEncoder`.
    """

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5, conv_pos: int = 128,
                 conv_pos_groups: int = 16) -> None:
        super().__init__()
        self.dim, self.ffn_dim, self.num_heads = dim, ffn_dim, num_heads
        self.layer_norm_first = layer_norm_first
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            SupernetLayer(dim, ffn_dim, num_heads, dropout=dropout, attention_dropout=attention_dropout,
                          activation_dropout=activation_dropout, activation_fn=activation_fn,
                          layer_norm_first=layer_norm_first, layer_norm_eps=layer_norm_eps)
            for _ in range(num_layers)
        ])
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.layers.apply(init_bert_params)

    def check(self, subnet: Subnet) -> None:
        """Raise ValueError when ``subnet`` does not fit this supernet."""
        if not 1 <= subnet.embed_dim <= self.dim or subnet.embed_dim % self.pos_conv[0].groups:
            raise ValueError(f"subnet: embed_dim {subnet.embed_dim} must be in 1..{self.dim} and divisible by "
                             f"{self.pos_conv[0].groups} (the position convolution's groups)")
        depth_map(len(self.layers), subnet.num_layers)
        for h, f in zip(subnet.heads, subnet.ffn_dims):
            if not 1 <= h <= self.num_heads:
                raise ValueError(f"subnet: {h} heads is not in 1..{self.num_heads}")
            if not 1 <= f <= self.ffn_dim:
                raise ValueError(f"subnet: ffn {f} is not in 1..{self.ffn_dim}")
            ffn_units(self.dim, self.ffn_dim, subnet.embed_dim, f)

    def _position(self, x: torch.Tensor) -> torch.Tensor:
        """Sliced conv position embedding of ``x`` ``(B, T, E)`` (padded frames zero) → ``(B, T, E)``."""
        conv, same_pad, act = self.pos_conv
        E = x.shape[-1]
        weight = conv.weight[:E, : E // conv.groups]
        bias = None if conv.bias is None else conv.bias[:E]
        y = F.conv1d(x.transpose(1, 2), weight.to(x.dtype), bias, padding=conv.padding, groups=conv.groups)
        return act(same_pad(y)).transpose(1, 2)

    def forward(self, x: torch.Tensor, subnet: Subnet, lengths: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Encode frames with one subnet.

        Args:
            x: ``(B, T, E)`` frames, ``E = subnet.embed_dim``.
            subnet: the slice to run.
            lengths: ``(B,)`` valid frames (None: nothing padded).

        Returns:
            ``[h_0, ..., h_L']`` each ``(B, T, E)``, padded frames 0, with the conventions of
            :meth:`speechssl.nn.transformer.TransformerEncoder.forward` (``h_0``: input of the
            first layer; pre-LN: the last is after the final LayerNorm).
        """
        if x.dim() != 3 or x.shape[-1] != subnet.embed_dim:
            raise ValueError(f"expected frames (B, T, {subnet.embed_dim}), got {tuple(x.shape)}")
        E = subnet.embed_dim
        pad = None if lengths is None else make_padding_mask(lengths, x.shape[1])
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        x = x + self._position(x)
        if not self.layer_norm_first:
            x = _layer_norm(x, self.layer_norm, E)
        x = self.dropout(x)
        hidden = [x]
        kept = depth_map(len(self.layers), subnet.num_layers)
        for j, i in enumerate(kept):
            x = self.layers[i](x, subnet.heads[j], subnet.ffn_dims[j], pad)
            if self.layer_norm_first and j == len(kept) - 1:
                x = _layer_norm(x, self.layer_norm, E)
            hidden.append(x)
        if pad is not None:
            hidden = [h.masked_fill(pad.unsqueeze(-1), 0.0) for h in hidden]
        return hidden

    def num_macs(self, subnet: Subnet, frames: int) -> int:
        """Multiply-accumulates of one forward of ``subnet`` over ``frames`` frames (matmuls and the position conv)."""
        E, T = subnet.embed_dim, int(frames)
        conv = self.pos_conv[0]
        total = T * E * (E // conv.groups) * conv.kernel_size
        for h, f in zip(subnet.heads, subnet.ffn_dims):
            A = h * (self.dim // self.num_heads)
            total += 4 * T * E * A + 2 * T * T * A + 2 * T * E * f
        return total

    def num_params(self, subnet: Subnet) -> int:
        """Parameters ``subnet`` uses (position conv, kept layers, final LayerNorm)."""
        E = subnet.embed_dim
        conv = self.pos_conv[0]
        total = E * (E // conv.groups) * conv.kernel_size + E + 2 * E
        for h, f in zip(subnet.heads, subnet.ffn_dims):
            A = h * (self.dim // self.num_heads)
            total += 3 * (E * A + A) + (A * E + E) + (E * f + f) + (f * E + E) + 4 * E
        return total
