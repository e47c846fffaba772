"""HuBERT masked-prediction pretraining as a :class:`speechssl.train.Task`.

The data layout, loss and logs are the shared masked unit-prediction task's
(:mod:`speechssl.train.unit_task`: fairseq's ``hubert_pretraining`` task and ``hubert``
criterion); HuBERT adds its model class and fairseq's schedules per preset.

Run it with ``speechssl pretrain --method hubert --preset tiny --data DIR --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speechssl.train.presets import cpu_tiny, fairseq_pretraining
from speechssl.train.unit_task import UnitPredictionTask, UnitTaskConfig
from speechssl.upstream.hubert.config import HubertConfig
from speechssl.upstream.hubert.model import HubertPretrainModel

__all__ = ["HubertTaskConfig", "HubertPretrainTask"]


@dataclass
class HubertTaskConfig(UnitTaskConfig):
    """Data and loss settings of HuBERT pretraining (fields: :class:`UnitTaskConfig`)."""


class HubertPretrainTask(UnitPredictionTask):
    """HuBERT pretraining: :class:`HubertPretrainModel` on the audio + frame-label datasets.

    Args:
        task_cfg: data and loss settings.
        ctx: the pretraining context; ``ctx.model`` is the model architecture (:class:`HubertConfig`).

    Raises:
        TypeError: ``ctx.model`` is not a HubertConfig.
        ValueError / FileNotFoundError: missing data directory or dictionary, bad label rates.
    """

    method = "hubert"
    model_cls = HubertPretrainModel
    model_config_cls = HubertConfig

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """Default ``TrainerConfig`` of a model preset: fairseq's recipes for base/large, a short CPU run for tiny."""
        if preset == "tiny":
            # lr 2e-3 learns fastest on the tiny corpus; 3e-3 collapses to the label prior
            return cpu_tiny()
        if preset == "base":
            return fairseq_pretraining(lr=5e-4, warmup_updates=32_000, max_tokens=1_400_000, find_unused_parameters=True)
        if preset == "large":
            return fairseq_pretraining(lr=1.5e-3, warmup_updates=32_000, max_tokens=900_000, clip_norm=1.0)
        return None
