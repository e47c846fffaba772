"""SimCLR model configuration and size presets.

The model is a backbone — a ResNet of basic blocks (:class:`speechssl.nn.resnet.ResNet`) or a
ViT (:class:`speechssl.nn.vit.VisionTransformer`) — whose pooled representation ``h`` feeds a
projection MLP ``g`` (SimCLR: ``z = g(h)``, the loss on ``z``, the representation kept is ``h``).
The contrastive objective (temperature, augmentations, negatives) is the task's
(:class:`~speechssl.upstream.simclr.task.SimCLRTaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechssl.nn.image_backbone import ResNetBackbone, validate_backbone
from speechssl.nn.image_backbone import ViTBackbone as SharedViTBackbone

__all__ = ["ResNetBackbone", "ViTBackbone", "SimCLRConfig", "tiny", "small", "tiny_vit", "PRESETS"]


@dataclass
class ViTBackbone(SharedViTBackbone):
    """The ViT of ``backbone="vit"`` and how its last layer becomes ``h``."""

    pool: Literal["cls", "mean"] = "cls"  # h = the class token, or the mean of the patch tokens (last layer)


@dataclass
class SimCLRConfig:
    """Backbone, input shape and projection head of SimCLR."""

    backbone: Literal["resnet", "vit"] = "resnet"  # which encoder f
    image_size: int = 32  # H = W in pixels the upstream takes
    channels: int = 3  # C
    resnet: ResNetBackbone = field(default_factory=ResNetBackbone)  # used when backbone = resnet
    vit: ViTBackbone = field(default_factory=ViTBackbone)  # used when backbone = vit
    projector_hidden_dim: int = 2048  # hidden width of g (solo-learn: 2048; SimCLR v1: the feature width)
    projector_dim: int = 128  # output width of g, where the loss is computed (SimCLR: 128)
    projector_layers: int = 2  # linear layers of g (SimCLR v1: 2; v2: 3)
    projector_bn: bool = True  # BatchNorm after each hidden linear layer (SimCLR v2, solo-learn); False: v1's MLP

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        for name in ("image_size", "channels", "projector_hidden_dim", "projector_dim", "projector_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        validate_backbone(self.backbone, self.image_size, self.resnet, self.vit)
        if self.backbone == "vit" and self.vit.pool not in ("cls", "mean"):
            raise ValueError(f"model.vit.pool must be 'cls' or 'mean', got {self.vit.pool!r}")


def tiny() -> SimCLRConfig:
    """32 px, a 4-stage ResNet of widths 16-128 (one block each, CIFAR stem), 256 → 64 projector: CPU minutes."""
    return SimCLRConfig(backbone="resnet", image_size=32, channels=3,
                        resnet=ResNetBackbone(widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), stem="cifar"),
                        projector_hidden_dim=256, projector_dim=64)


def small() -> SimCLRConfig:
    """64 px, ResNet-18 (CIFAR stem, widths 64-512), solo-learn's 2048 → 128 projector."""
    return SimCLRConfig(backbone="resnet", image_size=64, channels=3,
                        resnet=ResNetBackbone(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), stem="cifar"),
                        projector_hidden_dim=2048, projector_dim=128)


def tiny_vit() -> SimCLRConfig:
    """32 px, 4 x 4 patches, a 2-layer 64-wide ViT (class-token pooling), 256 → 64 projector."""
    return SimCLRConfig(backbone="vit", image_size=32, channels=3,
                        vit=ViTBackbone(patch=4, dim=64, ffn_dim=128, layers=2, heads=2, pool="cls"),
                        projector_hidden_dim=256, projector_dim=64)


PRESETS = {"tiny": tiny, "small": small, "tiny_vit": tiny_vit}
