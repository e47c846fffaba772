"""Transformer decoder: causal self-attention, cross-attention over an encoder, feed-forward.

:class:`TransformerDecoder` is a stack of post-LN :class:`TransformerDecoderLayer` (SpeechT5,
BART, fairseq ``TransformerDecoderLayer`` with ``normalize_before=False``; no final LayerNorm).
Each layer::

    x = LN(x + Dropout(SelfAttn(x, causal, key padding)))
    x = LN(x + Dropout(CrossAttn(x, memory, memory padding)))      (skipped without memory)
    x = LN(x + Dropout(fc2(ActDropout(act(fc1(x))))))

Parameter names are fairseq's: ``layers.{i}.self_attn.{q,k,v,out}_proj``, ``self_attn_layer_norm``,
``encoder_attn.{q,k,v,out}_proj``, ``encoder_attn_layer_norm``, ``fc1``, ``fc2``,
``final_layer_norm`` (transformers' SpeechT5 decoder uses the same names but
``feed_forward.{intermediate,output}_dense`` for ``fc1``/``fc2``).

Position information is the caller's (the decoder pre-nets add absolute embeddings). Padding
never changes a sequence's outputs: padded keys are masked in both attentions, and query ``t``
only sees keys ``<= t``.
"""
from __future__ import annotations

import torch
from torch import nn

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import attend
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.transformer import init_bert_params

__all__ = ["MultiheadCrossAttention", "TransformerDecoderLayer", "TransformerDecoder", "causal_bias"]


def causal_bias(length: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(1, 1, T, T)`` additive score bias: 0 where key ``j <= i``, ``-inf`` where ``j > i``."""
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, device=device, dtype=dtype).masked_fill(future, float("-inf"))[None, None]


class MultiheadCrossAttention(nn.Module):
    """Multi-head attention of queries ``(B, Tq, D)`` over keys/values ``(B, Tk, D)``.

    With ``key_value is query`` it is self-attention; ``bias`` adds e.g. :func:`causal_bias`.
    Parameter names as :class:`speechssl.nn.attention.MultiheadSelfAttention`.

    Args:
        dim: ``D`` (divisible by ``num_heads``).
        num_heads: ``H``.
        dropout: dropout on the attention probabilities (training only).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.num_heads, self.head_dim, self.dropout = dim, num_heads, dim // num_heads, dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` ``(B, Tq, D)``, ``key_value`` ``(B, Tk, D)``, ``key_padding_mask`` ``(B, Tk)``
        True on padding, ``bias`` broadcastable to ``(B, H, Tq, Tk)`` → ``(B, Tq, D)``."""
        B, Tq, D = query.shape
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key_value)), self._heads(self.v_proj(key_value))
        y = attend(q, k, v, key_padding_mask, bias, self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, Tq, D))  # (B, Tq, D)


class TransformerDecoderLayer(nn.Module):
    """Post-LN decoder layer (see the module docstring).

    Args:
        dim, ffn_dim, num_heads: width, feed-forward inner width, heads.
        dropout: on each sub-block's output.
        attention_dropout: on attention probabilities.
        activation_dropout: after the feed-forward activation.
        activation_fn: feed-forward activation (see :mod:`speechssl.nn.activations`).
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = MultiheadCrossAttention(dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.encoder_attn = MultiheadCrossAttention(dim, num_heads, attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.activation = get_activation(activation_fn)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, memory: torch.Tensor | None,
                memory_padding_mask: torch.Tensor | None, self_bias: torch.Tensor | None) -> torch.Tensor:
        """``x`` ``(B, T, D)``; masks True on padding; ``self_bias`` the causal bias → ``(B, T, D)``."""
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, x, padding_mask, self_bias)))
        if memory is not None:
            x = self.encoder_attn_layer_norm(x + self.dropout(self.encoder_attn(x, memory, memory_padding_mask)))
        ffn = self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))
        return self.final_layer_norm(x + ffn)


class TransformerDecoder(nn.Module):
    """``num_layers`` :class:`TransformerDecoderLayer` s with causal self-attention.

    Args:
        dim, ffn_dim, num_layers, num_heads, dropout, attention_dropout, activation_dropout,
        activation_fn, layer_norm_eps: see :class:`TransformerDecoderLayer`.
        layerdrop: probability of skipping each layer while training.
    """

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, activation_fn: str = "gelu",
                 layer_norm_eps: float = 1e-5, layerdrop: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= layerdrop < 1.0:
            raise ValueError(f"layerdrop must be in [0, 1), got {layerdrop}")
        self.dim = dim
        self.layerdrop = layerdrop
        self.layers = nn.ModuleList([
            TransformerDecoderLayer(dim, ffn_dim, num_heads, dropout=dropout, attention_dropout=attention_dropout,
                                    activation_dropout=activation_dropout, activation_fn=activation_fn,
                                    layer_norm_eps=layer_norm_eps)
            for _ in range(num_layers)])
        self.layers.apply(init_bert_params)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_lengths: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Decode.

        Args:
            x: ``(B, T, D)`` decoder inputs (pre-net output, positions added).
            lengths: ``(B,)`` valid decoder steps (None: none padded).
            memory: ``(B, S, D)`` encoder output for cross-attention (None: no cross-attention).
            memory_lengths: ``(B,)`` valid encoder frames (None: none padded).
            generator: CPU generator for layer drop (None: torch's global RNG).

        Returns:
            ``[x, h_1, ..., h_L]`` each ``(B, T, D)``; padded steps are 0.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected decoder inputs (B, T, {self.dim}), got {tuple(x.shape)}")
        T = x.shape[1]
        pad = None if lengths is None else make_padding_mask(lengths, T)
        mem_pad = None
        if memory is not None and memory_lengths is not None:
            mem_pad = make_padding_mask(memory_lengths, memory.shape[1])
        bias = causal_bias(T, x.device, x.dtype)
        hidden = [x]
        for layer in self.layers:
            skip = (self.training and self.layerdrop > 0.0
                    and float(torch.rand((), generator=generator)) < self.layerdrop)
            if not skip:
                x = layer(x, pad, memory, mem_pad, bias)
                if pad is not None:  # an all-padded row (length 0) must not feed NaN to the next layer
                    x = x.masked_fill(pad.unsqueeze(-1), 0.0)
            hidden.append(x)
        if pad is not None:
            hidden[0] = hidden[0].masked_fill(pad.unsqueeze(-1), 0.0)
        return hidden
