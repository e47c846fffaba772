"""Per-patch linear segmentation probe (see the package docstring)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.base import SizedDataset
from speechssl.data.image import ImageDataset
from speechssl.downstream import image_grid
from speechssl.downstream.featurizer import Featurizer
from speechssl.downstream.image_features import (
    confusion_matrix, image_hidden_states, pixel_patch_tokens, segmentation_scores,
)
from speechssl.downstream.image_masks import read_classes, read_masks
from speechssl.downstream.task import DownstreamTaskBase, SplitData

__all__ = ["ImageSegConfig", "ImageSeg", "PatchSegmentationHead", "ImageSegModel"]

_log = logging.getLogger(__name__)


@dataclass
class ImageSegConfig:
    """Which masks to segment and how the raw-pixel baseline is cut into patches."""

    subset: Literal["roads", "scenes"] = "roads"  # roads: road scenes (6 classes); scenes: object masks (bg + 6 shapes)
    masks: str = "sem"  # mask manifests <split>.<masks>.tsv beside <split>.tsv, classes in dict.<masks>.txt
    pixel_patch: int = 4  # -u pixels only: side of the pixel patches that are its tokens (p*p*C values each)
    batch_size: int = 64  # images per upstream forward (caching, statistics, uncached batches are the trainer's)


class PatchSegmentationHead(nn.Module):
    """Linear classifier per patch token, logits upsampled bilinearly to the mask's pixels.

    Args:
        in_dim: ``D`` of a token.
        num_classes: ``K``.
        grid: ``(H_p, W_p)`` patch grid (tokens row-major).
        out_size: ``(H, W)`` pixels of the masks the logits are scored against.
        prefix_tokens: tokens before the patches (a class token), dropped.
        pixel_shape: for the raw-pixel baseline, its ``(C, H, W)``: the one token ``(B, 1, C*H*W)``
            is cut into ``pixel_patch`` patches first (:func:`pixel_patch_tokens`); None otherwise.
        pixel_patch: the pixel patch side.
    """

    def __init__(self, in_dim: int, num_classes: int, grid: tuple[int, int], out_size: tuple[int, int], *,
                 prefix_tokens: int = 0, pixel_shape: tuple[int, int, int] | None = None,
                 pixel_patch: int = 0) -> None:
        super().__init__()
        self.grid, self.out_size = (int(grid[0]), int(grid[1])), (int(out_size[0]), int(out_size[1]))
        self.prefix_tokens, self.pixel_shape, self.pixel_patch = int(prefix_tokens), pixel_shape, int(pixel_patch)
        self.proj = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``x (B, T, D)`` → ``{"logits": (B, K, H, W)}``."""
        if self.pixel_shape is not None:
            x = pixel_patch_tokens(x, self.pixel_shape, self.pixel_patch)  # (B, N, p*p*C)
        else:
            x = x[:, self.prefix_tokens:]  # (B, N, D)
        gh, gw = self.grid
        if x.shape[1] != gh * gw:
            raise ValueError(f"{x.shape[1]} patch tokens for a {gh}x{gw} patch grid")
        logits = self.proj(x).transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (B, K, H_p, W_p)
        logits = F.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=False)  # (B, K, H, W)
        return {"logits": logits}


class ImageSegModel(nn.Module):
    """Featurizer + head (+ the upstream when fine-tuned), over cached tokens or images.

    ``forward(feats=(L, B, T, D) | list, lengths=(B,))`` on cached features, or
    ``forward(images=(B, C, H, W))``; returns the head's output. A frozen upstream is kept
    outside the module tree (not saved, not optimised, never in training mode).
    """

    def __init__(self, featurizer: Featurizer, head: nn.Module, upstream: nn.Module | None, trainable: bool) -> None:
        super().__init__()
        self.featurizer, self.head, self.trainable = featurizer, head, trainable
        if trainable:
            self.upstream = upstream
        else:
            self._frozen = [upstream] if upstream is not None else []

    def forward(self, feats: Any = None, lengths: torch.Tensor | None = None,
                images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if images is not None:
            if self.trainable:
                out = self.upstream(images)
            else:
                if not self._frozen:
                    raise RuntimeError("this model reads cached features; it has no upstream to run on images")
                up = self._frozen[0]
                up.eval()
                with torch.no_grad():
                    out = up(images)
            feats, lengths = out["hidden_states"], out["lengths"]
        if feats is None:
            raise ValueError("ImageSegModel needs feats (cached tokens) or images")
        x, _ = self.featurizer(feats, lengths)  # (B, T, D)
        return self.head(x)


class _SegDataset(SizedDataset):
    """Items ``{"index", "target": (H, W) int64, "feats": [(T, D_l)...] | "image": (C, H, W)}``;
    ``sizes`` is 1 per image (``max_tokens`` counts images)."""

    def __init__(self, data: SplitData, cached: Any) -> None:
        self.data, self.cached = data, cached
        self.sizes = [1] * len(data.targets)

    def __len__(self) -> int:
        return len(self.data.targets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": i, "target": self.data.extra["masks"][i].long()}
        if self.cached is not None:
            item["feats"] = self.cached[i]
        else:
            item["image"] = self.data.extra["images"][i]["image"]
        return item


class ImageSeg(image_grid.PatchGridTask, DownstreamTaskBase):
    """Per-patch linear segmentation probe of a frozen image upstream, scored by mIoU.

    Features: the learned softmax-weighted sum of all hidden states (``featurizer.layer=N``: one
    layer), standardised with training statistics, patch tokens only (class token dropped);
    a linear layer per patch; logits bilinearly upsampled to the masks' pixels; cross-entropy
    per pixel (``sample_size`` = pixels). Metrics: ``miou`` (the headline), ``pixel_accuracy``,
    ``iou_<class>``, and ``chance_miou`` / ``chance_pixel_accuracy`` of predicting the training
    split's most frequent class everywhere.
    """

    name: ClassVar[str] = "image_seg"
    scored_unit: ClassVar[str] = "images"
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_updates": 600, "max_tokens": 32, "optim": {"lr": 5e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"}, "validate_every_updates": 100, "save_every_updates": 100,
        "validate_every_epochs": 0, "save_every_epochs": 0,
        "best_metric": "miou", "maximize_best_metric": True, "keep_last": 1,
    }

    def __init__(self, cfg: Any, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        if ctx.upstream is not None and self.layer is None:
            sizes = list(ctx.upstream.hidden_sizes)
            if len(set(sizes)) != 1:   # refused here, before any feature is extracted
                raise ValueError(f"upstream {ctx.upstream.name} has hidden states of widths {sizes} (a CNN's "
                                 "stages): a weighted sum of layers needs one width; choose a layer with "
                                 "-l N (-o featurizer.layer=N), e.g. -l -1 for the last")

    # --- data ---

    @property
    def classes(self) -> list[str]:
        if not hasattr(self, "_classes"):
            self._classes = read_classes(self.ctx.data_dir, self.cfg.subset, self.cfg.masks)
        return self._classes

    def load_split(self, split: str) -> SplitData:
        manifest, masks = read_masks(self.ctx.data_dir, self.cfg.subset, split, self.cfg.masks, len(self.classes))
        c, h, _ = self._input_shape()
        images = ImageDataset(manifest, size=h, augment=False, crop_fraction=1.0, channels=c,
                              check_files=True)  # every image's header against the manifest, before any work
        return SplitData(manifest, list(range(len(manifest))), extra={"images": images, "masks": masks})

    def _mask_size(self) -> tuple[int, int]:
        masks = self.split(self.ctx.train_split).extra["masks"]
        return int(masks.shape[1]), int(masks.shape[2])

    def _hidden_states(self, split: str, layers: list[int], limit: int | None = None):
        data = self.split(split)
        images = data.extra["images"]
        n = len(data.targets) if limit is None else min(limit, len(data.targets))
        return image_hidden_states(self._model, lambda i: images[i]["image"], range(n), layers,
                                   batch_size=self.cfg.batch_size, device=self.ctx.device)

    def dataset(self, split: str) -> _SegDataset:
        if split not in self._datasets:
            data = self.split(split)
            cached = None
            if self.uses_cache:
                folder = data.manifest.source.parent.name if data.manifest.source else self.name
                cached = self.ctx.cache.get(self.ctx.upstream, f"{folder}-{split}", data.manifest,
                                            self._data_layers(),
                                            compute=lambda keep: self._hidden_states(split, list(keep)))
                if len(cached) != len(data.targets):
                    raise RuntimeError(f"cache {cached.directory} has {len(cached)} images, split {split} has "
                                       f"{len(data.targets)}")
            self._datasets[split] = _SegDataset(data, cached)
        return self._datasets[split]

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"index": torch.tensor([it["index"] for it in items], dtype=torch.long),
                                 "target": torch.stack([it["target"] for it in items])}  # (B, H, W)
        if "feats" in items[0]:
            layers = [torch.stack([it["feats"][l] for it in items]) for l in range(len(items[0]["feats"]))]
            batch["feats"] = torch.stack(layers) if len({x.shape for x in layers}) == 1 else layers  # (L, B, T, D)
            batch["lengths"] = torch.full((len(items),), layers[0].shape[1], dtype=torch.long)
        else:
            batch["image"] = torch.stack([it["image"] for it in items])  # (B, C, H, W)
        return batch

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        if "feats" in batch:
            return {"feats": batch["feats"], "lengths": batch["lengths"]}
        return {"images": batch["image"]}

    # --- model ---

    def train_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std over every token of the training split's images:
        ``(L, D)`` for a weighted sum, ``(1, D)`` for one layer (memoised)."""
        if not hasattr(self, "_moments"):
            if self.uses_cache:
                self._moments = self.dataset(self.ctx.train_split).cached.moments()
            else:
                layers = list(range(self.ctx.upstream.num_layers)) if self.layer is None else [self.layer]
                s1 = s2 = None
                count = 0
                for _, states, _ in self._hidden_states(self.ctx.train_split, layers,
                                                        self.ctx.featurizer.stats_utterances):
                    x = torch.stack([h.reshape(-1, h.shape[-1]).double() for h in states])  # (L, N_tokens, D)
                    s1 = x.sum(1) if s1 is None else s1 + x.sum(1)
                    s2 = (x * x).sum(1) if s2 is None else s2 + (x * x).sum(1)
                    count += x.shape[1]
                mean = s1 / max(count, 1)
                std = (s2 / max(count, 1) - mean * mean).clamp(min=0).sqrt()
                self._moments = (mean.float(), std.float())
        return self._moments

    def build_head(self, in_dim: int) -> nn.Module:
        pixel_shape = self._input_shape() if self._is_pixels else None
        if pixel_shape is not None:
            in_dim = self.cfg.pixel_patch ** 2 * pixel_shape[0]
        return PatchSegmentationHead(in_dim, len(self.classes), self._grid(), self._mask_size(),
                                     prefix_tokens=image_grid.prefix_tokens(self.ctx.upstream),
                                     pixel_shape=pixel_shape, pixel_patch=self.cfg.pixel_patch)

    def build_model(self) -> ImageSegModel:
        up = self.ctx.upstream
        if self._data_layers() is not None:
            featurizer = Featurizer(1, layer=0, normalize=self.ctx.featurizer.normalize)
        else:
            featurizer = Featurizer(up.num_layers, layer=self.layer, normalize=self.ctx.featurizer.normalize)
        if self.ctx.featurizer.standardize:
            featurizer.set_statistics(*self.train_moments())
        head = self.build_head(self.feature_dim())
        if self.ctx.trainable:
            for p in up.model.parameters():
                p.requires_grad_(True)
        return ImageSegModel(featurizer, head, up.model, self.ctx.trainable)

    # --- loss and scores ---

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        logits, target = out["logits"], batch["target"]
        loss = F.cross_entropy(logits.float(), target, reduction="sum")
        conf = confusion_matrix(logits.detach().argmax(1), target, len(self.classes))
        logs = {"correct": float(conf.diagonal().sum())}
        for k in range(len(self.classes)):
            logs[f"inter_{k}"] = float(conf[k, k])
            logs[f"pred_{k}"] = float(conf[:, k].sum())
            logs[f"ref_{k}"] = float(conf[k].sum())
        return loss, float(target.numel()), logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Pixel accuracy and mIoU (over classes with a non-empty union) of the summed counts."""
        k = len(self.classes)
        if "correct" not in sums:
            return {key: v / max(sample_size, 1e-12) for key, v in sums.items()}
        ious = []
        for c in range(k):
            inter = sums.get(f"inter_{c}", 0.0)
            union = sums.get(f"pred_{c}", 0.0) + sums.get(f"ref_{c}", 0.0) - inter
            if union > 0:
                ious.append(inter / union)
        return {"pixel_accuracy": sums["correct"] / max(sample_size, 1e-12),
                "miou": sum(ious) / len(ious) if ious else float("nan")}

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[torch.Tensor]:
        return list(out["logits"].argmax(1).to("cpu", torch.uint8))  # (H, W) each

    def score(self, split: str, predictions: list[torch.Tensor]) -> dict[str, float]:
        masks = self.split(split).extra["masks"]
        k = len(self.classes)
        conf = torch.zeros(k, k, dtype=torch.long)
        for pred, ref in zip(predictions, masks):
            conf += confusion_matrix(pred, ref, k)
        out = segmentation_scores(conf, self.classes)
        train = self.split(self.ctx.train_split).extra["masks"]
        majority = int(torch.bincount(train.reshape(-1).long(), minlength=k).argmax())
        chance = segmentation_scores(confusion_matrix(torch.full_like(masks, majority), masks, k), self.classes)
        out["chance_miou"], out["chance_pixel_accuracy"] = chance["miou"], chance["pixel_accuracy"]
        return out

    def format_prediction(self, split: str, index: int, prediction: torch.Tensor) -> str:
        """``id<TAB>predicted pixels per class<TAB>reference pixels per class`` (``class:count``, nonzero only)."""
        data = self.split(split)
        k = len(self.classes)

        def hist(m: torch.Tensor) -> str:
            counts = torch.bincount(m.reshape(-1).long(), minlength=k).tolist()
            return " ".join(f"{self.classes[c]}:{n}" for c, n in enumerate(counts) if n)
        return f"{data.manifest.ids()[index]}\t{hist(prediction)}\t{hist(data.extra['masks'][index])}"
