"""The backbone choice of the image methods and the upstream contract properties it carries.

* :class:`ResNetBackbone` / :class:`ViTBackbone` — the config blocks of a
  :class:`~speechssl.nn.resnet.ResNet` or a :class:`~speechssl.nn.vit.VisionTransformer` (fixed
  2-D sin-cos positions); a method's config holds one of each and a ``backbone`` field that picks.
* :func:`validate_backbone` — the checks of those blocks, errors naming ``model.<field>``.
* :func:`build_image_backbone` — the encoder of a validated choice.
* :class:`ImageUpstream` — the image upstream contract's properties (``hidden_sizes``,
  ``input_shape``, ``patch_grid``, ``prefix_tokens``) read off the module a method keeps its
  encoder in, so that every image method reports them the same way.
* :func:`masked_image_vit` / :func:`validate_masked_image` — the ViT of the masked-image methods
  (MAE, CAE, MixedAE, UMD) from their flat configs, in MAE's layout, and those configs' checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from torch import nn

from speechssl.nn.resnet import ResNet
from speechssl.nn.vit import VisionTransformer

__all__ = ["ResNetBackbone", "ViTBackbone", "validate_backbone", "build_image_backbone", "ImageUpstream",
           "masked_image_vit", "validate_masked_image"]


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
    layer_norm_eps: float = 1e-6  # of every LayerNorm


def validate_backbone(backbone: str, image_size: int, resnet: ResNetBackbone, vit: ViTBackbone) -> None:
    """Raise ValueError naming the first ``model.*`` field of the chosen backbone that cannot work."""
    if backbone not in ("resnet", "vit"):
        raise ValueError(f"model.backbone must be 'resnet' or 'vit', got {backbone!r}")
    if backbone == "resnet":
        r = resnet
        if not r.widths or len(r.widths) != len(r.depths):
            raise ValueError(f"model.resnet.widths {list(r.widths)} and model.resnet.depths {list(r.depths)} "
                             "need one entry per stage")
        if min(r.widths) < 1 or min(r.depths) < 1:
            raise ValueError(f"model.resnet.widths {list(r.widths)} and depths {list(r.depths)} must be >= 1")
        if r.stem not in ("cifar", "imagenet"):
            raise ValueError(f"model.resnet.stem must be 'cifar' or 'imagenet', got {r.stem!r}")
        if r.token_stride < 0 or r.token_stride & (r.token_stride - 1):
            raise ValueError(f"model.resnet.token_stride must be 0 or a power of 2, got {r.token_stride}")
        return
    v = vit
    for name in ("patch", "dim", "ffn_dim", "layers", "heads"):
        if getattr(v, name) < 1:
            raise ValueError(f"model.vit.{name} must be >= 1, got {getattr(v, name)}")
    if image_size % v.patch:
        raise ValueError(f"model.image_size ({image_size}) must be a multiple of model.vit.patch ({v.patch})")
    if v.dim % v.heads or v.dim % 4:
        raise ValueError(f"model.vit.dim ({v.dim}) must be divisible by model.vit.heads ({v.heads}) and by 4 "
                         "(2-D sin-cos positions)")


def build_image_backbone(backbone: str, image_size: int, channels: int, resnet: ResNetBackbone, vit: ViTBackbone,
                         *, cls_token: bool) -> ResNet | VisionTransformer:
    """The encoder ``(B, C, H, W)`` → image upstream dict of the (validated) choice.

    Args:
        backbone: ``"resnet"`` or ``"vit"``.
        image_size: ``H = W`` in pixels; channels: ``C``.
        resnet, vit: the config blocks (only the chosen one is used).
        cls_token: the ViT prepends a learnt class token (ignored by the ResNet).
    """
    validate_backbone(backbone, image_size, resnet, vit)
    if backbone == "resnet":
        r = resnet
        return ResNet(image_size, channels, r.widths, r.depths, stem=r.stem, token_stride=r.token_stride,
                      zero_init_residual=r.zero_init_residual)
    v = vit
    return VisionTransformer(image_size, v.patch, channels, v.dim, v.ffn_dim, v.layers, v.heads, cls_token=cls_token,
                             position="sincos", layer_norm_eps=v.layer_norm_eps)


class ImageUpstream(nn.Module):
    """Base of the image upstreams: the contract properties of the encoder in ``encoder_attr``.

    Subclasses build a :class:`~speechssl.nn.resnet.ResNet` or a
    :class:`~speechssl.nn.vit.VisionTransformer` into the attribute that ``encoder_attr`` names
    (``"backbone"`` by default, ``"vit"`` for the masked-image models, whose checkpoints name it so).
    """

    encoder_attr = "backbone"

    @property
    def encoder_module(self) -> ResNet | VisionTransformer:
        return getattr(self, self.encoder_attr)

    @property
    def hidden_sizes(self) -> list[int]:
        """``D`` of each hidden state (ResNet: the stem, then each stage; ViT: ``L + 1`` times ``D``)."""
        enc = self.encoder_module
        if isinstance(enc, VisionTransformer):
            return [enc.dim] * (enc.num_layers + 1)
        return list(enc.hidden_sizes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the upstream takes."""
        return self.encoder_module.input_shape

    @property
    def patch_grid(self) -> tuple[int, int]:
        """``(H_p, W_p)`` of the token grid of every hidden state."""
        gh, gw = self.encoder_module.patch_grid
        return int(gh), int(gw)

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the grid's in every hidden state (the ViT's class token)."""
        return int(self.encoder_module.prefix_tokens)


class MaskedImageEncoderConfig(Protocol):
    """The encoder fields of a masked-image method's (flat) config: MAE, CAE, MixedAE, UMD."""

    image_size: int
    channels: int
    patch: int
    dim: int
    ffn_dim: int
    layers: int
    heads: int
    layer_norm_eps: float
    dropout: float
    attention_dropout: float


def masked_image_vit(config: MaskedImageEncoderConfig) -> VisionTransformer:
    """MAE's encoder layout of ``config``: a class token, fixed sin-cos positions in the released
    weights' ``"wh"`` order, pre-LN layers with the config's dropouts."""
    c = config
    return VisionTransformer(c.image_size, c.patch, c.channels, c.dim, c.ffn_dim, c.layers, c.heads, cls_token=True,
                             position="sincos", position_order="wh", layer_norm_eps=c.layer_norm_eps,
                             dropout=c.dropout, attention_dropout=c.attention_dropout)


def validate_masked_image(config: MaskedImageEncoderConfig, positive: Sequence[str] = (),
                          width_heads: Sequence[tuple[str, str]] = (("dim", "heads"),)) -> None:
    """Raise ValueError naming the first ``model.*`` field of a masked-image config that cannot work.

    Args:
        config: the flat config.
        positive: fields beyond the encoder's (``image_size``, ``channels``, ``patch``, ``dim``,
            ``ffn_dim``, ``layers``, ``heads``, always checked first) that must be >= 1.
        width_heads: ``(width, heads)`` field pairs of its transformers: the width must divide
            by the heads and by 4 (2-D sin-cos positions).
    """
    for name in ("image_size", "channels", "patch", "dim", "ffn_dim", "layers", "heads", *positive):
        if getattr(config, name) < 1:
            raise ValueError(f"model.{name} must be >= 1, got {getattr(config, name)}")
    if config.image_size % config.patch:
        raise ValueError(f"model.image_size ({config.image_size}) must be a multiple of model.patch ({config.patch})")
    for dim, heads in width_heads:
        if getattr(config, dim) % getattr(config, heads):
            raise ValueError(f"model.{dim} ({getattr(config, dim)}) must be divisible by model.{heads} "
                             f"({getattr(config, heads)})")
        if getattr(config, dim) % 4:
            raise ValueError(f"model.{dim} ({getattr(config, dim)}) must be divisible by 4 (2-D sin-cos positions)")
    for name in ("dropout", "attention_dropout"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"model.{name} must be in [0, 1), got {getattr(config, name)}")
