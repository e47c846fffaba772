"""Trainer settings that several methods' presets share (``Task.trainer_preset`` builds on them).

* :func:`cpu_tiny` — the short CPU run the quickstart's HuBERT ``tiny`` was tuned with
  (400 updates of 160k samples, Adam lr 2e-3, linear decay after 40 warm-up updates).
* :func:`fairseq_pretraining` — the shape of fairseq's wav2vec 2.0 / HuBERT pretraining
  recipes (linear decay after warm-up, checkpoints every 25k updates, validation every 10k);
  each method gives its own learning rate, warm-up, batch and length.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig

__all__ = ["cpu_tiny", "fairseq_pretraining"]


def cpu_tiny(**overrides: Any) -> TrainerConfig:
    """A few CPU minutes: 400 updates, 160k-sample batches, lr 2e-3 (``overrides``: TrainerConfig fields)."""
    cfg = TrainerConfig(max_updates=400, max_tokens=160_000, optim=OptimConfig(lr=2e-3),
                        schedule=ScheduleConfig(name="linear", warmup_updates=40),
                        save_every_updates=100, validate_every_updates=100, log_every_updates=10)
    return dataclasses.replace(cfg, **overrides)


def fairseq_pretraining(*, lr: float, warmup_updates: int, max_tokens: int, max_updates: int = 400_000,
                        clip_norm: float = 10.0, **overrides: Any) -> TrainerConfig:
    """fairseq's pretraining schedule: Adam at ``lr``, linear decay after ``warmup_updates``.

    Args:
        lr: peak learning rate.
        warmup_updates: linear warm-up length.
        max_tokens: samples per batch and GPU (fairseq ``max_tokens``).
        max_updates: total updates.
        clip_norm: gradient clipping.
        overrides: other TrainerConfig fields.
    """
    cfg = TrainerConfig(max_updates=max_updates, max_tokens=max_tokens, optim=OptimConfig(lr=lr, clip_norm=clip_norm),
                        schedule=ScheduleConfig(name="linear", warmup_updates=warmup_updates),
                        save_every_updates=25_000, validate_every_updates=10_000)
    return dataclasses.replace(cfg, **overrides)
