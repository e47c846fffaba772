"""Transitive Invariance (Wang, He and Gupta, ICCV 2017): the encoder and its embedding head.

* :class:`TransInvModel` — the upstream: a :class:`~speechssl.nn.resnet.ResNet` following the
  image upstream contract; :meth:`TransInvModel.represent` is the global average pool of its
  last stage ``h`` ``(B, D)``.
* :class:`EmbeddingHead` — ``g``: ``Linear → [BN] → ReLU`` repeated ``head_layers - 1`` times,
  then ``Linear`` to ``embed_dim``; the ranking loss L2-normalises its output. The papers use
  plain fully connected layers (``head_bn=False``, the default); the BatchNorm is SimCLR v2's
  projector, an option.
* :class:`TransInvPretrainModel` — ``images → z = g(h)``: the anchors, positives and negatives
  of a batch go through the encoder as one batch (the paper's Triplet-Siamese network shares
  its weights across the three branches), so BatchNorm statistics cover all of them.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from speechssl.nn.resnet import ResNet
from speechssl.upstream.transinv.config import TransInvConfig

__all__ = ["TransInvModel", "EmbeddingHead", "TransInvPretrainModel"]


class TransInvModel(nn.Module):
    """The Transitive Invariance encoder as an image upstream (see the module docstring)."""

    method = "transinv"

    def __init__(self, config: TransInvConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.backbone = ResNet(c.image_size, c.channels, c.widths, c.depths, stem=c.stem, token_stride=c.token_stride,
                               zero_init_residual=c.zero_init_residual)

    @classmethod
    def from_config(cls, config: TransInvConfig) -> "TransInvModel":
        return cls(config)

    @property
    def hidden_sizes(self) -> list[int]:
        """``D`` of each hidden state: the stem, then each stage."""
        return list(self.backbone.hidden_sizes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.backbone.input_shape

    @property
    def patch_grid(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_grid)  # type: ignore[return-value]

    @property
    def prefix_tokens(self) -> int:
        return 0

    @property
    def feature_dim(self) -> int:
        """``D`` of :meth:`represent`."""
        return self.hidden_sizes[-1]

    def represent(self, images: torch.Tensor) -> torch.Tensor:
        """``h``: ``(B, C, H, W)`` → ``(B, D)``, the global average pool of the last stage."""
        return self.backbone.pooled(images)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, T, D_l)] * (L + 1), "last_hidden_state",
        "lengths" (B,), "patch_grid"}`` (:mod:`speechssl.nn.resnet`)."""
        return self.backbone(images)


class EmbeddingHead(nn.Module):
    """``g``: ``(B, D)`` → ``(B, P)`` (see the module docstring).

    Args:
        in_dim: ``D``.
        hidden_dim: width of the hidden layers.
        out_dim: ``P``.
        layers: linear layers (>= 1).
        batch_norm: BatchNorm1d after each hidden linear layer (which then has no bias).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an embedding head needs >= 1 linear layer, got {layers}")
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods.append(nn.Linear(d, hidden_dim, bias=not batch_norm))
            if batch_norm:
                mods.append(nn.BatchNorm1d(hidden_dim))
            mods.append(nn.ReLU())
            d = hidden_dim
        mods.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class TransInvPretrainModel(nn.Module):
    """:class:`TransInvModel` (as ``upstream``) + :class:`EmbeddingHead` (as ``head``)."""

    def __init__(self, config: TransInvConfig) -> None:
        super().__init__()
        self.upstream = TransInvModel(config)
        c = config
        self.head = EmbeddingHead(self.upstream.feature_dim, c.head_hidden_dim, c.embed_dim, c.head_layers, c.head_bn)

    def forward(self, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """``G`` image batches ``(B, C, H, W)`` (anchors, positives, negatives) → embeddings ``z (G, B, P)``
        (not normalised), all through one encoder forward."""
        if not groups:
            raise ValueError("TransInvPretrainModel needs at least one batch of images")
        B = groups[0].shape[0]
        if any(g.shape[0] != B for g in groups):
            raise ValueError(f"every image batch needs the same size, got {[g.shape[0] for g in groups]}")
        z = self.head(self.upstream.represent(torch.cat(list(groups))))  # (G * B, P)
        return z.view(len(groups), B, -1)
