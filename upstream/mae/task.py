"""MAE pretraining as a :class:`speechssl.train.Task`: masked-patch pixel reconstruction.

Data: a directory with ``<split>.tsv`` image manifests (:mod:`speechssl.data.files` format,
e.g. ``scenes/`` of ``speechssl corpus images``); no labels needed. Training items get MAE's
augmentation (random resized crop with scale ``crop_scale``, horizontal flip), evaluation
items the whole image resized. Each item also carries its masking noise ``(N,)``, drawn from
``(noise seed, epoch, index)`` (:func:`speechssl.data.base.item_generator`), so masks never
use global RNG and resume exactly. The loss is
:func:`speechssl.nn.losses.masked_mse` (per-patch mean over pixels, summed over the removed
patches; ``sample_size`` = removed patches), i.e. MAE's loss times the number of removed patches.

Run it with ``speechssl pretrain --method mae --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechssl.data.augment import pixel_statistics
from speechssl.data.base import item_generator
from speechssl.data.image import ImageCollater, ImageDataset
from speechssl.nn.losses import masked_mse
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.mae.config import MAEConfig
from speechssl.upstream.mae.model import MAEPretrainModel

__all__ = ["MAETaskConfig", "MAETask", "MaskNoiseImageDataset"]

_NOISE_STREAM = 7919  # offset of the noise seed from task.seed (crops and flips use task.seed itself)


@dataclass
class MAETaskConfig:
    """Data, augmentation and masking of MAE pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    mask_ratio: float = 0.75  # fraction of each image's patches removed (MAE: 0.75)
    norm_pix_loss: bool = True  # normalise every target patch (MAE's default for its best results)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # random resized crop area fractions (MAE: 0.2-1.0)
    flip: float = 0.5  # probability of a horizontal flip (training)
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation of the inputs
    seed: int = 0  # seed of crops, flips and masks (per epoch and item)


class MaskNoiseImageDataset(ImageDataset):
    """:class:`~speechssl.data.image.ImageDataset` whose items also hold ``"noise": (N,)`` float32 in [0, 1)."""

    reserved = ImageDataset.reserved | {"noise"}

    def __init__(self, manifest: str | Path, *, num_patches: int, noise_seed: int, **kwargs: Any) -> None:
        super().__init__(manifest, **kwargs)
        self.num_patches, self.noise_seed = num_patches, noise_seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["noise"] = torch.rand(self.num_patches, generator=item_generator(self.noise_seed, self.epoch, index))
        return item


class MAETask(Task):
    """MAE pretraining: builds :class:`MAEPretrainModel`, the image datasets and the masked pixel loss.

    Args:
        cfg: data, augmentation and masking.
        ctx: the pretraining context; ``ctx.model`` is an :class:`MAEConfig`.
    """

    method = "mae"

    def __init__(self, cfg: MAETaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, MAEConfig):
            raise TypeError(f"{type(self).__name__} needs an MAEConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"task.mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        ctx.model.validate()
        self.cfg, self.model_cfg = cfg, ctx.model
        self.num_layers = ctx.model.layers

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny: a short CPU run (AdamW 1.5e-3, 16 images a batch); base: MAE's recipe (AdamW, lr 1.5e-4 x 4096/256)."""
        from speechssl.train.presets import image_cosine, image_tiny

        if preset == "tiny":
            return image_tiny(batch=16, lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, warmup_updates=20)
        return image_cosine(max_updates=400_000, batch=256, update_freq=16, lr=2.4e-3, betas=(0.9, 0.95),
                            weight_decay=0.05, warmup_updates=12_000, every=10_000)

    def build_model(self) -> MAEPretrainModel:
        return MAEPretrainModel(self.model_cfg, mask_ratio=self.cfg.mask_ratio, norm_pix_loss=self.cfg.norm_pix_loss)

    def dataset(self, split: str) -> MaskNoiseImageDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        m, c = self.model_cfg, self.cfg
        mean, std = pixel_statistics(c.normalize, self.model_cfg.channels)
        grid = (m.image_size // m.patch) ** 2
        return MaskNoiseImageDataset(manifest, num_patches=grid, noise_seed=c.seed + _NOISE_STREAM,
                                     size=m.image_size, augment=split == "train", scale=c.crop_scale,
                                     flip=c.flip, crop_fraction=1.0, mean=mean, std=std, channels=m.channels,
                                     seed=c.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = ImageCollater()(items)
        batch["noise"] = torch.stack([it["noise"] for it in items])  # (B, N)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch["image"], batch["noise"])
        res = masked_mse(out.pred, out.target, out.mask)
        return res.loss, float(res.count), {"mse": float(res.loss.detach())}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> MAEConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Class and mask tokens (MAE excludes them, with every bias and norm weight)."""
        return {name for name, _ in model.named_parameters() if name.endswith(("cls_token", "mask_token"))}

    def layer_id(self, name: str) -> int | None:
        """0 for the patch embedding and class token, ``i + 1`` for encoder layer ``i``, ``L + 1`` for the rest."""
        if ".vit.patch_embed." in f".{name}" or name.endswith("cls_token"):
            return 0
        marker = "vit.encoder.layers."
        if marker in name:
            return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
        return self.model_cfg.layers + 1
