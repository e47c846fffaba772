"""CAE pretraining as a :class:`speechssl.train.Task`: latent regression + masked-patch reconstruction.

Data: a directory with ``<split>.tsv`` image manifests (:mod:`speechssl.data.files` format,
e.g. ``scenes/`` of ``speechssl corpus images``); no labels needed. Training items get a
random resized crop (scale ``crop_scale``) and a horizontal flip, evaluation items the whole
image resized. Each item carries its mask ``(N,)`` bool — block-wise (CAE's default, BEiT's
generator with an exact count) or uniform random, ``int(N * mask_ratio)`` patches — drawn from
``(mask seed, epoch, index)`` (:func:`speechssl.data.base.item_seed`), so masks never use
global RNG and resume exactly. The loss is :func:`~speechssl.upstream.cae.model.cae_losses`:
``recon + align_weight * align`` summed over the masked patches (``sample_size``); the logs
``recon`` and ``align`` are their per-patch means.

Run it with ``speechssl pretrain --method cae --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from speechssl.data.augment import pixel_statistics
from speechssl.data.base import item_seed
from speechssl.data.image import ImageCollater, ImageDataset
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.cae.config import CAEConfig
from speechssl.upstream.cae.masking import block_mask, mask_count, random_mask
from speechssl.upstream.cae.model import CAEPretrainModel, cae_losses

__all__ = ["CAETaskConfig", "CAETask", "MaskedImageDataset"]

_MASK_STREAM = 104729  # offset of the mask seed from task.seed (crops and flips use task.seed itself)


@dataclass
class CAETaskConfig:
    """Data, augmentation, masking and loss weights of CAE pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    mask_ratio: float = 0.5  # fraction of each image's patches masked (CAE: 98 of 196, i.e. 0.5)
    masking: Literal["block", "random"] = "block"  # BEiT's block-wise masking (CAE) or uniform random
    min_block: int = 4  # block-wise: smallest block, patches (BEiT: 16 of 196; 4 suits 8 x 8 grids)
    min_aspect: float = 0.3  # block-wise: aspect ratios in [min_aspect, 1 / min_aspect]
    align_weight: float = 2.0  # weight of the alignment MSE (CAE: 2)
    norm_pix_loss: bool = True  # normalise every target patch (pixel targets stand in for DALL-E tokens)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area fractions (CAE/BEiT: 0.08-1.0)
    flip: float = 0.5  # probability of a horizontal flip (training)
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation of the inputs
    seed: int = 0  # seed of crops, flips and masks (per epoch and item)


class MaskedImageDataset(ImageDataset):
    """:class:`~speechssl.data.image.ImageDataset` whose items also hold ``"mask": (N,)`` bool (True = masked)."""

    reserved = ImageDataset.reserved | {"mask"}

    def __init__(self, manifest: str | Path, *, grid: tuple[int, int], num_masked: int, masking: str,
                 min_block: int, min_aspect: float, mask_seed: int, **kwargs: Any) -> None:
        super().__init__(manifest, **kwargs)
        self.grid, self.num_masked, self.masking = grid, num_masked, masking
        self.min_block, self.min_aspect, self.mask_seed = min_block, min_aspect, mask_seed

    def mask(self, index: int) -> torch.Tensor:
        """Item ``index``'s mask this epoch, ``(N,)`` bool."""
        rng = np.random.default_rng(item_seed(self.mask_seed, self.epoch, index))
        if self.masking == "block":
            m = block_mask(self.grid, self.num_masked, rng, min_block=self.min_block, min_aspect=self.min_aspect)
        else:
            m = random_mask(self.grid[0] * self.grid[1], self.num_masked, rng)
        return torch.from_numpy(m)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["mask"] = self.mask(index)
        return item


class CAETask(Task):
    """CAE pretraining: builds :class:`CAEPretrainModel`, the masked image datasets and the CAE loss.

    Args:
        cfg: data, augmentation, masking and loss weights.
        ctx: the pretraining context; ``ctx.model`` is a :class:`CAEConfig`.
    """

    method = "cae"

    def __init__(self, cfg: CAETaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, CAEConfig):
            raise TypeError(f"{type(self).__name__} needs a CAEConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        if cfg.masking not in ("block", "random"):
            raise ValueError(f"task.masking must be 'block' or 'random', got {cfg.masking!r}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        if cfg.align_weight < 0:
            raise ValueError(f"task.align_weight must be >= 0, got {cfg.align_weight}")
        if cfg.min_block < 1:
            raise ValueError(f"task.min_block must be >= 1, got {cfg.min_block}")
        ctx.model.validate()
        side = ctx.model.image_size // ctx.model.patch
        self.grid = (side, side)
        self.num_masked = mask_count(side * side, cfg.mask_ratio)  # checks mask_ratio
        self.cfg, self.model_cfg = cfg, ctx.model
        self.num_layers = ctx.model.layers

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny: a short CPU run (AdamW 1.5e-3, 16 images a batch); small: longer, 64 images a batch."""
        from speechssl.train.presets import image_cosine, image_tiny

        if preset == "tiny":
            return image_tiny(batch=16, lr=1.5e-3, weight_decay=0.05, warmup_updates=20)
        return image_cosine(max_updates=5000, batch=64, lr=1.5e-3, weight_decay=0.05, warmup_updates=250, every=1000,
                            log_every_updates=50)

    def build_model(self) -> CAEPretrainModel:
        return CAEPretrainModel(self.model_cfg, norm_pix_loss=self.cfg.norm_pix_loss)

    def dataset(self, split: str) -> MaskedImageDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        m, c = self.model_cfg, self.cfg
        mean, std = pixel_statistics(c.normalize, self.model_cfg.channels)
        return MaskedImageDataset(manifest, grid=self.grid, num_masked=self.num_masked, masking=c.masking,
                                  min_block=c.min_block, min_aspect=c.min_aspect, mask_seed=c.seed + _MASK_STREAM,
                                  size=m.image_size, augment=split == "train", scale=c.crop_scale, flip=c.flip,
                                  crop_fraction=1.0, mean=mean, std=std, channels=m.channels, seed=c.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = ImageCollater()(items)
        batch["mask"] = torch.stack([it["mask"] for it in items])  # (B, N) bool
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        res = cae_losses(model(batch["image"], batch["mask"]), self.cfg.align_weight)
        return res.loss, float(res.count), {"recon": float(res.recon.detach()), "align": float(res.align.detach())}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> CAEConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Class and mask tokens (excluded with every bias and norm weight)."""
        return {name for name, _ in model.named_parameters() if name.endswith(("cls_token", "mask_token"))}

    def layer_id(self, name: str) -> int | None:
        """0 for the patch embedding and class token, ``i + 1`` for encoder layer ``i``, ``L + 1`` for the rest."""
        if ".vit.patch_embed." in f".{name}" or name.endswith("cls_token"):
            return 0
        marker = "vit.encoder.layers."
        if marker in name:
            return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
        return self.model_cfg.layers + 1
