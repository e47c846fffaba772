"""SlotCon model configuration and size presets.

The model (Wen, Zhao and Qi, 2022; ``models/slotcon.py`` of github.com/CVMI-Lab/SlotCon) is a
backbone — a ViT (:class:`speechssl.nn.vit.VisionTransformer`, its patch tokens the dense map)
or a ResNet (:class:`speechssl.nn.resnet.ResNet`, its last stage on the token grid) — whose
dense map goes through a per-pixel projector (SlotCon's ``DINOHead2d``: ``projector_layers``
1x1 layers, BatchNorm and GELU between them, ``projector_hidden_dim`` → ``projector_dim``),
then is grouped by ``num_prototypes`` learnable prototypes into slots; a slot predictor (its
``DINOHead``: the same MLP over slots) serves the slot contrastive loss. The objective
(temperatures, loss weights, teacher momentum) is the task's
(:class:`~speechssl.upstream.slotcon.task.SlotConTaskConfig`).

SlotCon's runs (``scripts/*.sh``): ResNet-50 at 224 px, ``dim_hidden = 4096``, ``dim_out =
256``, 256 prototypes on COCO, 2048 on ImageNet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ResNetBackbone", "ViTBackbone", "SlotConConfig", "tiny", "tiny_resnet", "small", "PRESETS"]


@dataclass
class ResNetBackbone:
    """The ResNet of ``backbone="resnet"`` (:class:`speechssl.nn.resnet.ResNet`)."""

    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels of each stage (ResNet-18: 64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage (ResNet-18: 2, 2, 2, 2)
    stem: Literal["cifar", "imagenet"] = "cifar"  # cifar: 3x3/1 conv, no max-pool (32-64 px); imagenet: 7x7/2 + pool
    token_stride: int = 0  # pixels per token side of the hidden states and the dense map (0: the last stage's)


@dataclass
class ViTBackbone:
    """The ViT of ``backbone="vit"`` (:class:`speechssl.nn.vit.VisionTransformer`, fixed 2-D sin-cos positions)."""

    patch: int = 4  # patch side in pixels; image_size must be a multiple
    dim: int = 192  # width D
    ffn_dim: int = 768  # feed-forward inner width
    layers: int = 12  # transformer layers L
    heads: int = 3  # attention heads
    cls_token: bool = False  # prepend a class token (SlotCon groups only the patch tokens; it is unused)
    layer_norm_eps: float = 1e-6  # of every LayerNorm


@dataclass
class SlotConConfig:
    """Backbone, input shape, projector, prototypes and slot predictor of SlotCon."""

    backbone: Literal["vit", "resnet"] = "vit"  # which encoder
    image_size: int = 32  # H = W in pixels the upstream takes
    channels: int = 3  # C
    resnet: ResNetBackbone = field(default_factory=ResNetBackbone)  # used when backbone = resnet
    vit: ViTBackbone = field(default_factory=ViTBackbone)  # used when backbone = vit
    projector_hidden_dim: int = 4096  # hidden width of the per-pixel projector (SlotCon: dim_hidden 4096)
    projector_dim: int = 256  # D' of the projected map, the prototypes and the slots (SlotCon: dim_out 256)
    projector_layers: int = 3  # linear (1x1) layers of the projector (SlotCon's DINOHead2d: 3)
    num_prototypes: int = 256  # K (SlotCon: 256 on COCO, 2048 on ImageNet)
    slot_temperature: float = 0.07  # τ of the slot pooling's softmax over prototypes (SlotCon: teacher_temp)
    predictor_hidden_dim: int = 4096  # hidden width of the slot predictor (SlotCon: dim_hidden 4096)
    predictor_layers: int = 3  # linear layers of the slot predictor (SlotCon's DINOHead: 3)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        if self.backbone not in ("vit", "resnet"):
            raise ValueError(f"model.backbone must be 'vit' or 'resnet', got {self.backbone!r}")
        for name in ("image_size", "channels", "projector_hidden_dim", "projector_dim", "projector_layers",
                     "predictor_hidden_dim", "predictor_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_prototypes < 2:
            raise ValueError(f"model.num_prototypes must be >= 2, got {self.num_prototypes}")
        if not self.slot_temperature > 0:
            raise ValueError(f"model.slot_temperature must be > 0, got {self.slot_temperature}")
        if self.backbone == "resnet":
            r = self.resnet
            if not r.widths or len(r.widths) != len(r.depths):
                raise ValueError(f"model.resnet.widths {list(r.widths)} and model.resnet.depths {list(r.depths)} "
                                 "need one entry per stage")
            if min(r.widths) < 1 or min(r.depths) < 1:
                raise ValueError(f"model.resnet.widths {list(r.widths)} and depths {list(r.depths)} must be >= 1")
            if r.token_stride < 0:
                raise ValueError(f"model.resnet.token_stride must be >= 0, got {r.token_stride}")
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


def tiny() -> SlotConConfig:
    """32 px, 4 x 4 patches (an 8 x 8 map), a 2-layer 64-wide ViT (mae's tiny), 128 → 64 heads, 16 prototypes."""
    return SlotConConfig(backbone="vit", image_size=32, channels=3,
                         vit=ViTBackbone(patch=4, dim=64, ffn_dim=128, layers=2, heads=2),
                         projector_hidden_dim=128, projector_dim=64, num_prototypes=16, predictor_hidden_dim=128)


def tiny_resnet() -> SlotConConfig:
    """32 px, a 3-stage ResNet of widths 16-64 (CIFAR stem, stride 4: an 8 x 8 map), 128 → 32 projector, 8 prototypes."""
    return SlotConConfig(backbone="resnet", image_size=32, channels=3,
                         resnet=ResNetBackbone(widths=(16, 32, 64), depths=(1, 1, 1), stem="cifar"),
                         projector_hidden_dim=128, projector_dim=32, num_prototypes=8, predictor_hidden_dim=128)


def small() -> SlotConConfig:
    """64 px, ResNet-18 (CIFAR stem, token stride 8: an 8 x 8 map), SlotCon's 4096 → 256 heads and 256 prototypes."""
    return SlotConConfig(backbone="resnet", image_size=64, channels=3,
                         resnet=ResNetBackbone(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), stem="cifar"),
                         projector_hidden_dim=4096, projector_dim=256, num_prototypes=256, predictor_hidden_dim=4096)


PRESETS = {"tiny": tiny, "tiny_resnet": tiny_resnet, "small": small}
