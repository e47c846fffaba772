"""Trainer settings that several methods' presets share (``Task.trainer_preset`` builds on them).

* :func:`cpu_tiny` — the short CPU run the quickstart's HuBERT ``tiny`` was tuned with
  (400 updates of 160k samples, Adam lr 2e-3, linear decay after 40 warm-up updates).
* :func:`fairseq_pretraining` — the shape of fairseq's wav2vec 2.0 / HuBERT pretraining
  recipes (linear decay after warm-up, checkpoints every 25k updates, validation every 10k);
  each method gives its own learning rate, warm-up, batch and length.
* :func:`image_cosine` / :func:`image_tiny` — the image methods' runs: AdamW with a cosine
  schedule after warm-up, batches counted in images; ``image_tiny`` is the 300-update CPU run of
  every image method's ``tiny`` preset (validated and saved every 100 updates).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig

__all__ = ["cpu_tiny", "fairseq_pretraining", "image_cosine", "image_tiny"]


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


def image_cosine(*, max_updates: int, batch: int, lr: float, weight_decay: float, warmup_updates: int, every: int,
                 betas: tuple[float, float] = (0.9, 0.999), clip_norm: float | None = None,
                 **overrides: Any) -> TrainerConfig:
    """An image method's run: AdamW(``lr``, ``betas``, ``weight_decay``), cosine decay after ``warmup_updates``.

    Args:
        max_updates: total updates.
        batch: images per batch (the trainer's ``max_tokens`` for image datasets).
        every: validation and checkpoint interval in updates.
        clip_norm: gradient clipping (``None``: the trainer's default).
        overrides: other TrainerConfig fields.
    """
    optim = OptimConfig(lr=lr, betas=betas, weight_decay=weight_decay)
    if clip_norm is not None:
        optim = dataclasses.replace(optim, clip_norm=clip_norm)
    cfg = TrainerConfig(max_updates=max_updates, max_tokens=batch, optim=optim,
                        schedule=ScheduleConfig(name="cosine", warmup_updates=warmup_updates),
                        save_every_updates=every, validate_every_updates=every)
    return dataclasses.replace(cfg, **overrides)


def image_tiny(*, batch: int, lr: float, weight_decay: float, warmup_updates: int, **overrides: Any) -> TrainerConfig:
    """The image methods' ``tiny`` CPU run: 300 updates, validated and saved every 100, logged every 10
    (other arguments: :func:`image_cosine`)."""
    overrides.setdefault("log_every_updates", 10)
    return image_cosine(max_updates=300, batch=batch, lr=lr, weight_decay=weight_decay, warmup_updates=warmup_updates,
                        every=100, **overrides)
