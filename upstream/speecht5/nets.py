"""SpeechT5's modality pre/post-nets around the shared encoder-decoder (transformers' names).

* :class:`TextEncoderPrenet` — token embedding ``E`` (shared) + ``alpha`` × interleaved
  sinusoids (positions from 0) + dropout (``SpeechT5TextEncoderPrenet``).
* :class:`TextDecoderPrenet` — ``E(tokens) * embed_scale`` + concat-layout sinusoids from
  ``position_offset`` (zero on padding) + dropout (``SpeechT5TextDecoderPrenet``).
* :class:`SpeechDecoderPrenet` — ``L`` × (Linear + ReLU + consistent dropout), Linear to ``D``,
  ``alpha`` × interleaved sinusoids + dropout, optional speaker embedding (L2-normalised,
  concatenated, Linear + ReLU) (``SpeechT5SpeechDecoderPrenet``).
* :class:`SpeechDecoderPostnet` — ``feat_out`` (``D → r·M`` mel frames per step), ``prob_out``
  (``D → r`` stop logits), and a residual 5-conv post-net (Conv1d + BatchNorm + tanh + dropout,
  no tanh on the last) (``SpeechT5SpeechDecoderPostnet``).

Consistent dropout (:func:`consistent_dropout`): one Bernoulli keep-mask of shape ``(T, C)``
is drawn per call and shared by every item of the batch, kept with probability ``1 - p`` and
scaled by ``1 / (1 - p)``; it runs in training and, with ``in_eval`` (Tacotron 2 §2.2), at
inference too. transformers' version draws the mask with keep probability ``p`` (right only
at ``p = 0.5``) and also in eval mode; the parity tests patch it out.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.conformer import MaskedBatchNorm1d
from speechssl.nn.lengths import padding_mask as make_padding_mask
from speechssl.nn.position import SinusoidalPositionalEmbedding

__all__ = ["consistent_dropout", "TextEncoderPrenet", "TextDecoderPrenet", "SpeechDecoderPrenet",
           "SpeechDecoderPostnet"]


def consistent_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dropout with one ``(T, C)`` mask shared across the batch: ``x`` ``(B, T, C)`` → ``(B, T, C)``.

    ``generator``: CPU generator for the mask (None: torch's global RNG); the mask is drawn on
    the CPU and moved, so a CPU generator also serves CUDA inputs.
    """
    if p <= 0.0:
        return x
    keep = torch.bernoulli(torch.full(tuple(x.shape[1:]), 1.0 - p), generator=generator).to(x.device, x.dtype)
    return x * keep / (1.0 - p)


class TextEncoderPrenet(nn.Module):
    """Token embedding + scaled sinusoidal positions (parameter ``encode_positions.alpha``).

    Args:
        embed_tokens: the shared ``nn.Embedding(V, D, padding_idx)``.
        dropout: after adding positions.
    """

    def __init__(self, embed_tokens: nn.Embedding, dropout: float) -> None:
        super().__init__()
        self._embed = [embed_tokens]  # shared, registered on the model (kept out of this state dict)
        self.encode_positions = SinusoidalPositionalEmbedding(embed_tokens.embedding_dim, learnt_scale=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, L)`` int64 → ``(B, L, D)``."""
        x = self._embed[0](tokens)
        return self.dropout(x + self.encode_positions(x))


class TextDecoderPrenet(nn.Module):
    """Scaled token embedding + concat-layout sinusoidal positions (no parameters of its own).

    Args:
        embed_tokens: the shared embedding.
        dropout: after adding positions.
        position_offset: position of the first token (transformers: ``pad_token_id + 1``).
        scale_embedding: multiply embeddings by ``sqrt(D)``.
    """

    def __init__(self, embed_tokens: nn.Embedding, dropout: float, position_offset: int,
                 scale_embedding: bool = False) -> None:
        super().__init__()
        D = embed_tokens.embedding_dim
        self._embed = [embed_tokens]
        self.embed_scale = math.sqrt(D) if scale_embedding else 1.0
        self.embed_positions = SinusoidalPositionalEmbedding(D, layout="concat", offset=position_offset)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` ``(B, L)``, ``lengths`` ``(B,)`` (padded tokens get no position) → ``(B, L, D)``."""
        x = self._embed[0](tokens) * self.embed_scale
        pad = None if lengths is None else make_padding_mask(lengths, tokens.shape[1])
        return self.dropout(x + self.embed_positions(x, pad))


class SpeechDecoderPrenet(nn.Module):
    """Previous mel frames → decoder inputs (see the module docstring).

    Args:
        num_mel_bins: ``M``.
        dim: ``D``.
        units, layers, dropout: the bottleneck MLP (SpeechT5: 256, 2, 0.5).
        positional_dropout: after adding positions.
        speaker_embedding_dim: width of the speaker vector (0: no speaker input).
        in_eval: apply the consistent dropout in eval mode too.
    """

    def __init__(self, num_mel_bins: int, dim: int, *, units: int = 256, layers: int = 2, dropout: float = 0.5,
                 positional_dropout: float = 0.1, speaker_embedding_dim: int = 0, in_eval: bool = True) -> None:
        super().__init__()
        self.p, self.in_eval = dropout, in_eval
        self.layers = nn.ModuleList([nn.Linear(num_mel_bins if i == 0 else units, units) for i in range(layers)])
        self.final_layer = nn.Linear(units, dim)
        self.encode_positions = SinusoidalPositionalEmbedding(dim, learnt_scale=True)
        self.positional_dropout = nn.Dropout(positional_dropout)
        self.speaker_embeds_layer = (nn.Linear(speaker_embedding_dim + dim, dim) if speaker_embedding_dim > 0
                                     else None)

    def forward(self, mels: torch.Tensor, speaker: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``mels`` ``(B, T, M)`` (shifted targets), ``speaker`` ``(B, S)`` or None → ``(B, T, D)``."""
        p = self.p if (self.training or self.in_eval) else 0.0
        x = mels
        for layer in self.layers:
            x = consistent_dropout(F.relu(layer(x)), p, generator)
        x = self.final_layer(x)
        x = self.positional_dropout(x + self.encode_positions(x))  # (B, T, D)
        if self.speaker_embeds_layer is not None:
            if speaker is None:
                raise ValueError("this model takes a speaker embedding (speaker_embedding_dim > 0); pass speaker")
            spk = F.normalize(speaker, dim=-1).unsqueeze(1).expand(-1, x.shape[1], -1)
            x = F.relu(self.speaker_embeds_layer(torch.cat([x, spk], dim=-1)))
        elif speaker is not None:
            raise ValueError("speaker given but the model has no speaker input (speaker_embedding_dim = 0)")
        return x


class _PostnetLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float, last: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=(kernel - 1) // 2, bias=False)
        self.batch_norm = MaskedBatchNorm1d(c_out)
        self.last = last
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(1), 0.0)  # the conv must read zeros past the end
        y = self.batch_norm(self.conv(x), pad)
        return self.dropout(y if self.last else torch.tanh(y))


class SpeechDecoderPostnet(nn.Module):
    """Decoder states → mel frames (before and after the post-net) and stop logits.

    Args:
        dim: ``D``; num_mel_bins: ``M``; reduction_factor: ``r`` frames per decoder step.
        units, layers, kernel, dropout: the conv post-net (SpeechT5: 256, 5, 5, 0.5).
    """

    def __init__(self, dim: int, num_mel_bins: int, reduction_factor: int, *, units: int = 256, layers: int = 5,
                 kernel: int = 5, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_mel_bins, self.reduction_factor = num_mel_bins, reduction_factor
        self.feat_out = nn.Linear(dim, num_mel_bins * reduction_factor)
        self.prob_out = nn.Linear(dim, reduction_factor)
        self.layers = nn.ModuleList([
            _PostnetLayer(num_mel_bins if i == 0 else units, num_mel_bins if i == layers - 1 else units, kernel,
                          dropout, last=i == layers - 1)
            for i in range(layers)])

    def forward(self, h: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h`` ``(B, T, D)``, ``lengths`` ``(B,)`` decoder steps.

        Returns:
            mel before the post-net ``(B, T·r, M)``, after it ``(B, T·r, M)``, stop logits ``(B, T·r)``.
        """
        B, T, _ = h.shape
        r = self.reduction_factor
        before = self.feat_out(h).view(B, T * r, self.num_mel_bins)
        pad = None if lengths is None else make_padding_mask(lengths * r, T * r)
        y = before.transpose(1, 2)  # (B, M, T·r)
        for layer in self.layers:
            y = layer(y, pad)
        after = before + y.transpose(1, 2)
        return before, after, self.prob_out(h).view(B, T * r)
