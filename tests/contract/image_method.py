"""A small image method defined inside the tests: masked-patch reconstruction (SimMIM-style).

It shows that a non-speech method is a config, a model and a Task, registered through
:func:`speechssl.registry.register`, and that it pretrains on the unchanged
:class:`speechssl.train.Trainer` and passes the same contract suite as the speech methods.

* :class:`ImageMAEConfig` — patch size, width, depth; presets ``tiny`` and ``small``.
* :class:`ImageMAEModel` — the upstream: ``images (B, C, H, W)`` → one token per patch, through
  a learned position embedding and pre-LN transformer layers of :mod:`speechssl.nn`.
* :class:`ImageMAETask` — images from :class:`speechssl.data.image.ImageDataset` (seeded random
  resized crops and flips); replaces ``mask_ratio`` of each image's patches by a learned mask
  token and regresses their pixels with :func:`speechssl.nn.losses.masked_mse` (per-patch mean
  squared error summed over the masked patches, which are the ``sample_size``).
* :func:`write_example` — the ``Method.example``: writes a tiny synthetic image set
  (:func:`speechssl.data.example.write_example_images`) and returns the task config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechssl.data.base import item_generator
from speechssl.data.example import write_example_images
from speechssl.data.image import ImageCollater, ImageDataset
from speechssl.nn.losses import masked_mse
from speechssl.nn.lengths import num_patches
from speechssl.nn.transformer import TransformerEncoderLayer
from speechssl.registry import Method
from speechssl.train.task import PretrainContext, Task

__all__ = ["NAME", "ImageMAEConfig", "ImageMAEModel", "ImageMAEPretrainModel", "ImageMAETask",
           "ImageMAETaskConfig", "MaskedImageDataset", "write_example", "PRESETS", "METHOD"]

NAME = "test-image-mae"


@dataclass
class ImageMAEConfig:
    """A tiny ViT encoder."""

    image_size: int = 16  # H = W, pixels
    channels: int = 3  # C
    patch: int = 4  # square patch side, pixels; image_size must be a multiple
    dim: int = 32  # D
    ffn_dim: int = 64  # feed-forward inner width
    layers: int = 2  # L
    heads: int = 2
    dropout: float = 0.0  # dropout inside the layers (training only)

    def validate(self) -> None:
        """Raise ValueError naming the field that cannot work."""
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")


def tiny() -> ImageMAEConfig:
    return ImageMAEConfig()


def small() -> ImageMAEConfig:
    return ImageMAEConfig(image_size=32, dim=64, ffn_dim=128, layers=3, heads=4)


PRESETS = {"tiny": tiny, "small": small}


class ImageMAEModel(nn.Module):
    """The upstream: ``images (B, C, H, W)`` float → the contract dict over ``N = (H/p)·(W/p)`` patches.

    ``hidden_states`` has ``L + 1`` entries of ``(B, N, D)``: the patch embeddings (plus
    positions), then each layer's output; the last one is layer-normalised. ``lengths`` is
    ``N`` for every image (images of a batch have the same size, nothing is padded).
    """

    method = NAME

    def __init__(self, config: ImageMAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.input_shape = (config.channels, config.image_size, config.image_size)  # (C, H, W)
        self.num_patches = int(num_patches([config.image_size, config.image_size], config.patch))
        self.patch_embed = nn.Conv2d(config.channels, config.dim, config.patch, stride=config.patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, config.dim) * 0.02)
        self.mask_emb = nn.Parameter(torch.zeros(config.dim))
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(config.dim, config.ffn_dim, config.heads, dropout=config.dropout,
                                    attention_dropout=config.dropout, layer_norm_first=True)
            for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.hidden_sizes = [config.dim] * (config.layers + 1)

    @classmethod
    def from_config(cls, config: ImageMAEConfig) -> "ImageMAEModel":
        return cls(config)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
        """``images``: ``(B, C, H, W)``; ``mask``: ``(B, N)`` True where a patch is replaced by the mask token."""
        if not torch.is_tensor(images) or images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"{NAME}: expected images (B, {', '.join(map(str, self.input_shape))}), got {got}")
        x = self.patch_embed(images.float()).flatten(2).transpose(1, 2)  # (B, N, D)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)
        x = x + self.pos_embed
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            states.append(self.norm(x) if i == len(self.layers) - 1 else x)
        lengths = torch.full((x.shape[0],), self.num_patches, dtype=torch.long, device=x.device)
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": lengths}


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, N, p·p·C)``, patches in the order of :class:`ImageMAEModel`'s tokens."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class ImageMAEPretrainModel(nn.Module):
    """:class:`ImageMAEModel` + a linear pixel head: ``(images, mask)`` → predicted and true patches."""

    def __init__(self, config: ImageMAEConfig) -> None:
        super().__init__()
        self.upstream = ImageMAEModel(config)
        self.head = nn.Linear(config.dim, config.patch * config.patch * config.channels)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.upstream(images, mask)
        pred = self.head(out["last_hidden_state"])  # (B, N, p·p·C)
        return pred, patchify(images.float(), self.upstream.config.patch)


@dataclass
class ImageMAETaskConfig:
    """Data, augmentation and masking of the image task."""

    data: str = ""  # directory with <split>.tsv image-file manifests (speechssl.data.files format)
    mask_ratio: float = 0.5  # fraction of each image's patches to mask
    crop_scale: tuple[float, float] = (0.6, 1.0)  # training: random resized crop area fraction
    seed: int = 0  # seed of crops and flips (per epoch and item)
    mask_seed: int = 1  # seed of the patch masks (per epoch and item)


class MaskedImageDataset(ImageDataset):
    """:class:`speechssl.data.image.ImageDataset` items plus ``"mask": (N,) bool``, the patches to mask.

    The mask is ``round(mask_ratio * N)`` patches drawn from
    :func:`speechssl.data.base.item_generator` ``(mask_seed, epoch, index)``.
    """

    reserved = ImageDataset.reserved | {"mask"}

    def __init__(self, manifest: Path, *, num_patches: int, mask_ratio: float, mask_seed: int, **kwargs: Any) -> None:
        super().__init__(manifest, **kwargs)
        self.grid = num_patches
        self.num_masked = max(1, round(mask_ratio * num_patches))
        self.mask_seed = mask_seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        gen = item_generator(self.mask_seed, self.epoch, index)
        mask = torch.zeros(self.grid, dtype=torch.bool)
        mask[torch.randperm(self.grid, generator=gen)[: self.num_masked]] = True
        item["mask"] = mask
        return item


class ImageMAETask(Task):
    """Masked-patch reconstruction: ``loss = Σ_masked mean_pixels (pred - patch)²``, ``sample_size`` = masked patches."""

    method = NAME

    def __init__(self, cfg: ImageMAETaskConfig, ctx: PretrainContext) -> None:
        if not cfg.data:
            raise ValueError("task.data is empty: the directory with <split>.tsv image manifests")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        ctx.model.validate()
        self.cfg = cfg
        self.model_cfg = ctx.model
        self._collater = ImageCollater()

    def build_model(self) -> ImageMAEPretrainModel:
        return ImageMAEPretrainModel(self.model_cfg)

    def dataset(self, split: str) -> MaskedImageDataset:
        m = self.model_cfg
        return MaskedImageDataset(
            Path(self.cfg.data) / f"{split}.tsv", num_patches=int(num_patches([m.image_size] * 2, m.patch)),
            mask_ratio=self.cfg.mask_ratio, mask_seed=self.cfg.mask_seed, size=m.image_size,
            augment=split == "train", scale=self.cfg.crop_scale, channels=m.channels, seed=self.cfg.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collater(items)  # "image": (B, C, S, S)
        batch["mask"] = torch.stack([it["mask"] for it in items])  # (B, N)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        pred, target = model(batch["image"], batch["mask"])
        out = masked_mse(pred, target, batch["mask"], reduce_dim="mean")
        return out.loss, float(out.count), {"mse": float(out.loss.detach())}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> ImageMAEConfig:
        return self.model_cfg


def write_example(directory: Path) -> ImageMAETaskConfig:
    """``Method.example``: 8 train + 4 valid synthetic PNGs (24-32 px) and their manifests under ``directory``.

    Returns:
        the task config that pretrains the ``tiny`` preset (16x16 crops) on them.
    """
    write_example_images(directory, per_split=8, min_side=24, max_side=32, seed=0)
    return dataclasses.replace(ImageMAETaskConfig(), data=str(directory))


METHOD = Method(
    name=NAME,
    config_cls=ImageMAEConfig,
    model_cls=ImageMAEModel,
    presets=PRESETS,
    task_cls=ImageMAETask,
    task_config_cls=ImageMAETaskConfig,
    description="test-only image method: masked-patch pixel reconstruction on a tiny ViT",
    modality="image",
    input_kind="image",
    example=write_example,
)
