"""HuBERTopic pretraining as a :class:`speechssl.train.Task`: HuBERT's loss plus ``λ`` · topic CE.

Data: HuBERT's layout (:mod:`speechssl.train.unit_task`) plus the utterance topics that
``speechssl cluster lda`` writes beside the units::

    <label_dir>/<split>.topic       one topic id per manifest row
    <label_dir>/dict.topic.txt      the K topic ids (its size must equal ``model.num_topics``)

Loss, summed in the Trainer's convention (it divides by the total ``sample_size``)::

    HuBERT's summed loss (sample_size frames)
    + topic_weight * mean_b CE(topic_logits_b, topic_b) * sample_size

so a batch contributes ``unit CE per frame + λ · topic CE per utterance``, the same way HuBERT's
feature penalty (a mean times ``sample_size``) does. Utterances left with no frames after
cropping carry no topic term. Logs: ``loss_topic`` (nats per utterance), ``acc_topic``.

Run it with ``speechssl pretrain --method hubertopic --preset tiny --data DIR --exp-dir EXP
task.label_dir=LAB`` where ``LAB`` holds ``<split>.km`` and ``<split>.topic``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.data.dataset import LabelSpec
from speechssl.train.presets import cpu_tiny, fairseq_pretraining
from speechssl.train.task import PretrainContext
from speechssl.train.unit_task import UnitPredictionTask, UnitTaskConfig
from speechssl.upstream.hubertopic.config import HubertopicConfig
from speechssl.upstream.hubertopic.model import HubertopicPretrainModel

__all__ = ["HubertopicTaskConfig", "HubertopicPretrainTask"]


@dataclass
class HubertopicTaskConfig(UnitTaskConfig):
    """HuBERT's data and loss settings plus the topic labels (the weight λ is ``model.topic_weight``)."""

    topic_label: str = "topic"  # extension of the topic files: <split>.<topic_label>, dict.<topic_label>.txt


class HubertopicPretrainTask(UnitPredictionTask):
    """HuBERTopic pretraining: :class:`HubertopicPretrainModel`, units + topics, HuBERT loss + λ · topic CE.

    Args:
        task_cfg: data and loss settings.
        ctx: the pretraining context; ``ctx.model`` is a :class:`HubertopicConfig`.

    Raises:
        ValueError: ``dict.topic.txt`` does not have ``model.num_topics`` entries, or the topic
            label collides with a unit label.
        FileNotFoundError: a manifest, label file or dictionary is missing (named).
    """

    method = "hubertopic"
    model_cls = HubertopicPretrainModel
    model_config_cls = HubertopicConfig

    def __init__(self, task_cfg: HubertopicTaskConfig, ctx: PretrainContext) -> None:
        if task_cfg.topic_label in tuple(task_cfg.labels):
            raise ValueError(f"task.topic_label {task_cfg.topic_label!r} is also a unit label in task.labels "
                             f"{list(task_cfg.labels)}; give the topic files their own extension")
        self.topic_label = task_cfg.topic_label
        super().__init__(task_cfg, ctx)
        self.topic_dictionary = self.read_dictionary(self.topic_label)
        if len(self.topic_dictionary) != self.model_cfg.num_topics:
            raise ValueError(
                f"{self.label_dir / f'dict.{self.topic_label}.txt'} has {len(self.topic_dictionary)} topics but "
                f"model.num_topics is {self.model_cfg.num_topics}; set model.num_topics="
                f"{len(self.topic_dictionary)} or refit with `speechssl cluster lda --num-topics "
                f"{self.model_cfg.num_topics}`")

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """Default ``TrainerConfig`` of a model preset: HuBERT's (a short CPU run for tiny, fairseq's for base)."""
        if preset == "tiny":
            return cpu_tiny()
        if preset == "base":
            return fairseq_pretraining(lr=5e-4, warmup_updates=32_000, max_tokens=1_400_000, find_unused_parameters=True)
        return None

    def extra_label_kinds(self) -> dict[str, str]:
        return {self.topic_label: "utterance"}

    def extra_labels(self, split: str) -> list[LabelSpec]:
        return [LabelSpec(self.label_path(split, self.topic_label), "utterance", name=self.topic_label,
                          dictionary=self.topic_dictionary)]

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = self.model_output(model, batch)
        loss, sample_size, logs = self.unit_loss(out)
        logits = out["topic_logits"]  # (B, K) float32
        topics = batch[self.topic_label].to(logits.device)  # (B,)
        scored = out["topic_lengths"] > 0  # (B,)
        n = int(scored.sum())
        ce = F.cross_entropy(logits[scored], topics[scored], reduction="sum") if n else logits.sum() * 0.0
        weight = self.model_cfg.topic_weight
        if weight > 0 and n:
            loss = loss + weight * ce / n * sample_size
        logs["loss_topic"] = float(ce.detach())
        logs["correct_topic"] = float((logits[scored].argmax(-1) == topics[scored]).sum()) if n else 0.0
        logs["count_topic"] = float(n)
        return loss, float(sample_size), logs
