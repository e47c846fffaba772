"""MixedAE pretraining as a :class:`speechssl.train.Task`: mixed-image reconstruction + homologous contrast.

Data: a directory with ``<split>.tsv`` image manifests (:mod:`speechssl.data.files` format,
e.g. ``scenes/`` of ``speechssl corpus images``); no labels needed. Training items get MAE's
augmentation (random resized crop with scale ``crop_scale``, horizontal flip), evaluation
items the whole image resized. Each item carries its mixing noise ``(N,)``, drawn from
``(noise seed, epoch, index)`` (:func:`speechssl.data.base.item_generator`); a group of ``mix``
consecutive batch items is mixed by the noise of its first item, so mixing never uses global
RNG and resumes exactly.

Loss (``sample_size`` = the scored patches, ``(1 - 1/mix) N`` per image):
``Σ_scored mean_pixels (pred - target)^2 + hc_weight · sample_size · L_HC``, ``L_HC`` the mean
homologous contrastive loss per anchor patch; so per scored patch it is MAE's loss plus
``hc_weight · L_HC``. Logs (per scored patch): ``mse`` and ``hc`` (``L_HC``). ``hc_level``
chooses ``L_HC``: per anchor patch (default) or per pooled image half (see the model docstring).

Run it with ``speechssl pretrain --method mixedae --preset tiny --data DIR/scenes --exp-dir EXP``.
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
from speechssl.upstream.mixedae.config import MixedAEConfig
from speechssl.upstream.mixedae.model import MixedAEPretrainModel

__all__ = ["MixedAETaskConfig", "MixedAETask", "MixNoiseImageDataset"]

_NOISE_STREAM = 15485863  # offset of the noise seed from task.seed (crops and flips use task.seed itself)


@dataclass
class MixedAETaskConfig:
    """Data, augmentation, mixing and loss weights of MixedAE pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    mix: int = 4  # r: images mixed into one (MixedAE: 4, each image shows 1/4 of its patches)
    hc_weight: float = 0.1  # weight of the homologous contrastive loss (a choice; see the model docstring)
    hc_temperature: float = 0.2  # its temperature tau (a choice)
    hc_level: Literal["patch", "image"] = "patch"  # per patch within a mixed image, or pooled image halves (NT-Xent)
    norm_pix_loss: bool = True  # normalise every target patch (MAE's default for its best results)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # random resized crop area fractions (MAE: 0.2-1.0)
    flip: float = 0.5  # probability of a horizontal flip (training)
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation of the inputs
    seed: int = 0  # seed of crops, flips and mixing (per epoch and item)


class MixNoiseImageDataset(ImageDataset):
    """:class:`~speechssl.data.image.ImageDataset` whose items also hold ``"noise": (N,)`` float32 in [0, 1)."""

    reserved = ImageDataset.reserved | {"noise"}

    def __init__(self, manifest: str | Path, *, num_patches: int, noise_seed: int, **kwargs: Any) -> None:
        super().__init__(manifest, **kwargs)
        self.num_patches, self.noise_seed = num_patches, noise_seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["noise"] = torch.rand(self.num_patches, generator=item_generator(self.noise_seed, self.epoch, index))
        return item


class MixedAETask(Task):
    """MixedAE pretraining: builds :class:`MixedAEPretrainModel`, the image datasets and the two losses.

    Args:
        cfg: data, augmentation, mixing and loss weights.
        ctx: the pretraining context; ``ctx.model`` is a :class:`MixedAEConfig`.
    """

    method = "mixedae"

    def __init__(self, cfg: MixedAETaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, MixedAEConfig):
            raise TypeError(f"{type(self).__name__} needs a MixedAEConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        ctx.model.validate()
        n = (ctx.model.image_size // ctx.model.patch) ** 2
        if not 2 <= cfg.mix <= n:
            raise ValueError(f"task.mix must be in 2..{n} (patches per image), got {cfg.mix}")
        if cfg.hc_weight < 0:
            raise ValueError(f"task.hc_weight must be >= 0, got {cfg.hc_weight}")
        if cfg.hc_temperature <= 0:
            raise ValueError(f"task.hc_temperature must be > 0, got {cfg.hc_temperature}")
        if cfg.hc_level not in ("patch", "image"):
            raise ValueError(f"task.hc_level must be 'patch' or 'image', got {cfg.hc_level!r}")
        if cfg.hc_level == "image" and n < 2 * cfg.mix:
            raise ValueError(f"task.hc_level=image needs 2 patches per image and half: {n} patches, task.mix {cfg.mix}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        self.cfg, self.model_cfg = cfg, ctx.model
        self.num_layers = ctx.model.layers

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny: a short CPU run (AdamW 1.5e-3, 16 images a batch = 4 mixed images); small: longer, 32 a batch."""
        from speechssl.train.presets import image_cosine, image_tiny

        if preset == "tiny":
            return image_tiny(batch=16, lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, warmup_updates=20)
        return image_cosine(max_updates=3000, batch=32, lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05,
                            warmup_updates=100, every=500, log_every_updates=50)

    def build_model(self) -> MixedAEPretrainModel:
        return MixedAEPretrainModel(self.model_cfg, mix=self.cfg.mix, norm_pix_loss=self.cfg.norm_pix_loss,
                                    hc_temperature=self.cfg.hc_temperature, hc_level=self.cfg.hc_level)

    def dataset(self, split: str) -> MixNoiseImageDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        m, c = self.model_cfg, self.cfg
        mean, std = pixel_statistics(c.normalize, self.model_cfg.channels)
        grid = (m.image_size // m.patch) ** 2
        return MixNoiseImageDataset(manifest, num_patches=grid, noise_seed=c.seed + _NOISE_STREAM,
                                    size=m.image_size, augment=split == "train", scale=c.crop_scale,
                                    flip=c.flip, crop_fraction=1.0, mean=mean, std=std, channels=m.channels,
                                    seed=c.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = ImageCollater()(items)
        batch["noise"] = torch.stack([it["noise"] for it in items])  # (B, N)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch["image"], batch["noise"])
        rec = masked_mse(out.pred, out.target, out.mask)
        hc = out.hc_sum / max(out.hc_anchors, 1)  # mean per anchor patch
        loss = rec.loss + self.cfg.hc_weight * float(rec.count) * hc
        return loss, float(rec.count), {"mse": float(rec.loss.detach()),
                                        "hc": float(hc.detach()) * float(rec.count)}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> MixedAEConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Class and mask tokens (as MAE, with every bias and norm weight)."""
        return {name for name, _ in model.named_parameters() if name.endswith(("cls_token", "mask_token"))}

    def layer_id(self, name: str) -> int | None:
        """0 for the patch embedding and class token, ``i + 1`` for encoder layer ``i``, ``L + 1`` for the rest."""
        if ".vit.patch_embed." in f".{name}" or name.endswith("cls_token"):
            return 0
        marker = "vit.encoder.layers."
        if marker in name:
            return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
        return self.model_cfg.layers + 1
