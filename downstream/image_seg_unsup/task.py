"""Unsupervised segmentation by k-means over frozen patch features (see the package docstring)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from speechssl.cluster import KMeansModel, fit_kmeans
from speechssl.cluster.segmentation import cluster_confusion, match_clusters, matched_segmentation_scores
from speechssl.data.image import ImageDataset
from speechssl.downstream import image_grid
from speechssl.downstream.image_features import (
    confusion_matrix, image_hidden_states, pixel_patch_tokens, segmentation_scores,
)
from speechssl.downstream.image_masks import read_classes, read_masks
from speechssl.downstream.task import DownstreamTaskBase, SplitData

__all__ = ["ImageSegUnsupConfig", "ImageSegUnsup", "NO_CLASS"]

_log = logging.getLogger(__name__)

#: the id a pixel of a cluster matched to no class gets in the predictions
NO_CLASS = 255


@dataclass
class ImageSegUnsupConfig:
    """Which masks to segment, how many clusters and how the patch features are prepared."""

    subset: Literal["roads", "scenes"] = "roads"  # roads: road scenes (6 classes); scenes: object masks (bg + 6 shapes)
    masks: str = "sem"  # mask manifests <split>.<masks>.tsv beside <split>.tsv, classes in dict.<masks>.txt
    clusters: int = 0  # K of k-means (0: one cluster per class of dict.<masks>.txt)
    normalize: bool = True  # L2-normalise each (standardised) patch feature: k-means on cosine geometry
    pixel_patch: int = 4  # -u pixels only: side of the pixel patches that are its tokens (p*p*C values each)
    batch_size: int = 64  # images per upstream forward
    seed: int = 0  # of k-means (its sample and seeding)


class ImageSegUnsup(image_grid.PatchGridTask, DownstreamTaskBase):
    """k-means segments of a frozen image upstream's patch tokens, Hungarian-matched to the classes.

    Trains nothing (``trains = False``): :meth:`run_evaluation` fits k-means on the training
    split's patch tokens once (memoised) and segments the evaluated split. Metrics: ``miou``
    (the headline: matching on the evaluated split), ``pixel_accuracy``, ``iou_<class>``,
    ``miou_train_matching`` / ``pixel_accuracy_train_matching`` (the matching of the training
    split's segments applied instead), ``chance_miou`` / ``chance_pixel_accuracy`` (the training
    split's most frequent class everywhere), ``clusters`` and ``layer``.
    """

    name: ClassVar[str] = "image_seg_unsup"
    trains: ClassVar[bool] = False
    scored_unit: ClassVar[str] = "images"

    def __init__(self, cfg: ImageSegUnsupConfig, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        if cfg.clusters < 0:
            raise ValueError(f"task.clusters must be >= 0 (0: one per class), got {cfg.clusters}")
        if cfg.batch_size < 1:
            raise ValueError(f"task.batch_size must be >= 1, got {cfg.batch_size}")
        if cfg.subset not in ("roads", "scenes"):
            raise ValueError(f"task.subset must be 'roads' or 'scenes', got {cfg.subset!r}")
        self._fitted: tuple[KMeansModel, torch.Tensor, torch.Tensor] | None = None
        self._segments: dict[str, torch.Tensor] = {}

    @property
    def used_layer(self) -> int:
        """The hidden state clustered: ``featurizer.layer`` when given, else the last."""
        return self.ctx.upstream.num_layers - 1 if self.layer is None else self.layer

    @property
    def classes(self) -> list[str]:
        if not hasattr(self, "_classes"):
            self._classes = read_classes(self.ctx.data_dir, self.cfg.subset, self.cfg.masks)
        return self._classes

    @property
    def num_clusters(self) -> int:
        return int(self.cfg.clusters) or len(self.classes)

    # --- data ---

    def load_split(self, split: str) -> SplitData:
        manifest, masks = read_masks(self.ctx.data_dir, self.cfg.subset, split, self.cfg.masks, len(self.classes))
        c, h, _ = self._input_shape()
        images = ImageDataset(manifest, size=h, augment=False, crop_fraction=1.0, channels=c,
                              check_files=True)  # every image's header against the manifest, before any work
        return SplitData(manifest, list(range(len(manifest))), extra={"images": images, "masks": masks})

    def patch_tokens(self, split: str) -> torch.Tensor:
        """``(N, H_p * W_p, D)`` float32 patch tokens (row-major) of the clustered layer, every image of ``split``."""
        data = self.split(split)
        images = data.extra["images"]
        gh, gw = self._grid()
        prefix = image_grid.prefix_tokens(self.ctx.upstream)
        out = []
        for _, states, _ in image_hidden_states(self._model, lambda i: images[i]["image"], range(len(images)),
                                                [self.used_layer], batch_size=self.cfg.batch_size,
                                                device=self.ctx.device):
            h = states[0]  # (B, T, D)
            h = pixel_patch_tokens(h, self._input_shape(), self.cfg.pixel_patch) if self._is_pixels else h[:, prefix:]
            if h.shape[1] != gh * gw:
                raise ValueError(f"upstream {self.ctx.upstream.name}: {h.shape[1]} patch tokens in layer "
                                 f"{self.used_layer} for a {gh}x{gw} patch grid")
            out.append(h.float())
        return torch.cat(out)

    # --- clustering ---

    def _prepare(self, tokens: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        x = (tokens - mean) / std if self.ctx.featurizer.standardize else tokens
        return F.normalize(x, dim=-1) if self.cfg.normalize else x

    def fit(self) -> tuple[KMeansModel, torch.Tensor, torch.Tensor]:
        """k-means of the training split's prepared patch tokens and the ``(D,)`` mean and std used (memoised)."""
        if self._fitted is None:
            tokens = self.patch_tokens(self.ctx.train_split)
            flat = tokens.reshape(-1, tokens.shape[-1]).double()
            mean, std = flat.mean(0).float(), flat.std(0, unbiased=False).float().clamp(min=1e-6)
            x = self._prepare(tokens, mean, std).reshape(-1, tokens.shape[-1])
            k = self.num_clusters
            if k > len(x):
                raise ValueError(f"task.clusters={k} exceeds the {len(x)} patch tokens of {self.ctx.train_split}")
            km = fit_kmeans(x, k, seed=self.cfg.seed,
                            feature=f"{self.ctx.upstream.name} layer {self.used_layer} patch tokens")
            _log.info("%s: k-means K=%d on %d patch tokens of %d %s images (layer %d), inertia %.4g", self.name, k,
                      len(x), len(tokens), self.ctx.train_split, self.used_layer, km.inertia)
            self._fitted = (km, mean, std)
        return self._fitted

    def segment(self, split: str) -> torch.Tensor:
        """``(N, H, W)`` int64 cluster of every pixel of ``split`` (memoised): each patch's affinity to every
        centroid, ``2 x·c − |c|²`` (the nearest centroid has the largest), upsampled bilinearly to the masks'
        pixels, then the best cluster per pixel."""
        if split not in self._segments:
            km, mean, std = self.fit()
            x = self._prepare(self.patch_tokens(split), mean, std)  # (N, T, D)
            c = km.centroids.to(x)
            affinity = 2 * x @ c.T - (c * c).sum(1)  # (N, T, K): -|x - c|^2 up to the per-token |x|^2
            gh, gw = self._grid()
            maps = affinity.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (N, K, H_p, W_p)
            masks = self.split(split).extra["masks"]
            size = (int(masks.shape[1]), int(masks.shape[2]))
            self._segments[split] = torch.cat([
                F.interpolate(maps[s:s + 64], size=size, mode="bilinear", align_corners=False).argmax(1)
                for s in range(0, len(maps), 64)])  # (N, H, W)
        return self._segments[split]

    def train_matching(self) -> np.ndarray:
        """The Hungarian cluster → class matching of the training split's segments (``(K,)``, ``-1``: none)."""
        masks = self.split(self.ctx.train_split).extra["masks"]
        return match_clusters(cluster_confusion(self.segment(self.ctx.train_split), masks, self.num_clusters,
                                                len(self.classes)))

    # --- evaluation ---

    def run_evaluation(self, split: str) -> tuple[dict[str, float], list[torch.Tensor]]:
        seg = self.segment(split)
        masks = self.split(split).extra["masks"]
        k, n_classes = self.num_clusters, len(self.classes)
        conf = cluster_confusion(seg, masks, k, n_classes)
        mapping = match_clusters(conf)
        res = matched_segmentation_scores(conf, class_names=self.classes, mapping=mapping)
        on_train = matched_segmentation_scores(conf, class_names=self.classes, mapping=self.train_matching())
        out: dict[str, float] = {"miou": res["miou"], "pixel_accuracy": res["pixel_accuracy"]}
        out.update({f"iou_{name}": res[f"iou_{name}"] for name in self.classes})
        out["miou_train_matching"] = on_train["miou"]
        out["pixel_accuracy_train_matching"] = on_train["pixel_accuracy"]
        train = self.split(self.ctx.train_split).extra["masks"]
        majority = int(torch.bincount(train.reshape(-1).long(), minlength=n_classes).argmax())
        chance = segmentation_scores(confusion_matrix(torch.full_like(masks, majority), masks, n_classes),
                                     self.classes)
        out["chance_miou"], out["chance_pixel_accuracy"] = chance["miou"], chance["pixel_accuracy"]
        out["clusters"], out["layer"] = float(k), float(self.used_layer)
        lut = torch.tensor([NO_CLASS if m < 0 else int(m) for m in mapping], dtype=torch.uint8)
        predictions = list(lut[seg.long()])  # (H, W) class ids each
        return out, predictions

    def layer_weights(self, model: Any = None) -> list[float]:
        out = [0.0] * self.ctx.upstream.num_layers
        out[self.used_layer] = 1.0
        return out

    def format_prediction(self, split: str, index: int, prediction: torch.Tensor) -> str:
        """``id<TAB>predicted pixels per class<TAB>reference pixels per class`` (``class:count``, nonzero only;
        ``none`` for the pixels of clusters matched to no class)."""
        data = self.split(split)
        names = {i: c for i, c in enumerate(self.classes)} | {NO_CLASS: "none"}

        def hist(m: torch.Tensor) -> str:
            ids, counts = torch.unique(m.reshape(-1).long(), return_counts=True)
            return " ".join(f"{names[int(i)]}:{int(n)}" for i, n in zip(ids, counts))
        return f"{data.manifest.ids()[index]}\t{hist(prediction)}\t{hist(data.extra['masks'][index])}"
