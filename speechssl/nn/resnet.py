"""A small ResNet (He et al., 2016) of basic blocks as an image backbone and image upstream.

* :class:`BasicBlock` — ``conv3x3(stride) → BN → ReLU → conv3x3 → BN``, plus the input (through
  a ``1x1`` conv + BN shortcut when the width or stride changes), then ReLU. The stride sits on
  the first conv, as torchvision's ``resnet18`` and transformers' ``ResNetBasicLayer``.
* :class:`ResNet` — a stem, then ``len(widths)`` stages of ``depths[i]`` blocks; stage 0 keeps
  the resolution, every later stage halves it. Stems:

  - ``"cifar"`` (32–64 px inputs): ``conv3x3, stride 1 → BN → ReLU``, no max-pool (stride 1);
  - ``"imagenet"``: ``conv7x7, stride 2 → BN → ReLU → maxpool 3x3, stride 2`` (stride 4).

  ``widths=(64, 128, 256, 512)``, ``depths=(2, 2, 2, 2)`` with the ImageNet stem is ResNet-18's
  trunk (without the classifier); the same with the CIFAR stem is the ResNet-18 that SimCLR and
  solo-learn pretrain on CIFAR.

The image upstream contract: ``forward(images (B, C, H, W))`` returns ``L + 1`` hidden states
(the stem's output, then each stage's) as tokens ``(B, T, D_l)``. Every state is brought to one
token grid first, ``(H / s_tok, W / s_tok)`` for ``token_stride = s_tok`` (default: the last
stage's stride): a finer map (stride ``s < s_tok``) is average-pooled over ``s_tok / s`` pixel
squares, a coarser one (``s > s_tok``) repeated (nearest) ``s / s_tok`` times per axis. So token
``t`` of every layer covers the same ``s_tok x s_tok`` pixel square of the image (row-major, as
ViT patches), ``T = (H / s_tok) * (W / s_tok)``, ``patch_grid = (H / s_tok, W / s_tok)``, and the
mean over the tokens of the last state equals the global average pool. :meth:`ResNet.feature_maps`
gives the maps at their own resolution, :meth:`ResNet.pooled` the global average pool ``(B, D)``.

BatchNorm couples the items of a training batch; in eval mode (running statistics) an item's
outputs do not depend on the batch.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BasicBlock", "ResNet", "STEMS", "STEM_STRIDE"]

#: the stems :class:`ResNet` builds
STEMS = ("cifar", "imagenet")
#: pixels per output position of each stem
STEM_STRIDE = {"cifar": 1, "imagenet": 4}


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: ``(B, C_in, H, W)`` → ``(B, C_out, H / stride, W / stride)``.

    Args:
        c_in, c_out: input and output channels.
        stride: stride of the first conv (and of the shortcut's 1x1 conv).
        bn_eps, bn_momentum: of every BatchNorm (PyTorch's defaults 1e-5 and 0.1).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + identity)


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages over square images (see the module docstring).

    Args:
        image_size: ``H = W`` in pixels the model takes; a multiple of the largest of
            :attr:`total_stride` and ``token_stride``.
        channels: ``C`` of the input.
        widths: channels of each stage (``D`` of its hidden state).
        depths: blocks per stage (as many as ``widths``).
        stem: ``"cifar"`` or ``"imagenet"``.
        stem_width: channels of the stem (default ``widths[0]``).
        token_stride: pixels per token side of every hidden state, a power of 2 (0: the last
            stage's stride, :attr:`total_stride`).
        zero_init_residual: start every block's last BN scale at 0 (each block then begins as
            the identity; Goyal et al., 2017), else 1.
        bn_eps, bn_momentum: of every BatchNorm.

    Attributes:
        strides: pixel stride of each hidden state (stem first).
        hidden_sizes: ``[stem_width, *widths]``.
        patch_grid: ``(H / token_stride, W / token_stride)``; ``prefix_tokens`` is 0.
    """

    prefix_tokens = 0

    def __init__(self, image_size: int, channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512),
                 depths: Sequence[int] = (2, 2, 2, 2), *, stem: Literal["cifar", "imagenet"] = "cifar",
                 stem_width: int | None = None, token_stride: int = 0, zero_init_residual: bool = False,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if not widths or len(widths) != len(depths):
            raise ValueError(f"widths and depths need one entry per stage (at least one), got {widths} and {depths}")
        if min(widths) < 1 or min(depths) < 1 or channels < 1:
            raise ValueError(f"widths {widths}, depths {depths} and channels {channels} must all be >= 1")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        stem_width = widths[0] if stem_width is None else int(stem_width)
        self.image_size, self.channels, self.stem_kind = int(image_size), int(channels), stem
        self.strides = [STEM_STRIDE[stem] * 2 ** i for i in range(len(widths))]
        self.strides.insert(0, STEM_STRIDE[stem])
        self.total_stride = self.strides[-1]
        self.token_stride = int(token_stride) or self.total_stride
        if self.token_stride & (self.token_stride - 1):
            raise ValueError(f"token_stride must be a power of 2 (or 0), got {token_stride}")
        unit = max(self.total_stride, self.token_stride)
        if self.image_size < unit or self.image_size % unit:
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of {unit} (the stride of the "
                             f"last stage, {self.total_stride}, and the token stride, {self.token_stride})")
        g = self.image_size // self.token_stride
        self.patch_grid = (g, g)
        self.hidden_sizes = [stem_width, *widths]
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(channels, stem_width, 3, stride=1, padding=1, bias=False),
                                      nn.BatchNorm2d(stem_width, eps=bn_eps, momentum=bn_momentum), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, stem_width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(stem_width, eps=bn_eps, momentum=bn_momentum), nn.ReLU(),
                                      nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        stages, c_in = [], stem_width
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in, width, stride, bn_eps=bn_eps, bn_momentum=bn_momentum)]
            blocks += [BasicBlock(width, width, bn_eps=bn_eps, bn_momentum=bn_momentum) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.reset_parameters(zero_init_residual)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """torchvision's initialisation: convs Kaiming-normal (fan out, ReLU), BN scale 1 and shift 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the model takes."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_layers(self) -> int:
        """Stages ``L`` (hidden states: ``L + 1``)."""
        return len(self.stages)

    @property
    def out_dim(self) -> int:
        """``D`` of the last stage (of :meth:`pooled`)."""
        return self.hidden_sizes[-1]

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ValueError unless ``images`` is a float ``(B, C, H, W)`` of :attr:`input_shape`."""
        if not torch.is_tensor(images) or images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected images (B, {', '.join(map(str, self.input_shape))}), got {got}")
        if not images.is_floating_point():
            raise TypeError(f"expected float images (e.g. in [0, 1]), got {images.dtype}")

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images (B, C, H, W)`` → ``L + 1`` maps ``(B, D_l, H / s_l, W / s_l)`` (stem, then each stage)."""
        self.check_images(images)
        x = self.stem(images)
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global average pool of the last stage: ``(B, C, H, W)`` → ``(B, D)``."""
        return self.feature_maps(images)[-1].mean(dim=(2, 3))

    def to_tokens(self, fmap: torch.Tensor, stride: int) -> torch.Tensor:
        """A map ``(B, D, h, w)`` of pixel stride ``stride`` → tokens ``(B, T, D)`` on the token grid."""
        s = self.token_stride
        if stride < s:
            fmap = F.avg_pool2d(fmap, kernel_size=s // stride)
        elif stride > s:
            r = stride // s
            fmap = fmap.repeat_interleave(r, dim=2).repeat_interleave(r, dim=3)
        return fmap.flatten(2).transpose(1, 2)  # (B, T, D)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """The image upstream contract.

        Args:
            images: ``(B, C, H, W)`` float.

        Returns:
            ``{"hidden_states": [(B, T, D_l)] * (L + 1), "last_hidden_state": (B, T, D_L),
            "lengths": (B,) int64 = T, "patch_grid": (H / token_stride, W / token_stride)}``.
        """
        states = [self.to_tokens(m, s) for m, s in zip(self.feature_maps(images), self.strides)]
        lengths = torch.full((images.shape[0],), states[0].shape[1], dtype=torch.long, device=images.device)
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": lengths,
                "patch_grid": self.patch_grid}
