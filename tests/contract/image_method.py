"""A small image method defined inside the tests: masked-patch reconstruction (SimMIM-style).

It shows that a non-speech method is a config, a model and a Task, registered through
:func:`speechssl.registry.register`, and that it pretrains on the unchanged
:class:`speechssl.train.Trainer` and passes the same contract suite as the speech methods.

* :class:`ImageMAEConfig` — patch size, width, depth; presets ``tiny`` and ``small``.
* :class:`ImageMAEModel` — the upstream: ``images (B, C, H, W)`` → one token per patch, through
  a learned position embedding and pre-LN transformer layers of :mod:`speechssl.nn`.
* :class:`ImageMAETask` — replaces ``mask_ratio`` of each image's patches by a learned mask
  token and regresses their pixels; the loss is the squared error summed over the pixels of
  the masked patches, divided by the patch size (so ``sample_size`` = masked patches).
* :func:`write_example` — the ``Method.example``: writes a tiny synthetic image set (smooth
  gratings and gradients, ``uint8`` ``.npy`` arrays, no pickle) and returns the task config.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechssl.data.base import SizedDataset, item_generator
from speechssl.nn.lengths import num_patches
from speechssl.nn.transformer import TransformerEncoderLayer
from speechssl.registry import Method
from speechssl.train.task import PretrainContext, Task

__all__ = ["NAME", "ImageMAEConfig", "ImageMAEModel", "ImageMAEPretrainModel", "ImageMAETask",
           "ImageMAETaskConfig", "ImageArrayDataset", "write_example", "PRESETS", "METHOD"]

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
    """Data and masking of the image task."""

    data: str = ""  # directory with <split>.npy: uint8 (N, H, W, C) arrays
    mask_ratio: float = 0.5  # fraction of each image's patches to mask
    flip: bool = True  # random horizontal flips in training (per-item generator)
    seed: int = 0  # seed of flips and masks (per epoch and item)


class ImageArrayDataset(SizedDataset):
    """Images of a ``uint8 (N, H, W, C)`` ``.npy`` array as ``float (C, H, W)`` in [0, 1], with a patch mask.

    Items: ``{"image": (C, H, W), "mask": (N_patches,) bool, "index": int}``; flips and masks
    come from :func:`speechssl.data.base.item_generator` (``seed, epoch, index``). Every item
    costs 1 (``max_tokens`` counts images).
    """

    def __init__(self, path: Path, patch: int, mask_ratio: float, *, flip: bool, seed: int) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"image array not found: {path}")
        array = np.load(path, allow_pickle=False)
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"{path}: expected a uint8 (N, H, W, C) array, got {array.dtype} {array.shape}")
        self.images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
        self.grid = (array.shape[1] // patch) * (array.shape[2] // patch)
        self.num_masked = max(1, round(mask_ratio * self.grid))
        self.flip, self.seed, self.epoch = flip, seed, 1
        self.sizes = np.ones(len(array), dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        gen = item_generator(self.seed, self.epoch, index)
        image = self.images[index].float() / 255.0
        if self.flip and bool(torch.rand((), generator=gen) < 0.5):
            image = image.flip(-1)
        mask = torch.zeros(self.grid, dtype=torch.bool)
        mask[torch.randperm(self.grid, generator=gen)[: self.num_masked]] = True
        return {"image": image, "mask": mask, "index": index}


class ImageMAETask(Task):
    """Masked-patch reconstruction: ``loss = Σ_masked ||pred - patch||² / (p·p·C)``, ``sample_size`` = masked patches."""

    method = NAME

    def __init__(self, cfg: ImageMAETaskConfig, ctx: PretrainContext) -> None:
        if not cfg.data:
            raise ValueError("task.data is empty: the directory with <split>.npy image arrays")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        ctx.model.validate()
        self.cfg = cfg
        self.model_cfg = ctx.model

    def build_model(self) -> ImageMAEPretrainModel:
        return ImageMAEPretrainModel(self.model_cfg)

    def dataset(self, split: str) -> ImageArrayDataset:
        return ImageArrayDataset(Path(self.cfg.data) / f"{split}.npy", self.model_cfg.patch, self.cfg.mask_ratio,
                                 flip=self.cfg.flip and split == "train", seed=self.cfg.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"images": torch.stack([it["image"] for it in items]),  # (B, C, H, W)
                "mask": torch.stack([it["mask"] for it in items]),  # (B, N)
                "index": torch.tensor([it["index"] for it in items])}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        pred, target = model(batch["images"], batch["mask"])
        mask = batch["mask"]
        err = (pred.float() - target).pow(2).mean(-1)  # (B, N): per-patch mean squared error
        loss = err[mask].sum()
        return loss, float(mask.sum()), {"mse": float(loss.detach())}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> ImageMAEConfig:
        return self.model_cfg


def _synthetic_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
    """``uint8 (n, size, size, C)``: random oriented gratings plus a colour gradient (predictable from context)."""
    gen = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        angle, freq, phase = gen.uniform(0, math.pi), gen.uniform(0.2, 0.8), gen.uniform(0, 2 * math.pi)
        wave = np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        for c in range(channels):
            ramp = (xx if c % 2 else yy) / size
            value = 0.5 + 0.3 * wave * gen.uniform(0.5, 1.0) + 0.2 * (ramp - 0.5)
            out[i, :, :, c] = np.clip(value * 255, 0, 255).astype(np.uint8)
    return out


def write_example(directory: Path) -> ImageMAETaskConfig:
    """``Method.example``: 8 train + 4 valid synthetic images of the ``tiny`` preset's size under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = tiny()
    np.save(directory / "train.npy", _synthetic_images(8, cfg.image_size, cfg.channels, seed=0), allow_pickle=False)
    np.save(directory / "valid.npy", _synthetic_images(4, cfg.image_size, cfg.channels, seed=1), allow_pickle=False)
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
