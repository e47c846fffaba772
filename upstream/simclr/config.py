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

__all__ = ["ResNetBackbone", "ViTBackbone", "SimCLRConfig", "tiny", "small", "tiny_vit", "PRESETS"]


@dataclass
class ResNetBackbone:
    """The ResNet of ``backbone="resnet"`` (:class:`speechssl.nn.resnet.ResNet`)."""

    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels of each stage (ResNet-18: 64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage (ResNet-18: 2, 2, 2, 2)
    stem: Literal["cifar", "imagenet"] = "cifar"  # cifar: 3x3/1 conv, no max-pool (32-64 px); imagenet: 7x7/2 + pool
    token_stride: int = 0  # pixels per token side of the upstream's hidden states (0: the last stage's stride)
    zero_init_residual: bool = False  # start each block's last BN scale at 0


@dataclass
class ViTBackbone:
    """The ViT of ``backbone="vit"`` (:class:`speechssl.nn.vit.VisionTransformer`, fixed 2-D sin-cos positions)."""

    patch: int = 4  # patch side in pixels; image_size must be a multiple
    dim: int = 192  # width D
    ffn_dim: int = 768  # feed-forward inner width
    layers: int = 12  # transformer layers L
    heads: int = 3  # attention heads
    pool: Literal["cls", "mean"] = "cls"  # h = the class token, or the mean of the patch tokens (last layer)
    layer_norm_eps: float = 1e-6  # of every LayerNorm


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
        if self.backbone not in ("resnet", "vit"):
            raise ValueError(f"model.backbone must be 'resnet' or 'vit', got {self.backbone!r}")
        for name in ("image_size", "channels", "projector_hidden_dim", "projector_dim", "projector_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.backbone == "resnet":
            r = self.resnet
            if not r.widths or len(r.widths) != len(r.depths):
                raise ValueError(f"model.resnet.widths {list(r.widths)} and model.resnet.depths {list(r.depths)} "
                                 "need one entry per stage")
            if min(r.widths) < 1 or min(r.depths) < 1:
                raise ValueError(f"model.resnet.widths {list(r.widths)} and depths {list(r.depths)} must be >= 1")
        else:
            v = self.vit
            for name in ("patch", "dim", "ffn_dim", "layers", "heads"):
                if getattr(v, name) < 1:
                    raise ValueError(f"model.vit.{name} must be >= 1, got {getattr(v, name)}")
            if self.image_size % v.patch:
                raise ValueError(f"model.image_size ({self.image_size}) must be a multiple of model.vit.patch ({v.patch})")
            if v.dim % v.heads or v.dim % 4:
                raise ValueError(f"model.vit.dim ({v.dim}) must be divisible by model.vit.heads ({v.heads}) and by 4 "
                                 "(2-D sin-cos positions)")


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
