"""Conformer encoder (Gulati et al. 2020) as in wav2vec2-conformer / w2v-BERT.

:class:`ConformerEncoderLayer` (one block)::

    x = x + 1/2 * FFN1(x)                       # macaron half-step feed-forward (pre-LN inside)
    x = x + Dropout(MHSA(LN(x), positions))     # relative-position self-attention
    x = x + Conv(x)                             # LN → pointwise conv → GLU → depthwise conv → norm → act
                                                #    → pointwise conv
    x = x + 1/2 * FFN2(x)
    x = LN(x)                                   # final LayerNorm

:class:`ConformerEncoder` stacks them: padded frames zeroed → (post-LN layout only: LayerNorm)
→ dropout → layers → (pre-LN layout, the default and transformers' layout: LayerNorm).

Positions (``position``), computed once per forward and shared by the layers:

* ``"rel_pos"`` — Transformer-XL relative attention (wav2vec2-conformer ``"relative"``, ESPnet
  ``RelPositionMultiHeadedAttention``): with the sinusoidal table ``R`` of relative distances
  (:func:`~speechssl.nn.position.transformer_xl_table`) and per-layer learnt ``W_pos``, ``u``, ``v``,
  ``score(i, j) = ((q_i + u) · k_j + (q_i + v) · W_pos R[i - j]) / sqrt(Dh)``.
* ``"rotary"`` — rotary embedding applied, as in wav2vec2-conformer and fairseq, to the layer
  input *before* the query/key projections (values are not rotated).
* ``"relative_key"`` — Shaw et al. (2018) clipped relative keys, as transformers'
  ``Wav2Vec2BertModel`` (``position_embeddings_type="relative_key"``, w2v-BERT 2.0): each layer
  learns a table ``distance_embedding`` of ``left + right + 1`` rows of width ``Dh``; with
  ``d = clamp(j - i, -left, right)`` (key ``j`` right of query ``i`` is positive),
  ``score(i, j) = (q_i · k_j + q_i · E[d + left]) / sqrt(Dh)``.
* ``"none"``.

Layouts. The default block is wav2vec2-conformer's. w2v-BERT 2.0 (transformers
``Wav2Vec2BertModel``) differs in three switches: ``position="relative_key"``,
``conv_causal=True`` (the depthwise convolution is padded by ``K - 1`` frames on the left only,
so frame ``t`` reads frames ``t - K + 1 .. t``) with ``conv_norm="layer_norm"``, and
``encoder_layer_norm=False`` (no LayerNorm after the last layer).

Padding. ``key_padding_mask``/``lengths`` mark padded frames; no query attends to them. The
depthwise convolution would read padded frames of a batch row (transformers'
``Wav2Vec2ConformerConvolutionModule`` and fairseq's ``ConvolutionModule`` do: they only zero
padded frames at the encoder input, and after the first feed-forward those frames are no longer
zero, so the last ``kernel // 2`` valid frames of a padded row differ from the same sequence
run alone). Here the GLU output is zeroed on padded frames before the depthwise convolution,
which is what a lone sequence sees past its end (the convolution's zero padding), so padding
never changes a sequence's outputs. On unpadded input the two agree. The BatchNorm in the
convolution module uses the valid frames only for its batch statistics in training
(:class:`MaskedBatchNorm1d`); in eval it is a per-channel affine map.

Parameter names follow fairseq's ``ConformerEncoderLayer``: ``ffn1.layer_norm``, ``ffn1.w_1``,
``ffn1.w_2``, ``self_attn_layer_norm``, ``self_attn.linear_{q,k,v,out,pos}``,
``self_attn.pos_bias_{u,v}``, ``conv_module.{layer_norm,pointwise_conv1,depthwise_conv,batch_norm,
pointwise_conv2}`` (``depthwise_layer_norm`` instead of ``batch_norm`` with ``conv_norm="layer_norm"``),
``self_attn.distance_embedding`` (``"relative_key"``), ``ffn2.*``, ``final_layer_norm``; the encoder
adds ``layers.{i}`` and ``layer_norm`` (absent with ``encoder_layer_norm=False``).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from speechssl.nn.activations import get_activation
from speechssl.nn.attention import attend
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.position import apply_rotary, rotary_tables, transformer_xl_table

__all__ = ["ConformerPosition", "MaskedBatchNorm1d", "ConformerFeedForward", "ConformerConvModule",
           "ConformerSelfAttention", "ConformerEncoderLayer", "ConformerEncoder"]

ConformerPosition = Literal["rel_pos", "rotary", "relative_key", "none"]
_POSITIONS = ("rel_pos", "rotary", "relative_key", "none")


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over ``(B, C, T)`` whose training statistics skip padded frames.

    In training with a padding mask, mean and (biased) variance per channel come from the
    valid frames of the whole batch, and the running statistics are updated with them
    (unbiased variance, as torch); otherwise it is exactly ``torch.nn.BatchNorm1d``.
    State-dict keys are those of ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor,  # type: ignore[override]
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, C, T)``; ``padding_mask``: ``(B, T)`` True on padding → ``(B, C, T)``."""
        use_batch = self.training or not self.track_running_stats
        if padding_mask is None or not use_batch or not bool(padding_mask.any()):
            return super().forward(x)
        valid = (~padding_mask).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        n = valid.sum()
        if n < 2:
            raise ValueError(f"MaskedBatchNorm1d needs at least 2 valid frames in training, got {int(n)}")
        mean = (x * valid).sum(dim=(0, 2)) / n  # (C,)
        var = (((x - mean[None, :, None]) * valid) ** 2).sum(dim=(0, 2)) / n  # biased, (C,)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                unbiased = var * (n / (n - 1))
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        y = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y


class ConformerFeedForward(nn.Module):
    """``LayerNorm → Linear → act → Dropout → Linear → Dropout`` over ``(B, T, D)``.

    Args:
        dim: ``D``.
        ffn_dim: inner width.
        activation_fn: activation name (``"swish"`` in wav2vec2-conformer).
        dropout: after the second linear.
        activation_dropout: after the activation.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, ffn_dim: int, *, activation_fn: str = "swish", dropout: float = 0.0,
                 activation_dropout: float = 0.0, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.w_1 = nn.Linear(dim, ffn_dim)
        self.activation = get_activation(activation_fn)
        self.dropout1 = nn.Dropout(activation_dropout)
        self.w_2 = nn.Linear(ffn_dim, dim)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)`` (the residual branch; the caller adds and halves)."""
        return self.dropout2(self.w_2(self.dropout1(self.activation(self.w_1(self.layer_norm(x))))))


class ConformerConvModule(nn.Module):
    """The conformer convolution module over ``(B, T, D)``.

    ``LayerNorm → pointwise Conv1d (D → 2D) → GLU → [padded frames zeroed] → depthwise Conv1d
    (kernel K, 'same' padding) → BatchNorm or LayerNorm → act → pointwise Conv1d → Dropout``.

    Args:
        dim: ``D``.
        kernel_size: depthwise kernel ``K`` (odd; wav2vec2-conformer 31).
        norm: ``"batch_norm"`` (wav2vec2-conformer; :class:`MaskedBatchNorm1d`) or
            ``"layer_norm"`` (w2v-BERT 2.0 style, over channels, attribute ``depthwise_layer_norm``).
        activation_fn: after the norm (``"swish"``).
        dropout: on the output.
        bias: biases on the three convolutions (False in wav2vec2-conformer).
        layer_norm_eps: LayerNorm epsilon.
        causal: pad the depthwise convolution by ``K - 1`` frames on the left only (w2v-BERT 2.0,
            transformers ``Wav2Vec2BertConvolutionModule``) instead of ``(K - 1) / 2`` on each side.
    """

    def __init__(self, dim: int, kernel_size: int = 31, *, norm: Literal["batch_norm", "layer_norm"] = "batch_norm",
                 activation_fn: str = "swish", dropout: float = 0.0, bias: bool = False,
                 layer_norm_eps: float = 1e-5, causal: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"depthwise kernel_size must be odd for 'same' padding, got {kernel_size}")
        if norm not in ("batch_norm", "layer_norm"):
            raise ValueError(f"conv norm: unknown {norm!r}; choose 'batch_norm' or 'layer_norm'")
        self.norm = norm
        self.causal = causal
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1, bias=bias)
        self.glu = nn.GLU(dim=1)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, padding=0 if causal else (kernel_size - 1) // 2,
                                        groups=dim, bias=bias)
        if norm == "batch_norm":
            self.batch_norm = MaskedBatchNorm1d(dim)
        else:
            self.depthwise_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.activation = get_activation(activation_fn)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, D)``; ``key_padding_mask``: ``(B, T)`` True on padding → ``(B, T, D)``."""
        y = self.glu(self.pointwise_conv1(self.layer_norm(x).transpose(1, 2)))  # (B, D, T)
        if key_padding_mask is not None:
            y = y.masked_fill(key_padding_mask.unsqueeze(1), 0.0)  # the depthwise conv must not read padding
        if self.causal:
            y = nn.functional.pad(y, (self.depthwise_conv.kernel_size[0] - 1, 0))  # (B, D, T + K - 1)
        y = self.depthwise_conv(y)  # (B, D, T)
        if self.norm == "batch_norm":
            y = self.batch_norm(y, key_padding_mask)
        else:
            y = self.depthwise_layer_norm(y.transpose(1, 2)).transpose(1, 2)
        y = self.pointwise_conv2(self.activation(y))
        return self.dropout(y.transpose(1, 2))  # (B, T, D)


class ConformerSelfAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions or rotary embedding.

    Args:
        dim: ``D`` (divisible by ``num_heads``).
        num_heads: ``H``.
        position: ``"rel_pos"`` (parameters ``linear_pos``, ``pos_bias_u``, ``pos_bias_v``),
            ``"rotary"``, ``"relative_key"`` (parameter ``distance_embedding``) or ``"none"``.
        dropout: on the attention probabilities.
        left_max_distance, right_max_distance: ``"relative_key"`` clipping of ``j - i`` to
            ``[-left, right]`` (transformers ``left/right_max_position_embeddings``, 64 and 8).
    """

    def __init__(self, dim: int, num_heads: int, *, position: ConformerPosition = "rel_pos",
                 dropout: float = 0.0, left_max_distance: int = 64, right_max_distance: int = 8) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if position not in _POSITIONS:
            raise ValueError(f"position: unknown {position!r}; choose from {', '.join(_POSITIONS)}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.position = position
        self.dropout = dropout
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        if position == "rel_pos":
            self.linear_pos = nn.Linear(dim, dim, bias=False)
            self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
            self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)
        if position == "relative_key":
            if left_max_distance < 0 or right_max_distance < 0:
                raise ValueError(f"relative_key clipping distances must be >= 0, got left={left_max_distance}, "
                                 f"right={right_max_distance}")
            self.left_max_distance, self.right_max_distance = left_max_distance, right_max_distance
            self.distance_embedding = nn.Embedding(left_max_distance + right_max_distance + 1, self.head_dim)

    def _relative_key_bias(self, q: torch.Tensor) -> torch.Tensor:
        """``(B, H, T, Dh)`` queries → ``(B, H, T, T)`` Shaw bias ``q_i · E[clamp(j - i) + left] / sqrt(Dh)``.

        Computed as ``q @ E^T`` over the ``left + right + 1`` table rows, then gathered, so memory
        stays ``O(T · (left + right))`` rather than ``O(T² · Dh)``.
        """
        B, H, T, _ = q.shape
        L, R = self.left_max_distance, self.right_max_distance
        scores = torch.matmul(q, self.distance_embedding.weight.to(q.dtype).t())  # (B, H, T, L + R + 1)
        pos = torch.arange(T, device=q.device)
        idx = ((pos[None, :] - pos[:, None]).clamp(-L, R) + L).expand(B, H, T, T)  # (B, H, T, T)
        return scores.gather(-1, idx) * self.head_dim ** -0.5

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                pos: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: ``(B, T)``, True on padded frames (never attended to).
            pos: ``"rel_pos"``: the table ``(2T - 1, D)`` of :func:`~speechssl.nn.position.transformer_xl_table`;
                ``"rotary"``: ``(cos, sin)``, each ``(T, Dh)``, of :func:`~speechssl.nn.position.rotary_tables`;
                ``"relative_key"`` and ``"none"``: None (the table is the layer's own).

        Returns:
            ``(B, T, D)``.
        """
        B, T, D = x.shape
        qk_in = x
        if self.position == "rotary":
            if pos is None:
                raise ValueError("rotary attention needs pos=(cos, sin)")
            cos, sin = pos
            qk_in = apply_rotary(x.view(B, T, self.num_heads, self.head_dim), cos, sin).reshape(B, T, D)
        q = self._heads(self.linear_q(qk_in))
        k = self._heads(self.linear_k(qk_in))
        v = self._heads(self.linear_v(x))
        bias = None
        if self.position == "rel_pos":
            if not isinstance(pos, torch.Tensor) or pos.shape != (2 * T - 1, D):
                raise ValueError(f"rel_pos attention needs pos of shape ({2 * T - 1}, {D}), got "
                                 f"{None if pos is None else tuple(getattr(pos, 'shape', ()))}")
            p = self.linear_pos(pos.to(x.dtype)).view(2 * T - 1, self.num_heads, self.head_dim)
            p = p.permute(1, 2, 0)  # (H, Dh, 2T - 1)
            bd = torch.matmul(q + self.pos_bias_v.to(q.dtype)[None, :, None, :], p.to(q.dtype))  # (B, H, T, 2T - 1)
            i = torch.arange(T, device=x.device)
            idx = (T - 1 - i[:, None] + i[None, :]).expand(B, self.num_heads, T, T)  # row of distance i - j
            bias = bd.gather(-1, idx) * self.head_dim ** -0.5  # (B, H, T, T)
            q = q + self.pos_bias_u.to(q.dtype)[None, :, None, :]
        elif self.position == "relative_key":
            bias = self._relative_key_bias(q)
        y = attend(q, k, v, key_padding_mask, bias, self.dropout if self.training else 0.0)
        return self.linear_out(y.transpose(1, 2).reshape(B, T, D))


class ConformerEncoderLayer(nn.Module):
    """One conformer block (see the module docstring).

    Args:
        dim: ``D``.
        ffn_dim: feed-forward inner width.
        num_heads: attention heads.
        depthwise_kernel_size: convolution-module kernel (odd).
        position: attention positions, ``"rel_pos"``, ``"rotary"`` or ``"none"``.
        conv_norm: ``"batch_norm"`` or ``"layer_norm"`` in the convolution module.
        dropout: on each sub-block's output.
        attention_dropout: on attention probabilities.
        activation_dropout: after the feed-forward activation.
        activation_fn: feed-forward and convolution-module activation (``"swish"``).
        layer_norm_eps: LayerNorm epsilon.
        conv_causal: left-only padding of the depthwise convolution (see :class:`ConformerConvModule`).
        left_max_distance, right_max_distance: ``"relative_key"`` clipping (see :class:`ConformerSelfAttention`).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, *, depthwise_kernel_size: int = 31,
                 position: ConformerPosition = "rel_pos", conv_norm: Literal["batch_norm", "layer_norm"] = "batch_norm",
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 activation_fn: str = "swish", layer_norm_eps: float = 1e-5, conv_causal: bool = False,
                 left_max_distance: int = 64, right_max_distance: int = 8) -> None:
        super().__init__()
        ffn = dict(activation_fn=activation_fn, dropout=dropout, activation_dropout=activation_dropout,
                   layer_norm_eps=layer_norm_eps)
        self.ffn1 = ConformerFeedForward(dim, ffn_dim, **ffn)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.self_attn = ConformerSelfAttention(dim, num_heads, position=position, dropout=attention_dropout,
                                                left_max_distance=left_max_distance,
                                                right_max_distance=right_max_distance)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.conv_module = ConformerConvModule(dim, depthwise_kernel_size, norm=conv_norm, activation_fn=activation_fn,
                                               dropout=dropout, layer_norm_eps=layer_norm_eps, causal=conv_causal)
        self.ffn2 = ConformerFeedForward(dim, ffn_dim, **ffn)
        self.final_layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                pos: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: ``(B, T, D)``; ``key_padding_mask``: ``(B, T)`` True on padding; ``pos``: see
        :meth:`ConformerSelfAttention.forward` → ``(B, T, D)``."""
        x = self.ffn1(x) * 0.5 + x
        x = self.self_attn_dropout(self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, pos)) + x
        x = x + self.conv_module(x, key_padding_mask)
        x = self.ffn2(x) * 0.5 + x
        return self.final_layer_norm(x)


class ConformerEncoder(nn.Module):
    """``num_layers`` conformer blocks with shared positions, returning every layer's output.

    Args:
        dim, ffn_dim, num_heads, depthwise_kernel_size, position, conv_norm, dropout,
        attention_dropout, activation_dropout, activation_fn, layer_norm_eps: see
        :class:`ConformerEncoderLayer`.
        num_layers: ``L``.
        layer_norm_first: True (default; transformers' wav2vec2-conformer, fairseq
            ``layer_norm_first=True``): the encoder LayerNorm follows the last layer; False: it
            normalises the input of the first layer.
        layerdrop: probability of skipping each layer while training (never in eval).
        rotary_base: base of the rotary frequencies (``position="rotary"``).
        encoder_layer_norm_eps: epsilon of the encoder LayerNorm (transformers ``layer_norm_eps``).
        encoder_layer_norm: False: no encoder LayerNorm at all (w2v-BERT 2.0; ``layer_norm_first``
            is then irrelevant and the last hidden state is the last layer's output).
        conv_causal, left_max_distance, right_max_distance: see :class:`ConformerEncoderLayer`.
    """

    def __init__(self, dim: int, ffn_dim: int, num_layers: int, num_heads: int, *, depthwise_kernel_size: int = 31,
                 position: ConformerPosition = "rel_pos", conv_norm: Literal["batch_norm", "layer_norm"] = "batch_norm",
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 activation_fn: str = "swish", layer_norm_eps: float = 1e-5, layer_norm_first: bool = True,
                 layerdrop: float = 0.0, rotary_base: float = 10000.0, encoder_layer_norm_eps: float = 1e-5,
                 encoder_layer_norm: bool = True, conv_causal: bool = False, left_max_distance: int = 64,
                 right_max_distance: int = 8) -> None:
        super().__init__()
        if not 0.0 <= layerdrop < 1.0:
            raise ValueError(f"layerdrop must be in [0, 1), got {layerdrop}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.dim, self.num_heads, self.position = dim, num_heads, position
        self.layer_norm_first, self.layerdrop, self.rotary_base = layer_norm_first, layerdrop, rotary_base
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            ConformerEncoderLayer(dim, ffn_dim, num_heads, depthwise_kernel_size=depthwise_kernel_size,
                                  position=position, conv_norm=conv_norm, dropout=dropout,
                                  attention_dropout=attention_dropout, activation_dropout=activation_dropout,
                                  activation_fn=activation_fn, layer_norm_eps=layer_norm_eps, conv_causal=conv_causal,
                                  left_max_distance=left_max_distance, right_max_distance=right_max_distance)
            for _ in range(num_layers)
        ])
        self.layer_norm = nn.LayerNorm(dim, eps=encoder_layer_norm_eps) if encoder_layer_norm else None

    def positions(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """The shared position tables for frames ``x`` ``(B, T, D)`` (see :meth:`ConformerSelfAttention.forward`)."""
        T = x.shape[1]
        if self.position == "rel_pos":
            return transformer_xl_table(T, self.dim, device=x.device, dtype=x.dtype)
        if self.position == "rotary":
            return rotary_tables(T, self.dim // self.num_heads, base=self.rotary_base, device=x.device, dtype=x.dtype)
        return None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *,
                output_layer: int | None = None) -> list[torch.Tensor]:
        """Encode frames.

        Args:
            x: ``(B, T, D)`` frames.
            lengths: ``(B,)`` valid frames per row (None: nothing padded).
            output_layer: stop after this many layers (``1..L``); None runs all ``L``.

        Returns:
            hidden states ``[h_0, ..., h_k]`` (``k = output_layer or L``), each ``(B, T, D)``
            with padded frames set to 0: ``h_0`` is the input of the first layer, ``h_i`` the
            output of layer ``i``; with ``layer_norm_first`` the last one, ``h_L``, is passed
            through the encoder LayerNorm (transformers' ``last_hidden_state``). A layer
            skipped by layer drop repeats its input.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected frames (B, T, {self.dim}), got {tuple(x.shape)}")
        num_layers = len(self.layers)
        if output_layer is None:
            output_layer = num_layers
        if not 1 <= output_layer <= num_layers:
            raise ValueError(f"output_layer must be in 1..{num_layers}, got {output_layer}")
        pad = None if lengths is None else make_padding_mask(lengths.to(x.device), x.shape[1])
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        if self.layer_norm is not None and not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        pos = self.positions(x)
        hidden = [x]
        for i, layer in enumerate(self.layers[:output_layer]):
            skip = self.training and self.layerdrop > 0.0 and float(torch.rand(())) < self.layerdrop
            if not skip:
                x = layer(x, pad, pos)
            if self.layer_norm is not None and self.layer_norm_first and i == num_layers - 1:
                x = self.layer_norm(x)
            hidden.append(x)
        if pad is not None:
            hidden = [h.masked_fill(pad.unsqueeze(-1), 0.0) for h in hidden]
        return hidden
