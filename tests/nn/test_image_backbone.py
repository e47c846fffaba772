"""The shared image-backbone choice: validation messages, the built encoder, the contract properties."""
from __future__ import annotations

import pytest
import torch

from speechssl.nn.image_backbone import (
    ImageUpstream,
    ResNetBackbone,
    ViTBackbone,
    build_image_backbone,
    validate_backbone,
)
from speechssl.nn.resnet import ResNet
from speechssl.nn.vit import VisionTransformer


class _Up(ImageUpstream):
    def __init__(self, kind: str, cls_token: bool = True, attr: str = "backbone") -> None:
        super().__init__()
        self.encoder_attr = attr
        enc = build_image_backbone(kind, 32, 3, ResNetBackbone(widths=(8, 16), depths=(1, 1)),
                                   ViTBackbone(patch=8, dim=16, ffn_dim=32, layers=3, heads=2), cls_token=cls_token)
        setattr(self, attr, enc)

    def forward(self, images):
        return self.encoder_module(images)


@pytest.mark.parametrize("kind,cls_token,attr", [("resnet", True, "backbone"), ("vit", True, "vit"),
                                                  ("vit", False, "backbone")])
def test_properties_describe_the_forward(kind, cls_token, attr):
    up = _Up(kind, cls_token, attr).eval()
    assert isinstance(up.encoder_module, ResNet if kind == "resnet" else VisionTransformer)
    x = torch.rand(2, *up.input_shape)
    out = up(x)
    assert [h.shape[-1] for h in out["hidden_states"]] == up.hidden_sizes
    gh, gw = up.patch_grid
    assert out["last_hidden_state"].shape[1] == up.prefix_tokens + gh * gw
    assert up.prefix_tokens == (1 if kind == "vit" and cls_token else 0)
    if kind == "vit":
        assert up.hidden_sizes == [16] * 4 and up.patch_grid == (4, 4)
    else:
        assert up.hidden_sizes == [8, 8, 16] and up.patch_grid == (16, 16)  # CIFAR stem, one stride-2 stage


def test_resnet_options_reach_the_encoder():
    enc = build_image_backbone("resnet", 32, 3, ResNetBackbone(widths=(8, 16), depths=(1, 1), token_stride=4,
                                                               zero_init_residual=True), ViTBackbone(), cls_token=False)
    assert enc.patch_grid == (8, 8)
    assert all(float(b.bn2.weight.abs().sum()) == 0.0 for s in enc.stages for b in s)


@pytest.mark.parametrize("kind,resnet,vit,image_size,match", [
    ("cnn", ResNetBackbone(), ViTBackbone(), 32, "model.backbone must be 'resnet' or 'vit'"),
    ("resnet", ResNetBackbone(widths=(8, 16), depths=(1,)), ViTBackbone(), 32, "one entry per stage"),
    ("resnet", ResNetBackbone(widths=(8, 0), depths=(1, 1)), ViTBackbone(), 32, "must be >= 1"),
    ("resnet", ResNetBackbone(stem="big"), ViTBackbone(), 32, "model.resnet.stem"),  # type: ignore[arg-type]
    ("resnet", ResNetBackbone(token_stride=3), ViTBackbone(), 32, "model.resnet.token_stride"),
    ("vit", ResNetBackbone(), ViTBackbone(heads=0), 32, "model.vit.heads must be >= 1"),
    ("vit", ResNetBackbone(), ViTBackbone(patch=5), 32, r"model.image_size \(32\) must be a multiple"),
    ("vit", ResNetBackbone(), ViTBackbone(dim=30, heads=3), 32, "and by 4"),
])
def test_validation_names_the_field(kind, resnet, vit, image_size, match):
    with pytest.raises(ValueError, match=match):
        validate_backbone(kind, image_size, resnet, vit)
