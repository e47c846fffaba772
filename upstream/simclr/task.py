"""SimCLR pretraining as a :class:`speechssl.train.Task`: NT-Xent between two augmented views.

Data: a directory with ``<split>.tsv`` image manifests (e.g. ``scenes/`` of ``speechssl corpus
images``); no labels needed. Every item gives two views through SimCLR's augmentation
(:class:`speechssl.data.image_augment.ViewAugment`: random resized crop, flip, colour jitter of
strength ``jitter_strength`` with probability 0.8, greyscale with probability 0.2, optional
blur; with ``random_field=mild|strong`` then the random field augmentations of
:mod:`speechssl.data.random_field`, Mansfield et al., 2023), drawn from ``(seed, epoch, index)``
— validation items too (with the validation split's own generators), since the loss needs two
views. The loss is
:func:`speechssl.nn.losses.nt_xent` on the projections ``z`` (temperature ``τ``; SimCLR: 0.5 on
CIFAR-10, 0.1 with large ImageNet batches; solo-learn: 0.2), summed over the ``2B`` views
(``sample_size`` = ``2B``). The task is batch-coupled: under DDP the negatives are every rank's
views (the Trainer's gather).

G-SimCLR (Chakraborty et al., 2020): with ``negatives="pseudo_label"`` each image also carries a
pseudo-label (``<split>.<pseudo_labels>`` beside the manifest, ``dict.<pseudo_labels>.txt``
its classes), e.g. k-means clusters of a pretrained upstream's features written by
:func:`speechssl.upstream.simclr.pseudo_labels.write_pseudo_labels`; the views of other images
with the same pseudo-label are then not used as negatives (they leave the NT-Xent
denominator). The paper forms batches with at most one image per pseudo-label instead; with
the labels in the loss the batch sampler stays the Trainer's.

Run it with ``speechssl pretrain --method simclr --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechssl.data.augment import pixel_statistics
from speechssl.data.image import ImageCollater
from speechssl.data.image_augment import MultiViewImageDataset, ViewAugment
from speechssl.data.labels import LabelSpec
from speechssl.data.random_field import SETTINGS, RandomFieldAugment, RandomFieldViewAugment, random_field_setting
from speechssl.nn.losses import nt_xent
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.simclr.config import SimCLRConfig
from speechssl.upstream.simclr.model import SimCLRPretrainModel

__all__ = ["SimCLRTaskConfig", "SimCLRTask", "PSEUDO_KEY"]

#: the key of the pseudo-labels in items and batches
PSEUDO_KEY = "pseudo_label"


@dataclass
class SimCLRTaskConfig:
    """Data, augmentation and objective of SimCLR pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    temperature: float = 0.5  # NT-Xent τ (SimCLR: 0.5 CIFAR-10, 0.1 ImageNet; solo-learn: 0.2)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area fractions (SimCLR: 0.08-1)
    flip: float = 0.5  # horizontal flip probability
    jitter_strength: float = 0.5  # colour distortion strength s (SimCLR: 0.5 CIFAR-10, 1.0 ImageNet)
    jitter_prob: float = 0.8  # probability of colour jitter
    grey_prob: float = 0.2  # probability of greyscale
    blur_prob: float = 0.0  # probability of Gaussian blur (SimCLR: 0.5 ImageNet, 0 CIFAR-10)
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation of the views
    negatives: Literal["all", "pseudo_label"] = "all"  # pseudo_label: G-SimCLR, same-label views are no negatives
    pseudo_labels: str = "pseudo"  # extension of the pseudo-label files (<split>.pseudo, dict.pseudo.txt)
    seed: int = 0  # seed of the augmentations (per epoch and item)
    random_field: Literal["none", "mild", "strong"] = "none"  # random field augmentations after the view pipeline


class SimCLRTask(Task):
    """SimCLR pretraining: :class:`SimCLRPretrainModel`, two-view image datasets and NT-Xent.

    Args:
        cfg: data, augmentation and objective.
        ctx: the pretraining context; ``ctx.model`` is a :class:`SimCLRConfig`.
    """

    method = "simclr"
    batch_coupled = True

    def __init__(self, cfg: SimCLRTaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, SimCLRConfig):
            raise TypeError(f"{type(self).__name__} needs a SimCLRConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        if not cfg.temperature > 0:
            raise ValueError(f"task.temperature must be > 0, got {cfg.temperature}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        if cfg.negatives not in ("all", "pseudo_label"):
            raise ValueError(f"task.negatives must be 'all' or 'pseudo_label', got {cfg.negatives!r}")
        ctx.model.validate()
        self.cfg, self.model_cfg = cfg, ctx.model
        self.view_augment = ViewAugment(size=ctx.model.image_size, scale=tuple(cfg.crop_scale), flip=cfg.flip,
                                        jitter_strength=cfg.jitter_strength, jitter_prob=cfg.jitter_prob,
                                        grey_prob=cfg.grey_prob, blur_prob=cfg.blur_prob)
        if cfg.random_field not in SETTINGS:
            raise ValueError(f"task.random_field must be one of {', '.join(SETTINGS)}, got {cfg.random_field!r}")
        if cfg.random_field != "none":  # "none" keeps the plain pipeline, so its views are bit-for-bit unchanged
            self.view_augment = RandomFieldViewAugment(self.view_augment,
                                                       RandomFieldAugment(random_field_setting(cfg.random_field)))
        try:
            self.view_augment.validate()
        except ValueError as exc:
            raise ValueError(f"task: {exc}") from None

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny/tiny_vit: Adam 1e-3, 32 images a batch, 300 updates (validated and saved every 100, not per
        epoch); small: Adam 1e-3, 256 images, 20k updates.

        LARS is what SimCLR uses at batch sizes of 4096; at these batch sizes Adam(W) trains as
        well (solo-learn and lightly's CIFAR examples use SGD/Adam without LARS too).
        """
        from speechssl.train.presets import image_cosine, image_tiny

        if preset in ("tiny", "tiny_vit"):  # the tiny corpus: 3 batches an epoch, so nothing per epoch
            return image_tiny(batch=32, lr=1e-3, weight_decay=1e-4, warmup_updates=10, save_every_epochs=0,
                              validate_every_epochs=0)
        return image_cosine(max_updates=20_000, batch=256, lr=1e-3, weight_decay=1e-6, warmup_updates=500, every=2000)

    def build_model(self) -> SimCLRPretrainModel:
        return SimCLRPretrainModel(self.model_cfg)

    def _labels(self, manifest: Path, split: str) -> list[LabelSpec]:
        if self.cfg.negatives != "pseudo_label":
            return []
        ext = self.cfg.pseudo_labels
        path, dictionary = manifest.parent / f"{split}.{ext}", manifest.parent / f"dict.{ext}.txt"
        for f in (path, dictionary):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: task.negatives=pseudo_label needs <split>.{ext} and "
                                        f"dict.{ext}.txt beside the manifest (write them with "
                                        "speechssl.upstream.simclr.pseudo_labels)")
        return [LabelSpec(path, "utterance", name=PSEUDO_KEY, dictionary=dictionary)]

    def dataset(self, split: str) -> MultiViewImageDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        mean, std = pixel_statistics(self.cfg.normalize, self.model_cfg.channels)
        return MultiViewImageDataset(manifest, self._labels(manifest, split), view_augment=self.view_augment,
                                     views=2, augment=True, mean=mean, std=std, channels=self.model_cfg.channels,
                                     seed=self.cfg.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        kinds = {PSEUDO_KEY: "utterance"} if self.cfg.negatives == "pseudo_label" else {}
        return ImageCollater(kinds)(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        z, _ = model(batch["views"])  # (2, B, P)
        labels = batch.get(PSEUDO_KEY) if self.cfg.negatives == "pseudo_label" else None
        res = nt_xent(z[0], z[1], self.cfg.temperature, gather=self.gathering, labels=labels)
        return res.loss, float(res.count), {"nt_xent": float(res.loss.detach()), "accuracy": float(res.correct)}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> SimCLRConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """The ViT class token (with ``optim.decay_norm_bias=false``, which also exempts biases and norms)."""
        return {name for name, _ in model.named_parameters() if name.endswith("cls_token")}
