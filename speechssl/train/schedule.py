"""Learning-rate schedules as pure functions of the number of updates done.

``LRSchedule.lr_at(n)`` is the learning rate of the update that follows ``n`` completed updates
(fairseq's ``step_update(n)`` convention: the first update uses ``lr_at(0)``). Being a pure
function of ``n``, a schedule needs no state to resume.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from speechssl.train.config import ScheduleConfig

__all__ = ["LRSchedule"]


class LRSchedule:
    """The learning rate of ``cfg`` around the peak ``lr``.

    Args:
        cfg: the schedule config.
        lr: the peak learning rate.
        total_updates: length of the schedule (``cfg.total_updates`` wins when it is set).

    Raises:
        ValueError: a schedule that needs a length gets none, or inconsistent tri-stage phases.
    """

    def __init__(self, cfg: ScheduleConfig, lr: float, total_updates: int = 0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.peak = float(lr)
        self.total = int(cfg.total_updates or total_updates)
        tri = cfg.name == "tri_stage"
        init_scale = cfg.init_lr_scale if cfg.init_lr_scale is not None else (0.01 if tri else 0.0)
        final_scale = cfg.final_lr_scale if cfg.final_lr_scale is not None else (0.01 if tri else 0.0)
        self.init_lr = init_scale * self.peak
        self.final_lr = final_scale * self.peak
        self.warmup = int(cfg.warmup_updates)
        if self.warmup < 0:
            raise ValueError(f"schedule.warmup_updates must be >= 0, got {self.warmup}")
        if cfg.name in ("linear", "cosine") and self.total <= self.warmup:
            raise ValueError(
                f"schedule {cfg.name!r} needs total_updates > warmup_updates={self.warmup}, got {self.total}; "
                "set trainer.max_updates, trainer.max_epochs or trainer.schedule.total_updates")
        if tri:
            self._init_tri_stage(cfg, final_scale)

    def _init_tri_stage(self, cfg: ScheduleConfig, final_scale: float) -> None:
        if cfg.phase_ratio is not None:
            if self.total <= 0:
                raise ValueError("tri_stage with phase_ratio needs total_updates (or trainer.max_updates)")
            if abs(sum(cfg.phase_ratio) - 1.0) > 1e-6:
                raise ValueError(f"schedule.phase_ratio must add up to 1, got {cfg.phase_ratio}")
            self.warmup, self.hold, self.decay = (int(self.total * r) for r in cfg.phase_ratio)
        else:
            self.hold, self.decay = int(cfg.hold_updates), int(cfg.decay_updates)
        if self.warmup + self.hold + self.decay <= 0:
            raise ValueError("tri_stage needs phase_ratio or warmup/hold/decay updates")
        if not 0 < final_scale <= 1:
            raise ValueError(f"tri_stage decays exponentially: final_lr_scale must be in (0, 1], got {final_scale}")
        self.decay_factor = -math.log(final_scale) / self.decay if self.decay else 0.0

    def _warmup_lr(self, n: int) -> float:
        return self.init_lr + (self.peak - self.init_lr) * n / self.warmup

    def lr_at(self, num_updates: int) -> float:
        """Learning rate of the update after ``num_updates`` completed ones."""
        n = int(num_updates)
        if self.name == "tri_stage":
            return self._tri_stage(n)
        if n < self.warmup:
            return self._warmup_lr(n)
        if self.name == "constant":
            return self.peak
        if n >= self.total:
            return self.final_lr
        progress = (n - self.warmup) / (self.total - self.warmup)
        if self.name == "linear":
            return self.final_lr + (self.peak - self.final_lr) * (1.0 - progress)
        return self.final_lr + 0.5 * (self.peak - self.final_lr) * (1.0 + math.cos(math.pi * progress))

    def _tri_stage(self, n: int) -> float:
        if n < self.warmup:
            return self._warmup_lr(n)
        n -= self.warmup
        if n < self.hold:
            return self.peak
        n -= self.hold
        if n <= self.decay:
            return self.peak * math.exp(-self.decay_factor * n)
        return self.final_lr

    def apply(self, optimizer: torch.optim.Optimizer, num_updates: int) -> float:
        """Set every param group's lr for the next update: ``lr_at(num_updates) * group["lr_scale"]``.

        ``lr_scale`` (default 1) is the group's factor from ``optim.param_groups`` (layer-wise lr
        decay); the returned value is the unscaled schedule lr (what the logs report).
        """
        lr = self.lr_at(num_updates)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        """What the schedule was (for the record; it is a pure function of the update count)."""
        return {"name": self.name, "peak": self.peak, "total_updates": self.total, "warmup": self.warmup}
