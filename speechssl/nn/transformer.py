"""Transformer encoder of the wav2vec 2.0 family (HuBERT, wav2vec 2.0, SpeechT5-style stacks).

:class:`TransformerEncoder` = an injected position module + a stack of
:class:`TransformerEncoderLayer`. The position module is chosen by name (``position``):

* ``"conv"`` (default; HuBERT, wav2vec 2.0): the convolutional embedding
  :class:`~speechssl.nn.pos_conv.ConvPositionalEmbedding`, added to the frames, at attribute
  ``pos_conv``.
* ``"sinusoidal"``: the fixed :class:`~speechssl.nn.position.SinusoidalPositionalEmbedding`
  (interleaved layout, positions from 0), added to the frames, at attribute ``pos_sinusoidal``
  (it holds a parameter, ``alpha``, only with ``sinusoidal_scale=True``).
* ``"relative"`` (SpeechT5): :class:`~speechssl.nn.position.RelativePositionalEncoding`, clamped
  relative distances whose learnt embedding is added to the keys in every layer's
  attention, at attribute ``pos_emb`` (``pos_emb.pe_k.weight``, shared by all layers).
* ``"none"``: no position information.

Several kinds combine as a tuple, e.g. ``("conv", "relative")``; absolute embeddings are all
computed from the same (padding-zeroed) input and summed with it.

Two layouts, as fairseq's ``layer_norm_first``:

* post-LN (``layer_norm_first=False``, HuBERT/wav2vec 2.0 Base): the encoder LayerNorm is applied
  after adding the position embedding; each layer normalises after each residual sum.
* pre-LN (``layer_norm_first=True``, Large): each layer normalises the input of each
  sub-block; the encoder LayerNorm is applied after the last layer.

Parameter names equal fairseq's ``TransformerEncoder`` / ``TransformerSentenceEncoderLayer``:
``pos_conv.0.weight_g``, ``layers.{i}.self_attn.{q,k,v,out}_proj``, ``layers.{i}.self_attn_layer_norm``,
``layers.{i}.fc1``, ``layers.{i}.fc2``, ``layers.{i}.final_layer_norm``, ``layer_norm``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import MultiheadSelfAttention, ScoreBias
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.pos_conv import ConvPositionalEmbedding
from speechssl.nn.position import POSITION_KINDS, RelativePositionalEncoding, SinusoidalPositionalEmbedding

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "init_bert_params"]


def init_bert_params(module: nn.Module) -> None:
    """BERT initialisation used by fairseq's encoders: Linear ~ N(0, 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward block, post-LN or pre-LN.

    Args:
        dim: model width ``D``.
        ffn_dim: feed-forward inner width.
        num_heads: attention heads.
        dropout: dropout on each sub-block's output (fairseq ``dropout``).
        attention_dropout: dropout on attention probabilities.
        activation_dropout: dropout after the feed-forward activation.
        activation_fn: feed-forward activation name (see :mod:`speechssl.nn.activations`).
        layer_norm_first: pre-LN when True, post-LN when False.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = MultiheadSelfAttention(dim, num_heads, dropout=attention_dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = get_activation(activation_fn)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.fc2(self.dropout2(self.activation(self.fc1(x)))))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                score_bias: ScoreBias | None = None) -> torch.Tensor:
        """``x``: ``(B, T, D)``, ``key_padding_mask``: ``(B, T)`` True on padding → ``(B, T, D)``.

        ``score_bias``: relative position information for the attention (see
        :meth:`speechssl.nn.attention.MultiheadSelfAttention.forward`), or None.
        """
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, score_bias))
            x = x + self._ffn(self.final_layer_norm(x))
        else:
            x = self.self_attn_layer_norm(x + self.dropout1(self.self_attn(x, key_padding_mask, score_bias)))
            x = self.final_layer_norm(x + self._ffn(x))
        return x


class TransformerEncoder(nn.Module):
    """Position embedding + ``num_layers`` transformer layers, returning every layer's output.

    Args:
        dim, ffn_dim, num_heads, dropout, attention_dropout, activation_dropout, activation_fn,
        layer_norm_first, layer_norm_eps: see :class:`TransformerEncoderLayer`.
        num_layers: ``L``.
        layerdrop: probability of skipping each layer while training (never in eval).
        position: ``"conv"`` (default), ``"sinusoidal"``, ``"relative"``, ``"none"``, or a tuple of
            several (see the module docstring).
        conv_pos: position-convolution width in frames (``"conv"``).
        conv_pos_groups: position-convolution groups (``"conv"``).
        max_relative_distance: ``K``, relative distances are clamped to ``[-K, K - 1]``
            (``"relative"``; SpeechT5 160).
        sinusoidal_scale: multiply the sinusoidal embedding by a learnt scalar ``alpha``
            (``"sinusoidal"``; SpeechT5's scaled positional encoding).

    Attributes:
        positions: the position kinds in use, as a tuple (``()`` for ``"none"``).
    """

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_first: bool = False, layer_norm_eps: float = 1e-5, layerdrop: float = 0.0,
                 position: str | Sequence[str] = "conv", conv_pos: int = 128, conv_pos_groups: int = 16,
                 max_relative_distance: int = 160, sinusoidal_scale: bool = False) -> None:
        super().__init__()
        if not 0.0 <= layerdrop < 1.0:
            raise ValueError(f"layerdrop must be in [0, 1), got {layerdrop}")
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.layer_norm_first = layer_norm_first
        self.layerdrop = layerdrop
        self.positions = _position_kinds(position)
        # absolute embeddings (added to the input), in this order; "conv" keeps fairseq's name
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups) if "conv" in self.positions else None
        self.pos_sinusoidal = (SinusoidalPositionalEmbedding(dim, learnt_scale=sinusoidal_scale)
                               if "sinusoidal" in self.positions else None)
        # relative positions (inside every layer's attention)
        self.pos_emb = (RelativePositionalEncoding(dim // num_heads, max_relative_distance)
                        if "relative" in self.positions else None)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            TransformerEncoderLayer(dim, ffn_dim, num_heads, dropout=dropout, attention_dropout=attention_dropout,
                                    activation_dropout=activation_dropout, activation_fn=activation_fn,
                                    layer_norm_first=layer_norm_first, layer_norm_eps=layer_norm_eps)
            for _ in range(num_layers)
        ])
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.layers.apply(init_bert_params)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *,
                output_layer: int | None = None, absolute_positions: bool = True) -> list[torch.Tensor]:
        """Encode frames.

        Args:
            x: ``(B, T, D)`` frames.
            lengths: ``(B,)`` valid frames per row (None: nothing padded).
            output_layer: stop after this many layers (1-based, ``1..L``); None runs all ``L``.
            absolute_positions: add the conv / sinusoidal embeddings; False for inputs that bring
                their own (SpeechT5's text pre-net shares the encoder with speech). Relative
                positions always apply.

        Returns:
            hidden states ``[h_0, h_1, ..., h_k]`` (``k = output_layer or L``), each ``(B, T, D)``
            with padded frames set to 0. ``h_0`` is the input of the first layer (absolute
            position embeddings added, and for post-LN normalised). ``h_i`` is the output of layer ``i``,
            except that for pre-LN the last one, ``h_L``, is passed through the final
            LayerNorm (it is the encoder's output, as in fairseq, s3prl and transformers 4.x).
            A layer skipped by layer drop repeats its input.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected frames (B, T, {self.dim}), got {tuple(x.shape)}")
        num_layers = len(self.layers)
        if output_layer is None:
            output_layer = num_layers
        if not 1 <= output_layer <= num_layers:
            raise ValueError(f"output_layer must be in 1..{num_layers}, got {output_layer}")
        pad = None if lengths is None else make_padding_mask(lengths, x.shape[1])
        if pad is not None and not bool(pad.any()):
            pad = None   # nothing padded: skip the masking passes (identical results)
        if pad is not None:
            # Padding must look like the zero padding the position conv sees past the end of a lone utterance.
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        if absolute_positions:
            x = self._add_absolute_positions(x, pad)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden = [x]
        for i, layer in enumerate(self.layers[:output_layer]):
            skip = self.training and self.layerdrop > 0.0 and float(torch.rand(())) < self.layerdrop
            if not skip:
                x = layer(x, pad, self.pos_emb)
            if self.layer_norm_first and i == num_layers - 1:
                x = self.layer_norm(x)
            hidden.append(x)
        if pad is not None:
            hidden = [h.masked_fill(pad.unsqueeze(-1), 0.0) for h in hidden]
        return hidden

    def _add_absolute_positions(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """``x`` (padded frames zero) plus every absolute embedding computed from it, ``(B, T, D)``."""
        out = x
        if self.pos_conv is not None:
            out = out + self.pos_conv(x)
        if self.pos_sinusoidal is not None:
            out = out + self.pos_sinusoidal(x, pad)
        return out


def _position_kinds(position: str | Sequence[str]) -> tuple[str, ...]:
    """Validate ``position`` (a kind or a tuple of kinds) → the kinds in use, ``()`` for ``"none"``."""
    kinds = (position,) if isinstance(position, str) else tuple(position)
    for kind in kinds:
        if kind not in POSITION_KINDS:
            raise ValueError(f"position: unknown kind {kind!r}; choose from {', '.join(POSITION_KINDS)} "
                             "(or a tuple of them)")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"position: {kinds} names a kind twice")
    if "none" in kinds:
        if len(kinds) > 1:
            raise ValueError(f"position: 'none' cannot be combined with other kinds, got {kinds}")
        return ()
    return kinds
