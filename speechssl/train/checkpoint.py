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
    digests                               {"algorithm": "sha256", "tensors": {where: hex}}: a digest of
                                          every tensor of the checkpoint (added by save_checkpoint)

Integrity: :func:`save_checkpoint` stores the sha256 of each tensor's payload (dtype, shape
and bytes) under ``digests``, keyed by where the tensor sits (``model/encoder.proj.weight``,
``optimizer/state/3/exp_avg``, ``rng[0]/torch``). :func:`load_checkpoint` (Trainer resume,
downstream evaluation) and the hub (``hub info``/``convert``/``load`` of a checkpoint) check
them with :func:`verify_digests`: a flipped bit, a tensor swapped or dropped is refused with
one line naming the file and the tensor. Checkpoints from before digests load with a log line.
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from speechssl.atomic import atomic_open, atomic_torch_save

__all__ = ["NonFiniteWeightsError", "check_finite_model", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint", "copy_checkpoint",
           "numbered_checkpoints", "prune_checkpoints", "load_latest", "submodule_prefix", "tensor_digests", "verify_digests",
           "CheckpointIntegrityError", "LAST", "BEST", "DIGESTS"]

_log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
DIGESTS = "digests"
_ALGORITHM = "sha256"
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


class CheckpointIntegrityError(ValueError):
    """A checkpoint's tensors do not match the digests stored in it (corrupted or modified)."""


def _tensors(obj: Any, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(where, tensor)`` for every tensor in nested dicts/lists/tuples, in container order."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not where and k == DIGESTS:
                continue
            yield from _tensors(v, f"{where}/{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


def _tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (row-major, as stored)."""
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def tensor_digests(state: dict[str, Any]) -> dict[str, Any]:
    """The ``digests`` entry for ``state``: ``{"algorithm": "sha256", "tensors": {where: hex}}``."""
    return {"algorithm": _ALGORITHM, "tensors": {where: _tensor_digest(t) for where, t in _tensors(state)}}


def verify_digests(state: dict[str, Any], where: str | Path) -> bool:
    """Check every tensor of a loaded checkpoint against its stored digest.

    Args:
        state: the loaded checkpoint dict.
        where: the file it came from (for messages).

    Returns:
        True when verified, False when the checkpoint has no digests (written before they
        existed; logged, and loaded as it is).

    Raises:
        CheckpointIntegrityError: a tensor differs from its digest, a digested tensor is
            missing, a tensor has no digest, or the ``digests`` entry is malformed.
    """
    record = state.get(DIGESTS)
    if record is None:
        _log.info("%s: checkpoint has no tensor digests (written before speechssl stored them); "
                  "loading it unverified", where)
        return False
    expected = record.get("tensors") if isinstance(record, dict) else None
    if not isinstance(expected, dict) or record.get("algorithm") != _ALGORITHM:
        found = sorted(map(str, record))[:5] if isinstance(record, dict) else type(record).__name__
        raise CheckpointIntegrityError(f"{where}: malformed '{DIGESTS}' entry: expected "
                                       f"{{'algorithm': '{_ALGORITHM}', 'tensors': {{...}}}}, found {found}")
    actual = dict(_tensors(state))
    for name, digest in expected.items():
        t = actual.get(name)
        if t is None:
            raise CheckpointIntegrityError(f"{where}: tensor {name!r} is listed in the checkpoint's digests but "
                                           "missing from it: the file was modified after it was saved")
        if _tensor_digest(t) != digest:
            raise CheckpointIntegrityError(
                f"{where}: tensor {name!r} ({str(t.dtype).removeprefix('torch.')}, shape {tuple(t.shape)}) does "
                f"not match its {_ALGORITHM} digest: the file is corrupted or was modified after it was saved; "
                "use another checkpoint (checkpoint_<n>.pt) or retrain")
    extra = [name for name in actual if name not in expected]
    if extra:
        raise CheckpointIntegrityError(f"{where}: tensor {extra[0]!r} has no digest in the checkpoint"
                                       + (f" ({len(extra) - 1} more)" if len(extra) > 1 else "")
                                       + ": the file was modified after it was saved")
    return True


class NonFiniteWeightsError(ValueError):
    """The model weights about to be checkpointed hold NaN or infinity; nothing was written."""


def check_finite_model(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose ``model`` tensors are not all finite, naming the first one.

    The Trainer skips updates with a non-finite loss or gradient and stops after
    ``trainer.max_consecutive_nan`` of them, so NaN weights can only come from a step whose
    inputs were finite (an overflow in the optimizer); such weights are never checkpointed:
    the previous checkpoint stays the newest, and resuming starts from it.

    Raises:
        NonFiniteWeightsError: ``"<path>: refusing to save: model tensor 'x' (float32, shape ...)
            holds 3 NaN ..."``.
    """
    model = state.get("model")
    if not isinstance(model, dict):
        return
    for name, t in model.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            nan = int(torch.isnan(t).sum())
            inf = int((~torch.isfinite(t)).sum()) - nan
            what = " and ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if p)
            raise NonFiniteWeightsError(
                f"{path}: refusing to save: model tensor {name!r} ({str(t.dtype).removeprefix('torch.')}, shape "
                f"{tuple(t.shape)}) holds {what} of its {t.numel()} values at update {state.get('num_updates')}; "
                "expected finite weights; the previous checkpoint is kept (lower trainer.optim.lr or use "
                "precision=fp32 and resume)")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` plus the digests of its tensors atomically (a crash leaves the previous
    file intact; ``state`` itself is not modified). Non-finite model weights are refused
    (:func:`check_finite_model`)."""
    check_finite_model(state, path)
    atomic_torch_save({**state, DIGESTS: tensor_digests(state)}, path)


def load_checkpoint(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint on CPU with ``weights_only=True`` and check its tensor digests.

    Args:
        verify: check the digests (False: skip, with a warning).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable checkpoint (the message names it);
            :class:`CheckpointIntegrityError` when a tensor fails its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from speechssl.convert.safe_load import safe_torch_load

    # one safe reader for every .pt: names what the file is (text, truncated zip, an unsafe
    # global) in one line, never relaying torch's advice to load with weights_only=False
    state = safe_torch_load(path, mmap=False)
    if not isinstance(state, dict) or "model" not in state:
        found = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a speechssl training checkpoint: found {found}; expected a dict "
                         "with a 'model' entry written by the Trainer")
    if verify:
        verify_digests(state, path)
    else:
        _log.warning("%s: loading without verifying its tensor digests", path)
    return state


def load_latest(exp_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a run, loaded and verified, to resume from.

    That is ``checkpoint_last.pt``, unless a numbered ``checkpoint_<n>.pt`` is newer (the run
    was killed while copying it to ``checkpoint_last.pt``) or ``checkpoint_last.pt`` is
    missing or fails to load or verify; then the newest numbered checkpoint that loads, with
    a warning naming what was skipped and why.

    Returns:
        ``(path, state)``, or None when the run has no checkpoint.

    Raises:
        ValueError: ``checkpoint_last.pt`` is unusable and no numbered checkpoint loads
            (the error of ``checkpoint_last.pt``).
    """
    exp_dir = Path(exp_dir)
    last = exp_dir / LAST
    state: dict[str, Any] | None = None
    error: ValueError | None = None
    if last.is_file():
        try:
            state = load_checkpoint(last)
        except ValueError as exc:
            error = exc
    at = int(state.get("num_updates", 0)) if state is not None else -1
    for n, path in reversed(numbered_checkpoints(exp_dir)):
        if n <= at:
            break
        try:
            candidate = load_checkpoint(path)
        except ValueError as exc:
            _log.warning("not resuming from %s: %s", path.name, exc)
            continue
        if error is not None:
            why = f"{error}"
        elif state is not None:
            why = (f"{last} is at update {at} but {path.name} (update {n}) is newer (the run was interrupted "
                   f"while writing {LAST})")
        else:
            why = f"no {last} (the run was interrupted before writing it)"
        _log.warning("%s; resuming from %s (update %d), the newest complete checkpoint", why, path.name, n)
        return path, candidate
    if error is not None:
        raise error
    return (last, state) if state is not None else None


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
