"""Moving batches to a device, mixed-precision contexts, and the CPU thread count."""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, ContextManager, Mapping

import torch

__all__ = ["move_to_device", "autocast", "available_cpus", "configure_threads"]

_log = logging.getLogger(__name__)
_threads_logged = False


def available_cpus(cgroup_dir: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may run on: its affinity mask (``os.sched_getaffinity``), capped by a
    cgroup v2 CPU quota (``cpu.max``) when there is one; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = (Path(cgroup_dir) / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            n = min(n, math.ceil(float(quota) / float(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads(environ: Mapping[str, str] | None = None) -> int:
    """Set torch's intra-op threads to :func:`available_cpus` unless ``OMP_NUM_THREADS`` is set.

    Called by the Trainer when training starts (never at import). The choice is logged once
    per process, with a hint when the 1-minute load average shows other jobs on those CPUs
    (``OMP_NUM_THREADS=1`` then avoids threads fighting over the cores).

    Returns:
        the number of torch threads in use afterwards.
    """
    global _threads_logged
    env = os.environ if environ is None else environ
    cpus = available_cpus()
    if env.get("OMP_NUM_THREADS"):
        why = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    else:
        if torch.get_num_threads() != cpus:
            torch.set_num_threads(cpus)
        why = f"the {cpus} CPU(s) available to this process; set OMP_NUM_THREADS to choose"
    threads = torch.get_num_threads()
    if not _threads_logged:
        _threads_logged = True
        hint = ""
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
        if load > cpus and threads > 1:
            hint = (f"; the 1-minute load is {load:.1f} on {cpus} CPU(s): other jobs share them, "
                    "OMP_NUM_THREADS=1 avoids oversubscription")
        _log.info("torch threads: %d (%s)%s", threads, why, hint)
    return threads


def move_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples, nested) moved to ``device``.

    Other values (strings, ints, None) are returned as they are.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to_device(v, device, non_blocking) for v in obj]
    if isinstance(obj, tuple):
        moved = [move_to_device(v, device, non_blocking) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)
    return obj


def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """Autocast context for ``precision`` (``fp32``: none; ``bf16``; ``fp16``, GPU only).

    Raises:
        ValueError: fp16 requested on a CPU, or an unknown precision.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("trainer.precision=fp16 needs a CUDA device; on CPU use precision=bf16")
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    raise ValueError(f"trainer.precision must be fp32, bf16 or fp16, got {precision!r}")
