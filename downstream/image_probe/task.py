"""Image probe (see the package docstring)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch

from speechssl.data.image import ImageDataset
from speechssl.data.labels import LabelSpec
from speechssl.data.manifest import read_dict
from speechssl.downstream import metrics
from speechssl.downstream.image_features import knn_probe, linear_probe, pooled_features
from speechssl.downstream.task import DownstreamTaskBase, SplitData, subset_split

__all__ = ["ImageProbeConfig", "ImageProbe"]

_log = logging.getLogger(__name__)


@dataclass
class ImageProbeConfig:
    """Which labels to probe and how."""

    subset: str = "scenes"  # corpus subfolder with <split>.tsv image manifests (scenes, digits)
    factor: str = "shape"  # label extension: <split>.<factor> + dict.<factor>.txt (shape, colour, count, digit...)
    layer: Optional[int] = None  # hidden state to probe (negative from the end); None: the last
    pool: Literal["mean", "cls"] = "mean"  # patch-token mean, or the class token
    c: float = 1.0  # inverse L2 strength of the logistic regression
    k: int = 20  # neighbours of the k-NN probe
    batch_size: int = 64  # images per upstream batch


class ImageProbe(DownstreamTaskBase):
    """Linear (logistic regression) and k-NN probes of a frozen image upstream's pooled features.

    Metrics: ``accuracy`` (linear probe, the headline) and ``knn_accuracy``. Nothing is trained
    by the Trainer (``trains = False``); the probes are fit on the training split in
    :meth:`run_evaluation`.
    """

    name: ClassVar[str] = "image_probe"
    trains: ClassVar[bool] = False
    scored_unit: ClassVar[str] = "images"

    def _layer(self) -> int:
        n = len(self.ctx.upstream.model.hidden_sizes)
        layer = self.cfg.layer if self.cfg.layer is not None else self.ctx.featurizer.layer
        layer = n - 1 if layer is None else layer
        if not -n <= layer < n:
            raise ValueError(f"task.layer {layer} out of range for an upstream with {n} hidden states")
        return layer % n

    @property
    def classes(self) -> list[str]:
        if not hasattr(self, "_classes"):
            path = self.ctx.data_dir / self.cfg.subset / f"dict.{self.cfg.factor}.txt"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: task.factor {self.cfg.factor!r} needs "
                                        f"<split>.{self.cfg.factor} labels and dict.{self.cfg.factor}.txt")
            self._classes = read_dict(path).symbols
        return self._classes

    def _dataset(self, split: str) -> ImageDataset:
        manifest = subset_split(self.ctx.data_dir, self.cfg.subset, split)
        c, h, w = self.ctx.upstream.model.input_shape
        if h != w:
            raise ValueError(f"the image probe resizes to square images; upstream takes {h}x{w}")
        root = manifest.source.parent
        spec = LabelSpec(root / f"{split}.{self.cfg.factor}", "utterance", name="target",
                         dictionary=root / f"dict.{self.cfg.factor}.txt")
        # every image's header against the manifest, before any work (issue 23: validate up front)
        return ImageDataset(manifest, [spec], size=h, augment=False, crop_fraction=1.0, channels=c,
                            check_files=True)

    def load_split(self, split: str) -> SplitData:
        ds = self._dataset(split)
        targets = [int(ds.labels[0].get(i)) for i in range(len(ds))]
        return SplitData(ds.manifest, targets, extra={"dataset": ds})

    def _features(self, split: str) -> torch.Tensor:
        cache = self.__dict__.setdefault("_feats", {})
        if split not in cache:
            ds = self.split(split).extra["dataset"]
            bs = max(1, self.cfg.batch_size)
            batches = (torch.stack([ds[i]["image"] for i in range(s, min(s + bs, len(ds)))])
                       for s in range(0, len(ds), bs))
            cache[split] = pooled_features(self.ctx.upstream.model, batches, [self._layer()], self.cfg.pool,
                                           device=self.ctx.device)[0]
        return cache[split]

    def run_evaluation(self, split: str) -> tuple[dict[str, float], list[Any]]:
        train = self.split(self.ctx.train_split)
        x_train, x = self._features(self.ctx.train_split), self._features(split)
        linear = linear_probe(x_train, train.targets, x, c=self.cfg.c).tolist()
        knn = knn_probe(x_train, train.targets, x, k=self.cfg.k).tolist()
        targets = self.split(split).targets
        out = {"accuracy": metrics.accuracy(linear, targets), "knn_accuracy": metrics.accuracy(knn, targets),
               "chance": max(targets.count(c) for c in set(targets)) / len(targets)}
        return out, [int(p) for p in linear]

    def format_prediction(self, split: str, index: int, prediction: Any) -> str:
        data = self.split(split)
        return f"{data.manifest.ids()[index]}\t{self.classes[prediction]}\t{self.classes[data.targets[index]]}"

    def layer_weights(self, model: Any = None) -> list[float]:
        n = len(self.ctx.upstream.model.hidden_sizes)
        out = [0.0] * n
        out[self._layer()] = 1.0
        return out
