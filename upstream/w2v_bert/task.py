"""w2v-BERT pretraining as a :class:`speechssl.train.Task` (contrastive + masked language modelling).

Data: a directory with ``<split>.tsv`` manifests (no labels: the targets are the model's own
quantized codes). Per batch the model masks spans (0.65 × 10), the contrastive module's output
must pick each masked frame's quantized target among ``num_negatives`` distractors of the same
utterance, and the MLM module's output must classify each masked frame's code ids. Loss, summed
over the masked frames (the ``sample_size``)::

    contrastive_weight · Σ CE_contrastive + diversity_weight · (G·V − ppl) / (G·V) · masked
    + mlm_weight · Σ_frames Σ_groups CE_mlm + feature_pen_weight · mean(feats²) · masked

Weights chosen (fairseq's w2v-BERT settings): contrastive 1.0, diversity 0.2, MLM 1.0; fairseq2's
w2v-BERT 600M uses 100 distractors (the ``600m``/``base`` presets' ``num_negatives``) and
diversity 0.1. fairseq2's feature penalty (10) acts on a learnt feature extractor; the stacked
fbank front end has no parameters before the LayerNorm, so the penalty has no gradient and
``feature_pen_weight`` defaults to 0 (it is still logged); with the conv subsampling front end
(``model.frontend=conv``) the features are learnt and fairseq2's 10 applies.

The Gumbel temperature anneals per update in :meth:`W2vBertPretrainTask.on_update`. Logged:
contrastive/MLM losses and accuracies, diversity, the quantizer's prob/code perplexities and the
share of the ``G·V`` codes chosen on masked frames (``code_usage``: a collapsing codebook shows
as it falls), and the temperature.

Run it with ``speechssl pretrain --method w2v_bert --preset tiny --data DIR --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from speechssl.data.collate import AudioCollater
from speechssl.data.dataset import AudioDataset, audio_split
from speechssl.train.presets import cpu_tiny, fairseq_pretraining
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.w2v_bert.config import W2vBertConfig
from speechssl.upstream.w2v_bert.model import W2vBertPretrainModel

__all__ = ["W2vBertTaskConfig", "W2vBertPretrainTask"]


@dataclass
class W2vBertTaskConfig:
    """Data and loss-weight settings of w2v-BERT pretraining."""

    data: str = ""  # directory with <split>.tsv manifests (set by --data)
    sample_rate: int = 16000  # audio sample rate (Hz); the fbank front end is 16 kHz
    max_sample_size: Optional[int] = 250000  # crop utterances to at most this many samples
    min_sample_size: int = 8000  # drop utterances shorter than this (0.5 s: 24 frames, room for 2 spans)
    random_crop: bool = True  # training crops start at random (else at the beginning)
    pad_audio: bool = True  # pad a batch to its longest item (the model ignores padding)
    seed: int = 1  # seed of the random crops (per epoch and item)
    contrastive_weight: float = 1.0  # weight of the contrastive (wav2vec 2.0) loss
    diversity_weight: float = 0.2  # weight of the codebook diversity penalty (fairseq w2v-BERT 0.2; fairseq2 0.1)
    mlm_weight: float = 1.0  # weight of the MLM cross-entropy on code ids
    feature_pen_weight: float = 0.0  # L2 penalty on front-end features (no gradient with fbank; see module doc)


class W2vBertPretrainTask(Task):
    """w2v-BERT pretraining: builds :class:`W2vBertPretrainModel`, the audio datasets and the joint loss.

    Args:
        task_cfg: data and loss settings.
        ctx: the pretraining context; ``ctx.model`` is a :class:`W2vBertConfig`.
    """

    method = "w2v_bert"

    def __init__(self, task_cfg: W2vBertTaskConfig, ctx: PretrainContext) -> None:
        model_cfg = ctx.model
        if not isinstance(model_cfg, W2vBertConfig):
            raise TypeError(f"{type(self).__name__} needs a W2vBertConfig in ctx.model, got {type(model_cfg).__name__}")
        if not task_cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv)")
        if task_cfg.sample_rate != 16000:
            raise ValueError(f"task.sample_rate must be 16000 (the fbank front end is 16 kHz), got {task_cfg.sample_rate}")
        weights = {k: getattr(task_cfg, k) for k in ("contrastive_weight", "diversity_weight", "mlm_weight",
                                                     "feature_pen_weight")}
        if min(weights.values()) < 0 or task_cfg.contrastive_weight + task_cfg.mlm_weight == 0:
            raise ValueError(f"task loss weights must be >= 0 with contrastive_weight + mlm_weight > 0, got {weights}")
        model_cfg.validate()
        self.cfg = task_cfg
        self.model_cfg = model_cfg
        self.num_layers = model_cfg.encoder_layers
        self.data_dir = Path(task_cfg.data)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"task.data: no such directory: {self.data_dir}")
        self._collater = AudioCollater(pad_audio=task_cfg.pad_audio,
                                       crop="random" if task_cfg.random_crop else "start",
                                       max_sample_size=task_cfg.max_sample_size, sample_rate=task_cfg.sample_rate)

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """Default ``TrainerConfig``: a short CPU run for tiny; wav2vec 2.0-style schedules for base / 600m."""
        if preset == "tiny":
            return cpu_tiny()
        if preset == "base":
            return fairseq_pretraining(lr=5e-4, warmup_updates=32_000, max_tokens=1_400_000)
        if preset == "600m":
            return fairseq_pretraining(lr=2e-4, warmup_updates=25_000, max_tokens=1_200_000)
        return None

    # --- Task contract ---------------------------------------------------------------------

    def build_model(self) -> W2vBertPretrainModel:
        return W2vBertPretrainModel(self.model_cfg)

    def dataset(self, split: str) -> AudioDataset:
        c = self.cfg
        return audio_split(self.data_dir, split, train=split == "train", max_sample_size=c.max_sample_size,
                           min_sample_size=c.min_sample_size, random_crop=c.random_crop, seed=c.seed,
                           sample_rate=c.sample_rate)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collater(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch["wav"], batch["lengths"])
        c = self.cfg
        masked = int(out["num_masked"])
        loss = (c.contrastive_weight * out["contrastive"] + c.diversity_weight * out["diversity"]
                + c.mlm_weight * out["mlm"])
        if c.feature_pen_weight > 0:
            loss = loss + c.feature_pen_weight * out["features_pen"] * masked
        G, GV = self.model_cfg.latent_groups, self.model_cfg.latent_groups * self.model_cfg.latent_vars
        logs = {"contrastive": float(out["contrastive"].detach()), "diversity": float(out["diversity"].detach()),
                "mlm": float(out["mlm"].detach()), "correct_c": float(out["contrastive_correct"]),
                "correct_mlm": float(out["mlm_correct"]), "masked": float(masked), "mlm_ids": float(masked * G),
                "features_pen": float(out["features_pen"].detach()) * masked,
                "batches": 1.0, "prob_ppl": float(out["prob_perplexity"].detach()),
                "code_ppl": float(out["code_perplexity"]), "code_usage": out["codes_used"] / GV,
                "temperature": float(out["temperature"])}
        return loss, float(masked), logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Per-masked-frame losses, accuracies, and per-batch means of perplexities, code usage and temperature."""
        masked = max(sums.get("masked", 0.0), 1.0)
        batches = max(sums.get("batches", 0.0), 1.0)
        out = {k: sums.get(k, 0.0) / masked for k in ("contrastive", "diversity", "mlm", "features_pen")}
        out["acc_c"] = sums.get("correct_c", 0.0) / masked
        out["acc_mlm"] = sums.get("correct_mlm", 0.0) / max(sums.get("mlm_ids", 0.0), 1.0)
        for key in ("prob_ppl", "code_ppl", "code_usage", "temperature"):
            out[key] = sums.get(key, 0.0) / batches
        out["masked"] = sums.get("masked", 0.0)
        return out

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Anneal the Gumbel temperature: ``max(max_t · decay ** num_updates, min_t)``."""
        model.set_num_updates(num_updates)

    def layer_id(self, name: str) -> int | None:
        """Front end and projection 0, conformer layer ``i`` → ``i + 1``, heads ``L + 1``."""
        if name.startswith("upstream.encoder.layers."):
            return int(name.split(".")[3]) + 1
        if name.startswith("upstream."):
            return 0
        return self.num_layers + 1

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> W2vBertConfig:
        return self.model_cfg
