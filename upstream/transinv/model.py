"""Transitive Invariance (Wang, He and Gupta, ICCV 2017): the encoder and its embedding head.

* :class:`TransInvModel` — the upstream: a :class:`~speechssl.nn.resnet.ResNet` following the
  image upstream contract; :meth:`TransInvModel.represent` is the global average pool of its
  last stage ``h`` ``(B, D)``.
* the embedding head ``g`` (an :class:`~speechssl.nn.mlp.MLPHead`): ``Linear → [BN] → ReLU``
  repeated ``head_layers - 1`` times, then ``Linear`` to ``embed_dim``; the ranking loss L2-normalises its output. The papers use
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

from speechssl.nn.image_backbone import ImageUpstream
from speechssl.nn.mlp import MLPHead
from speechssl.nn.resnet import ResNet
from speechssl.upstream.transinv.config import TransInvConfig

__all__ = ["TransInvModel", "TransInvPretrainModel"]


class TransInvModel(ImageUpstream):
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


class TransInvPretrainModel(nn.Module):
    """:class:`TransInvModel` (as ``upstream``) + the embedding head ``g`` (as ``head``)."""

    def __init__(self, config: TransInvConfig) -> None:
        super().__init__()
        self.upstream = TransInvModel(config)
        c = config
        self.head = MLPHead(self.upstream.feature_dim, c.head_hidden_dim, c.embed_dim, c.head_layers,
                            batch_norm=c.head_bn)

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
