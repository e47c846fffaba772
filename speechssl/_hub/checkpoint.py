"""Read the upstream out of a speechssl training checkpoint (``checkpoint_last.pt``).

The Trainer stores ``{"model": <state dict of the training module>, "upstream": {"method": ...,
"config": {...}, "prefix": "<submodule prefix of the upstream>"}, ...}``. Only the tensors
under ``prefix`` are taken; optimizer, scheduler and RNG states are ignored. Modules a Task
freezes by reference (teachers) are not in ``model`` but listed in ``frozen`` (``{name:
{"reference", "sha256"}}``); a frozen module inside the upstream cannot be rebuilt from the
checkpoint alone, which is an error naming it.

The tensors are checked against the digests the Trainer stores in the checkpoint
(:func:`speechssl.train.checkpoint.verify_digests`) before anything is taken from it, so
``hub info``/``convert``/``load`` of a corrupted checkpoint is refused and never yields a
model directory with a fresh, "verified" hash. ``source["digests"]`` says what was checked:
``"verified"``, ``"none"`` (an old checkpoint without digests) or ``"not checked"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import logging

import torch

from speechssl._hub.modeldir import HubError, WeightsRecord
from speechssl.train.checkpoint import CheckpointIntegrityError, verify_digests

__all__ = ["is_training_checkpoint", "read_training_checkpoint"]

_log = logging.getLogger(__name__)


def is_training_checkpoint(obj: Any) -> bool:
    """True when an unpickled checkpoint dict looks like a speechssl Trainer checkpoint."""
    return isinstance(obj, dict) and "upstream" in obj and "model" in obj


def read_training_checkpoint(path: str | Path, obj: dict[str, Any], *, verify: bool = True) -> WeightsRecord:
    """The upstream's weights and config from a checkpoint dict read from ``path``.

    Args:
        verify: check every tensor against the checkpoint's digests first.

    Raises:
        HubError: a tensor that fails its digest (naming it), no ``upstream`` entry (the task
            has no upstream method), a malformed entry, or no tensors under its prefix.
    """
    path = Path(path)
    if verify:
        try:
            digests = "verified" if verify_digests(obj, path) else "none"
        except CheckpointIntegrityError as exc:
            raise HubError(str(exc)) from None
    else:
        _log.warning("%s: reading the checkpoint without verifying its tensor digests", path)
        digests = "not checked"
    up = obj.get("upstream")
    if up is None:
        raise HubError(f"{path}: this training checkpoint has no 'upstream' entry (its task is not tied "
                       "to an upstream method), so there is no upstream model to load")
    if not isinstance(up, dict) or not {"method", "config", "prefix"} <= set(up):
        keys = sorted(up) if isinstance(up, dict) else type(up).__name__
        raise HubError(f"{path}: 'upstream' must be a dict with method, config and prefix; got {keys}")
    model_sd = obj["model"]
    if not isinstance(model_sd, dict):
        raise HubError(f"{path}: 'model' must be a state dict, got {type(model_sd).__name__}")
    prefix = str(up["prefix"] or "")
    if prefix and not prefix.endswith("."):
        prefix += "."
    frozen = obj.get("frozen") or {}
    by_reference = {n: e.get("reference") for n, e in frozen.items() if isinstance(e, dict) and e.get("reference")}
    inside = sorted(n for n in by_reference if (str(n) + ".").startswith(prefix))
    if inside:
        ref = by_reference[inside[0]]
        raise HubError(f"{path}: the upstream (prefix {prefix!r}) contains frozen module {inside[0]!r}, stored "
                       f"by reference ({ref!r}), not in this checkpoint; load the model directory the training "
                       "run exports, or the reference itself")
    state = {k[len(prefix):]: v for k, v in model_sd.items()
             if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not state:
        raise HubError(f"{path}: no weights under the upstream prefix {prefix!r} in 'model' "
                       f"(its keys start with: {', '.join(sorted({k.split('.')[0] for k in model_sd})[:8])})")
    if not isinstance(up["config"], dict):
        raise HubError(f"{path}: upstream 'config' must be a dict, got {type(up['config']).__name__}")
    num_updates = obj.get("num_updates", obj.get("step"))
    source: dict[str, Any] = {"format": "speechssl-checkpoint", "path": str(path), "prefix": prefix,
                              "digests": digests}
    if isinstance(num_updates, int):
        source["num_updates"] = num_updates
    return WeightsRecord(method=str(up["method"]), config=up["config"], state_dict=state, source=source)
