"""Utterance classification shared by ks, sid, ic and er: mean-pool + linear head, accuracy.

A task reads a label file beside its manifests (``<split>.<ext>``, one label per line);
with several outputs (ic: ``action|object|location``) an utterance counts as correct only
when every output is right, as SUPERB scores intent classification. The classes are those
of the corpus's ``dict.<ext>.txt`` when it exists (so a class missing from the training
split is still a possible answer, scored as an error when the head never predicts it),
else the sorted distinct labels of the training split; a label outside the classes is an
error naming the file and row. An evaluation utterance whose label no training utterance has
is logged as a warning: on a corpus that small the score says nothing about the upstream.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.manifest import read_dict
from speechssl.downstream import metrics
from speechssl.downstream.heads import UtteranceClassifier
from speechssl.downstream.task import (
    DownstreamTaskBase, SplitData, class_index, read_subset_labels, sorted_classes, subset_split,
)

__all__ = ["ClassifierConfig", "UtteranceClassificationTask"]

_log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    """Head of an utterance classifier (s3prl: projector 256, mean pooling, linear)."""

    projector_dim: int = 256  # per-frame projection before pooling
    hidden_dim: int = 0  # 0: linear classifier; >0: one hidden ReLU layer
    dropout: float = 0.0  # after pooling


class UtteranceClassificationTask(DownstreamTaskBase):
    """Base of utterance classification tasks.

    Subclasses set :attr:`name` and :attr:`label_ext` (or override :meth:`label_file`);
    several outputs are ``|``-separated fields named by :attr:`output_names`. Their config has
    ``subset`` (the corpus subfolder) and ``head`` (a :class:`ClassifierConfig`).
    """

    label_ext: ClassVar[str] = ""
    output_names: ClassVar[tuple[str, ...]] = ("label",)
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_updates": 800, "max_tokens": 20_000, "optim": {"lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"}, "validate_every_updates": 100, "save_every_updates": 100,
        "validate_every_epochs": 0, "save_every_epochs": 0,
        "best_metric": "accuracy", "maximize_best_metric": True, "keep_last": 1,
    }

    def label_file(self) -> str:
        """Extension of the label files (``kw`` for ``<split>.kw``)."""
        return self.label_ext

    def _fields(self, value: str, where: str) -> list[str]:
        parts = value.strip().split("|") if len(self.output_names) > 1 else [value.strip()]
        if len(parts) != len(self.output_names) or not all(parts):
            raise ValueError(f"{where}: expected {'|'.join(self.output_names)}, got {value!r}")
        return parts

    def split_labels(self, split: str, manifest: Any) -> list[list[str]]:
        """One list of label strings per output, manifest order."""
        ext = self.label_file()
        rows = read_subset_labels(manifest, ext)
        src = manifest.source.with_suffix("." + ext)
        fields = [self._fields(r, f"{src}:{i}") for i, r in enumerate(rows, start=1)]
        return [list(col) for col in zip(*fields)] if fields else [[] for _ in self.output_names]

    def _raw(self, split: str) -> tuple[Any, list[list[str]]]:
        manifest = subset_split(self.ctx.data_dir, self.cfg.subset, split)
        return manifest, self.split_labels(split, manifest)

    @property
    def classes(self) -> list[list[str]]:
        """Class names of each output: from ``dict.<ext>.txt``, else the training split."""
        if not hasattr(self, "_classes"):
            manifest, outputs = self._raw(self.ctx.train_split)
            path = manifest.source.parent / f"dict.{self.label_file()}.txt"
            if path.is_file():
                fields = [self._fields(s, str(path)) for s in read_dict(path).symbols]
                outputs = [list(col) for col in zip(*fields)]
            self._classes = [sorted_classes(values) for values in outputs]
        return self._classes

    def load_split(self, split: str) -> SplitData:
        manifest, outputs = self._raw(split)
        indices = [class_index(values, names, source=f"{manifest.source} ({name})")
                   for values, names, name in zip(outputs, self.classes, self.output_names)]
        data = SplitData(manifest, [tuple(t) for t in zip(*indices)])
        if split != self.ctx.train_split:
            self._warn_unseen_labels(split, data.targets)
        return data

    def _warn_unseen_labels(self, split: str, targets: list[tuple[int, ...]]) -> None:
        seen = set(self.split(self.ctx.train_split).targets)
        unseen = sum(t not in seen for t in targets)
        if unseen:
            how = ("can get them right only by combining outputs learned from other utterances"
                   if len(self.output_names) > 1 else "never learns to predict them")
            _log.warning("%s: %d of %d %r utterances have a label (%s) that no %r utterance has; the head %s",
                         self.name, unseen, len(targets), split, "|".join(self.output_names),
                         self.ctx.train_split, how)

    def build_head(self, in_dim: int) -> nn.Module:
        h = self.cfg.head
        return UtteranceClassifier(in_dim, [len(c) for c in self.classes], projector_dim=h.projector_dim,
                                   hidden_dim=h.hidden_dim, dropout=h.dropout)

    def collate_targets(self, targets: list[tuple[int, ...]]) -> dict[str, Any]:
        return {"target": torch.tensor(targets, dtype=torch.long)}                 # (B, K)

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]
                     ) -> tuple[torch.Tensor, float, dict[str, float]]:
        target = batch["target"]
        loss = sum(F.cross_entropy(logits, target[:, k], reduction="sum")
                   for k, logits in enumerate(out["logits"]))
        correct = torch.stack([logits.argmax(-1) == target[:, k] for k, logits in enumerate(out["logits"])])
        n = target.shape[0]
        return loss, n, {"accuracy": float(correct.all(0).sum())}

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[tuple[int, ...]]:
        preds = torch.stack([logits.argmax(-1) for logits in out["logits"]], dim=1)  # (B, K)
        return [tuple(p) for p in preds.tolist()]

    def score(self, split: str, predictions: list[tuple[int, ...]]) -> dict[str, float]:
        targets = self.split(split).targets
        out = {"accuracy": metrics.accuracy(predictions, targets)}
        if len(self.output_names) > 1:
            for k, name in enumerate(self.output_names):
                out[f"accuracy_{name}"] = metrics.accuracy([p[k] for p in predictions], [t[k] for t in targets])
        return out

    def format_prediction(self, split: str, index: int, prediction: tuple[int, ...]) -> str:
        data = self.split(split)
        names = lambda ids: "|".join(c[i] for c, i in zip(self.classes, ids))  # noqa: E731
        return f"{data.manifest.ids()[index]}\t{names(prediction)}\t{names(data.targets[index])}"
