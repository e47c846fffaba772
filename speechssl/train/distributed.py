"""Distributed set-up under ``torchrun`` (env:// rendezvous) and the collectives the Trainer uses.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group (nccl on
CUDA, gloo on CPU). Without them everything runs as a single process and the collectives
below are identities.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from speechssl.nn.losses import gather_rows

__all__ = ["DistInfo", "init_distributed", "resolve_device", "all_reduce_sum", "all_gather_object",
           "all_gather_with_grad", "broadcast_object", "barrier", "is_initialized"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its device,
    and whether :func:`init_distributed` created the process group (so it should destroy it)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; otherwise ``torch.device(spec)``."""
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"trainer.device: not a device: {spec!r} (use auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={spec!r} but CUDA is not available; use device=cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Join the process group described by the torchrun environment (if any) and pick the device.

    Raises:
        ValueError: an inconsistent environment (e.g. RANK >= WORLD_SIZE) or an unusable device.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank,
                                **({"device_id": device} if device.type == "cuda" else {}))
        owns = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device, owns_group=owns)


def is_initialized() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place, and return it (identity on one process)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """The ``obj`` of every rank, in rank order (``[obj]`` on one process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_initialized():
        dist.barrier()


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``x`` concatenated along dim 0 in rank order, differentiable, and this rank's offset.

    Ranks may hold different numbers of items (dim 0); the other dims must agree. The gradient
    that reaches this rank's ``x`` is the sum over ranks of their losses' gradients with respect
    to it, so with the Trainer's normalisation (DDP averages over ranks, the Trainer multiplies by
    ``world_size / total sample_size``) the update equals one process computing the loss of
    every rank's items. A collective: every rank must call it the same number of times.

    Args:
        x: ``(B_r, ...)``, this rank's items.

    Returns:
        ``(sum_r B_r, ...)`` and the index of this rank's first item in it
        (``(x, 0)`` on a single process).
    """
    return gather_rows(x)
