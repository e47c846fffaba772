"""Transitive Invariance model configuration and size presets.

The model is a ResNet of basic blocks (:class:`speechssl.nn.resnet.ResNet`; the paper used
VGG16, a CNN too) whose global average pool ``h`` feeds an embedding head ``g`` of fully
connected layers (Wang and Gupta, 2015, and Wang, He and Gupta, 2017, put two fully connected
layers on the conv trunk and rank L2-normalised outputs by cosine distance). The graph, the
pairs and the ranking loss are the task's
(:class:`~speechssl.upstream.transinv.task.TransInvTaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TransInvConfig", "tiny", "small", "PRESETS"]


@dataclass
class TransInvConfig:
    """Backbone, input shape and embedding head of Transitive Invariance."""

    image_size: int = 32  # H = W in pixels the upstream takes
    channels: int = 3  # C
    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels of each ResNet stage (ResNet-18: 64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage (ResNet-18: 2, 2, 2, 2)
    stem: Literal["cifar", "imagenet"] = "cifar"  # cifar: 3x3/1 conv, no max-pool (32-64 px); imagenet: 7x7/2 + pool
    token_stride: int = 0  # pixels per token side of the upstream's hidden states (0: the last stage's stride)
    zero_init_residual: bool = False  # start each block's last BN scale at 0
    head_hidden_dim: int = 1024  # width of the hidden fully connected layers of g (Wang and Gupta 2015: 4096)
    embed_dim: int = 128  # output width of g, where cosine distances are ranked (Wang and Gupta 2015: 1024)
    head_layers: int = 2  # linear layers of g (the papers: 2), ReLU between them
    head_bn: bool = False  # BatchNorm1d after each hidden linear layer of g (SimCLR v2's projector); papers: none

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        for name in ("image_size", "channels", "head_hidden_dim", "embed_dim", "head_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not self.widths or len(self.widths) != len(self.depths):
            raise ValueError(f"model.widths {list(self.widths)} and model.depths {list(self.depths)} need one entry "
                             "per stage")
        if min(self.widths) < 1 or min(self.depths) < 1:
            raise ValueError(f"model.widths {list(self.widths)} and model.depths {list(self.depths)} must be >= 1")
        if self.stem not in ("cifar", "imagenet"):
            raise ValueError(f"model.stem must be 'cifar' or 'imagenet', got {self.stem!r}")
        if self.token_stride < 0 or self.token_stride & (self.token_stride - 1):
            raise ValueError(f"model.token_stride must be 0 or a power of 2, got {self.token_stride}")


def tiny() -> TransInvConfig:
    """32 px, a 4-stage ResNet of widths 16-128 (one block each, CIFAR stem), 256 → 64 head: CPU minutes."""
    return TransInvConfig(image_size=32, channels=3, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), stem="cifar",
                          head_hidden_dim=256, embed_dim=64, head_layers=2)


def small() -> TransInvConfig:
    """64 px, ResNet-18 (CIFAR stem, widths 64-512), 1024 → 128 head."""
    return TransInvConfig(image_size=64, channels=3, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), stem="cifar",
                          head_hidden_dim=1024, embed_dim=128, head_layers=2)


PRESETS = {"tiny": tiny, "small": small}
