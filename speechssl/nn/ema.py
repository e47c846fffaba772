"""Exponential-moving-average teachers: the update and the cosine momentum schedule.

* :func:`cosine_momentum` — BYOL's schedule, the one SlotCon (and MoCo v3, DINO) use:
  ``m(n) = 1 - (1 - m_0) · (cos(π n / N) + 1) / 2`` for update ``n`` of ``N`` (``n`` clamped to
  ``[0, N]``), rising from ``m_0`` at the start to 1 at the end.
* :func:`ema_update_` — ``θ_t ← m θ_t + (1 - m) θ_s`` for every parameter of the teacher, written
  as SlotCon's ``param_k.data * momentum + param_q.data * (1. - momentum)``; buffers (BatchNorm
  running statistics) are copied from the student, since a frozen teacher runs in eval mode and
  reads them (SlotCon's teacher normalises with its batch's statistics instead).

Call it from ``Task.on_update`` (after the optimizer step) with the teacher frozen by
reference None (:meth:`speechssl.train.task.Task.frozen_modules`), so its weights are
checkpointed with the model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["cosine_momentum", "ema_update_"]


def cosine_momentum(base: float, step: int, total: int) -> float:
    """``1 - (1 - base) (cos(π min(step, total) / total) + 1) / 2`` (``total >= 1``, ``0 <= base <= 1``)."""
    if total < 1:
        raise ValueError(f"the momentum schedule needs total >= 1 updates, got {total}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base momentum must be in [0, 1], got {base}")
    n = min(max(int(step), 0), int(total))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * n / total) + 1.0) * 0.5


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: teacher parameters ``← m · teacher + (1 - m) · student``; teacher buffers ``← student``'s.

    Raises:
        ValueError: the two modules differ in their parameter or buffer names or shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_bufs, s_bufs = dict(teacher.named_buffers()), dict(student.named_buffers())
    for kind, t, s in (("parameters", t_params, s_params), ("buffers", t_bufs, s_bufs)):
        if list(t) != list(s) or any(t[k].shape != s[k].shape for k in t):
            diff = sorted(set(t) ^ set(s)) or [k for k in t if t[k].shape != s[k].shape]
            raise ValueError(f"teacher and student {kind} differ: {diff[:5]}")
    for name, p in t_params.items():
        p.copy_(p * momentum + s_params[name].detach() * (1.0 - momentum))
    for name, b in t_bufs.items():
        b.copy_(s_bufs[name])
