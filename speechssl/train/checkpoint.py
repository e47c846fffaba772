"""Training checkpoints: atomic writes, safe loading, RNG state capture, pruning.

A checkpoint is a dict of tensors and plain containers only, so that it loads with
``torch.load(weights_only=True)`` (no unpickling of arbitrary objects). Keys written by the
Trainer::

    model, optimizer, scheduler, scaler   state dicts (model: less the modules frozen by reference)
    frozen                                {name: {"reference", "sha256"}} of modules frozen by reference
                                          (see train/frozen.py); their weights are not in ``model``
    rng                                   list, one rng_state() per rank
    data                                  {"epoch": next epoch to run (1-based), "batch": batches done in it}
    num_updates, best, nan_streak         loop state
    task                                  task.state_dict()
    config                                the resolved config tree (plain dict)
    upstream                              {"method", "config", "prefix"} when task.method is set
    speechssl_version
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechssl.atomic import atomic_open, atomic_torch_save

__all__ = ["rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint", "copy_checkpoint",
           "numbered_checkpoints", "prune_checkpoints", "submodule_prefix", "LAST", "BEST"]

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
_NUMBERED = re.compile(r"^checkpoint_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Every RNG state of this process (python, numpy, torch CPU, CUDA), as tensors and primitives."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically (a crash leaves the previous file intact)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on CPU with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable checkpoint (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise ValueError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a speechssl training checkpoint (no 'model' entry)")
    return state


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=16 << 20)


def numbered_checkpoints(exp_dir: str | Path) -> list[tuple[int, Path]]:
    """``(num_updates, path)`` of every ``checkpoint_<n>.pt`` in ``exp_dir``, oldest first."""
    found = []
    for p in Path(exp_dir).glob("checkpoint_*.pt"):
        m = _NUMBERED.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(exp_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest numbered checkpoints (``keep_last < 0``: keep all)."""
    if keep_last < 0:
        return []
    found = numbered_checkpoints(exp_dir)
    doomed = [p for _, p in found[:max(len(found) - keep_last, 0)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def submodule_prefix(model: nn.Module, sub: nn.Module) -> str:
    """State-dict prefix of ``sub`` inside ``model`` (``""`` when it is ``model``; ``"encoder."`` ...).

    Raises:
        ValueError: ``sub`` is not a submodule of ``model``.
    """
    for name, module in model.named_modules():
        if module is sub:
            return f"{name}." if name else ""
    raise ValueError(f"task.upstream(model) returned a {type(sub).__name__} that is not a submodule of the model")
