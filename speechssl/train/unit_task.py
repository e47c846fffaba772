"""Masked unit-prediction pretraining (HuBERT's task and loss) as a reusable :class:`Task`.

Methods whose model is a :class:`speechssl.nn.unit_prediction.UnitPredictionModel` (HuBERT's
head on the wav2vec 2.0 / HuBERT trunk) subclass :class:`UnitPredictionTask`, set
:attr:`~UnitPredictionTask.model_cls` and :attr:`~UnitPredictionTask.model_config_cls`, and add
their own labels (:meth:`~UnitPredictionTask.extra_labels`) and loss terms on top of
:meth:`~UnitPredictionTask.unit_loss`.

Data (fairseq ``hubert_pretraining`` layout)::

    <data>/<split>.tsv              manifest
    <label_dir>/<split>.<label>     one line of frame labels per manifest row (e.g. ``train.km``)
    <label_dir>/dict.<label>.txt    the label dictionary (``symbol count`` per line)

Loss (fairseq ``hubert`` criterion), summed over frames::

    pred_masked_weight * Σ_i CE(masked frames, label set i)
    + pred_nomask_weight * Σ_i CE(unmasked frames, label set i)
    + feature_pen_weight * mean(conv_features²) * sample_size

``sample_size`` counts masked frames (when ``pred_masked_weight > 0``) plus unmasked frames
(when ``pred_nomask_weight > 0``); the Trainer divides by its total.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from speechssl.data.collate import AudioCollater
from speechssl.data.dataset import AudioDataset, LabelSpec, audio_split, split_manifest
from speechssl.data.manifest import Dictionary, read_dict
from speechssl.nn.losses import masked_prediction_loss
from speechssl.nn.unit_prediction import UnitPredictionModel
from speechssl.train.task import PretrainContext, Task

__all__ = ["UnitTaskConfig", "UnitPredictionTask"]

_log = logging.getLogger(__name__)


@dataclass
class UnitTaskConfig:
    """Data and loss settings of masked unit prediction (fairseq ``hubert_pretraining`` + ``hubert`` criterion)."""

    data: str = ""  # directory with <split>.tsv manifests (set by --data)
    label_dir: Optional[str] = None  # directory with <split>.<label> and dict.<label>.txt; None: data
    labels: tuple[str, ...] = ("km",)  # label file extensions, one label set each
    label_rate: tuple[float, ...] = (50.0,)  # frames per second of each label set (one value: all sets)
    sample_rate: int = 16000  # audio sample rate (Hz); other rates are errors
    max_sample_size: Optional[int] = 250000  # crop utterances to at most this many samples
    min_sample_size: int = 0  # drop utterances shorter than this (fairseq Base/Large: 32000)
    random_crop: bool = True  # training crops start at random (else at the beginning)
    pad_audio: bool = False  # pad a batch to its longest item (False: crop to the shortest, as fairseq)
    seed: int = 1  # seed of the random crops (per epoch and item)
    pred_masked_weight: float = 1.0  # weight of the loss on masked frames
    pred_nomask_weight: float = 0.0  # weight of the loss on unmasked frames
    feature_pen_weight: float = 10.0  # weight of the conv-feature L2 penalty (fairseq loss_weights [10])


class UnitPredictionTask(Task):
    """Masked unit prediction: builds :attr:`model_cls`, the audio + frame-label datasets, and the loss.

    Args:
        task_cfg: data and loss settings (a :class:`UnitTaskConfig` or subclass).
        ctx: the pretraining context; ``ctx.model`` is the model architecture (a
            :attr:`model_config_cls` instance).

    Raises:
        TypeError: ``ctx.model`` is not a :attr:`model_config_cls`.
        ValueError / FileNotFoundError: missing data directory or dictionary, bad label rates.
    """

    model_cls: ClassVar[type[UnitPredictionModel]] = UnitPredictionModel
    model_config_cls: ClassVar[type] = object

    def __init__(self, task_cfg: UnitTaskConfig, ctx: PretrainContext) -> None:
        model_cfg = ctx.model
        if not isinstance(model_cfg, self.model_config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.model_config_cls.__name__} in ctx.model, "
                            f"got {type(model_cfg).__name__}")
        if not task_cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv)")
        if not task_cfg.labels:
            raise ValueError("task.labels is empty: name at least one label set (e.g. ['km'])")
        rates = tuple(task_cfg.label_rate)
        if len(rates) == 1:
            rates = rates * len(task_cfg.labels)
        if len(rates) != len(task_cfg.labels):
            raise ValueError(f"task.label_rate has {len(task_cfg.label_rate)} values for "
                             f"{len(task_cfg.labels)} labels {list(task_cfg.labels)}; give one, or one per label")
        if min(rates) <= 0:
            raise ValueError(f"task.label_rate must be positive, got {list(rates)}")
        if task_cfg.pred_masked_weight <= 0 and task_cfg.pred_nomask_weight <= 0:
            raise ValueError("pred_masked_weight and pred_nomask_weight are both 0: nothing to learn")
        model_cfg.validate()
        self.cfg = task_cfg
        self.model_cfg = model_cfg
        self.label_rates = [float(r) for r in rates]
        self.data_dir = Path(task_cfg.data)
        self.label_dir = Path(task_cfg.label_dir) if task_cfg.label_dir else self.data_dir
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"task.data: no such directory: {self.data_dir}")
        self.dictionaries: list[Dictionary] = [self.read_dictionary(label) for label in task_cfg.labels]
        kinds = {label: "frame" for label in task_cfg.labels}
        kinds.update(self.extra_label_kinds())
        self._collater = AudioCollater(
            label_kinds=kinds, frame_label_rates=dict(zip(task_cfg.labels, self.label_rates)),
            pad_audio=task_cfg.pad_audio, label_pad=-100,
            crop="random" if task_cfg.random_crop else "start",
            max_sample_size=task_cfg.max_sample_size, sample_rate=task_cfg.sample_rate)

    def read_dictionary(self, label: str) -> Dictionary:
        """``<label_dir>/dict.<label>.txt``, or FileNotFoundError naming it."""
        path = self.label_dir / f"dict.{label}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"label dictionary not found: {path} (write it with "
                                    f"`speechssl dump-labels`, or set task.label_dir)")
        return read_dict(path)

    def label_path(self, split: str, label: str) -> Path:
        """``<label_dir>/<split>.<label>``, or FileNotFoundError naming it."""
        path = self.label_dir / f"{split}.{label}"
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path} (labels {label!r} of split {split!r})")
        return path

    # --- hooks for subclasses ----------------------------------------------------------------

    def extra_label_kinds(self) -> dict[str, str]:
        """Label key → kind (``"utterance"``, ...) of the labels :meth:`extra_labels` adds."""
        return {}

    def extra_labels(self, split: str) -> list[LabelSpec]:
        """Labels loaded beside the frame units (none here)."""
        return []

    # --- Task contract ---------------------------------------------------------------------

    def build_model(self) -> UnitPredictionModel:
        return self.model_cls(self.model_cfg, [len(d) for d in self.dictionaries], self.label_rates,
                              sample_rate=self.cfg.sample_rate)

    def dataset(self, split: str) -> AudioDataset:
        split_manifest(self.data_dir, split)  # a missing manifest is named before its labels
        specs = [LabelSpec(self.label_path(split, label), "frame", name=label, label_rate=rate, dictionary=d)
                 for label, rate, d in zip(self.cfg.labels, self.label_rates, self.dictionaries)]
        specs += self.extra_labels(split)
        c = self.cfg
        return audio_split(self.data_dir, split, specs, train=split == "train", max_sample_size=c.max_sample_size,
                           min_sample_size=c.min_sample_size, random_crop=c.random_crop, seed=c.seed,
                           sample_rate=c.sample_rate)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collater(items)

    def unit_loss(self, out: dict[str, Any]) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The summed HuBERT loss of a model output (see the module docstring).

        Returns:
            ``(loss, sample_size, logs)``: logs hold per label set ``loss_{m,u}_i`` (summed CE),
            ``correct_{m,u}_i`` and ``count_{m,u}_i``, and ``features_pen`` (times sample_size).
        """
        loss = out["features_pen"] * 0.0  # keeps the graph connected even for a batch without frames
        sample_size = 0
        logs: dict[str, float] = {}
        for tag, weight in (("m", self.cfg.pred_masked_weight), ("u", self.cfg.pred_nomask_weight)):
            key = "masked" if tag == "m" else "unmasked"
            terms = []
            for i, (logits, target) in enumerate(zip(out[f"logits_{key}"], out[f"targets_{key}"])):
                ce = masked_prediction_loss(logits, target)
                terms.append(ce.loss)
                logs[f"loss_{tag}_{i}"] = float(ce.loss.detach())
                logs[f"correct_{tag}_{i}"] = float(ce.correct)
                logs[f"count_{tag}_{i}"] = float(ce.count)
            if weight > 0 and terms:
                loss = loss + weight * sum(terms)
                sample_size += int(out[f"targets_{key}"][0].numel())
        if self.cfg.feature_pen_weight > 0:
            pen = out["features_pen"].float() * self.cfg.feature_pen_weight * sample_size
            loss = loss + pen
            logs["features_pen"] = float(out["features_pen"].detach()) * sample_size
        return loss, sample_size, logs

    def model_output(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """The model's output on a batch (the unit labels and their lengths from the batch)."""
        labels = self.cfg.labels
        return model(batch["wav"], batch["lengths"], [batch[k] for k in labels],
                     [batch[f"{k}_lengths"] for k in labels])

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        loss, sample_size, logs = self.unit_loss(self.model_output(model, batch))
        return loss, float(sample_size), logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Per-frame losses (nats) and accuracies of each label set, and the mean feature penalty.

        ``loss_<tag>`` and ``correct_<tag>`` with a ``count_<tag>`` beside them are divided by that
        count (``correct_`` becomes ``acc_``); every other key by ``sample_size``.
        """
        out: dict[str, float] = {}
        for key, value in sums.items():
            if key.startswith("loss_") and "count_" + key[len("loss_"):] in sums:
                out[key] = value / max(sums["count_" + key[len("loss_"):]], 1.0)
            elif key.startswith("correct_"):
                count = sums.get("count_" + key[len("correct_"):], 0.0)
                out["acc_" + key[len("correct_"):]] = value / max(count, 1.0)
            elif key.startswith("count_"):
                continue
            else:
                out[key] = value / max(sample_size, 1e-12)
        return out

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> Any:
        return self.model_cfg
