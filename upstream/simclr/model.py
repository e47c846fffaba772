"""SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

* :class:`SimCLRModel` — the upstream: the encoder ``f`` (a :class:`~speechssl.nn.resnet.ResNet`
  or a :class:`~speechssl.nn.vit.VisionTransformer`) following the image upstream contract;
  :meth:`SimCLRModel.represent` gives SimCLR's representation ``h = f(x)`` ``(B, D)`` (ResNet:
  global average pool of the last stage; ViT: the class token or the patch-token mean of the
  last layer).
* :class:`SimCLRPretrainModel` — ``views → z = g(f(views))``, ``g`` the projector
  (:class:`~speechssl.nn.mlp.MLPHead`: ``Linear → [BN] → ReLU`` repeated ``projector_layers - 1``
  times, then ``Linear`` to ``projector_dim``): all views of a batch go through the
  encoder as one batch (as SimCLR's reference code does), so BatchNorm statistics cover every view.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from speechssl.nn.image_backbone import ImageUpstream, build_image_backbone
from speechssl.nn.mlp import MLPHead
from speechssl.nn.resnet import ResNet
from speechssl.upstream.simclr.config import SimCLRConfig

__all__ = ["SimCLRModel", "SimCLRPretrainModel"]


class SimCLRModel(ImageUpstream):
    """The SimCLR encoder as an image upstream (see the module docstring)."""

    method = "simclr"

    def __init__(self, config: SimCLRConfig) -> None:
        super().__init__()
        self.config = config
        config.validate()
        self.backbone = build_image_backbone(config.backbone, config.image_size, config.channels, config.resnet,
                                             config.vit, cls_token=config.vit.pool == "cls")

    @classmethod
    def from_config(cls, config: SimCLRConfig) -> "SimCLRModel":
        return cls(config)

    @property
    def feature_dim(self) -> int:
        """``D`` of :meth:`represent`."""
        return self.hidden_sizes[-1]

    def represent(self, images: torch.Tensor) -> torch.Tensor:
        """SimCLR's representation ``h``: ``(B, C, H, W)`` → ``(B, D)``."""
        if isinstance(self.backbone, ResNet):
            return self.backbone.pooled(images)
        last = self.backbone(images)["last_hidden_state"]  # (B, prefix + N, D)
        return last[:, 0] if self.config.vit.pool == "cls" else last[:, self.prefix_tokens:].mean(1)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, T, D_l)], "last_hidden_state", "lengths" (B,),
        "patch_grid"}`` (the backbone's tokens: :mod:`speechssl.nn.resnet` / :mod:`speechssl.nn.vit`)."""
        return self.backbone(images)


class SimCLRPretrainModel(nn.Module):
    """:class:`SimCLRModel` (as ``upstream``) + the :class:`~speechssl.nn.mlp.MLPHead` ``g`` (as ``projector``)."""

    def __init__(self, config: SimCLRConfig) -> None:
        super().__init__()
        self.upstream = SimCLRModel(config)
        c = config
        self.projector = MLPHead(self.upstream.feature_dim, c.projector_hidden_dim, c.projector_dim,
                                 c.projector_layers, batch_norm=c.projector_bn)

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``V`` views ``(B, C, H, W)`` of the same ``B`` images → ``z (V, B, P)`` and ``h (V, B, D)``."""
        if len(views) < 2:
            raise ValueError(f"SimCLR needs at least 2 views per image, got {len(views)}")
        B = views[0].shape[0]
        h = self.upstream.represent(torch.cat(list(views)))  # (V * B, D)
        z = self.projector(h)  # (V * B, P)
        return z.view(len(views), B, -1), h.view(len(views), B, -1)
