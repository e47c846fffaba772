"""SSAMBA masked patch modelling as a :class:`speechssl.train.Task` (SSAST's joint objective).

Data: a directory with ``<split>.tsv`` manifests (no labels needed). Each batch is padded
audio; the model computes fbank patches, masks ``mask_ratio`` of each utterance's patches
(``cluster`` or ``random``, drawn from the item seeds so runs are reproducible) and returns the
discriminative InfoNCE and generative MSE, each summed over masked patches. The loss is::

    nce_weight * Σ InfoNCE + mse_weight * Σ MSE          (SSAST/SSAMBA: 1 and 10)

summed over the masked patches, which are the ``sample_size``.

Run it with ``speechssl pretrain --method ssamba --preset nano --data DIR --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from speechssl.data.collate import AudioCollater
from speechssl.data.dataset import AudioDataset, audio_split
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.ssamba.config import SsambaConfig
from speechssl.upstream.ssamba.model import SsambaPretrainModel

__all__ = ["SsambaTaskConfig", "SsambaPretrainTask"]


@dataclass
class SsambaTaskConfig:
    """Data, masking and loss settings of SSAMBA pretraining."""

    data: str = ""  # directory with <split>.tsv manifests (set by --data)
    sample_rate: int = 16000  # audio sample rate (Hz); other rates are errors
    max_sample_size: Optional[int] = 163840  # crop utterances to this many samples (SSAST: 1024 frames)
    min_sample_size: int = 4000  # drop utterances shorter than this (0.25 s: at least one column of patches)
    random_crop: bool = True  # training crops start at random (else at the beginning)
    pad_audio: bool = True  # pad a batch to its longest item (the model ignores padding); False: crop to shortest
    seed: int = 1  # seed of crops and masks (per epoch and item)
    mask_ratio: float = 0.75  # fraction of each utterance's patches to mask (SSAST: 400 of 512)
    mask_mode: Literal["cluster", "random"] = "cluster"  # SSAST: cluster for 16x16 patches, random for frames
    cluster_min: int = 3  # cluster masking: block side drawn from [cluster_min, cluster_max)
    cluster_max: int = 6
    nce_weight: float = 1.0  # weight of the discriminative (InfoNCE) objective
    mse_weight: float = 10.0  # weight of the generative (MSE) objective (SSAST: 10)


class SsambaPretrainTask(Task):
    """SSAMBA pretraining: builds :class:`SsambaPretrainModel`, the audio datasets and the joint loss.

    Args:
        task_cfg: data, masking and loss settings.
        ctx: the pretraining context; ``ctx.model`` is the encoder architecture (:class:`SsambaConfig`).

    Raises:
        ValueError / FileNotFoundError: missing data directory, bad settings.
    """

    method = "ssamba"

    def __init__(self, task_cfg: SsambaTaskConfig, ctx: PretrainContext) -> None:
        model_cfg = ctx.model
        if not isinstance(model_cfg, SsambaConfig):
            raise TypeError(f"{type(self).__name__} needs a SsambaConfig in ctx.model, got {type(model_cfg).__name__}")
        if not task_cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv)")
        if task_cfg.nce_weight < 0 or task_cfg.mse_weight < 0 or task_cfg.nce_weight + task_cfg.mse_weight == 0:
            raise ValueError(f"task.nce_weight ({task_cfg.nce_weight}) and task.mse_weight ({task_cfg.mse_weight}) "
                             "must be >= 0 and not both 0")
        if task_cfg.sample_rate != 16000:
            raise ValueError(f"task.sample_rate must be 16000 (the fbank front end is 16 kHz), got {task_cfg.sample_rate}")
        model_cfg.validate()
        self.cfg = task_cfg
        self.model_cfg = model_cfg
        self.data_dir = Path(task_cfg.data)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"task.data: no such directory: {self.data_dir}")
        self._collater = AudioCollater(pad_audio=task_cfg.pad_audio,
                                       crop="random" if task_cfg.random_crop else "start",
                                       max_sample_size=task_cfg.max_sample_size, sample_rate=task_cfg.sample_rate)

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """Default ``TrainerConfig`` of a preset: a short CPU run for nano, SSAST's recipe (Adam 1e-4) otherwise."""
        from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig

        if preset == "nano":
            return TrainerConfig(max_updates=200, max_tokens=320_000, optim=OptimConfig(lr=2e-3, weight_decay=0.0),
                                 schedule=ScheduleConfig(name="linear", warmup_updates=20),
                                 save_every_updates=100, validate_every_updates=100, log_every_updates=10)
        # SSAMBA/SSAST: Adam, lr 1e-4, weight decay 5e-7, batch 64 x 10.24 s
        return TrainerConfig(max_updates=400_000, max_tokens=64 * 163840,
                             optim=OptimConfig(name="adam", lr=1e-4, betas=(0.95, 0.999), weight_decay=5e-7),
                             schedule=ScheduleConfig(name="linear", warmup_updates=1000),
                             save_every_updates=10_000, validate_every_updates=4000)

    # --- Task contract ---------------------------------------------------------------------

    def build_model(self) -> SsambaPretrainModel:
        c = self.cfg
        return SsambaPretrainModel(self.model_cfg, mask_ratio=c.mask_ratio, mask_mode=c.mask_mode,
                                   cluster=(c.cluster_min, c.cluster_max))

    def dataset(self, split: str) -> AudioDataset:
        c = self.cfg
        return audio_split(self.data_dir, split, train=split == "train", max_sample_size=c.max_sample_size,
                           min_sample_size=c.min_sample_size, random_crop=c.random_crop, seed=c.seed,
                           sample_rate=c.sample_rate)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collater(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        seeds = [int(s) for s in batch["seed"]]
        out = model(batch["wav"], batch["lengths"], seeds)
        loss = self.cfg.nce_weight * out["nce"] + self.cfg.mse_weight * out["mse"]
        logs = {"nce": float(out["nce"].detach()), "mse": float(out["mse"].detach()),
                "correct": float(out["correct"]), "masked": float(out["num_masked"])}
        return loss, float(out["num_masked"]), logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Per-masked-patch InfoNCE (nats) and MSE, and the discriminative accuracy."""
        count = max(sums.get("masked", 0.0), 1.0)
        return {"nce": sums.get("nce", 0.0) / count, "mse": sums.get("mse", 0.0) / count,
                "acc": sums.get("correct", 0.0) / count, "masked": sums.get("masked", 0.0)}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> SsambaConfig:
        return self.model_cfg


