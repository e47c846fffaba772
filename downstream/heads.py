"""Task heads that read the featurizer's ``(B, T, D)`` output, SUPERB-style and small.

- :class:`UtteranceClassifier`: linear projection, masked mean pooling over time, then one
  linear layer (or a small MLP) per output; for ks, sid, ic (three outputs) and er.
- :class:`FrameHead`: projection, then a BiLSTM stack (packed, so padding never leaks) or
  nothing, then a linear layer per frame; CTC tasks (pr, asr, sf) and diarization (sd).
- :class:`XVector`: TDNN (x-vector) layers, mean + standard-deviation pooling, an embedding
  layer; trained with :class:`AMSoftmax` on the training speakers (asv).

Every head takes ``(x (B, T, D), lengths (B,))`` and pads nothing itself: frames at or past
``lengths`` are ignored.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.nn.lengths import padding_mask

__all__ = ["masked_mean", "masked_mean_std", "UtteranceClassifier", "FrameHead", "XVector", "AMSoftmax"]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of ``(B, T, D)`` → ``(B, D)`` (an empty row gives zeros)."""
    valid = (~padding_mask(lengths, x.shape[1])).unsqueeze(-1).to(x.dtype)     # (B, T, 1)
    return (x * valid).sum(1) / valid.sum(1).clamp(min=1)


def masked_mean_std(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Concatenated mean and standard deviation over valid frames: ``(B, T, D)`` → ``(B, 2D)``."""
    valid = (~padding_mask(lengths, x.shape[1])).unsqueeze(-1).to(x.dtype)
    n = valid.sum(1).clamp(min=1)
    mean = (x * valid).sum(1) / n
    var = ((x - mean.unsqueeze(1)).pow(2) * valid).sum(1) / n
    return torch.cat([mean, var.clamp(min=eps).sqrt()], dim=-1)


class UtteranceClassifier(nn.Module):
    """Utterance-level classification: ``(B, T, D)`` → one ``(B, C_k)`` logit tensor per output.

    Args:
        in_dim: ``D``.
        num_classes: classes of each output (one entry per output; ic has three).
        projector_dim: width of the per-frame linear projection before pooling (s3prl: 256).
        hidden_dim: 0 for a linear classifier after pooling; else one ReLU hidden layer.
        dropout: dropout after pooling.
    """

    def __init__(self, in_dim: int, num_classes: Sequence[int], projector_dim: int = 256,
                 hidden_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if not num_classes or min(num_classes) < 1:
            raise ValueError(f"num_classes must list at least one positive class count, got {list(num_classes)}")
        self.projector = nn.Linear(in_dim, projector_dim)
        self.dropout = nn.Dropout(dropout)
        width = hidden_dim or projector_dim
        self.hidden = nn.Sequential(nn.Linear(projector_dim, hidden_dim), nn.ReLU()) if hidden_dim else nn.Identity()
        self.outputs = nn.ModuleList([nn.Linear(width, c) for c in num_classes])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        pooled = masked_mean(self.projector(x), lengths)                          # (B, P)
        h = self.hidden(self.dropout(pooled))
        return {"logits": [out(h) for out in self.outputs]}


class FrameHead(nn.Module):
    """Per-frame outputs: ``(B, T, D)`` → ``(B, T, out_dim)`` logits, same ``T``.

    Args:
        in_dim: ``D``.
        out_dim: outputs per frame (CTC: vocabulary + blank; sd: speakers).
        kind: ``"lstm"`` (bidirectional LSTM stack, SUPERB's ASR head shape) or ``"linear"``
            (SUPERB's PR head: the representation must carry the information itself).
        projector_dim: per-frame projection before the LSTM (0: none).
        hidden_dim: LSTM units per direction.
        num_layers: LSTM layers.
        bidirectional: False for a causal (left-to-right) LSTM.
        dropout: between LSTM layers and before the output layer.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: Literal["lstm", "linear"] = "lstm",
                 projector_dim: int = 0, hidden_dim: int = 256, num_layers: int = 2,
                 bidirectional: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in ("lstm", "linear"):
            raise ValueError(f"head kind must be 'lstm' or 'linear', got {kind!r}")
        self.kind = kind
        self.projector = nn.Linear(in_dim, projector_dim) if projector_dim else None
        width = projector_dim or in_dim
        self.rnn = None
        if kind == "lstm":
            self.rnn = nn.LSTM(width, hidden_dim, num_layers=num_layers, batch_first=True,
                               bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
            width = hidden_dim * (2 if bidirectional else 1)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.projector is not None:
            x = self.projector(x)
        if self.rnn is not None:
            t = x.shape[1]
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            x, _ = self.rnn(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=t)  # (B, T, H)
        return {"logits": self.output(self.dropout(x)), "lengths": lengths}


class XVector(nn.Module):
    """x-vector speaker embedding (Snyder et al. 2018), sized by ``channels``.

    Five TDNN layers (context 5, 3 dilated 2, 3 dilated 3, 1, 1; ReLU + batch norm), mean and
    standard-deviation pooling over valid frames, then a linear embedding layer.
    Convolutions are "same"-padded, padded frames are zeroed after every layer, and batch norm
    takes its training statistics over valid frames only, so padding never changes an
    utterance's embedding, in training or evaluation.

    Args:
        in_dim: ``D``.
        channels: width of the first four TDNN layers (Kaldi: 512).
        pool_dim: width of the last TDNN layer (Kaldi: 1500).
        embed_dim: embedding size (Kaldi: 512).
    """

    _CONTEXT = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))  # (kernel, dilation)

    def __init__(self, in_dim: int, channels: int = 128, pool_dim: int = 256, embed_dim: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        dims = [in_dim, channels, channels, channels, channels, pool_dim]
        self.tdnn = nn.ModuleList()
        for (k, d), (i, o) in zip(self._CONTEXT, zip(dims[:-1], dims[1:])):
            self.tdnn.append(nn.Sequential(nn.Conv1d(i, o, k, dilation=d, padding=d * (k - 1) // 2),
                                           nn.ReLU(), nn.BatchNorm1d(o)))
        self.dropout = nn.Dropout(dropout)
        self.embedding = nn.Linear(2 * pool_dim, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        keep = ~padding_mask(lengths, x.shape[1])                                  # (B, T)
        h = x * keep.unsqueeze(-1).to(x.dtype)                                     # (B, T, D)
        for conv, relu, norm in self.tdnn:
            h = relu(conv(h.transpose(1, 2))).transpose(1, 2)                      # (B, T, C)
            out = torch.zeros_like(h)
            out[keep] = norm(h[keep])          # (N_valid, C): statistics of valid frames only
            h = out
        stats = masked_mean_std(h, lengths)                                        # (B, 2 * pool)
        return {"embedding": self.embedding(self.dropout(stats))}


class AMSoftmax(nn.Module):
    """Additive-margin softmax (Wang et al. 2018): logits ``s * (cos θ_c - m [c = target])``.

    Args:
        embed_dim: embedding size.
        num_classes: training speakers.
        margin: ``m`` (s3prl's VoxCeleb recipe: 0.4).
        scale: ``s`` (s3prl: 30).
    """

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.4, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, embedding: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, E)`` embeddings → ``(B, C)`` logits (margin applied only when ``target`` is given)."""
        cos = F.linear(F.normalize(embedding, dim=-1), F.normalize(self.weight, dim=-1))
        if target is not None:
            cos = cos - self.margin * F.one_hot(target, cos.shape[-1]).to(cos.dtype)
        return self.scale * cos
