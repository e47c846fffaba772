"""SimCLR (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

* :class:`SimCLRModel` — the upstream: the encoder ``f`` (a :class:`~speechssl.nn.resnet.ResNet`
  or a :class:`~speechssl.nn.vit.VisionTransformer`) following the image upstream contract;
  :meth:`SimCLRModel.represent` gives SimCLR's representation ``h = f(x)`` ``(B, D)`` (ResNet:
  global average pool of the last stage; ViT: the class token or the patch-token mean of the
  last layer).
* :class:`ProjectionHead` — ``g``: ``Linear → [BN] → ReLU`` repeated ``projector_layers - 1``
  times, then ``Linear`` to ``projector_dim``.
* :class:`SimCLRPretrainModel` — ``views → z = g(f(views))``: all views of a batch go through the
  encoder as one batch (as SimCLR's reference code does), so BatchNorm statistics cover every view.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from speechssl.nn.resnet import ResNet
from speechssl.nn.vit import VisionTransformer
from speechssl.upstream.simclr.config import SimCLRConfig

__all__ = ["SimCLRModel", "ProjectionHead", "SimCLRPretrainModel", "build_backbone"]


def build_backbone(config: SimCLRConfig) -> nn.Module:
    """The encoder ``f`` of ``config`` (validated)."""
    config.validate()
    c = config
    if c.backbone == "resnet":
        r = c.resnet
        return ResNet(c.image_size, c.channels, r.widths, r.depths, stem=r.stem, token_stride=r.token_stride,
                      zero_init_residual=r.zero_init_residual)
    v = c.vit
    return VisionTransformer(c.image_size, v.patch, c.channels, v.dim, v.ffn_dim, v.layers, v.heads,
                             cls_token=v.pool == "cls", position="sincos", layer_norm_eps=v.layer_norm_eps)


class SimCLRModel(nn.Module):
    """The SimCLR encoder as an image upstream (see the module docstring)."""

    method = "simclr"

    def __init__(self, config: SimCLRConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)

    @classmethod
    def from_config(cls, config: SimCLRConfig) -> "SimCLRModel":
        return cls(config)

    @property
    def hidden_sizes(self) -> list[int]:
        """``D`` of each hidden state (ResNet: stem then stages; ViT: ``L + 1`` times ``D``)."""
        if isinstance(self.backbone, ResNet):
            return list(self.backbone.hidden_sizes)
        return [self.config.vit.dim] * (self.config.vit.layers + 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.backbone.input_shape

    @property
    def patch_grid(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_grid)  # type: ignore[return-value]

    @property
    def prefix_tokens(self) -> int:
        return int(self.backbone.prefix_tokens)

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


class ProjectionHead(nn.Module):
    """``g``: ``(B, D)`` → ``(B, P)`` (see the module docstring).

    Args:
        in_dim: ``D``.
        hidden_dim: width of the hidden layers.
        out_dim: ``P``.
        layers: linear layers (>= 1).
        batch_norm: BatchNorm1d after each hidden linear layer.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"a projection head needs >= 1 linear layer, got {layers}")
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


class SimCLRPretrainModel(nn.Module):
    """:class:`SimCLRModel` (as ``upstream``) + :class:`ProjectionHead` (as ``projector``)."""

    def __init__(self, config: SimCLRConfig) -> None:
        super().__init__()
        self.upstream = SimCLRModel(config)
        c = config
        self.projector = ProjectionHead(self.upstream.feature_dim, c.projector_hidden_dim, c.projector_dim,
                                        c.projector_layers, c.projector_bn)

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``V`` views ``(B, C, H, W)`` of the same ``B`` images → ``z (V, B, P)`` and ``h (V, B, D)``."""
        if len(views) < 2:
            raise ValueError(f"SimCLR needs at least 2 views per image, got {len(views)}")
        B = views[0].shape[0]
        h = self.upstream.represent(torch.cat(list(views)))  # (V * B, D)
        z = self.projector(h)  # (V * B, P)
        return z.view(len(views), B, -1), h.view(len(views), B, -1)
