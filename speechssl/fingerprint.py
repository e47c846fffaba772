"""Fingerprints of what a resumable step depends on, and the one rule for resuming.

A resumable step (features dump, label dump, downstream feature cache, k-means fit, LDA)
records a *fingerprint*: a JSON-able dict naming the content it was computed from — the
model's weights (:func:`model_sha256`), the manifest and label files' bytes
(:func:`file_sha256`), upstream outputs' own fingerprints, and every option that changes the
result. A rerun computes the fingerprint again and :func:`same_inputs` compares it with the
recorded one: equal means resume or skip; anything else means start again, with one log line
that names the step and the fields that changed (never a silent mix of two sources).
Paths alone are never a fingerprint: a model rewritten in place keeps its path.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["file_sha256", "json_digest", "model_sha256", "changed_fields", "same_inputs"]

_log = logging.getLogger(__name__)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def json_digest(obj: Any, length: int = 64) -> str:
    """Hex sha256 of ``obj`` as canonical JSON (sorted keys), cut to ``length`` characters."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_sha256(model: nn.Module) -> str:
    """Hex sha256 over a model's method name, config and every state-dict tensor (by name).

    Two models with the same digest compute the same function; any changed weight, buffer,
    dtype, shape or config field changes it.
    """
    from speechssl.config import to_dict

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    try:
        cfg = to_dict(config) if config is not None else None
    except TypeError:
        cfg = repr(config)
    h.update(json.dumps({"method": getattr(model, "method", type(model).__name__), "config": cfg},
                        sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too (BN counters)
    return h.hexdigest()


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two fingerprints (``"source.model_sha256"``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out += changed_fields(old[key], new[key], name)
        return out
    return [] if old == new else [prefix or "(value)"]


def same_inputs(recorded: Any, current: Any, what: str, *, action: str = "starting it again") -> bool:
    """Whether an earlier run of a step had the same inputs; logs one line when not.

    Args:
        recorded: the fingerprint the earlier run stored (None: nothing recorded).
        current: this run's fingerprint.
        what: the step's output, for the log line (a path).
        action: what the caller does when the inputs changed.

    Returns:
        True when ``recorded == current`` (resume or skip); False otherwise, after a WARNING
        ``<what> was made from other inputs (changed: a, b); <action>`` (or, when nothing
        was recorded, that the inputs are unknown).
    """
    if recorded == current:
        return True
    if recorded is None:
        _log.warning("%s records no fingerprint of its inputs; %s", what, action)
    else:
        changed = changed_fields(recorded, current)
        _log.warning("%s was made from other inputs (changed: %s); %s", what, ", ".join(changed[:8])
                     + (f" and {len(changed) - 8} more" if len(changed) > 8 else ""), action)
    return False
