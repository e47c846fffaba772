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

from speechssl.nn.image_backbone import ResNetBackbone, validate_backbone
from speechssl.nn.image_backbone import ViTBackbone as SharedViTBackbone

__all__ = ["ResNetBackbone", "ViTBackbone", "SlotConConfig", "tiny", "tiny_resnet", "small", "PRESETS"]


@dataclass
class ViTBackbone(SharedViTBackbone):
    """The ViT of ``backbone="vit"``, its patch tokens the dense map."""

    cls_token: bool = False  # prepend a class token (SlotCon groups only the patch tokens; it is unused)


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
        for name in ("image_size", "channels", "projector_hidden_dim", "projector_dim", "projector_layers",
                     "predictor_hidden_dim", "predictor_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_prototypes < 2:
            raise ValueError(f"model.num_prototypes must be >= 2, got {self.num_prototypes}")
        if not self.slot_temperature > 0:
            raise ValueError(f"model.slot_temperature must be > 0, got {self.slot_temperature}")
        validate_backbone(self.backbone, self.image_size, self.resnet, self.vit)


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
